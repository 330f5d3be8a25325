package store_test

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sseloop/sseloop/internal/redistest"
	"github.com/sseloop/sseloop/store"
	"github.com/sseloop/sseloop/store/storetest"
)

var prefixes atomic.Int64

// newPrefix returns a key prefix no other store in this process uses.
func newPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

func openRedis(t testing.TB, cfg store.RedisConfig, opts store.Options) *store.Redis {
	t.Helper()
	r, err := store.OpenRedis(cfg, opts)
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestRedisContract(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T, opts store.Options) store.Store {
		return openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}, opts)
	})
}

// FLUSHALL under a running node (the same Redis store) starts a new
// incarnation.
func TestRedisIncarnations(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	open := func(t *testing.T, opts store.Options) store.Store {
		return openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}, opts)
	}
	t.Run("flushall", func(t *testing.T) {
		storetest.RunIncarnations(t, open, func(t *testing.T, st store.Store, opts store.Options) store.Store {
			if err := c.FlushAll(bg).Err(); err != nil {
				t.Fatal(err)
			}
			return st
		})
	})
	// redis-server restarted without persistence under a running node.
	t.Run("restart_without_persistence", func(t *testing.T) {
		storetest.RunIncarnations(t, open, func(t *testing.T, st store.Store, opts store.Options) store.Store {
			srv.Kill(t)
			srv.Start(t)
			return st
		})
	})
}

func TestRedisOpen(t *testing.T) {
	srv := redistest.Start(t)
	s, err := store.Open(store.Config{Driver: "redis", Redis: store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, ok := s.(store.VersionReader); !ok {
		t.Error("the redis store is no VersionReader")
	}
	if _, err := store.OpenRedis(store.RedisConfig{Addr: srv.Addr(), FeedLen: -1}, store.Options{}); !errors.Is(err, store.ErrBadOptions) {
		t.Errorf("FeedLen -1: %v, want ErrBadOptions", err)
	}
	// Nothing listens on a port we just closed: Open fails, quickly.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	if _, err := store.OpenRedis(store.RedisConfig{Addr: dead}, store.Options{}); err == nil {
		t.Error("OpenRedis of a closed port succeeded")
	}
}

// Publishers on separate connections (as on separate nodes) never make the
// feed show an id before a lower one: a reader that follows it with After
// sees every event exactly once.
func TestRedisConcurrentNodes(t *testing.T) {
	srv := redistest.Start(t)
	cfg := store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}
	opts := store.Options{MaxEvents: 100000, SweepInterval: -1}
	const nodes, appends = 4, 150
	reader := openRedis(t, cfg, opts)
	var (
		mu    sync.Mutex
		added []store.Event
		wg    sync.WaitGroup
	)
	for n := range nodes {
		node := openRedis(t, cfg, opts)
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(n), 7))
			for i := range appends {
				evs := make([]store.Event, 1+r.IntN(3))
				for j := range evs {
					evs[j] = store.Event{Key: fmt.Sprintf("k%d", r.IntN(5)), Data: fmt.Appendf(nil, "%d/%d/%d", n, i, j)}
				}
				if err := node.Append(bg, evs); err != nil {
					t.Errorf("node %d: Append: %v", n, err)
					return
				}
				mu.Lock()
				added = append(added, evs...)
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var fed []store.Event
	var pos uint64
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		evs, err := reader.After(bg, pos, 5)
		if err != nil {
			t.Fatalf("After: %v", err)
		}
		for _, e := range evs {
			if e.ID <= pos {
				t.Fatalf("feed went back: %d after %d", e.ID, pos)
			}
			pos = e.ID
		}
		fed = append(fed, evs...)
		if len(evs) == 0 && finished {
			break
		}
	}
	if t.Failed() {
		return
	}
	slices.SortFunc(added, func(a, b store.Event) int { return cmpU64(a.ID, b.ID) })
	if len(fed) != len(added) {
		t.Fatalf("the reader followed %d events, %d were appended", len(fed), len(added))
	}
	for i := range added {
		if fed[i].ID != added[i].ID || fed[i].Key != added[i].Key || string(fed[i].Data) != string(added[i].Data) {
			t.Fatalf("feed event %d = {%d %s %s}, appended {%d %s %s}", i,
				fed[i].ID, fed[i].Key, fed[i].Data, added[i].ID, added[i].Key, added[i].Data)
		}
		if i > 0 && added[i].ID != added[i-1].ID+1 {
			t.Fatalf("ids have a hole: %d after %d", added[i].ID, added[i-1].ID)
		}
		if i > 0 && added[i].Time < added[i-1].Time {
			t.Fatalf("time went back: %d then %d", added[i-1].Time, added[i].Time)
		}
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Versions reads the application's keys under the watch prefix and nothing
// else; sseloop never writes them.
func TestRedisVersions(t *testing.T) {
	srv := redistest.Start(t)
	prefix, watch := newPrefix(), "cake_"+newPrefix()
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: prefix, WatchPrefix: watch}, store.Options{})
	c := srv.Client(t)

	if v, err := r.Versions(bg, nil); err != nil || len(v) != 0 {
		t.Errorf("Versions(nil) = %q, %v", v, err)
	}
	// The app's cache writes c; sseloop appends to a and b.
	if err := c.Set(bg, watch+"c", "1767225600.123", 0).Err(); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, r, "a", "b", "a", "c")
	got, err := r.Versions(bg, []string{"a", "b", "c", "none", "c"})
	if err != nil {
		t.Fatalf("Versions: %v", err)
	}
	want := []string{"", "", "1767225600.123", "", "1767225600.123"}
	if !slices.Equal(got, want) {
		t.Errorf("Versions = %q, want %q", got, want)
	}
	if keys, err := c.Keys(bg, watch+"*").Result(); err != nil || !slices.Equal(keys, []string{watch + "c"}) {
		t.Errorf("keys under the watch prefix: %q, %v; want only the app's", keys, err)
	}

	// Without a watch prefix Versions asks Redis nothing.
	off := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: prefix}, store.Options{})
	if got, err := off.Versions(bg, []string{"c"}); err != nil || got[0] != "" {
		t.Errorf("Versions without a watch prefix = %q, %v", got, err)
	}
	for _, bad := range [][2]string{{"cake_", "cake_"}, {"cake_sseloop:", "cake_"}, {"sse", "sseloop:"}} {
		if _, err := store.OpenRedis(store.RedisConfig{Addr: srv.Addr(), Prefix: bad[0], WatchPrefix: bad[1]}, store.Options{}); !errors.Is(err, store.ErrBadOptions) {
			t.Errorf("OpenRedis(prefix %q, watch %q) = %v, want ErrBadOptions", bad[0], bad[1], err)
		}
	}

	if err := r.Append(bg, []store.Event{{Key: "x"}, {Key: "{sseloop}:feed"}}); !errors.Is(err, store.ErrBadKey) {
		t.Errorf("Append of a reserved key: %v, want ErrBadKey", err)
	}
	if err := r.Append(bg, []store.Event{{Key: "a{sseloop}"}, {Key: "{x}"}}); err != nil {
		t.Errorf("Append of keys with braces: %v", err)
	}
	r.Close()
	if _, err := r.Versions(bg, []string{"a"}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Versions after Close: %v, want ErrClosed", err)
	}
}

// Sweeping a key's whole history deletes its Redis keys; the key's Dropped
// survives as the floor.
func TestRedisSweepCleanup(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	opts, clock := testOptions(store.SyncNever)
	opts.TTL = time.Minute
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: prefix}, opts)
	c := srv.Client(t)
	evs := mustAppend(t, r, "a", "b", "a")
	clock.Advance(2 * time.Minute)
	n, err := r.Sweep(bg)
	if err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want 3", n, err)
	}
	keys, err := c.Keys(bg, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{prefix + "{sseloop}:feed", prefix + "{sseloop}:meta"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys after the sweep: %q, want %q", keys, want)
	}
	if n, err := c.XLen(bg, prefix+"{sseloop}:feed").Result(); err != nil || n != 0 {
		t.Errorf("the feed has %d entries after the sweep (%v), want 0", n, err)
	}
	ret, err := r.Retention(bg, []string{"a", "b", "new"})
	if err != nil {
		t.Fatal(err)
	}
	for i, rt := range ret {
		if rt.Oldest != 0 || rt.Dropped < evs[2].ID {
			t.Errorf("Retention %d = %+v, want Dropped >= %d", i, rt, evs[2].ID)
		}
	}
}

// The change feed costs one round trip per poll, new events or not: XRANGE
// and the last id (to notice a wipe), pipelined.
func TestRedisAfterIsOneCommand(t *testing.T) {
	srv := redistest.Start(t)
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}, store.Options{})
	c := srv.Client(t)
	mustAppend(t, r, "a", "b")
	last, err := r.LastID(bg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.After(bg, 0, 10); err != nil { // warm up the connection
		t.Fatal(err)
	}
	if err := c.ConfigResetStat(bg).Err(); err != nil {
		t.Fatal(err)
	}
	const polls = 10
	for i := range polls {
		evs, err := r.After(bg, last-uint64(i%3), 10)
		if err != nil || len(evs) != i%3 {
			t.Fatalf("After = %d events, %v; want %d", len(evs), err, i%3)
		}
	}
	stats, err := c.Info(bg, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(stats))
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok || strings.HasPrefix(name, "config") || name == "info" {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		calls[name], _ = strconv.Atoi(n)
	}
	if len(calls) != 2 || calls["xrange"] != polls || calls["hget"] != polls {
		t.Errorf("%d polls made these calls: %v, want xrange=%d and hget=%d only", polls, calls, polls, polls)
	}
}

// While Redis is down, calls fail (within the client's timeouts, not
// forever); after it restarts on the same port with its append-only file, the
// same store works again and has every event acknowledged before.
func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}, store.Options{SweepInterval: -1})
	var acked []store.Event
	for i := range 20 {
		acked = append(acked, mustAppend(t, r, fmt.Sprintf("k%d", i%3))...)
	}

	srv.Kill(t)
	calls := []struct {
		name string
		fn   func() error
	}{
		{"Append", func() error { return r.Append(bg, []store.Event{{Key: "k0", Data: []byte("lost")}}) }},
		{"After", func() error { _, err := r.After(bg, 0, 10); return err }},
		{"Ping", func() error { return r.Ping(bg) }},
		{"Replay", func() error { _, err := r.Replay(bg, []string{"k0"}, 0, 10); return err }},
		{"LastID", func() error { _, err := r.LastID(bg); return err }},
	}
	for _, c := range calls {
		start := time.Now()
		err := c.fn()
		if err == nil {
			t.Errorf("%s succeeded with Redis down", c.name)
		}
		t.Logf("%s with Redis down: %v after %v", c.name, err, time.Since(start))
	}

	srv.Start(t)
	for deadline := time.Now().Add(20 * time.Second); r.Ping(bg) != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("the store does not reconnect: %v", r.Ping(bg))
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := mustAfter(t, r)
	if !slices.Equal(idsOf(got), idsOf(acked)) {
		t.Fatalf("after the restart the feed has %v, want %v", idsOf(got), idsOf(acked))
	}
	for i := range got {
		if got[i].Key != acked[i].Key || string(got[i].Data) != string(acked[i].Data) {
			t.Fatalf("event %d changed: %+v, want %+v", got[i].ID, got[i], acked[i])
		}
	}
	e := mustAppend(t, r, "k0")
	if e[0].ID <= acked[len(acked)-1].ID {
		t.Errorf("id after the restart %d, want > %d", e[0].ID, acked[len(acked)-1].ID)
	}
	if rp := mustReplay(t, r, "k0"); len(rp) == 0 || rp[len(rp)-1].ID != e[0].ID {
		t.Errorf("Replay(k0) after the restart: %v", idsOf(rp))
	}
}

// A Redis that accepts connections but does not answer (stopped, overloaded,
// behind a dead link) makes calls fail after the read timeout, not hang.
func TestRedisHang(t *testing.T) {
	srv := redistest.Start(t)
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}, store.Options{SweepInterval: -1})
	mustAppend(t, r, "a")
	if err := srv.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = srv.Signal(syscall.SIGCONT)
		}
	}()
	for _, c := range []struct {
		name string
		fn   func() error
	}{
		{"Ping", func() error { return r.Ping(bg) }},
		{"After", func() error { _, err := r.After(bg, 0, 10); return err }},
	} {
		// The call must fail by the client's own read timeout (a net.Error
		// whose Timeout() is true), not hang until a context or the test's
		// deadline ends it: bg has no deadline.
		err := c.fn()
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s with Redis stopped: %v; want the read timeout", c.name, err)
		}
	}
	if err := srv.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	for deadline := time.Now().Add(20 * time.Second); r.Ping(bg) != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("the store does not recover: %v", r.Ping(bg))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if evs := mustAfter(t, r); len(evs) != 1 {
		t.Errorf("After the hang: %d events, want 1", len(evs))
	}
}

// Of several nodes that see the same new version of a key, one wins the claim.
func TestRedisClaim(t *testing.T) {
	srv := redistest.Start(t)
	cfg := store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}
	const nodes = 5
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range nodes {
		r := openRedis(t, cfg, store.Options{SweepInterval: -1})
		wg.Go(func() {
			for _, kv := range [][2]string{{"a", "1"}, {"a", "2"}, {"a:b", "c"}, {"a", "b:c"}} {
				ok, err := r.Claim(bg, kv[0], kv[1], time.Minute)
				if err != nil {
					t.Errorf("Claim: %v", err)
				}
				if ok {
					wins.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := wins.Load(); n != 4 {
		t.Errorf("%d claims won, want 4 (one per key and version)", n)
	}
}

// store.sync is never ignored for Redis: a weaker persistence setting is
// reported, a matching one is not.
func TestRedisDurabilityWarning(t *testing.T) {
	none := redistest.Start(t)
	always := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	everysec := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "everysec")
	tests := []struct {
		name string
		srv  *redistest.Server
		sync store.SyncPolicy
		want string // substring; "" for no warning
	}{
		{"always_on_always", always, store.SyncAlways, ""},
		{"always_on_everysec", everysec, store.SyncAlways, `appendfsync "everysec"`},
		{"always_without_aof", none, store.SyncAlways, `appendonly "no"`},
		{"everysecond_on_everysec", everysec, store.SyncEverySecond, ""},
		{"everysecond_without_aof", none, store.SyncEverySecond, `appendonly "no"`},
		{"never_without_aof", none, store.SyncNever, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := openRedis(t, store.RedisConfig{Addr: tt.srv.Addr(), Prefix: newPrefix()}, store.Options{Sync: tt.sync})
			got := r.DurabilityWarning(bg)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("DurabilityWarning = %q, want %q", got, tt.want)
			}
		})
	}
	// A managed Redis that refuses CONFIG: the warning says it could not check.
	managed := redistest.Start(t, "--rename-command", "CONFIG", "")
	r := openRedis(t, store.RedisConfig{Addr: managed.Addr(), Prefix: newPrefix()}, store.Options{Sync: store.SyncAlways})
	if got := r.DurabilityWarning(bg); !strings.Contains(got, "could not be read") {
		t.Errorf("DurabilityWarning without CONFIG = %q, want it to say so", got)
	}
}

// A Redis that went back in time (a failover that lost the last writes, an
// append-only file restored from an older copy) must not hand out again ids
// that this node saw: it starts a new incarnation above them.
func TestRedisRollbackStartsIncarnation(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	opts, _ := testOptions(store.SyncNever) // a frozen clock: only the seen ids protect
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: prefix}, opts)
	old := mustAppend(t, r, "a", "b", "a")
	h1, err := r.Head(bg)
	if err != nil {
		t.Fatal(err)
	}
	// The state goes back to just after the first event.
	c := srv.Client(t)
	if err := c.HSet(bg, prefix+"{sseloop}:meta", "id", old[0].ID).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.After(bg, old[2].ID, 10); !errors.Is(err, store.ErrCursorAhead) {
		t.Errorf("After(cursor above the rolled-back last id) = %v, want ErrCursorAhead", err)
	}
	nu := mustAppend(t, r, "a", "c")
	if nu[0].ID <= old[2].ID || nu[1].ID != nu[0].ID+1 {
		t.Fatalf("ids after the rollback %d, %d; want contiguous above %d", nu[0].ID, nu[1].ID, old[2].ID)
	}
	h2, err := r.Head(bg)
	if err != nil {
		t.Fatal(err)
	}
	if h2.Epoch == h1.Epoch || h2.Epoch != nu[0].ID {
		t.Errorf("Head after the rollback = %+v (before %+v), want a new epoch %d", h2, h1, nu[0].ID)
	}
}

// With WaitReplicas and no replica to confirm, Append fails (the trigger gets
// 503) within the WAIT timeout instead of acknowledging an event a failover
// could lose.
func TestRedisWaitReplicasUnmet(t *testing.T) {
	srv := redistest.Start(t)
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix(), WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond},
		store.Options{SweepInterval: -1})
	err := r.Append(bg, []store.Event{{Key: "a"}})
	if !errors.Is(err, store.ErrNotReplicated) {
		t.Fatalf("Append with no replica = %v, want ErrNotReplicated", err)
	}
	if _, err := store.OpenRedis(store.RedisConfig{Addr: srv.Addr(), WaitReplicas: -1}, store.Options{}); !errors.Is(err, store.ErrBadOptions) {
		t.Errorf("WaitReplicas -1: %v, want ErrBadOptions", err)
	}
	if _, err := store.OpenRedis(store.RedisConfig{SentinelMaster: "m"}, store.Options{}); !errors.Is(err, store.ErrBadOptions) {
		t.Errorf("a sentinel master without addresses: %v, want ErrBadOptions", err)
	}
}

// A meta hash evicted while the feed survived (allkeys-* maxmemory policies)
// starts a new incarnation above the feed's last id, whatever the clock says.
func TestRedisMetaLostFeedKept(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	opts, clock := testOptions(store.SyncNever)
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: prefix}, opts)
	old := mustAppend(t, r, "a", "b")
	if err := srv.Client(t).Del(bg, prefix+"{sseloop}:meta").Err(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(-time.Hour) // a node whose clock is behind, and knows nothing
	other := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: prefix}, opts)
	nu := mustAppend(t, other, "a")
	if nu[0].ID <= old[1].ID {
		t.Fatalf("id %d after the meta was lost, not above the feed's %d", nu[0].ID, old[1].ID)
	}
}
