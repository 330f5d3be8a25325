package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestProgressOnlyOnTerminal(t *testing.T) {
	// Why: "\r" progress redraws filled CI logs with hundreds of KB.
	var buf bytes.Buffer
	if progressWriter(false, &buf) != nil {
		t.Error("progress to a buffer without -progress")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if progressWriter(false, f) != nil {
		t.Error("progress to a regular file without -progress")
	}
	if progressWriter(true, &buf) == nil {
		t.Error("-progress did not force progress bars")
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		if progressWriter(false, tty) == nil {
			t.Error("no progress on a terminal")
		}
	}
}
