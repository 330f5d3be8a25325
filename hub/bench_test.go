package hub

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/sseloop/sseloop/store"
)

// inlineExec runs tasks at once on the caller, so a benchmark measures the
// feed reader's own work without scheduling.
type inlineExec struct{}

func (inlineExec) Execute(fn func()) { fn() }

// BenchmarkFeed measures one feed pass (one change-feed read, encoding, and
// the fan-out handed to two loops with one subscriber each) with many
// watched keys and 0, 1 or 100 new events. Its cost must grow with new
// events only, never with watched keys.
func BenchmarkFeed(b *testing.B) {
	for _, nkeys := range []int{1, 1000, 100000} {
		for _, fresh := range []int{0, 1, 100} {
			b.Run(fmt.Sprintf("keys=%d/new=%d", nkeys, fresh), func(b *testing.B) {
				st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				h, err := New(Config{Tick: time.Second, Poll: time.Second, Heartbeat: time.Hour, MaxOutboundBytes: 1 << 30,
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
				if err != nil {
					b.Fatal(err)
				}
				// Two loops, each with its own subscriber of user:0.
				for range 2 {
					l := h.NewLoop(inlineExec{})
					s := &Stream{}
					s.Init(&fakeConn{autoRead: true}, l, func() {}, time.Hour)
					l.Open(s, Subscription{Keys: keys("user:0")})
				}
				ctx := context.Background()
				evs := make([]store.Event, 0, 1000)
				for i := range nkeys {
					k := fmt.Sprintf("user:%d", i)
					evs = append(evs, store.Event{Key: k, Data: []byte("x")})
					h.interest.add(k) // every key is watched
					if len(evs) == cap(evs) || i == nkeys-1 {
						if err := st.Append(ctx, evs); err != nil {
							b.Fatal(err)
						}
						evs = evs[:0]
					}
				}
				batch := make([]store.Event, fresh)
				for i := range batch {
					batch[i] = store.Event{Key: fmt.Sprintf("user:%d", i%nkeys), Data: []byte(`{"unread":3}`)}
				}
				cursor, _ := st.LastID(ctx)
				b.ReportAllocs()
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
					if cursor, _, err = h.pollFeed(ctx, cursor); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// discardConn is a connection that drops what is written to it.
type discardConn struct{ n int }

func (c *discardConn) Write(b []byte) (int, error) { c.n += len(b); return len(b), nil }
func (*discardConn) OutboundBuffered() int         { return 0 }
func (*discardConn) Close() error                  { return nil }

// BenchmarkMercureFanout measures one new event through the Mercure path
// (encode once, try each distinct template once, fan out on one loop) with
// subs Mercure streams spread over tmpls distinct URI templates. With
// match=none no stream wants the event: the cost must depend on the
// number of distinct templates, not on the number of streams. With
// match=one the streams of one template get it.
func BenchmarkMercureFanout(b *testing.B) {
	for _, subs := range []int{100, 10000} {
		for _, tmpls := range []int{1, 100} {
			for _, match := range []string{"none", "one"} {
				b.Run(fmt.Sprintf("subs=%d/templates=%d/match=%s", subs, tmpls, match), func(b *testing.B) {
					st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
					if err != nil {
						b.Fatal(err)
					}
					defer st.Close()
					h, err := New(Config{Tick: time.Second, Poll: time.Second, Heartbeat: time.Hour, MaxOutboundBytes: 1 << 30,
						Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
					if err != nil {
						b.Fatal(err)
					}
					l := h.NewLoop(inlineExec{})
					for i := range subs {
						s := &Stream{}
						s.Init(&discardConn{}, l, func() {}, time.Hour)
						l.Open(s, Subscription{Mercure: &MercureSub{
							Topics: []string{fmt.Sprintf("https://example.com/t%d/{id}", i%tmpls)}}})
					}
					topic := "https://example.com/none/1"
					if match == "one" {
						topic = "https://example.com/t0/1"
					}
					evs := []store.Event{{Key: topic, Data: []byte(`{"stock":3}`), PubID: "urn:uuid:x"}}
					b.ReportAllocs()
					for b.Loop() {
						evs[0].ID++
						bt := &batch{}
						h.encodeMercure(bt, evs)
						l.fanoutMercure(bt)
					}
				})
			}
		}
	}
}

// BenchmarkMercureStreamMemory reports the heap a Mercure stream adds in
// the hub (its selectors, sets and side state; not the connection's own
// struct or buffers) for one exact topic and one shared URI template.
func BenchmarkMercureStreamMemory(b *testing.B) {
	st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	h, err := New(Config{Tick: time.Second, Poll: time.Second, Heartbeat: time.Hour, MaxOutboundBytes: 1 << 30,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, st)
	if err != nil {
		b.Fatal(err)
	}
	l := h.NewLoop(inlineExec{})
	const n = 10000
	streams := make([]Stream, n)
	conn := &discardConn{}
	for i := range streams {
		streams[i].Init(conn, l, func() {}, time.Hour)
	}
	var before, after runtime.MemStats
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range streams {
			l.Open(&streams[i], Subscription{Mercure: &MercureSub{
				Topics: []string{fmt.Sprintf("https://example.com/users/%d", i), "https://example.com/books/{id}"}}})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "B/stream")
		for i := range streams {
			l.Leave(&streams[i])
			streams[i].state = stateIdle
		}
	}
}
