package store

import "os"

// Exports for the external tests.

// UncleanIDSkip is uncleanIDSkip.
const UncleanIDSkip = uncleanIDSkip

// SyncsCurrentFile reports whether b fsyncs the file now at its path (and not
// one that Shrink replaced).
func SyncsCurrentFile(b *Bunt) bool {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	fi, err := os.Stat(b.path)
	return err == nil && os.SameFile(fi, b.syncInfo)
}
