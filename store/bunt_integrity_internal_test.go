package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

// smallIDOptions are testOptions with a clock at the Unix epoch: ids start
// at 1 (see idBase), so the tests below can name events by their ids.
func smallIDOptions(sync SyncPolicy) Options {
	opts := testOptions(sync)
	opts.Now = (&fakeClock{t: time.UnixMilli(0)}).Now
	return opts
}

// logTo returns smallIDOptions logging to buf.
func logTo(buf *bytes.Buffer) Options {
	opts := smallIDOptions(SyncNever)
	opts.Logger = slog.New(slog.NewTextHandler(buf, nil))
	return opts
}

// A file written before checksums (built here with that version's encoding:
// values are bare bodies, no n:crc) still opens, with every event; it is
// sealed on the way, so the warning is logged once, not at every open.
func TestBuntOpensFileWithoutChecksums(t *testing.T) {
	now := smallIDOptions(SyncNever).Now().UnixMilli()
	legacyMeta := func(count, dropped uint64) string {
		return string(binary.AppendUvarint(binary.AppendUvarint(nil, count), dropped))
	}
	var file strings.Builder
	var want []Event
	for i := range 6 {
		ev := Event{ID: uint64(i + 1), Key: fmt.Sprint("k", i%2), Name: "n", Data: fmt.Appendf(nil, "old %d", i), Time: now}
		want = append(want, ev)
		file.WriteString(resp("set", logKey(ev.ID), string(appendEvent(nil, &ev))))
		file.WriteString(resp("set", indexKey(ev.Key, ev.ID), ""))
		file.WriteString(resp("set", metaKey(ev.Key), legacyMeta(uint64(i/2+1), 0)))
	}
	file.WriteString(resp("set", keyFloor, "\x00"))
	file.WriteString(resp("set", keyClean, ""))
	path := writeCopy(t, []byte(file.String()))

	var logs bytes.Buffer
	for range 2 {
		b, err := OpenBunt(path, logTo(&logs))
		if err != nil {
			t.Fatalf("OpenBunt: %v", err)
		}
		got, err := b.After(bg, 0, 100)
		if err != nil || len(got) != len(want) {
			t.Fatalf("After = %v, %v; want %d events", idsOf(got), err, len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.ID != w.ID || g.Key != w.Key || g.Name != w.Name || !bytes.Equal(g.Data, w.Data) || g.Time != w.Time {
				t.Fatalf("event %d = %+v, want %+v", i, g, w)
			}
		}
		if r := mustRetention(t, b, "k0", "k1"); r[0].Dropped != 0 || r[1].Dropped != 0 {
			t.Errorf("Retention = %+v, want no gap", r)
		}
		if id := mustLastID(t, b); id != 6 {
			t.Errorf("LastID = %d, want 6 (a clean file skips no ids)", id)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "records without checksums"); n != 1 {
		t.Errorf("logged %d times about records without checksums, want once:\n%s", n, logs.String())
	}
	// Every value it decodes is sealed now.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b := openBunt(t, writeCopy(t, data), smallIDOptions(SyncNever))
	if err := b.db.View(func(tx *buntdb.Tx) error {
		return tx.Ascend("", func(k, v string) bool {
			if k[0] != prefixIndex && k != keyClean && !isSealed(v) {
				t.Errorf("record %q is not sealed", k)
			}
			return true
		})
	}); err != nil {
		t.Fatal(err)
	}
}

// One changed byte of one event's data: open refuses, naming the file, the
// offset of the record and the event; Repair keeps a copy, drops that event
// only, and reports the gap for its key only.
func TestBuntRepairDropsDamagedEvent(t *testing.T) {
	opts := smallIDOptions(SyncNever)
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
	// Event 12 is the 12th append: key k2, data "k2 0".
	rec := resp("set", logKey(12), "")
	start := bytes.Index(good, []byte(rec[:len(rec)-len("$0\r\n\r\n")]))
	if start < 0 {
		t.Fatal("record of event 12 not found")
	}
	at := start + bytes.Index(good[start:], []byte("k2 0")) + 3
	damaged := bytes.Clone(good)
	damaged[at] = '9' // "k2 0" -> "k2 9"
	path := writeCopy(t, damaged)

	_, err = OpenBunt(path, opts)
	want := fmt.Sprintf("%s: offset %d: log record of event 12: checksum mismatch", path, start)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(fmt.Sprint(err), want) || !strings.Contains(fmt.Sprint(err), "--store.repair") {
		t.Fatalf("OpenBunt = %v, want ErrCorrupt containing %q and the way out", err, want)
	}

	var logs bytes.Buffer
	ropts := logTo(&logs)
	ropts.Repair = true
	s := openBunt(t, path, ropts)
	if n := s.CorruptRecords(); n != 1 {
		t.Errorf("CorruptRecords = %d, want 1", n)
	}
	if !strings.Contains(logs.String(), "repaired a damaged file") {
		t.Errorf("repair not logged:\n%s", logs.String())
	}
	copyPath := fmt.Sprintf("%s.damaged-%d", path, opts.Now().Unix())
	if kept, err := os.ReadFile(copyPath); err != nil || !bytes.Equal(kept, damaged) {
		t.Errorf("copy of the damaged file: %v (same bytes: %v)", err, bytes.Equal(kept, damaged))
	}
	got := idsOf(mustReplay(t, s, "k2"))
	if fmt.Sprint(got) != "[3 6 9 15 18]" {
		t.Errorf("Replay(k2) = %v, want event 12 gone", got)
	}
	r := mustRetention(t, s, "k0", "k1", "k2")
	if r[2].Dropped < 12 || r[2].Dropped >= 15 {
		t.Errorf("Retention(k2) = %+v, want Dropped in [12, 15)", r[2])
	}
	if r[0].Dropped != 0 || r[1].Dropped != 0 {
		t.Errorf("Retention(k0, k1) = %+v, want no gap for keys that lost nothing", r[:2])
	}
}

// A record that fails its checksum after open (memory damage: load checked
// the file) is never delivered: reads skip it, count it once, log it once,
// and every key reports it dropped, so resuming across it gives a gap.
func TestBuntSkipsRecordDamagedAfterOpen(t *testing.T) {
	var logs bytes.Buffer
	b := openBunt(t, ":memory:", logTo(&logs))
	mustAppend(t, b, "a", "b", "a")
	err := b.db.Update(func(tx *buntdb.Tx) error {
		v, err := tx.Get(logKey(2))
		if err != nil {
			return err
		}
		bad := []byte(v)
		bad[len(bad)-1] ^= 1
		_, _, err = tx.Set(logKey(2), string(bad), nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		evs, err := b.After(bg, 0, 10)
		if err != nil || fmt.Sprint(idsOf(evs)) != "[1 3]" {
			t.Fatalf("After = %v, %v; want [1 3]", idsOf(evs), err)
		}
		if got := idsOf(mustReplay(t, b, "a", "b")); fmt.Sprint(got) != "[1 3]" {
			t.Fatalf("Replay = %v, want [1 3]", got)
		}
	}
	if n := b.CorruptRecords(); n != 1 {
		t.Errorf("CorruptRecords = %d, want 1 (one record, read many times)", n)
	}
	if n := strings.Count(logs.String(), "failed its checksum"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	for _, r := range mustRetention(t, b, "a", "b", "never") {
		if r.Dropped < 2 {
			t.Errorf("Retention = %+v, want Dropped >= 2", r)
		}
	}
}

// BenchmarkChecksum measures what sealing costs one event on Append and
// what checking it costs one event on a read, by data size.
func BenchmarkChecksum(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		ev := Event{Key: "user:12345", Name: "update", Data: bytes.Repeat([]byte("x"), size), Time: 1735787045000}
		lk := logKey(12345)
		b.Run(fmt.Sprintf("seal/data=%d", size), func(b *testing.B) {
			buf := make([]byte, 0, size+64)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				buf = appendEvent(appendSealHeader(buf[:0]), &ev)
				sealValue(lk, buf)
			}
		})
		v := string(appendEvent(appendSealHeader(nil), &ev))
		v = sealString(lk, []byte(v[sealHeader:]))
		b.Run(fmt.Sprintf("unseal/data=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, ok := unseal(lk, v); !ok {
					b.Fatal("checksum mismatch")
				}
			}
		})
	}
}

// Damaged framing with Repair: the damaged bytes are cut out. Here they
// replace a whole transaction (event 18, the last of k2, with its index entry
// and metadata), so nothing left in the file shows the loss but a missing
// id: every key reports a gap, even though the kernel that wrote the file
// still runs (same boot id: a crash of the process alone loses nothing, a cut
// does).
func TestBuntRepairCutsDamagedFraming(t *testing.T) {
	SetBootID(t, "boot-a")
	opts := smallIDOptions(SyncNever)
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
	recStart := func(id uint64) int {
		rec := resp("set", logKey(id), "")
		i := bytes.Index(good, []byte(rec[:len(rec)-len("$0\r\n\r\n")]))
		if i < 0 {
			t.Fatalf("record of event %d not found", id)
		}
		return i
	}
	from, to := recStart(18), recStart(19)
	damaged := slices.Concat(good[:from], []byte("garbage\r\n"), good[to:])
	path := writeCopy(t, damaged)

	_, err = OpenBunt(path, opts)
	if want := fmt.Sprintf("offset %d:", from); !errors.Is(err, ErrCorrupt) || !strings.Contains(fmt.Sprint(err), want) {
		t.Fatalf("OpenBunt = %v, want ErrCorrupt at %s", err, want)
	}
	ropts := opts
	ropts.Repair = true
	s := openBunt(t, path, ropts)
	evs, err := s.After(bg, 0, 100)
	if err != nil || len(evs) != 19 || slices.Contains(idsOf(evs), 18) {
		t.Fatalf("After = %v, %v; want every event but 18", idsOf(evs), err)
	}
	for i, r := range mustRetention(t, s, "k0", "k1", "k2", "never") {
		if r.Dropped < 20 {
			t.Errorf("Retention[%d] = %+v, want a gap for any resume from before the repair", i, r)
		}
	}
	if kept, err := os.ReadFile(fmt.Sprintf("%s.damaged-%d", path, opts.Now().Unix())); err != nil || !bytes.Equal(kept, damaged) {
		t.Errorf("copy of the damaged file: %v", err)
	}
	next := mustAppend(t, s, "k0")
	if next[0].ID <= 20 {
		t.Errorf("new event got id %d, an id the damaged file may have held", next[0].ID)
	}
}

// The second case: one byte of a log record's id changed (event 11
// stored as event 75). Before checksums, event 11 was silently gone. Now open
// refuses; repair drops the record and reports the gap for its key only
// (the index entry left without its event names it), and no id is reused.
func TestBuntDamagedIDIsNotASilentHole(t *testing.T) {
	opts := smallIDOptions(SyncNever)
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
	key := "$9\r\n" + logKey(11) + "\r\n"
	at := bytes.Index(good, []byte(key))
	if at < 0 || bytes.Count(good, []byte(key)) != 1 {
		t.Fatal("log key of event 11 not found once")
	}
	damaged := bytes.Clone(good)
	damaged[at+len(key)-3] = 75 // the id's last byte: 11 -> 75
	path := writeCopy(t, damaged)

	_, err = OpenBunt(path, opts)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(fmt.Sprint(err), "log record of event 75: checksum mismatch") {
		t.Fatalf("OpenBunt = %v, want ErrCorrupt naming the record stored as event 75", err)
	}
	ropts := opts
	ropts.Repair = true
	s := openBunt(t, path, ropts)
	got, err := s.Replay(bg, []string{"k1"}, 9, 100)
	if err != nil || fmt.Sprint(idsOf(got)) != "[14 17 20]" {
		t.Fatalf("Replay(k1, after 9) = %v, %v; want [14 17 20]", idsOf(got), err)
	}
	r := mustRetention(t, s, "k0", "k1", "k2")
	if r[1].Dropped != 11 {
		t.Errorf("Retention(k1).Dropped = %d, want 11", r[1].Dropped)
	}
	if r[0].Dropped != 0 || r[2].Dropped != 0 {
		t.Errorf("Retention(k0, k2) = %+v, want no gap for keys that lost nothing", r)
	}
	if next := mustAppend(t, s, "k1"); next[0].ID <= 75 {
		t.Errorf("new event got id %d, want past the damaged id 75", next[0].ID)
	}
}

// A file as the sseloop before checksums but with incarnations and Mercure
// fields wrote it (no seals: n:epoch, n:sync, index entries holding the
// previous id, a PubID index entry, an event with Mercure fields), left by
// a crash under SyncAlways: it opens, keeps its epoch, delivers everything,
// reports only the gap its index entries record (nothing else was lost),
// resolves the PubID, and is sealed on the way.
func TestBuntOpensIncarnationFileWithoutChecksums(t *testing.T) {
	opts := testOptions(SyncAlways)
	epoch := uint64(opts.Now().UnixMilli()) * 1000
	now := opts.Now().UnixMilli()
	uv := func(xs ...uint64) string {
		var b []byte
		for _, x := range xs {
			b = binary.AppendUvarint(b, x)
		}
		return string(b)
	}
	evs := []Event{
		{ID: epoch, Key: "a", Name: "n", Data: []byte("a0"), Time: now},
		{ID: epoch + 1, Key: "a", Name: "n", Data: []byte("a1"), Time: now},
		{ID: epoch + 2, Key: "b", Name: "m", Data: []byte("b0"), Time: now,
			Topics: []string{"urn:t"}, Private: true, Retry: 7, PubID: "urn:x"},
	}
	var file strings.Builder
	file.WriteString(resp("set", keyEpoch, uv(epoch)))
	file.WriteString(resp("set", keySync, "always"))
	prev := map[uint64]uint64{evs[0].ID: epoch - 1, evs[1].ID: evs[0].ID, evs[2].ID: 0} // a's event before epoch was trimmed
	for i := range evs {
		ev := &evs[i]
		file.WriteString(resp("set", logKey(ev.ID), string(appendEvent(nil, ev))))
		file.WriteString(resp("set", indexKey(ev.Key, ev.ID), uv(prev[ev.ID])))
	}
	file.WriteString(resp("set", pubKeyBunt("urn:x"), uv(evs[2].ID)))
	// A crash lost a's metadata update of the trim: dropped still 0.
	file.WriteString(resp("set", metaKey("a"), uv(2, 0, evs[1].ID)))
	file.WriteString(resp("set", metaKey("b"), uv(1, 0, evs[2].ID)))
	path := writeCopy(t, []byte(file.String()))

	b := openBunt(t, path, opts)
	got, err := b.After(bg, 0, 10)
	if err != nil || len(got) != len(evs) {
		t.Fatalf("After = %v, %v; want %d events", idsOf(got), err, len(evs))
	}
	for i, g := range got {
		w := evs[i]
		if g.ID != w.ID || g.Key != w.Key || g.Name != w.Name || !bytes.Equal(g.Data, w.Data) ||
			!slices.Equal(g.Topics, w.Topics) || g.Private != w.Private || g.Retry != w.Retry || g.PubID != w.PubID {
			t.Errorf("event %d = %+v, want %+v", i, g, w)
		}
	}
	if h, err := b.Head(bg); err != nil || h.Epoch != epoch {
		t.Errorf("Head = %+v, %v; want epoch %d kept", h, err, epoch)
	}
	r := mustRetention(t, b, "a", "b", "never")
	if r[0].Dropped != epoch-1 || r[1].Dropped != 0 || r[2].Dropped != 0 {
		t.Errorf("Retention = %+v; want a gap before %d for a only (SyncAlways: nothing else lost)", r, evs[0].ID)
	}
	if id, ok, err := b.ResolveID(bg, "urn:x"); err != nil || !ok || id != evs[2].ID {
		t.Errorf("ResolveID = %d, %v, %v; want %d", id, ok, err, evs[2].ID)
	}
	if err := b.db.View(func(tx *buntdb.Tx) error {
		return tx.Ascend("", func(k, v string) bool {
			if k != keyClean && !isSealed(v) {
				t.Errorf("record %s is not sealed", describeRecord(k))
			}
			return true
		})
	}); err != nil {
		t.Fatal(err)
	}
	if n := b.CorruptRecords(); n != 0 {
		t.Errorf("CorruptRecords = %d, want 0", n)
	}
}

// A crash under SyncAlways and one damaged event, repaired: only the key of
// that event reports a gap (covering it, not more than its next event);
// keys and never-seen keys that lost nothing report none, as after a crash
// without damage.
func TestBuntRepairAfterCrashUnderSyncAlways(t *testing.T) {
	opts := smallIDOptions(SyncAlways)
	b := openBunt(t, filepath.Join(t.TempDir(), "live.db"), opts)
	for i := range 20 {
		mustAppend(t, b, fmt.Sprint("k", i%3))
	}
	live, err := os.ReadFile(b.path) // as a crash leaves it: no n:clean
	if err != nil {
		t.Fatal(err)
	}
	// Event 12 is the 12th append: key k2, data "k2 0".
	rec := resp("set", logKey(12), "")
	start := bytes.Index(live, []byte(rec[:len(rec)-len("$0\r\n\r\n")]))
	if start < 0 {
		t.Fatal("record of event 12 not found")
	}
	at := start + bytes.Index(live[start:], []byte("k2 0")) + 3
	live[at] ^= 1
	path := writeCopy(t, live)
	if _, err := OpenBunt(path, opts); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "log record of event 12") {
		t.Fatalf("OpenBunt = %v, want ErrCorrupt naming event 12", err)
	}
	ropts := opts
	ropts.Repair = true
	s := openBunt(t, path, ropts)
	if got := idsOf(mustReplay(t, s, "k2")); fmt.Sprint(got) != "[3 6 9 15 18]" {
		t.Errorf("Replay(k2) = %v, want event 12 gone", got)
	}
	r := mustRetention(t, s, "k0", "k1", "k2", "never")
	if r[2].Dropped < 12 || r[2].Dropped >= 15 {
		t.Errorf("Retention(k2) = %+v, want Dropped in [12, 15)", r[2])
	}
	if r[0].Dropped != 0 || r[1].Dropped != 0 || r[3].Dropped != 0 {
		t.Errorf("Retention(k0, k1, never) = %+v, want no gap: SyncAlways lost nothing acknowledged", r)
	}
	if next := mustAppend(t, s, "k0"); next[0].ID <= 20+uncleanIDSkip-1 {
		t.Errorf("new event got id %d, want past the skip", next[0].ID)
	}
}

// A damaged n:boot record is refused like any other; Repair drops it, which
// loses no event, so a file that was closed cleanly reports no gap. A file
// that was not closed cleanly then cannot tell a killed process from a
// crashed machine: under SyncEverySecond every key reports a gap.
func TestBuntRepairDamagedBootRecord(t *testing.T) {
	tests := []struct {
		name    string
		sync    SyncPolicy
		crash   bool
		wantGap bool
	}{
		{"always_closed_cleanly", SyncAlways, false, false},
		{"everysecond_closed_cleanly", SyncEverySecond, false, false},
		{"everysecond_crashed", SyncEverySecond, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			SetBootID(t, "boot-a")
			opts := smallIDOptions(tt.sync)
			b := openBunt(t, filepath.Join(t.TempDir(), "src.db"), opts)
			for i := range 6 {
				mustAppend(t, b, fmt.Sprint("k", i%3))
			}
			if !tt.crash {
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(b.path)
			if err != nil {
				t.Fatal(err)
			}
			// The same boot id, one letter changed: sound framing, bad checksum.
			at := bytes.LastIndex(data, []byte("boot-a"))
			if at < 0 {
				t.Fatal("n:boot not found in the file")
			}
			data[at+5] = 'b'
			path := writeCopy(t, data)
			if _, err := OpenBunt(path, opts); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "record n:boot") {
				t.Fatalf("OpenBunt = %v, want ErrCorrupt naming record n:boot", err)
			}
			ropts := opts
			ropts.Repair = true
			s := openBunt(t, path, ropts)
			if got := mustReplay(t, s, "k0", "k1", "k2"); len(got) != 6 {
				t.Errorf("Replay = %v, want the 6 events", idsOf(got))
			}
			for i, r := range mustRetention(t, s, "k0", "k1", "k2", "never") {
				if gap := r.Dropped != 0; gap != tt.wantGap {
					t.Errorf("Retention[%d] = %+v, want a gap: %v", i, r, tt.wantGap)
				}
			}
		})
	}
}
