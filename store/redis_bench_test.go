package store_test

import (
	"fmt"
	"testing"

	"github.com/sseloop/sseloop/internal/redistest"
	"github.com/sseloop/sseloop/store"
)

// BenchmarkRedisAppend is BenchmarkAppend on a local redis-server (no
// persistence): one trigger, a single-event Append cycling over 1,000 keys.
func BenchmarkRedisAppend(b *testing.B) {
	srv := redistest.Start(b)
	s := openRedis(b, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}, store.Options{MaxEvents: 100})
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	data := []byte(`{"type":"update","id":12345,"fields":["a","b","c"]}`)
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
}

// BenchmarkRedisAfter is BenchmarkAfter/keys=1000 on a local redis-server: one
// change-feed poll over a history of 100,000 events, with 0, 1 or 100 new.
func BenchmarkRedisAfter(b *testing.B) {
	const history = 100_000
	srv := redistest.Start(b)
	s := openRedis(b, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()},
		store.Options{MaxEvents: history, SweepInterval: -1})
	fillStore(b, s, 1000, history)
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
}
