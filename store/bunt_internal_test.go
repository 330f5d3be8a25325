package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tidwall/buntdb"
)

// Tests that need the internals. The rest, and the contract suite, are in
// bunt_test.go (package store_test, since storetest imports store).

var bg = context.Background()

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func testOptions(sync SyncPolicy) Options {
	clock := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	return Options{Sync: sync, Now: clock.Now, SweepInterval: -1}
}

func openBunt(t *testing.T, path string, opts Options) *Bunt {
	t.Helper()
	b, err := OpenBunt(path, opts)
	if err != nil {
		t.Fatalf("OpenBunt(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func mustAppend(t *testing.T, s Store, keys ...string) []Event {
	t.Helper()
	evs := make([]Event, len(keys))
	for i, k := range keys {
		evs[i] = Event{Key: k, Data: fmt.Appendf(nil, "%s %d", k, i)}
	}
	if err := s.Append(bg, evs); err != nil {
		t.Fatalf("Append: %v", err)
	}
	return evs
}

func mustReplay(t *testing.T, s Store, keys ...string) []Event {
	t.Helper()
	evs, err := s.Replay(bg, keys, 0, 1<<20)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return evs
}

func mustRetention(t *testing.T, s Store, keys ...string) []Retention {
	t.Helper()
	r, err := s.Retention(bg, keys)
	if err != nil {
		t.Fatalf("Retention: %v", err)
	}
	return r
}

func mustLastID(t *testing.T, s Store) uint64 {
	t.Helper()
	id, err := s.LastID(bg)
	if err != nil {
		t.Fatalf("LastID: %v", err)
	}
	return id
}

func idsOf(evs []Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// writeCopy writes data to a new file, as a crash copy or a damaged file.
func writeCopy(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// resp encodes one command the way buntdb writes it.
func resp(parts ...string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "*%d\r\n", len(parts))
	for _, p := range parts {
		fmt.Fprintf(&sb, "$%d\r\n%s\r\n", len(p), p)
	}
	return sb.String()
}

// buntdb allocates a record's declared length before reading it, so a length
// damaged into "a terabyte" would exhaust memory at open. A declared length
// past the end of the file is a cut-off last record: it is cut off before
// buntdb reads the file.
func TestBuntHugeDeclaredLengthIsCutOff(t *testing.T) {
	valid := legacyEvent(1, "a", "x")
	path := writeCopy(t, []byte(valid+"*3\r\n$3\r\nset\r\n$999999999999\r\nabc"))
	opts := testOptions(SyncNever)
	opts.TTL = -1 // the event's time is 0
	b := openBunt(t, path, opts)
	evs, err := b.After(bg, 0, 10)
	if err != nil || len(evs) != 1 || string(evs[0].Data) != "x" {
		t.Errorf("After = %+v, %v; want the event before the cut", evs, err)
	}
}

// legacyEvent returns the records of one event as a version without
// checksums wrote them: log record, index entry, metadata.
func legacyEvent(id uint64, key, data string) string {
	return resp("set", logKey(id), string(appendEvent(nil, &Event{Key: key, Data: []byte(data)}))) +
		resp("set", indexKey(key, id), "") +
		resp("set", metaKey(key), string(binary.AppendUvarint(binary.AppendUvarint(nil, 1), 0)))
}

// Damage that buntdb's transactions alone cannot prevent (part of the last
// transaction lost in a crash) is repaired from the log at the next open.
func TestBuntRepairAfterUncleanShutdown(t *testing.T) {
	opts := testOptions(SyncAlways)
	b := openBunt(t, filepath.Join(t.TempDir(), "live.db"), opts)
	evs := mustAppend(t, b, "a", "a", "b", "c")
	// Lose a's second index entry and c's metadata, add an index entry whose
	// log record is gone, and miscount b.
	err := b.db.Update(func(tx *buntdb.Tx) error {
		for _, k := range []string{indexKey("a", evs[1].ID), metaKey("c")} {
			if _, err := tx.Delete(k); err != nil {
				return err
			}
		}
		if _, _, err := tx.Set(indexKey("b", 999), encodePrev(indexKey("b", 999), 0), nil); err != nil {
			return err
		}
		_, _, err := tx.Set(metaKey("b"), string(keyMeta{count: 7}.appendTo(nil, metaKey("b"))), nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	live, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	path := writeCopy(t, live)

	s := openBunt(t, path, opts)
	for _, k := range []string{"a", "b", "c"} {
		var want []uint64
		for _, e := range evs {
			if e.Key == k {
				want = append(want, e.ID)
			}
		}
		if got := idsOf(mustReplay(t, s, k)); !slices.Equal(got, want) {
			t.Errorf("Replay(%s) = %v, want %v", k, got, want)
		}
		if r := mustRetention(t, s, k)[0]; r.Oldest != want[0] {
			t.Errorf("Retention(%s).Oldest = %d, want %d", k, r.Oldest, want[0])
		}
	}
	// SyncAlways: only b, whose count shows a loss, reports a gap; a lost
	// nothing (its index entry is rebuilt), c only its metadata.
	last := evs[len(evs)-1].ID
	for i, r := range mustRetention(t, s, "a", "b", "c", "never") {
		if i == 1 {
			if r.Dropped < last {
				t.Errorf("Retention(b) = %+v, want Dropped >= %d", r, last)
			}
		} else if r.Dropped >= evs[0].ID {
			t.Errorf("Retention[%d] = %+v, want Dropped < %d (nothing lost)", i, r, evs[0].ID)
		}
	}
	if id := mustLastID(t, s); id != last+uncleanIDSkip {
		t.Errorf("LastID = %d, want %d", id, last+uncleanIDSkip)
	}
	// Counts are right again: MaxEvents trims b at the right moment.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	opts.MaxEvents = 2
	s = openBunt(t, path, opts)
	more := mustAppend(t, s, "b")
	if got := mustReplay(t, s, "b"); len(got) != 2 || got[0].ID != evs[2].ID || got[1].ID != more[0].ID {
		t.Errorf("Replay(b) = %v, want [%d %d]", idsOf(got), evs[2].ID, more[0].ID)
	}
}

// After an fsync failure the kernel may have dropped the unsynced pages, so a
// later fsync can succeed without them: the store must keep failing instead.
func TestBuntSyncFailureIsSticky(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	opts := testOptions(SyncAlways)
	b, err := OpenBunt(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	last := mustAppend(t, b, "a")[0].ID
	b.fmu.Lock()
	_ = b.syncf.Close() // every fsync through it now fails
	b.fmu.Unlock()
	if err := b.Append(bg, []Event{{Key: "a"}}); !errors.Is(err, ErrSync) {
		t.Fatalf("Append with failing fsync: %v, want ErrSync", err)
	}
	if err := b.Append(bg, []Event{{Key: "a"}}); !errors.Is(err, ErrSync) {
		t.Errorf("Append after a failed fsync: %v, want ErrSync", err)
	}
	if err := b.Ping(bg); !errors.Is(err, ErrSync) {
		t.Errorf("Ping after a failed fsync: %v, want ErrSync", err)
	}
	if err := b.Close(); err == nil {
		t.Error("Close after a failed fsync succeeded")
	}
	// Not marked clean: the next open repairs and skips ids.
	b = openBunt(t, path, opts)
	if id := mustLastID(t, b); id < last+uncleanIDSkip {
		t.Errorf("LastID = %d, want a skip past %d", id, last+uncleanIDSkip)
	}
}

// The background goroutine sweeps on its own; testing/synctest runs its
// ticker (and buntdb's) on a fake clock.
func TestBuntBackgroundSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := OpenBunt(":memory:", Options{TTL: time.Minute, SweepInterval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		mustAppend(t, b, "a", "b")
		time.Sleep(time.Minute + 2*time.Second)
		synctest.Wait()
		var n int
		if err := b.db.View(func(tx *buntdb.Tx) error {
			return tx.AscendRange("", logFirst, logEnd, func(string, string) bool { n++; return true })
		}); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d log records left after the sweeper's tick", n)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // let buntdb's own goroutine notice the close
	})
}

// Records that are valid RESP but not valid sseloop data fail the open with
// ErrCorrupt naming the file, instead of surfacing later as wrong events.
func TestBuntRejectsBadRecords(t *testing.T) {
	tests := []struct {
		name string
		file string
	}{
		{"bad_newest_log_record", resp("set", logKey(1), "\xff")},
		{"bad_last_record", resp("set", keyLast, "\xff")},
		{"bad_floor_record", resp("set", keyFloor, "12345")},
		{"bad_boot_record", resp("set", keyBoot, sealString(keyBoot, []byte("two\nlines")))},
		{"boot_record_bad_checksum", resp("set", keyBoot, sealString(keySync, []byte("boot-a")))},
		{"empty_key", resp("set", "", "x")},
		{"unknown_key", resp("set", "x", "y")},
		{"sealed_value_bad_checksum", resp("set", keyFloor, sealString(keyLast, []byte{1}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeCopy(t, []byte(tt.file))
			_, err := OpenBunt(path, testOptions(SyncNever))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(fmt.Sprint(err), path) {
				t.Fatalf("OpenBunt = %v, want ErrCorrupt naming %s", err, path)
			}
		})
	}
	// A damaged record that is not the newest is found at open too, with its
	// offset and id.
	path := writeCopy(t, []byte(resp("set", logKey(1), "\xff")+
		resp("set", logKey(2), string(appendEvent(nil, &Event{Key: "a"})))+
		resp("set", keyClean, "")))
	_, err := OpenBunt(path, testOptions(SyncNever))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(fmt.Sprint(err), "offset 0: log record of event 1") {
		t.Errorf("OpenBunt = %v, want ErrCorrupt naming offset 0 and event 1", err)
	}
}
