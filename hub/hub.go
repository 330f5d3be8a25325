// Package hub is sseloop's delivery core: the per-loop subscriber sets, the
// change-feed reader that encodes each event once, the paged replay and its
// seam with live delivery, poke coalescing, slow-consumer eviction,
// heartbeats and token expiry, and the publish pipeline that appends
// triggered events to the store. It knows neither gnet nor HTTP: a
// connection is a [Conn] that writes bytes and reports what it still
// buffers, an event loop is an [Executor] that runs functions on its
// goroutine, and time comes from [Config.Now].
//
// The one rule: a [Loop] and every [Stream] open on it are touched only on
// that loop's goroutine, the one its Executor runs functions on. The hub's
// own goroutines (the clock, the feed reader, the replay drain check, the
// store workers and publishers) reach a loop only through Execute, and a
// loop never calls the store. The clock goroutine, which advances every
// loop's timer wheel, never waits on the store either, so heartbeats,
// request timeouts and token expiry fire while the store hangs.
//
// How an event travels: [Hub.Publish] queues it for the appender, which
// appends the waiting publications to the store in one call and wakes the
// feed reader; the feed reader reads the change feed after its cursor (one
// store call), encodes every event some loop has a subscriber for once
// ([batch]), and hands each loop one task that writes the shared bytes to
// that loop's subscribers (Loop.fanout). Mercure streams (topic selectors,
// private updates, the Mercure frame format) ride the same feed: see
// mercure.go.
package hub

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/sseloop/sseloop/store"
)

// Conn is a connection as the hub sees it; gnet.Conn satisfies it. The hub
// calls it only on the connection's loop.
type Conn interface {
	// Write queues b for sending and never blocks; b may be reused once it
	// returns. An error means the connection is closing.
	Write(b []byte) (int, error)
	// OutboundBuffered is how many written bytes are not yet sent.
	OutboundBuffered() int
	// Close closes the connection once, after its pending output; the owner
	// then calls [Loop.Leave] for its stream.
	Close() error
}

// Executor runs functions on one event loop's goroutine.
type Executor interface {
	// Execute queues fn to run on the loop, in order, and never blocks. It
	// may drop fn only while the server shuts down.
	Execute(fn func())
}

// Config configures a Hub. Zero durations and sizes are errors except where
// a default is stated; the engine fills them from its own configuration.
type Config struct {
	// Tick is the resolution of the loops' timer wheels and how often the
	// clock goroutine advances them.
	Tick time.Duration
	// Poll is how often the change feed is read when nothing woke the feed
	// reader (writes by other processes).
	Poll time.Duration
	// Heartbeat is how long a stream may stay silent before a ":" comment.
	Heartbeat time.Duration
	// MaxOutboundBytes bounds what a stream may have queued and unsent, live
	// and replay bytes alike; beyond it the stream is closed as a slow
	// consumer and the client resumes with Last-Event-ID.
	MaxOutboundBytes int
	// Workers is the number of goroutines that serve store reads for
	// replays and for the owner's requests ([Hub.Go]). Default 4.
	Workers int
	// QueueLen bounds the jobs waiting for workers and the publications
	// waiting for the appender; beyond it Go and Publish refuse. Default 4096.
	QueueLen int
	// Fill, if not nil, fetches the data of pokes (the engine's data
	// sources), on Fetchers goroutines, before the append.
	Fill Filler
	// Fetchers is the number of goroutines that run Fill. Default 16.
	Fetchers int
	// MaxBatchWait bounds how long an event this hub appended may wait
	// unread in the store while the feed reader holds back because the
	// loops are busy (adaptive batching, see pollFeed): once the oldest
	// unread event is this old, the reader reads and queues a batch behind
	// the running fan-outs, unless a loop is already overloaded
	// (maxQueuedFanoutsHard). Default 50 ms (see defaultMaxBatchWait).
	MaxBatchWait time.Duration
	// DirectPoll is how often the version markers of watched keys are read
	// from stores that have them (see runDirect). 0 = off.
	DirectPoll time.Duration
	// Presence configures presence queries and events (see presence.go).
	Presence PresenceConfig
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives the hub's logs. Default slog.Default().
	Logger *slog.Logger
	// Metrics is the set the hub registers its metrics in. Default: a new
	// set of its own.
	Metrics *metrics.Set
}

// Hub connects the store to the loops. Create it with New, add loops with
// NewLoop, start it with Run.
type Hub struct {
	cfg Config
	st  store.Store
	log *slog.Logger
	m   *hubMetrics

	loopsMu sync.Mutex
	loops   atomic.Pointer[[]*Loop] // copy-on-write snapshot

	interest interest
	tmpls    templates    // URI templates of Mercure streams (mercure.go)
	mercN    atomic.Int64 // Mercure streams open on all loops
	pres     presence
	wake     chan struct{} // a local publish wakes the feed reader
	deferred atomic.Bool   // the feed reader skipped a read because loops were busy
	// unreadSince is when this hub appended the oldest event the feed
	// reader has not read yet (unix ns, cfg.Now), 0 = none: the age that
	// MaxBatchWait bounds.
	unreadSince atomic.Int64

	workQ   chan func(context.Context)
	appendQ chan *Publication
	fetchQ  chan *Publication

	draining  atomic.Int32  // replays waiting for their connection to drain
	drainWake chan struct{} // the first of them starts the drain checks

	cursor atomic.Uint64 // the feed reader's position, for tests and metrics
	lost   atomic.Bool   // the store's state was found gone; its new incarnation not yet read
	epoch  atomic.Uint64 // the store's incarnation as the feed reader last saw it (store.HeadReader)
	pages  pageCache     // replay pages shared between streams (pagecache.go)
}

// New returns a hub that delivers the events of st. The caller owns st.
func New(cfg Config, st store.Store) (*Hub, error) {
	if st == nil {
		return nil, errors.New("hub: nil store")
	}
	if cfg.Tick <= 0 || cfg.Poll <= 0 || cfg.Heartbeat <= 0 || cfg.MaxOutboundBytes <= 0 {
		return nil, errors.New("hub: Tick, Poll, Heartbeat and MaxOutboundBytes must be positive")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	if cfg.Fetchers <= 0 {
		cfg.Fetchers = 16
	}
	if cfg.MaxBatchWait <= 0 {
		cfg.MaxBatchWait = defaultMaxBatchWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	h := &Hub{
		cfg:       cfg,
		st:        st,
		log:       cfg.Logger,
		wake:      make(chan struct{}, 1),
		workQ:     make(chan func(context.Context), cfg.QueueLen),
		appendQ:   make(chan *Publication, cfg.QueueLen),
		fetchQ:    make(chan *Publication, cfg.QueueLen),
		drainWake: make(chan struct{}, 1),
	}
	h.interest.m = make(map[string]int32)
	if cfg.Presence.NodeTTL > 0 && cfg.Presence.Interval > 0 && cfg.Presence.NodeTTL <= cfg.Presence.Interval {
		return nil, errors.New("hub: Presence.NodeTTL must exceed Presence.Interval")
	}
	h.pres.init(cfg.Presence, st)
	h.m = newHubMetrics(cfg.Metrics, h)
	empty := []*Loop{}
	h.loops.Store(&empty)
	return h, nil
}

// Store returns the hub's store.
func (h *Hub) Store() store.Store { return h.st }

// Run starts the hub's goroutines and blocks until ctx is cancelled and
// they have returned. The feed starts after the store's current last id: a
// stream that wants older events asks for a replay.
func (h *Hub) Run(ctx context.Context) error {
	last, err := h.st.LastID(ctx)
	if err != nil {
		return err
	}
	h.cursor.Store(last)
	if hr, ok := h.st.(store.HeadReader); ok {
		if head, err := hr.Head(ctx); err == nil {
			h.epoch.Store(head.Epoch)
		}
	}
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(h.runClock)
	run(func(ctx context.Context) { h.runFeed(ctx, last) })
	run(h.runDrain)
	run(h.runAppender)
	run(h.runDirect)
	run(h.runPresence)
	for range h.cfg.Fetchers {
		run(h.runFetcher)
	}
	for range h.cfg.Workers {
		run(h.runWorker)
	}
	wg.Wait()
	return nil
}

// Go runs job on a store worker and reports false, without running it, when
// the workers' queue is full. Any goroutine. A job that answers a request
// hands the answer back to the request's loop with Execute.
func (h *Hub) Go(job func(context.Context)) bool {
	select {
	case h.workQ <- job:
		return true
	default:
		return false
	}
}

func (h *Hub) runWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-h.workQ:
			job(ctx)
		}
	}
}

// runClock advances every loop's timer wheel once per Tick. It never waits
// on the store (that is the feed reader's job), so timers fire on time
// while the store is slow or unreachable.
func (h *Hub) runClock(ctx context.Context) {
	t := time.NewTicker(h.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := h.cfg.Now()
		for _, l := range *h.loops.Load() {
			// Skip a loop whose previous tick has not run yet: a loop busy
			// with a huge fan-out must not collect a backlog of ticks.
			if !l.tickQueued.CompareAndSwap(false, true) {
				continue
			}
			l.exec.Execute(func() {
				l.tickQueued.Store(false)
				l.advance(now)
			})
		}
	}
}

// drainInterval is how often a replay waiting for its connection to drain
// looks again. The checks run only while some replay waits.
const drainInterval = 5 * time.Millisecond

// runDrain checks, every drainInterval while any replay waits, whether the
// waiting replays' connections have drained enough for the next page. gnet
// has no "writable" callback, so this is a poll, but only of the few
// streams that are replaying, and only while they are.
func (h *Hub) runDrain(ctx context.Context) {
	t := time.NewTicker(drainInterval)
	defer t.Stop()
	for {
		if h.draining.Load() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-h.drainWake:
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, l := range *h.loops.Load() {
			if l.nWaiting.Load() == 0 || !l.drainQueued.CompareAndSwap(false, true) {
				continue
			}
			l.exec.Execute(func() {
				l.drainQueued.Store(false)
				l.checkDrained()
			})
		}
	}
}

// wakeFeed makes the feed reader read now.
func (h *Hub) wakeFeed() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// interest is the set of keys with a subscriber on any loop, so the feed
// reader encodes only events somebody will receive. Loops update it only
// when a key gains its first or loses its last subscriber on that loop.
type interest struct {
	mu sync.RWMutex
	m  map[string]int32
}

func (in *interest) add(key string) {
	in.mu.Lock()
	in.m[key]++
	in.mu.Unlock()
}

func (in *interest) remove(key string) {
	in.mu.Lock()
	if in.m[key]--; in.m[key] <= 0 {
		delete(in.m, key)
	}
	in.mu.Unlock()
}

// keys returns a snapshot of the keys with a subscriber on any loop.
func (in *interest) keys() []string {
	in.mu.RLock()
	defer in.mu.RUnlock()
	out := make([]string, 0, len(in.m))
	for k := range in.m {
		out = append(out, k)
	}
	return out
}

func (in *interest) len() int {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return len(in.m)
}

// Watched reports whether key has a subscriber on some loop. Any goroutine.
func (h *Hub) Watched(key string) bool {
	h.interest.mu.RLock()
	defer h.interest.mu.RUnlock()
	return h.interest.m[key] > 0
}
