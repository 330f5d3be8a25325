package store_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/sseloop/sseloop/store"
)

// BenchmarkAppend measures one trigger: a single-event Append, cycling over
// 1,000 keys (each trimmed to MaxEvents once full).
func BenchmarkAppend(b *testing.B) {
	cases := []struct {
		name string
		path string
		sync store.SyncPolicy
	}{
		{"memory", ":memory:", store.SyncNever},
		{"file_never", "file", store.SyncNever},
		{"file_everysecond", "file", store.SyncEverySecond},
		{"file_always", "file", store.SyncAlways},
	}
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	data := []byte(`{"type":"update","id":12345,"fields":["a","b","c"]}`)
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			path := c.path
			if path == "file" {
				path = filepath.Join(b.TempDir(), "events.db")
			}
			s, err := store.OpenBunt(path, store.Options{Sync: c.sync, MaxEvents: 100})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			evs := make([]store.Event, 1)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			i := 0
			for b.Loop() {
				evs[0] = store.Event{Key: keys[i%len(keys)], Data: data}
				if err := s.Append(bg, evs); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// fillStore appends events round-robin over nkeys keys, in batches.
func fillStore(b *testing.B, s store.Store, nkeys, events int) {
	b.Helper()
	batch := make([]store.Event, 0, 1000)
	data := []byte(`{"n":1}`)
	for i := range events {
		batch = append(batch, store.Event{Key: fmt.Sprintf("user:%d", i%nkeys), Data: data})
		if len(batch) == cap(batch) || i == events-1 {
			if err := s.Append(bg, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// BenchmarkAfter measures one change-feed poll over a history of 100,000
// events spread over 1 to 100,000 keys, from a position with 0, 1 or 100
// events after it. Its cost must not depend on the number of keys.
func BenchmarkAfter(b *testing.B) {
	const history = 100_000
	for _, nkeys := range []int{1, 1000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", nkeys), func(b *testing.B) {
			s, err := store.OpenBunt(":memory:", store.Options{MaxEvents: history, SweepInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			fillStore(b, s, nkeys, history)
			last, err := s.LastID(bg)
			if err != nil {
				b.Fatal(err)
			}
			for _, fresh := range []int{0, 1, 100} {
				b.Run(fmt.Sprintf("new=%d", fresh), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						evs, err := s.After(bg, last-uint64(fresh), 1000)
						if err != nil || len(evs) != fresh {
							b.Fatalf("After = %d events, %v; want %d", len(evs), err, fresh)
						}
					}
				})
			}
		})
	}
}

// BenchmarkReplay measures a reconnect with Last-Event-ID: 100 events of 1 or
// 10 keys, from a store of 100 keys with 100 events each.
func BenchmarkReplay(b *testing.B) {
	s, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const nkeys, perKey = 100, 100
	fillStore(b, s, nkeys, nkeys*perKey)
	for _, n := range []int{1, 10} {
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("user:%d", i*7)
		}
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				evs, err := s.Replay(bg, keys, 0, 100)
				if err != nil || len(evs) != 100 {
					b.Fatalf("Replay = %d events, %v", len(evs), err)
				}
			}
		})
	}
}

// BenchmarkOpen measures opening a cleanly closed file of 100,000 events of
// 1,000 keys: buntdb reads the file, then every record is checked (checksums,
// and index, log and counts against each other).
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "events.db")
	opts := store.Options{Sync: store.SyncNever, MaxEvents: 1000, SweepInterval: -1}
	s, err := store.OpenBunt(path, opts)
	if err != nil {
		b.Fatal(err)
	}
	fillStore(b, s, 1000, 100_000)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, err := store.OpenBunt(path, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
