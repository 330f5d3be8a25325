package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sseloop/sseloop/store"
)

// quietOptions are testOptions that log nowhere: the damage tests open
// thousands of damaged files.
func quietOptions(sync store.SyncPolicy) store.Options {
	opts, _ := testOptions(sync)
	opts.Logger = slog.New(slog.DiscardHandler)
	return opts
}

// integrityFile writes 20 events of three keys, one transaction each, and
// returns the file's bytes, the events, and the offset where the last
// transaction starts. With crash, the file is read while the store is open,
// as a crash leaves it; otherwise after Close.
func integrityFile(t *testing.T, opts store.Options, crash bool) ([]byte, []store.Event, int, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.db")
	b := openBunt(t, path, opts)
	var all []store.Event
	lastTx := 0
	for i := range 20 {
		if i == 19 {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			lastTx = int(fi.Size())
		}
		ev := []store.Event{{Key: fmt.Sprint("k", i%3), Name: fmt.Sprint("n", i), Data: fmt.Appendf(nil, "ev%02d", i)}}
		if i%4 == 1 {
			// Mercure fields (in the name slot) and a PubID index entry.
			ev[0].Topics = []string{fmt.Sprint("t", i)}
			ev[0].Private = i%8 == 1
			ev[0].Retry = int64(i)
			ev[0].PubID = fmt.Sprint("urn:p", i)
		}
		if err := b.Append(bg, ev); err != nil {
			t.Fatal(err)
		}
		all = append(all, ev[0])
	}
	h, err := b.Head(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !crash {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data, all, lastTx, h.Epoch
}

// checkDelivery checks what a store opened on a damaged copy delivers: only
// events exactly as they were published (no changed payload, id or key), and
// for every event it does not deliver, a gap (Retention.Dropped) that covers
// it for its key, so no resuming client skips it silently. Ids go on past the
// old ones. It returns how many events were lost. mayVanish is an event a
// crash could take (the last transaction of a file not closed cleanly: a
// damaged length there reads as a record cut off by the crash), 0 for none.
func checkDelivery(t *testing.T, s store.Store, all []store.Event, mayVanish uint64, what string) int {
	t.Helper()
	got, err := s.After(bg, 0, 1<<20)
	if err != nil {
		t.Fatalf("%s: After: %v", what, err)
	}
	byID := make(map[uint64]store.Event, len(all))
	for _, w := range all {
		byID[w.ID] = w
	}
	delivered := make(map[uint64]bool)
	for _, g := range got {
		w, ok := byID[g.ID]
		if !ok {
			t.Fatalf("%s: delivered an event with unknown id %d: %+v", what, g.ID, g)
		}
		if g.Key != w.Key || g.Name != w.Name || !bytes.Equal(g.Data, w.Data) || g.Time != w.Time ||
			!slices.Equal(g.Topics, w.Topics) || g.Private != w.Private || g.Retry != w.Retry || g.PubID != w.PubID {
			t.Fatalf("%s: delivered event %d as %+v, published as %+v", what, g.ID, g, w)
		}
		delivered[g.ID] = true
	}
	// A PubID resolves to the event that has it, or (its index entry lost)
	// to nothing: never to another event.
	for _, w := range all {
		if w.PubID == "" {
			continue
		}
		id, ok, err := s.(store.IDResolver).ResolveID(bg, w.PubID)
		if err != nil {
			t.Fatalf("%s: ResolveID(%s): %v", what, w.PubID, err)
		}
		if ok != delivered[w.ID] || ok && id != w.ID {
			t.Fatalf("%s: ResolveID(%s) = %d, %v; want %d if delivered (%v), else nothing", what, w.PubID, id, ok, w.ID, delivered[w.ID])
		}
	}
	keys := []string{"k0", "k1", "k2"}
	ret, err := s.Retention(bg, keys)
	if err != nil {
		t.Fatalf("%s: Retention: %v", what, err)
	}
	lost := 0
	for _, w := range all {
		if delivered[w.ID] {
			continue
		}
		lost++
		i := int(w.Key[1] - '0')
		if ret[i].Dropped < w.ID && w.ID != mayVanish {
			t.Fatalf("%s: event %d of %s is gone without a gap: Retention = %+v", what, w.ID, w.Key, ret[i])
		}
	}
	for i, k := range keys {
		rep, err := s.Replay(bg, []string{k}, 0, 1<<20)
		if err != nil {
			t.Fatalf("%s: Replay(%s): %v", what, k, err)
		}
		var want []store.Event
		for _, g := range got {
			if g.Key == k {
				want = append(want, g)
			}
		}
		if fmt.Sprint(idsOf(rep)) != fmt.Sprint(idsOf(want)) {
			t.Fatalf("%s: Replay(%s) = %v, After has %v", what, k, idsOf(rep), idsOf(want))
		}
		if len(want) > 0 && ret[i].Oldest != want[0].ID {
			t.Fatalf("%s: Retention(%s).Oldest = %d, want %d", what, k, ret[i].Oldest, want[0].ID)
		}
	}
	next := []store.Event{{Key: "k0"}}
	if err := s.Append(bg, next); err != nil {
		t.Fatalf("%s: Append: %v", what, err)
	}
	if next[0].ID <= all[len(all)-1].ID {
		t.Fatalf("%s: new event got id %d, an id of the damaged file", what, next[0].ID)
	}
	return lost
}

// Every byte of a store file, changed in three ways one at a time: the store
// either refuses to open, naming the file and the offset, or opens unharmed
// (the change means the same, like "SET" for "set", or hits a record that a
// later one overwrote). With Repair, every refused file opens and delivers
// exactly the undamaged events, with a gap covering each lost one.
func TestBuntDetectsEveryDamagedByte(t *testing.T) {
	opts := quietOptions(store.SyncNever)
	// Every byte is checked without Repair; a repair copies and fsyncs the
	// file (tens of milliseconds), so only every repairStep-th byte is.
	step, repairStep := 1, 16
	if testing.Short() {
		step, repairStep = 7, 28
	}
	tests := []struct {
		name  string
		crash bool // a file not closed cleanly: only checksums guard it
		mask  byte
	}{
		{"clean_xor_0x01", false, 0x01},
		{"clean_xor_0x20", false, 0x20},
		{"clean_xor_0xff", false, 0xff},
		{"crash_xor_0x01", true, 0x01},
		{"crash_xor_0xff", true, 0xff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // mostly waiting for fsync
			good, all, lastTx, epoch := integrityFile(t, opts, tt.crash)
			dir := t.TempDir()
			path := filepath.Join(dir, "events.db")
			var refused, opened, repaired, lostTotal int
			for off := 0; off < len(good); off += step {
				what := fmt.Sprintf("byte %d ^ %#x", off, tt.mask)
				var mayVanish uint64
				if tt.crash && off >= lastTx {
					mayVanish = all[len(all)-1].ID
				}
				data := bytes.Clone(good)
				data[off] ^= tt.mask
				if err := os.WriteFile(path, data, 0o644); err != nil {
					t.Fatal(err)
				}
				s, err := store.OpenBunt(path, opts)
				if err == nil {
					opened++
					// A file not closed cleanly is rebuilt from its log at
					// open: a changed key can lose an event there, with a
					// gap (on Linux written and opened under one boot id,
					// so no blanket gap covers it: the loss must be found).
					if lost := checkDelivery(t, s, all, mayVanish, what); lost != 0 && !tt.crash {
						t.Fatalf("%s: opened without Repair and lost %d events", what, lost)
					}
					// The file keeps its incarnation.
					if h, err := s.Head(bg); err != nil || h.Epoch != epoch {
						t.Fatalf("%s: opened without Repair: Head = %+v, %v; want epoch %d", what, h, err, epoch)
					}
					// Every record it read passed its checksum: load let no
					// damaged one through.
					if n := s.CorruptRecords(); n != 0 {
						t.Fatalf("%s: opened without Repair, then %d records failed their checksum", what, n)
					}
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					cleanDir(t, dir)
					continue
				}
				refused++
				if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), path+": offset ") {
					t.Fatalf("%s: OpenBunt = %v, want ErrCorrupt naming the file and an offset", what, err)
				}
				if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
					t.Fatalf("%s: a refused open changed the file", what)
				}
				if off%repairStep != 0 {
					cleanDir(t, dir)
					continue
				}
				ropts := opts
				ropts.Repair = true
				s, err = store.OpenBunt(path, ropts)
				if err != nil {
					t.Fatalf("%s: OpenBunt with Repair = %v", what, err)
				}
				repaired++
				lostTotal += checkDelivery(t, s, all, mayVanish, what+" (repaired)")
				// A lost epoch may only go up: a resume from an earlier
				// incarnation must still be told of a gap.
				if h, err := s.Head(bg); err != nil || h.Epoch < epoch {
					t.Fatalf("%s (repaired): Head = %+v, %v; want epoch >= %d", what, h, err, epoch)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				// Repaired for good: the next open needs no repair.
				s, err = store.OpenBunt(path, opts)
				if err != nil {
					t.Fatalf("%s: open after repair: %v", what, err)
				}
				_ = s.Close()
				cleanDir(t, dir)
			}
			t.Logf("%d of %d bytes changed: %d opened unharmed, %d refused; %d repaired, %d events lost in all",
				(len(good)+step-1)/step, len(good), opened, refused, repaired, lostTotal)
			if repaired == 0 {
				t.Error("no damaged file was repaired")
			}
		})
	}
}

// cleanDir removes everything in dir: the file, its lock, repair copies.
func cleanDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
}
