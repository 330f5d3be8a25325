//go:build unix

package hub

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/sseloop/sseloop/store"
)

// sharedStore makes a store look shared (like Redis) to the hub, so that
// every key is tracked, without a server.
type sharedStore struct{ store.Store }

func (sharedStore) PublishPresence(context.Context, string, time.Duration, []store.PresenceCount) (bool, error) {
	return false, nil
}
func (sharedStore) PresenceOf(_ context.Context, _ string, keys []string) ([]store.PresenceCount, error) {
	return make([]store.PresenceCount, len(keys)), nil
}
func (sharedStore) PresenceChanges(context.Context, string) ([]string, string, bool, error) {
	return nil, "0-0", false, nil
}
func (sharedStore) LeavePresence(context.Context, string) error { return nil }

// presenceModes are the configurations whose cost the benchmarks compare:
// off (no token, no presence.keys, buntdb), users (auth on: every stream
// has a user), live (users, and presence.keys matching every key) and
// shared (users, on a store shared with other nodes: every key tracked).
var presenceModes = []struct {
	name   string
	users  bool
	live   bool
	shared bool
}{
	{"off", false, false, false},
	{"users", true, false, false},
	{"users+live", true, true, false},
	{"users+shared", true, false, true},
}

const perUserKeys = 19000

// cpuTime returns the CPU time this process used so far (all threads,
// the garbage collector's included).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports CPU time per operation next to ns/op: on a shared
// machine ns/op counts the time the benchmark waited for a core, CPU time
// does not.
func reportCPU(b *testing.B, start time.Duration, n int) {
	if n > 0 {
		b.ReportMetric(float64(cpuTime(b)-start)/float64(n), "cpu-ns/op")
	}
}

// newPresenceBench opens perUserKeys streams, one per "user:<i>" key with
// user "<i>", on one inline loop.
func newPresenceBench(b *testing.B, users, live, shared bool) (*Loop, []*Stream, []Subscription) {
	st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	var s store.Store = st
	if shared {
		s = sharedStore{st}
	}
	cfg := Config{Tick: time.Second, Poll: time.Second, Heartbeat: time.Hour, MaxOutboundBytes: 1 << 30,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if live {
		cfg.Presence.Live = func(string) bool { return true }
	}
	h, err := New(cfg, s)
	if err != nil {
		b.Fatal(err)
	}
	l := h.NewLoop(inlineExec{})
	streams := make([]*Stream, perUserKeys)
	subs := make([]Subscription, perUserKeys)
	for i := range streams {
		subs[i] = Subscription{Keys: keys(fmt.Sprint("user:", i))}
		if users {
			subs[i].User = fmt.Sprint(i)
		}
		streams[i] = &Stream{}
		streams[i].Init(&fakeConn{autoRead: true}, l, func() {}, time.Hour)
		l.Open(streams[i], subs[i])
	}
	return l, streams, subs
}

// BenchmarkPresenceJoinLeave measures one stream leaving its per-user key
// and joining again, with 19,000 per-user keys open, in each presence
// mode: the CPU presence adds to a join and a leave.
func BenchmarkPresenceJoinLeave(b *testing.B) {
	for _, m := range presenceModes {
		b.Run(m.name, func(b *testing.B) {
			l, streams, subs := newPresenceBench(b, m.users, m.live, m.shared)
			b.ReportAllocs()
			i, n, cpu0 := 0, 0, cpuTime(b)
			for b.Loop() {
				n++
				s := streams[i]
				l.Leave(s)
				s.state, s.subs = stateIdle, nil
				l.Open(s, subs[i])
				if len(l.presDirty) > 1024 {
					clear(l.presDirty) // what the presence goroutine does every interval
				}
				i = (i + 1) % len(streams)
			}
			reportCPU(b, cpu0, n)
		})
	}
}

// BenchmarkPresenceMemory reports the heap per stream (B/stream) of
// 19,000 streams on 19,000 per-user keys in each presence mode, Stream
// and subscriber sets included (the engine's conn and gnet's are not).
func BenchmarkPresenceMemory(b *testing.B) {
	for _, m := range presenceModes {
		b.Run(m.name, func(b *testing.B) {
			var perStream float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				l, streams, _ := newPresenceBench(b, m.users, m.live, m.shared)
				runtime.GC()
				runtime.ReadMemStats(&after)
				perStream = float64(after.HeapAlloc-before.HeapAlloc) / perUserKeys
				runtime.KeepAlive(l)
				runtime.KeepAlive(streams)
			}
			b.ReportMetric(perStream, "B/stream")
		})
	}
}

// BenchmarkPresenceRound measures one presence round (collect, publish,
// events) after 1% of 19,000 live per-user keys changed: on one node
// (buntdb: the keys that changed are looked at) and on a shared store
// (every live key is compared with the other nodes' counts, here a store
// that answers at once).
func BenchmarkPresenceRound(b *testing.B) {
	for _, shared := range []bool{false, true} {
		b.Run(fmt.Sprintf("shared=%v", shared), func(b *testing.B) {
			l, streams, subs := newPresenceBench(b, true, true, shared)
			h := l.h
			agg := map[string]*presKey{}
			unpublished := map[string]struct{}{}
			ctx := context.Background()
			round := func() {
				changed := map[string]struct{}{}
				fresh, _ := h.collectPresence(ctx, agg, changed)
				if shared {
					maps.Copy(unpublished, changed)
					_, _ = h.publishPresence(ctx, agg, unpublished)
				}
				h.sendPresence(ctx, agg, changed, false, fresh)
			}
			round()
			b.ReportAllocs()
			i, n, cpu0 := 0, 0, cpuTime(b)
			for b.Loop() {
				n++
				for range perUserKeys / 100 {
					s := streams[i]
					l.Leave(s)
					s.state, s.subs = stateIdle, nil
					subs[i].User += "x"
					l.Open(s, subs[i])
					i = (i + 1) % len(streams)
				}
				round()
			}
			reportCPU(b, cpu0, n)
		})
	}
}
