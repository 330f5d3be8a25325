package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tidwall/buntdb"
)

func TestCheckAOF(t *testing.T) {
	set := resp("set", "k", "v")
	all := set + resp("del", "k") + resp("FLUSHDB")
	expiring := resp("set", "k", "v", "ae", "1700000000")
	tests := []struct {
		name     string
		in       string
		wantEnd  int
		wantTorn bool
		wantErr  bool
	}{
		{"empty", "", 0, false, false},
		{"one_set", set, len(set), false, false},
		{"set_del_flushdb", all, len(all), false, false},
		{"set_with_expiry", expiring, len(expiring), false, false},
		{"empty_command", set + "*0\r\n", len(set) + 4, false, false},
		{"nul_padding", set + "\x00\x00\x00", len(set) + 3, false, false},
		{"cut_in_header", set + "*3\r", len(set), true, false},
		{"cut_in_bulk", set + set[:len(set)-3], len(set), true, false},
		{"cut_before_crlf", set + set[:len(set)-2], len(set), true, false},
		{"declared_length_past_end", set + "*3\r\n$3\r\nset\r\n$99999\r\nab", len(set), true, false},
		{"garbage", set + "hello\r\n", len(set), false, true},
		{"bad_crlf", set + "*1\r\n$3\r\nsetXX", len(set), false, true},
		{"unknown_command", set + resp("get", "k"), len(set), false, true},
		{"short_name", set + resp("se"), len(set), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end, torn, err := checkAOF(bytes.NewReader([]byte(tt.in)))
			if (err != nil) != tt.wantErr || end != int64(tt.wantEnd) || torn != tt.wantTorn {
				t.Fatalf("checkAOF = %d, %v, %v; want %d, %v, error %v", end, torn, err, tt.wantEnd, tt.wantTorn, tt.wantErr)
			}
			var ae *aofError
			if err != nil && (!errors.As(err, &ae) || ae.off != int64(tt.wantEnd)) {
				t.Errorf("error %v does not give offset %d", err, tt.wantEnd)
			}
		})
	}
}

// FuzzCheckAOF checks checkAOF against buntdb's own loader: whatever checkAOF
// accepts (cut at the end it reports), buntdb must load without error or
// panic, since OpenBunt hands it to buntdb unchecked.
func FuzzCheckAOF(f *testing.F) {
	set := resp("set", "k", "v")
	for _, s := range []string{
		"", set, set + resp("del", "k"), set + resp("flushdb"), set + "*3\r",
		resp("set", "k", "v", "ex", "10"), set + "\x00\x00" + set, "*1\r\n$1\r\ns\r\n",
		"*2\r\n$3\r\ndel\r\n$99999999999999999999\r\n", set + "*-1\r\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<12 {
			return
		}
		end, torn, err := checkAOF(bytes.NewReader(data))
		if err != nil {
			var ae *aofError
			if !errors.As(err, &ae) || ae.off < 0 || ae.off > int64(len(data)) {
				t.Fatalf("checkAOF error %v", err)
			}
			return
		}
		if torn && end >= int64(len(data)) || !torn && end != int64(len(data)) {
			t.Fatalf("checkAOF = %d, %v for %d bytes", end, torn, len(data))
		}
		path := filepath.Join(dir, "fuzz.db")
		if err := os.WriteFile(path, data[:end], 0o644); err != nil {
			t.Fatal(err)
		}
		db, err := buntdb.Open(path)
		if err != nil {
			t.Fatalf("buntdb rejects what checkAOF accepts: %v", err)
		}
		_ = db.Close()
	})
}
