package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/sseloop/sseloop/store"
)

// inlineLoop is a gnet.EventLoop that runs tasks at once on the caller, so a
// benchmark measures the ticker's own work without a network.
type inlineLoop struct{}

func (inlineLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (inlineLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (inlineLoop) Execute(ctx context.Context, r gnet.Runnable) error { return r.Run(ctx) }
func (inlineLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error {
	return nil
}
func (inlineLoop) Close(gnet.Conn) error { return nil }

// BenchmarkTick measures one ticker pass (one change-feed read, encoding and
// fan-out hand-off to two loops) with many watched keys and 0, 1 or 100 new
// events. Its cost must grow with new events only, never with watched keys.
func BenchmarkTick(b *testing.B) {
	for _, keys := range []int{1, 1000, 100000} {
		for _, fresh := range []int{0, 1, 100} {
			b.Run(fmt.Sprintf("keys=%d/new=%d", keys, fresh), func(b *testing.B) {
				st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				cfg := DefaultConfig()
				cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
				e, err := New(cfg, st)
				if err != nil {
					b.Fatal(err)
				}
				for range 2 {
					e.loopFor(inlineLoop{})
				}
				l0 := (*e.loops.Load())[0]
				// Every key has history and is watched.
				ctx := context.Background()
				evs := make([]store.Event, 0, 1000)
				for i := range keys {
					evs = append(evs, store.Event{Key: fmt.Sprintf("user:%d", i), Data: []byte("x")})
					e.interest.m[fmt.Sprintf("user:%d", i)] = 1
					if len(evs) == cap(evs) || i == keys-1 {
						if err := st.Append(ctx, evs); err != nil {
							b.Fatal(err)
						}
						evs = evs[:0]
					}
				}
				l0.sets["user:0"] = &keySet{key: "user:0"}
				batch := make([]store.Event, fresh)
				for i := range batch {
					batch[i] = store.Event{Key: fmt.Sprintf("user:%d", i%keys), Data: []byte(`{"unread":3}`)}
				}
				cursor, _ := st.LastID(ctx)
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if fresh > 0 {
						b.StopTimer()
						for i := range batch {
							batch[i].ID = 0
						}
						if err := st.Append(ctx, batch); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
					if cursor, err = e.pollFeed(ctx, cursor); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
