package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/sseloop/sseloop/store"
	"github.com/sseloop/sseloop/store/storetest"
)

var bg = context.Background()

func TestBuntContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T, opts store.Options) store.Store {
			return openBunt(t, ":memory:", opts)
		})
	})
	for _, sync := range []store.SyncPolicy{store.SyncNever, store.SyncEverySecond, store.SyncAlways} {
		t.Run("file_"+sync.String(), func(t *testing.T) {
			storetest.Run(t, func(t *testing.T, opts store.Options) store.Store {
				opts.Sync = sync
				return openBunt(t, filepath.Join(t.TempDir(), "events.db"), opts)
			})
		})
	}
}

// A memory store restarts empty, a file is deleted: new incarnations.
func TestBuntIncarnations(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		storetest.RunIncarnations(t, func(t *testing.T, opts store.Options) store.Store {
			return openBunt(t, ":memory:", opts)
		}, func(t *testing.T, st store.Store, opts store.Options) store.Store {
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			return openBunt(t, ":memory:", opts)
		})
	})
	t.Run("file_deleted", func(t *testing.T) {
		paths := map[store.Store]string{}
		storetest.RunIncarnations(t, func(t *testing.T, opts store.Options) store.Store {
			path := filepath.Join(t.TempDir(), "events.db")
			b := openBunt(t, path, opts)
			paths[b] = path
			return b
		}, func(t *testing.T, st store.Store, opts store.Options) store.Store {
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(paths[st]); err != nil {
				t.Fatal(err)
			}
			return openBunt(t, paths[st], opts)
		})
	})
}

func openBunt(t *testing.T, path string, opts store.Options) *store.Bunt {
	t.Helper()
	b, err := store.OpenBunt(path, opts)
	if err != nil {
		t.Fatalf("OpenBunt(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// testOptions uses a fake clock and no background sweeper.
func testOptions(sync store.SyncPolicy) (store.Options, *storetest.Clock) {
	clock := storetest.NewClock(storetest.Epoch)
	return store.Options{Sync: sync, Now: clock.Now, SweepInterval: -1}, clock
}

func mustAppend(t *testing.T, s store.Store, keys ...string) []store.Event {
	t.Helper()
	evs := make([]store.Event, len(keys))
	for i, k := range keys {
		evs[i] = store.Event{Key: k, Name: "n" + k, Data: fmt.Appendf(nil, "data %s %d\r\n\x00", k, i)}
	}
	if err := s.Append(bg, evs); err != nil {
		t.Fatalf("Append: %v", err)
	}
	return evs
}

func mustAfter(t *testing.T, s store.Store) []store.Event {
	t.Helper()
	evs, err := s.After(bg, 0, 1<<20)
	if err != nil {
		t.Fatalf("After: %v", err)
	}
	return evs
}

func mustReplay(t *testing.T, s store.Store, keys ...string) []store.Event {
	t.Helper()
	evs, err := s.Replay(bg, keys, 0, 1<<20)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return evs
}

func mustRetention(t *testing.T, s store.Store, keys ...string) []store.Retention {
	t.Helper()
	r, err := s.Retention(bg, keys)
	if err != nil {
		t.Fatalf("Retention: %v", err)
	}
	return r
}

func mustLastID(t *testing.T, s store.Store) uint64 {
	t.Helper()
	id, err := s.LastID(bg)
	if err != nil {
		t.Fatalf("LastID: %v", err)
	}
	return id
}

func sameEvents(t *testing.T, what string, got, want []store.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events %v, want %d", what, len(got), idsOf(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Key != w.Key || g.Name != w.Name || !bytes.Equal(g.Data, w.Data) || g.Time != w.Time {
			t.Fatalf("%s: event %d = %+v, want %+v", what, i, g, w)
		}
	}
}

func idsOf(evs []store.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func TestBuntReopen(t *testing.T) {
	for _, sync := range []store.SyncPolicy{store.SyncAlways, store.SyncEverySecond, store.SyncNever} {
		t.Run(sync.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.db")
			opts, _ := testOptions(sync)
			opts.MaxEvents = 3
			b := openBunt(t, path, opts)
			mustAppend(t, b, "a", "b", "a")
			mustAppend(t, b, "a", "a:b")
			mustAppend(t, b, "a")
			keys := []string{"a", "b", "a:b", "none"}
			all, ret, last := mustAfter(t, b), mustRetention(t, b, keys...), mustLastID(t, b)
			h, err := b.Head(bg)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			b = openBunt(t, path, opts)
			sameEvents(t, "After after reopen", mustAfter(t, b), all)
			if got := mustRetention(t, b, keys...); !slices.Equal(got, ret) {
				t.Errorf("Retention after reopen = %+v, want %+v", got, ret)
			}
			if got := mustLastID(t, b); got != last {
				t.Errorf("LastID after reopen = %d, want %d (a clean close skips no ids)", got, last)
			}
			next := mustAppend(t, b, "b")
			if next[0].ID != last+1 {
				t.Errorf("next id = %d, want %d", next[0].ID, last+1)
			}
			// The file keeps its incarnation: nothing was lost.
			if h2, err := b.Head(bg); err != nil || h2.Epoch != h.Epoch {
				t.Errorf("Head after reopen = %+v, %v; want epoch %d kept", h2, err, h.Epoch)
			}
		})
	}
}

// After every event expired and was swept, the log is empty, yet ids must not
// start over: a client holding an old id would take new events for old ones.
func TestBuntIDsSurviveExpiryAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	opts, clock := testOptions(store.SyncAlways)
	opts.TTL = time.Minute
	b := openBunt(t, path, opts)
	evs := mustAppend(t, b, "a", "b", "c")
	clock.Advance(2 * time.Minute)
	if n, err := b.Sweep(bg); err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want 3", n, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBunt(t, path, opts)
	if got := mustLastID(t, b); got < evs[2].ID {
		t.Errorf("LastID = %d, want >= %d", got, evs[2].ID)
	}
	if r := mustRetention(t, b, "a"); r[0].Oldest != 0 || r[0].Dropped < evs[0].ID {
		t.Errorf("Retention(a) = %+v, want a gap reported for id %d", r[0], evs[0].ID)
	}
	last := mustLastID(t, b)
	next := mustAppend(t, b, "a")
	if next[0].ID <= evs[2].ID || next[0].ID != last+1 {
		t.Errorf("id after reopen = %d, want above %d and LastID+1 = %d", next[0].ID, evs[2].ID, last+1)
	}
	if r := mustRetention(t, b, "a"); r[0].Oldest != next[0].ID || r[0].Dropped < evs[0].ID {
		t.Errorf("Retention(a) after a new event = %+v, want Oldest %d and the old gap kept", r[0], next[0].ID)
	}
}

// crashCopy reads the file of an open store, as a crash would leave it
// (buntdb writes each commit before returning, so nothing is buffered).
func crashCopy(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A crash during a write leaves the last record cut off, anywhere inside the
// last transaction. Every cut must open, keep the earlier events, and leave a
// consistent store. Under SyncAlways, and under SyncEverySecond when only the
// process died (a kill -9 can cut its write(2) short too: same boot id),
// only a key whose acknowledged event is gone reports a gap.
func TestBuntCutOffLastRecord(t *testing.T) {
	t.Run("always", func(t *testing.T) { testCutOffLastRecord(t, store.SyncAlways) })
	t.Run("everysecond_same_boot", func(t *testing.T) {
		store.SetBootID(t, "boot-a")
		testCutOffLastRecord(t, store.SyncEverySecond)
	})
}

func testCutOffLastRecord(t *testing.T, sync store.SyncPolicy) {
	opts, _ := testOptions(sync)
	opts.MaxEvents = 2
	live := filepath.Join(t.TempDir(), "live.db")
	b := openBunt(t, live, opts)
	kept := mustAppend(t, b, "a", "b")
	kept = append(kept, mustAppend(t, b, "a")...)
	before := len(crashCopy(t, live))
	last := mustAppend(t, b, "a", "c") // trims a's oldest, so it deletes as well as sets
	full := crashCopy(t, live)
	lastTx := len(full) - before

	for cut := 1; cut < lastTx; cut++ {
		t.Run(fmt.Sprintf("cut_%d", cut), func(t *testing.T) {
			path := writeFile(t, full[:len(full)-cut])
			s := openBunt(t, path, opts)
			got := mustAfter(t, s)
			// Of the events before the torn transaction, only a[0] may be gone:
			// the torn transaction's trim may have reached the disk.
			var want []store.Event
			for _, e := range kept {
				if slices.ContainsFunc(got, func(g store.Event) bool { return g.ID == e.ID }) || e.ID != kept[0].ID {
					want = append(want, e)
				}
			}
			for _, e := range last {
				if slices.ContainsFunc(got, func(g store.Event) bool { return g.ID == e.ID }) {
					want = append(want, e)
				}
			}
			sameEvents(t, "After", got, want)
			checkConsistent(t, s, got, "a", "b", "c")
			// An unclean shutdown that lost nothing acknowledged: a key whose
			// event is gone reports a gap from before it (the torn trim may
			// have lost its metadata update), and ids skip ahead.
			lastInFile := want[len(want)-1].ID
			ret := mustRetention(t, s, "a", "b", "c")
			for _, e := range kept {
				if slices.ContainsFunc(got, func(g store.Event) bool { return g.ID == e.ID }) {
					continue
				}
				i := slices.Index([]string{"a", "b", "c"}, e.Key)
				if ret[i].Dropped < e.ID {
					t.Errorf("acknowledged event %d of %s lost, Retention = %+v: want Dropped >= %d", e.ID, e.Key, ret[i], e.ID)
				}
			}
			if ret[1].Dropped >= kept[1].ID {
				t.Errorf("Retention(b) = %+v: a gap, though b lost nothing", ret[1])
			}
			if id := mustLastID(t, s); id != lastInFile+store.UncleanIDSkip {
				t.Errorf("LastID = %d, want %d", id, lastInFile+store.UncleanIDSkip)
			}
			next := mustAppend(t, s, "a")
			if next[0].ID != lastInFile+store.UncleanIDSkip+1 {
				t.Errorf("next id %d, want %d", next[0].ID, lastInFile+store.UncleanIDSkip+1)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			// Clean now: the next open repairs nothing and skips no ids.
			s = openBunt(t, path, opts)
			if id := mustLastID(t, s); id != next[0].ID {
				t.Errorf("LastID after clean reopen = %d, want %d", id, next[0].ID)
			}
		})
	}
}

// checkConsistent checks that Replay of each key returns exactly that key's
// events in all, and Retention.Oldest its first.
func checkConsistent(t *testing.T, s store.Store, all []store.Event, keys ...string) {
	t.Helper()
	for _, k := range keys {
		var want []store.Event
		for _, e := range all {
			if e.Key == k {
				want = append(want, e)
			}
		}
		sameEvents(t, "Replay("+k+")", mustReplay(t, s, k), want)
		r := mustRetention(t, s, k)[0]
		if len(want) > 0 && r.Oldest != want[0].ID || len(want) == 0 && r.Oldest != 0 {
			t.Errorf("Retention(%s).Oldest = %d", k, r.Oldest)
		}
	}
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

func TestBuntRejectsDamage(t *testing.T) {
	// A valid store file to damage.
	opts, _ := testOptions(store.SyncNever)
	src := filepath.Join(t.TempDir(), "src.db")
	b := openBunt(t, src, opts)
	for i := range 20 {
		mustAppend(t, b, fmt.Sprint("k", i%3))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// A record boundary near the middle.
	mid := bytes.Index(good[len(good)/2:], []byte("\r\n*")) + len(good)/2 + 2
	insert := func(bad string) (string, int) {
		return string(good[:mid]) + bad + string(good[mid:]), mid
	}
	valid := resp("set", "x", "y")
	tests := []struct {
		name string
		file func() (string, int) // contents, offset of the damage
	}{
		{"garbage_in_the_middle", func() (string, int) { return insert("garbage\r\n") }},
		{"unknown_command", func() (string, int) { return insert(resp("get", "x")) }},
		{"bad_array_header", func() (string, int) { return insert("*x\r\n") }},
		{"array_header_without_cr", func() (string, int) { return insert("*3\n") }},
		{"bulk_without_crlf", func() (string, int) { return insert("*2\r\n$3\r\ndelXX$1\r\nx\r\n") }},
		{"set_arity", func() (string, int) { return insert(resp("set", "x")) }},
		{"del_arity", func() (string, int) { return insert(resp("del", "x", "y")) }},
		{"bad_expiry", func() (string, int) { return insert(resp("set", "x", "y", "ex", "soon")) }},
		// buntdb itself panics on these (it reads three bytes of the name).
		{"short_command_name", func() (string, int) { return valid + resp("s") + valid, len(valid) }},
		{"empty_command_name", func() (string, int) { return valid + resp("") + valid, len(valid) }},
		// buntdb's int overflows; it could even allocate the result.
		{"number_overflow", func() (string, int) { return valid + "*1\r\n$99999999999999999999\r\n" + valid, len(valid) }},
		{"garbage_at_start", func() (string, int) { return "garbage\r\n" + string(good), 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, off := tt.file()
			path := writeFile(t, []byte(data))
			_, err := store.OpenBunt(path, opts)
			if err == nil {
				t.Fatal("OpenBunt succeeded on a damaged file")
			}
			if !errors.Is(err, store.ErrCorrupt) || !errors.Is(err, buntdb.ErrInvalid) {
				t.Errorf("error %v is not ErrCorrupt wrapping buntdb.ErrInvalid", err)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("offset %d:", off)) {
				t.Errorf("error %q does not name %s and offset %d", msg, path, off)
			}
			// A damaged file is left as it is, for the operator.
			if after, _ := os.ReadFile(path); string(after) != data {
				t.Error("OpenBunt modified a damaged file")
			}
		})
	}
}

func TestBuntFileStaysBoundedAfterShrink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	opts, _ := testOptions(store.SyncAlways)
	opts.MaxEvents = 5
	b := openBunt(t, path, opts)
	data := bytes.Repeat([]byte("x"), 200)
	for i := range 2000 {
		if err := b.Append(bg, []store.Event{{Key: fmt.Sprint("key", i%2), Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	grown := fileSize(t, path)
	if err := b.Shrink(); err != nil {
		t.Fatalf("Shrink: %v", err)
	}
	shrunk := fileSize(t, path)
	const bound = 8 << 10 // 10 live events of ~260 bytes, their index and metadata
	if shrunk > bound {
		t.Errorf("file is %d bytes after Shrink (was %d), want <= %d", shrunk, grown, bound)
	}
	if !store.SyncsCurrentFile(b) {
		t.Error("Bunt still fsyncs the file Shrink replaced")
	}
	all := mustAfter(t, b)
	more := mustAppend(t, b, "key0")
	all = append(all[1:], more...) // key0 trimmed its oldest
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBunt(t, path, opts)
	sameEvents(t, "after Shrink and reopen", mustAfter(t, b), all)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestParseSync(t *testing.T) {
	tests := []struct {
		in      string
		want    store.SyncPolicy
		wantErr bool
	}{
		{"always", store.SyncAlways, false},
		{"everysecond", store.SyncEverySecond, false},
		{"never", store.SyncNever, false},
		{"Always", store.SyncAlways, false},
		{"", 0, true},
		{"every_second", 0, true},
		{"sometimes", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := store.ParseSync(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseSync(%q) = %v, %v", tt.in, got, err)
			}
			if err != nil && !errors.Is(err, store.ErrBadSyncPolicy) {
				t.Errorf("error %v is not ErrBadSyncPolicy", err)
			}
			if err == nil && got.String() != strings.ToLower(tt.in) {
				t.Errorf("String() = %q", got.String())
			}
		})
	}
}

func TestOpen(t *testing.T) {
	tests := []struct {
		name    string
		cfg     store.Config
		wantErr error
	}{
		{"default", store.Config{}, nil},
		{"buntdb_memory", store.Config{Driver: "buntdb", Path: ":memory:"}, nil},
		{"buntdb_file", store.Config{Driver: "buntdb", Path: filepath.Join(t.TempDir(), "x.db")}, nil},
		{"unknown_driver", store.Config{Driver: "nosuch"}, store.ErrUnknownDriver},
		{"negative_max_events", store.Config{Options: store.Options{MaxEvents: -1}}, store.ErrBadOptions},
		{"unknown_sync", store.Config{Options: store.Options{Sync: 7}}, store.ErrBadOptions},
		{"directory", store.Config{Path: t.TempDir()}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := store.Open(tt.cfg)
			if tt.name == "directory" {
				if err == nil || !strings.Contains(err.Error(), tt.cfg.Path) {
					t.Fatalf("Open(directory) = %v, want an error naming it", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Open = %v, want %v", err, tt.wantErr)
			}
			if s != nil {
				if err := s.Ping(bg); err != nil {
					t.Errorf("Ping: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
}

// Two stores appending to one buntdb file would corrupt it: the second open
// fails until the first closes.
func TestBuntFileIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	opts, _ := testOptions(store.SyncNever)
	b := openBunt(t, path, opts)
	if _, err := store.OpenBunt(path, opts); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second OpenBunt: %v, want ErrLocked", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	openBunt(t, path, opts)
}
