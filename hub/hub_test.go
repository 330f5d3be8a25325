package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sseloop/sseloop/store"
)

// waitUntil polls cond (no fixed sleep decides the outcome) until it holds
// or 20 s pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// expected returns the ids of the retained events of keys after lastID, in
// id order, read straight from the store.
func expected(t *testing.T, st store.Store, ks []string, lastID uint64) []uint64 {
	t.Helper()
	evs, err := st.Replay(context.Background(), ks, lastID, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, ev := range evs {
		out = append(out, ev.ID)
	}
	return out
}

// TestReplaySeamNoGapNoDuplicate opens resuming streams (one and several
// keys, several starting points, readers fast and slow) while events are
// published concurrently, with a small MaxOutboundBytes so that replays
// take many pages. Every stream must end with exactly the store's events
// of its keys after its Last-Event-ID, in id order: no gap and no
// duplicate at the seam between replay and live delivery.
func TestReplaySeamNoGapNoDuplicate(t *testing.T) {
	th := newTestHub(t, nil, 2, func(c *Config) { c.MaxOutboundBytes = 4 << 10 })
	all := []string{"a", "b", "c"}
	data := strings.Repeat("x", 90)
	var pre []store.Event
	for i := range 300 {
		pre = append(pre, store.Event{Key: all[i%3], Data: []byte(data)})
	}
	th.publish(pre...)

	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for i := range 300 {
			th.publish(store.Event{Key: all[i%3], Data: []byte(fmt.Sprint("live ", i))})
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	type spec struct {
		keys []string
		last uint64
		slow bool
	}
	specs := []spec{
		{[]string{"a"}, 0, false}, {[]string{"a"}, 0, true}, {[]string{"a", "b"}, 50, false},
		{[]string{"b", "c"}, 150, true}, {[]string{"a", "b", "c"}, 299, false}, {[]string{"c"}, 10, true},
	}
	type opened struct {
		spec
		s *testStream
	}
	var streams []opened
	for i, sp := range specs {
		s := th.open(i%2, Subscription{Keys: keys(sp.keys...), Resume: true, LastID: sp.last}, !sp.slow)
		streams = append(streams, opened{sp, s})
		if sp.slow {
			// A reader that takes 1 KiB every millisecond.
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
						s.c.drain(1 << 10)
					}
				}
			}()
		}
		time.Sleep(3 * time.Millisecond)
	}
	pubWG.Wait()
	defer close(stop)
	for _, o := range streams {
		want := expected(t, th.st, o.keys, o.last)
		waitUntil(t, fmt.Sprintf("stream %v after %d to get %d events", o.keys, o.last, len(want)), func() bool {
			return len(ids(o.s.c.received())) >= len(want)
		})
		if got := ids(o.s.c.received()); !slices.Equal(got, want) {
			t.Errorf("stream %v after %d:\n got %v\nwant %v", o.keys, o.last, got, want)
		}
		if o.s.c.isClosed() {
			t.Errorf("stream %v was closed", o.keys)
		}
	}
}

// TestReplayOfNonReaderIsBounded: clients that ask for a long replay and
// never read make the hub hold at most MaxOutboundBytes in their connection
// plus one page, and a reader then gets the whole history.
func TestReplayOfNonReaderIsBounded(t *testing.T) {
	const limit = 64 << 10
	th := newTestHub(t, nil, 2, func(c *Config) { c.MaxOutboundBytes = limit })
	ks := []string{"k0", "k1", "k2", "k3"}
	big := strings.Repeat("y", 8<<10)
	for range 50 {
		var evs []store.Event
		for _, k := range ks {
			evs = append(evs, store.Event{Key: k, Data: []byte(big)})
		}
		th.publish(evs...)
	}
	var hogs []*testStream
	for i := range 10 {
		hogs = append(hogs, th.open(i%2, Subscription{Keys: keys(ks...), Resume: true}, false))
	}
	// Wait until every hog's replay is parked waiting for its client.
	for i, s := range hogs {
		fl := th.loops[i%2]
		waitUntil(t, "replay to wait for the client", func() bool {
			var w bool
			fl.do(func() { w = s.replay != nil && s.replay.waiting })
			return w
		})
		var held int
		fl.do(func() {
			if p := s.replay.page; p != nil {
				held = len(p.buf)
				if p.pos > 0 {
					held -= p.ends[p.pos-1]
				}
			}
		})
		if b := s.c.OutboundBuffered(); b > limit || held > limit/4+len(big)+200 {
			t.Errorf("hog %d: %d bytes buffered, %d held in its page; limit %d", i, b, held, limit)
		}
		if s.c.isClosed() {
			t.Errorf("hog %d was evicted by its own replay", i)
		}
	}
	// A client that reads gets everything, and then live events.
	r := th.open(0, Subscription{Keys: keys(ks...), Resume: true}, true)
	want := expected(t, th.st, ks, 0)
	waitUntil(t, "the reader's replay", func() bool { return len(ids(r.c.received())) >= len(want) })
	live := th.publish(store.Event{Key: "k2", Data: []byte("after")})
	want = append(want, live...)
	waitUntil(t, "the live event", func() bool { return len(ids(r.c.received())) >= len(want) })
	if got := ids(r.c.received()); !slices.Equal(got, want) {
		t.Fatalf("reader got %d events, want %d (first difference matters)", len(got), len(want))
	}
	// A hog that starts reading catches up too.
	h := hogs[1]
	go func() {
		for !h.c.isClosed() && len(ids(h.c.received())) < len(want) {
			h.c.drain(-1)
			time.Sleep(time.Millisecond)
		}
	}()
	waitUntil(t, "a hog to catch up once it reads", func() bool { return len(ids(h.c.received())) >= len(want) })
	if got := ids(h.c.received()); !slices.Equal(got, want) {
		t.Fatalf("hog got %d events, want %d", len(got), len(want))
	}
}

// TestEvictionAtExactlyTheCap: a live stream is evicted when its unsent
// bytes exceed MaxOutboundBytes, not when they equal it.
func TestEvictionAtExactlyTheCap(t *testing.T) {
	data := []byte("0123456789")
	// Ids start from the clock (16 digits for centuries): every frame
	// here has the size of the first.
	st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	next, _ := st.LastID(context.Background())
	frame := len(AppendFrame(nil, next+1, "", data))
	head := []byte("HEAD\n")
	limit := len(head) + 3*frame
	th := newTestHub(t, st, 1, func(c *Config) { c.MaxOutboundBytes = limit })
	s := th.open(0, Subscription{Keys: keys("k"), Head: head}, false)
	for i := range 3 {
		th.publish(store.Event{Key: "k", Data: data})
		waitUntil(t, "delivery", func() bool { return s.c.OutboundBuffered() == len(head)+(i+1)*frame })
	}
	if s.c.isClosed() {
		t.Fatalf("evicted at exactly the cap (%d bytes)", limit)
	}
	th.publish(store.Event{Key: "k", Data: data})
	waitUntil(t, "eviction one frame past the cap", s.c.isClosed)
	if s.Reason() != ReasonSlowConsumer {
		t.Fatalf("reason %v, want slow_consumer", s.Reason())
	}
}

// TestCoalescedPokesReachOnce: pokes of one key appended together reach a
// live stream once, with the newest id; data events never coalesce.
func TestCoalescedPokesReachOnce(t *testing.T) {
	th := newTestHub(t, nil, 1, nil)
	s := th.open(0, Subscription{Keys: keys("k")}, true)
	got := th.publish(store.Event{Key: "k"}, store.Event{Key: "k"}, store.Event{Key: "k", Data: []byte("d")}, store.Event{Key: "k"}, store.Event{Key: "k"})
	waitUntil(t, "delivery", func() bool { return len(ids(s.c.received())) >= 2 })
	if g := ids(s.c.received()); !slices.Equal(g, []uint64{got[2], got[4]}) {
		t.Fatalf("got %v, want [%d %d]", g, got[2], got[4])
	}
}

// TestUnknownIDGetsGapThenLive: a Last-Event-ID newer than anything the
// store holds (it was wiped or replaced) is announced with a gap, and the
// stream then receives every new event: an unknown id never filters.
func TestUnknownIDGetsGapThenLive(t *testing.T) {
	th := newTestHub(t, nil, 1, nil)
	old := th.publish(store.Event{Key: "k", Data: []byte("1")}, store.Event{Key: "k", Data: []byte("2")})
	s := th.open(0, Subscription{Keys: keys("k"), Resume: true, LastID: old[1] + 1_000_000}, true)
	waitUntil(t, "the gap", func() bool { return len(s.c.received()) >= 1 })
	if ev := s.c.received()[0]; ev.name != "gap" || ev.hasID {
		t.Fatalf("first event %+v, want a gap without id", ev)
	}
	live := th.publish(store.Event{Key: "k", Data: []byte("3")})
	waitUntil(t, "the live event", func() bool { return len(ids(s.c.received())) >= 1 })
	if g := ids(s.c.received()); !slices.Equal(g, live) {
		t.Fatalf("got %v, want %v", g, live)
	}
}

// bubbleStore opens an in-memory store inside a synctest bubble. buntdb's
// background goroutine notices a Close only at its next one-second tick, so
// the cleanup lets fake time pass for it to return: a bubble ends only when
// all its goroutines have.
func bubbleStore(t *testing.T) store.Store {
	st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		time.Sleep(2 * time.Second)
	})
	return st
}

// TestHeartbeatTiming checks heartbeats at exact times with fake time: the
// first comes after a random part of the interval (between half of it and
// all of it), the next ones exactly Heartbeat after the last write, within
// one tick.
func TestHeartbeatTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hb, tick = time.Second, 100 * time.Millisecond
		th := newTestHub(t, bubbleStore(t), 1, func(c *Config) { c.Heartbeat, c.Tick, c.Poll = hb, tick, time.Hour })
		start := time.Now()
		s := th.open(0, Subscription{Keys: keys("k")}, true)
		var beats []time.Duration
		for len(beats) < 4 {
			time.Sleep(tick / 10)
			synctest.Wait()
			if n := len(s.c.received()); n > len(beats) {
				beats = append(beats, time.Since(start))
			}
		}
		if beats[0] < hb/2 || beats[0] > hb+tick {
			t.Fatalf("first heartbeat at %v, want between %v and %v", beats[0], hb/2, hb+tick)
		}
		for i := 1; i < len(beats); i++ {
			if d := beats[i] - beats[i-1]; d < hb || d > hb+tick {
				t.Fatalf("heartbeat %d came %v after the previous one, want %v (+ one tick)", i, d, hb)
			}
		}
	})
}

// TestTokenExpiryClosesOnTime: a stream closes at its token's expiry, at
// the first tick at or after it, and not before.
func TestTokenExpiryClosesOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const tick = 100 * time.Millisecond
		th := newTestHub(t, bubbleStore(t), 1, func(c *Config) { c.Heartbeat, c.Tick, c.Poll = time.Minute, tick, time.Hour })
		exp := time.Now().Add(5 * time.Second).Truncate(time.Second)
		s := th.open(0, Subscription{Keys: keys("k"), Expires: uint32(exp.Unix())}, true)
		for !s.c.isClosed() {
			time.Sleep(tick / 10)
			synctest.Wait()
		}
		if now := time.Now(); now.Before(exp) || now.After(exp.Add(tick)) {
			t.Fatalf("closed at %v, token expired at %v", now, exp)
		}
		if s.Reason() != ReasonTokenExpired {
			t.Fatalf("reason %v", s.Reason())
		}
	})
}

// hangingStore blocks every change-feed read until released.
type hangingStore struct {
	store.Store
	release chan struct{}
}

func (s *hangingStore) After(ctx context.Context, after uint64, limit int) ([]store.Event, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.After(ctx, after, limit)
}

// TestTimersFireWhileStoreHangs: heartbeats keep coming while the change
// feed read is stuck in the store (Redis stopped, a slow scan).
func TestTimersFireWhileStoreHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hs := &hangingStore{Store: bubbleStore(t), release: make(chan struct{})}
		th := newTestHub(t, hs, 1, func(c *Config) { c.Heartbeat, c.Tick, c.Poll = time.Second, 100*time.Millisecond, 100*time.Millisecond })
		s := th.open(0, Subscription{Keys: keys("k")}, true)
		time.Sleep(10 * time.Second) // the feed reader is blocked all along
		synctest.Wait()
		close(hs.release)
		if n := len(s.c.received()); n < 9 {
			t.Fatalf("%d heartbeats in 10 s with the store hanging, want at least 9", n)
		}
	})
}

// gatedStore holds the answer of every Replay read until the test lets it
// go: the read itself is done, events appended meanwhile are not in it.
type gatedStore struct {
	store.Store
	entered chan struct{}
	gate    chan struct{}
}

func (s *gatedStore) Replay(ctx context.Context, keys []string, after uint64, limit int) ([]store.Event, error) {
	evs, err := s.Store.Replay(ctx, keys, after, limit)
	s.entered <- struct{}{}
	<-s.gate
	return evs, err
}

// TestReplayHandsOverOnlyWhenCaughtUp pins the seam: events published and
// fanned out while a replay's last read is in the store were not written
// to the replaying stream; the replay must read them before it hands the
// stream to live delivery, or they are lost.
func TestReplayHandsOverOnlyWhenCaughtUp(t *testing.T) {
	inner, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	gs := &gatedStore{Store: inner, entered: make(chan struct{}), gate: make(chan struct{})}
	th := newTestHub(t, gs, 1, nil)
	first := th.publish(store.Event{Key: "k", Data: []byte("old")})
	s := th.open(0, Subscription{Keys: keys("k"), Resume: true, LastID: first[0]}, true)
	<-gs.entered // the first page has been read: nothing new yet
	during := th.publish(store.Event{Key: "k", Data: []byte("during 1")}, store.Event{Key: "k", Data: []byte("during 2")})
	// Wait until the loop has fanned them out (and skipped the stream).
	waitUntil(t, "the fan-out of the new events", func() bool {
		var seen uint64
		th.loops[0].do(func() { seen = th.loops[0].hl.seen })
		return seen >= during[1]
	})
	go func() {
		for {
			select {
			case gs.gate <- struct{}{}:
			case <-gs.entered:
			case <-time.After(5 * time.Second):
				return
			}
		}
	}()
	after := th.publish(store.Event{Key: "k", Data: []byte("live")})
	want := append(during, after...)
	waitUntil(t, "the live event", func() bool {
		got := ids(s.c.received())
		return len(got) > 0 && got[len(got)-1] == after[0]
	})
	if got := ids(s.c.received()); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// laterStore opens an in-memory store whose clock runs an hour ahead: a
// new incarnation whose ids start above every id handed out before, even
// within the same millisecond (see store's Incarnations).
func laterStore(t *testing.T) store.Store {
	st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1,
		Now: func() time.Time { return time.Now().Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestResumeFromLostIncarnationGetsGap: a client resumes with an id that an
// earlier incarnation of the store handed out (an in-memory server that
// restarted): it is told with a gap, then gets what the new incarnation
// holds and every new event.
func TestResumeFromLostIncarnationGetsGap(t *testing.T) {
	before, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	evs := []store.Event{{Key: "k", Data: []byte("old")}}
	if err := before.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	before.Close()
	th := newTestHub(t, laterStore(t), 1, nil) // the restarted server's store
	now := th.publish(store.Event{Key: "k", Data: []byte("new")})
	s := th.open(0, Subscription{Keys: keys("k"), Resume: true, LastID: evs[0].ID}, true)
	waitUntil(t, "the gap and the new event", func() bool { return len(s.c.received()) >= 2 })
	got := s.c.received()
	if got[0].name != "gap" || got[0].hasID || !got[1].hasID || got[1].id != now[0] {
		t.Fatalf("got %+v, want a gap then event %d", got, now[0])
	}
}

// wipingStore stands for a Redis that loses its state under a running
// node: while wiped, the change feed answers ErrCursorAhead; then the store
// is a new incarnation whose ids jump above the old ones.
type wipingStore struct {
	mu     sync.Mutex
	cur    store.Store
	wiped  bool
	afters int // change-feed reads
}

func (s *wipingStore) reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.afters
}

func (s *wipingStore) get() (store.Store, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.wiped
}

func (s *wipingStore) After(ctx context.Context, after uint64, limit int) ([]store.Event, error) {
	s.mu.Lock()
	s.afters++
	s.mu.Unlock()
	cur, wiped := s.get()
	if wiped {
		return nil, fmt.Errorf("%w: test", store.ErrCursorAhead)
	}
	return cur.After(ctx, after, limit)
}
func (s *wipingStore) Append(ctx context.Context, evs []store.Event) error {
	cur, _ := s.get()
	return cur.Append(ctx, evs)
}
func (s *wipingStore) Replay(ctx context.Context, keys []string, after uint64, limit int) ([]store.Event, error) {
	cur, _ := s.get()
	return cur.Replay(ctx, keys, after, limit)
}
func (s *wipingStore) Retention(ctx context.Context, keys []string) ([]store.Retention, error) {
	cur, _ := s.get()
	return cur.Retention(ctx, keys)
}
func (s *wipingStore) LastID(ctx context.Context) (uint64, error) {
	cur, _ := s.get()
	return cur.LastID(ctx)
}
func (s *wipingStore) Ping(ctx context.Context) error { cur, _ := s.get(); return cur.Ping(ctx) }
func (s *wipingStore) Close() error                   { return nil }

// TestStoreWipeAnnouncedOnceThenDelivered: when the store's state vanishes
// under a running node, its live streams get one gap event (not one per
// poll, and not a second one for the jump to the new ids), no store-error
// backoff, and then every event of the store's new incarnation.
func TestStoreWipeAnnouncedOnceThenDelivered(t *testing.T) {
	inner, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	ws := &wipingStore{cur: inner}
	th := newTestHub(t, ws, 1, nil)
	s := th.open(0, Subscription{Keys: keys("k")}, true)
	first := th.publish(store.Event{Key: "k", Data: []byte("before")})
	waitUntil(t, "the first event", func() bool { return len(s.c.received()) >= 1 })
	ws.mu.Lock()
	ws.wiped = true
	ws.mu.Unlock()
	waitUntil(t, "the gap", func() bool { return len(s.c.received()) >= 2 })
	from := ws.reads()
	waitUntil(t, "several polls while wiped", func() bool { return ws.reads() >= from+3 })
	wiped := th.h.m.feedResets.Get()
	ws.mu.Lock()
	ws.cur, ws.wiped = laterStore(t), false
	ws.mu.Unlock()
	after := th.publish(store.Event{Key: "k", Data: []byte("after")})
	waitUntil(t, "the event after the wipe", func() bool { return len(ids(s.c.received())) >= 2 })
	got := s.c.received()
	gaps := 0
	for _, ev := range got {
		if ev.name == "gap" {
			gaps++
		}
	}
	if gaps != 1 || !slices.Equal(ids(got), []uint64{first[0], after[0]}) {
		t.Fatalf("got %+v; want event %d, one gap, event %d", got, first[0], after[0])
	}
	if n := th.h.m.storeErr.Get(); n != 0 || wiped != 1 {
		t.Fatalf("a wipe counted as %d store errors and %d resets; want 0 and 1", n, wiped)
	}
}

func (s *wipingStore) Head(ctx context.Context) (store.Head, error) {
	cur, _ := s.get()
	return cur.(store.HeadReader).Head(ctx)
}

// TestStoreWipedAndRewrittenBetweenPolls: the store is replaced by a new
// incarnation and written to before the feed reader polls again, so the
// reader never sees ErrCursorAhead, only ids that jump. It must still tell
// it apart from a trim (the epoch changed): one gap per stream, counted as
// a reset, not as events removed from history.
func TestStoreWipedAndRewrittenBetweenPolls(t *testing.T) {
	inner, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	ws := &wipingStore{cur: inner}
	th := newTestHub(t, ws, 1, func(c *Config) { c.Poll = time.Hour }) // only publishes wake the reader
	s := th.open(0, Subscription{Keys: keys("k")}, true)
	first := th.publish(store.Event{Key: "k", Data: []byte("before")})
	waitUntil(t, "the first event", func() bool { return len(s.c.received()) >= 1 })
	ws.mu.Lock()
	ws.cur = laterStore(t)
	ws.mu.Unlock()
	after := th.publish(store.Event{Key: "k", Data: []byte("after")})
	waitUntil(t, "the event after the wipe", func() bool { return len(ids(s.c.received())) >= 2 })
	got := s.c.received()
	if len(got) != 3 || got[1].name != "gap" || !slices.Equal(ids(got), []uint64{first[0], after[0]}) {
		t.Fatalf("got %+v; want event %d, a gap, event %d", got, first[0], after[0])
	}
	if r, g := th.h.m.feedResets.Get(), th.h.m.feedGaps.Get(); r != 1 || g != 0 {
		t.Fatalf("counted %d resets and %d feed gaps; want 1 and 0", r, g)
	}
}

// TestReplayWaitsForAFreeWorker: in a reconnect storm more streams resume
// at once than the store workers' queue holds. A replay that finds the
// queue full waits and is read when a worker frees: its stream stays open
// (closing it made every client reconnect again, and again) and gets every
// event it missed.
func TestReplayWaitsForAFreeWorker(t *testing.T) {
	inner, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	gs := &gatedStore{Store: inner, entered: make(chan struct{}), gate: make(chan struct{})}
	th := newTestHub(t, gs, 1, func(c *Config) { c.Workers, c.QueueLen = 1, 1 })
	seen := th.publish(store.Event{Key: "k", Data: []byte("seen")})
	missed := th.publish(store.Event{Key: "k", Data: []byte("1")}, store.Event{Key: "k", Data: []byte("2")})
	var streams []*testStream
	streams = append(streams, th.open(0, Subscription{Keys: keys("k"), Resume: true, LastID: seen[0]}, true))
	<-gs.entered  // the one worker holds the first replay's read
	for range 5 { // one fits in the queue, four find it full
		streams = append(streams, th.open(0, Subscription{Keys: keys("k"), Resume: true, LastID: seen[0]}, true))
	}
	if n := th.h.m.replayDeferred.Get(); n < 4 {
		t.Fatalf("%d replay reads put off, want at least 4", n)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case gs.gate <- struct{}{}:
			case <-gs.entered:
			case <-stop:
				return
			}
		}
	}()
	for i, s := range streams {
		waitUntil(t, "the missed events", func() bool { return len(ids(s.c.received())) >= 2 })
		if got := ids(s.c.received()); !slices.Equal(got, missed) || s.c.isClosed() {
			t.Fatalf("stream %d: got %v (closed %v), want %v", i, got, s.c.isClosed(), missed)
		}
	}
}

// countingStore counts Replay reads.
type countingStore struct {
	store.Store
	replays atomic.Int64
}

func (s *countingStore) Replay(ctx context.Context, keys []string, after uint64, limit int) ([]store.Event, error) {
	s.replays.Add(1)
	return s.Store.Replay(ctx, keys, after, limit)
}

// TestReplayPagesShared: streams resuming from the same id share their
// replay pages (a reconnect storm reads each page once, not once per
// client), and a stream served a page read before newer events were
// fanned out still gets those events, once, before live ones.
func TestReplayPagesShared(t *testing.T) {
	inner, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	cs := &countingStore{Store: inner}
	th := newTestHub(t, cs, 2, nil)
	seen := th.publish(store.Event{Key: "k", Data: []byte("seen")})
	missed := th.publish(store.Event{Key: "k", Data: []byte("1")}, store.Event{Key: "k", Data: []byte("2")})
	var streams []*testStream
	for i := range 40 {
		streams = append(streams, th.open(i%2, Subscription{Keys: keys("k"), Resume: true, LastID: seen[0]}, true))
	}
	for i, s := range streams {
		waitUntil(t, "the missed events", func() bool { return len(ids(s.c.received())) >= 2 })
		if got := ids(s.c.received()); !slices.Equal(got, missed) {
			t.Fatalf("stream %d: got %v, want %v", i, got, missed)
		}
	}
	// Each stream reads 2 pages (1 event, then up to 4); shared, far fewer.
	if n := cs.replays.Load(); n > 10 {
		t.Fatalf("%d store replay reads for 40 streams resuming from one id, want pages shared", n)
	}

	// An event fanned out after the shared pages were read: a stream now
	// resuming from the same id must not be served pages that end before
	// it (engine's TestReconnectStressNoLossNoDuplicate catches the spin
	// on a stale page that sharing them anyway causes).
	later := th.publish(store.Event{Key: "k", Data: []byte("3")})
	waitUntil(t, "the live delivery of the later event", func() bool {
		return slices.Contains(ids(streams[0].c.received()), later[0])
	})
	late := th.open(0, Subscription{Keys: keys("k"), Resume: true, LastID: seen[0]}, true)
	live := th.publish(store.Event{Key: "k", Data: []byte("live")})
	want := append(append(slices.Clone(missed), later...), live...)
	waitUntil(t, "the live event", func() bool {
		got := ids(late.c.received())
		return len(got) > 0 && got[len(got)-1] == live[0]
	})
	if got := ids(late.c.received()); !slices.Equal(got, want) {
		t.Fatalf("late stream: got %v, want %v", got, want)
	}
}

// TestReplayPageCacheKeepsOnlySmallPages: pages over pageCacheMaxPage are
// not kept for later streams (a big replay's pages belong to its own
// outbound budget), small ones are, and what is kept is counted.
func TestReplayPageCacheKeepsOnlySmallPages(t *testing.T) {
	th := newTestHub(t, nil, 1, func(c *Config) { c.MaxOutboundBytes = 1 << 20 })
	big := strings.Repeat("x", pageCacheMaxPage+1)
	seen := th.publish(store.Event{Key: "big", Data: []byte("seen")}, store.Event{Key: "small", Data: []byte("seen")})
	th.publish(store.Event{Key: "big", Data: []byte(big)}, store.Event{Key: "small", Data: []byte("s")})
	b := th.open(0, Subscription{Keys: keys("big"), Resume: true, LastID: seen[0]}, true)
	waitUntil(t, "the big event", func() bool { return len(ids(b.c.received())) >= 1 })
	kept := func() (n, bytes int) {
		th.h.pages.mu.Lock()
		defer th.h.pages.mu.Unlock()
		for _, e := range th.h.pages.m {
			if e.p != nil {
				n++
				if len(e.p.buf) > pageCacheMaxPage {
					t.Errorf("a page of %d bytes kept", len(e.p.buf))
				}
			}
		}
		return n, th.h.pages.bytes
	}
	n0, bytes0 := kept()
	s := th.open(0, Subscription{Keys: keys("small"), Resume: true, LastID: seen[1]}, true)
	waitUntil(t, "the small event", func() bool { return len(ids(s.c.received())) >= 1 })
	n1, bytes1 := kept()
	if n1 <= n0 || bytes1 <= bytes0 || bytes1 > pageCacheBytes {
		t.Fatalf("kept %d pages, %d bytes after the big replay; %d, %d after the small one", n0, bytes0, n1, bytes1)
	}
}
