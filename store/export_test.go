package store

import (
	"os"
	"testing"
)

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

// SetBootID makes every store opened until t ends see id as the kernel's
// boot id ("" for unknown): a test plays a process killed while the machine
// stays up (same id before and after) or a machine that crashed (another
// id). Not for parallel tests.
func SetBootID(t testing.TB, id string) {
	t.Helper()
	old := bootID
	bootID = func() string { return id }
	t.Cleanup(func() { bootID = old })
}

// KernelBootID is the running kernel's boot id, "" if unknown.
func KernelBootID() string { return kernelBootID() }
