package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxFramingCuts bounds how many damaged spans repairFraming cuts out of one
// file: a file damaged in more places than this is not worth guessing at.
const maxFramingCuts = 1000

// repairFraming runs with Options.Repair on a file whose framing is damaged
// (buntdb could not read past the damage). It copies the file (backup), then
// cuts out each damaged span: from the start of the record where the damage
// is found to the next offset from which the rest of the file reads as
// records, and replaces the file atomically (write, fsync, rename, fsync the
// directory). The records that remain are then checked like any other (a
// span may end inside a value and bring in a record that is not one: it
// fails its checksum and is dropped).
//
// What the cut spans held is unknown, events of any key and id among them,
// so load treats the file as not closed cleanly and reports a gap to every
// client resuming from before the first id handed out after the repair.
func (b *Bunt) repairFraming(f *os.File) error {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return fmt.Errorf("store: read %s: %w", b.path, err)
	}
	if _, err := b.backup(); err != nil {
		return err
	}
	var cuts []string
	for {
		end, torn, err := scanAOF(bytes.NewReader(data), nil)
		var ae *aofError
		switch {
		case errors.As(err, &ae):
		case err != nil:
			return fmt.Errorf("store: read %s: %w", b.path, err)
		case torn && endsClean(data):
			ae = &aofError{off: end, reason: "record runs past the end of a file that was closed cleanly"}
		default:
			// Sound, perhaps with a cut-off last record: buntdb drops that.
			if len(cuts) == 0 {
				return nil
			}
			b.framingCut = true
			b.opts.Logger.Warn("store: cut damaged bytes out of the file", "path", b.path, "copy", b.backupPath,
				"cuts", strings.Join(cuts, "; "))
			return b.replaceFile(data)
		}
		if len(cuts) == maxFramingCuts {
			return fmt.Errorf("%w: %s: damaged in more than %d places; not repaired", ErrCorrupt, b.path, maxFramingCuts)
		}
		resume := resync(data, ae.off)
		cuts = append(cuts, fmt.Sprintf("bytes %d-%d (%s)", ae.off, resume, ae.reason))
		data = append(data[:ae.off:ae.off], data[resume:]...)
	}
}

// resync returns the first offset after off where a record starts (after a
// CRLF) from which the rest of data reads without damage, or at least one
// record before more damage; len(data) if there is none.
func resync(data []byte, off int64) int {
	for i := int(off) + 1; i < len(data); i++ {
		if data[i] != '*' || data[i-1] != '\n' || data[i-2] != '\r' {
			continue
		}
		// Sound to the end, or at least one record before more damage
		// (which the next cut handles).
		_, torn, err := scanAOF(bytes.NewReader(data[i:]), nil)
		var ae *aofError
		if err == nil && !(torn && endsClean(data)) || errors.As(err, &ae) && ae.off > 0 {
			return i
		}
	}
	return len(data)
}

// endsClean reports whether data ends with cleanRecord (and NUL bytes).
func endsClean(data []byte) bool {
	return bytes.HasSuffix(bytes.TrimRight(data, "\x00"), []byte(cleanRecord))
}

// replaceFile replaces the file with data, atomically and durably.
func (b *Bunt) replaceFile(data []byte) error {
	tmp := b.path + ".repair-tmp"
	err := os.WriteFile(tmp, data, 0o644)
	if err == nil {
		var f *os.File
		if f, err = os.OpenFile(tmp, os.O_RDWR, 0); err == nil {
			err = f.Sync()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err == nil {
		err = os.Rename(tmp, b.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(b.path))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("store: repair %s: %w", b.path, err)
	}
	return nil
}
