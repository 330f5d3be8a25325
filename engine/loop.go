package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/timerwheel"
)

// loop is the state of one gnet event loop. Every field except tickQueued is
// owned by that loop's goroutine.
type loop struct {
	e  *Engine
	el gnet.EventLoop

	wheel *timerwheel.Wheel
	now   int64 // loop clock in unix nanoseconds, refreshed by every task
	sets  map[string]*keySet

	req  httpparse.Request // parser state, reused for every request on this loop
	out  []byte            // response scratch
	body []byte            // decoded chunked bodies
	keys [][]byte          // decoded subscription keys
	tok  []byte            // a token unescaped from the query

	// counters batched per task and flushed to the shared metrics, so that a
	// fan-out to 10,000 streams costs one atomic add, not 10,000.
	delivered, written, heartbeats int

	tickQueued atomic.Bool  // a wheel tick is queued; the ticker skips one
	fanouts    atomic.Int32 // fan-out tasks queued and not yet run
}

// keySet is a loop's subscribers of one key: an intrusive list of the subs
// embedded in each conn, so joining and leaving allocate nothing.
type keySet struct {
	key  string
	head *sub
	n    int
}

// sub is one conn's membership of one keySet.
type sub struct {
	next, prev *sub
	c          *conn
	ks         *keySet
}

func newLoop(e *Engine, el gnet.EventLoop) *loop {
	now := time.Now()
	// Enough slots that every heartbeat and header timeout is less than one
	// revolution away, so Advance never walks timers that are not due.
	slots := int(max(e.cfg.Heartbeat, e.cfg.Limits.IdleTimeout, e.cfg.Limits.HeaderTimeout)/e.cfg.Tick) + 1
	slots = min(max(slots, 64), 1<<16)
	return &loop{
		e:     e,
		el:    el,
		wheel: timerwheel.New(e.cfg.Tick, slots, now),
		now:   now.UnixNano(),
		sets:  make(map[string]*keySet),
	}
}

// execute runs fn on the loop's goroutine. It fails only while the engine
// shuts down, when there is nothing left to do.
func (l *loop) execute(fn func()) {
	_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		fn()
		return nil
	}))
}

// advance moves the loop clock and its timer wheel to now.
func (l *loop) advance(now time.Time) {
	l.now = now.UnixNano()
	l.wheel.Advance(now)
	l.flushCounters()
}

func (l *loop) flushCounters() {
	m := l.e.m
	if l.delivered > 0 {
		m.delivered.Add(l.delivered)
		l.delivered = 0
	}
	if l.written > 0 {
		m.bytes.Add(l.written)
		l.written = 0
	}
	if l.heartbeats > 0 {
		m.heartbeats.Add(l.heartbeats)
		l.heartbeats = 0
	}
}

// join adds c to the subscriber sets of keys. keys are distinct and valid.
func (l *loop) join(c *conn, keys [][]byte) {
	c.subs = make([]sub, len(keys))
	l.e.m.subs.Add(1)
	for i, k := range keys {
		ks := l.sets[string(k)] // no allocation for the lookup
		if ks == nil {
			ks = &keySet{key: string(k)}
			l.sets[ks.key] = ks
			l.e.interest.add(ks.key)
		}
		s := &c.subs[i]
		s.c, s.ks, s.next = c, ks, ks.head
		if ks.head != nil {
			ks.head.prev = s
		}
		ks.head = s
		ks.n++
	}
}

// drop removes c from its sets and the wheel. Called from OnClose.
func (l *loop) drop(c *conn) {
	c.timer.Stop()
	if c.subs != nil {
		l.e.m.subs.Add(-1)
	}
	c.phase = phaseClosed
	for i := range c.subs {
		s := &c.subs[i]
		ks := s.ks
		if s.prev != nil {
			s.prev.next = s.next
		} else {
			ks.head = s.next
		}
		if s.next != nil {
			s.next.prev = s.prev
		}
		s.next, s.prev = nil, nil
		ks.n--
		if ks.n == 0 {
			delete(l.sets, ks.key)
			l.e.interest.remove(ks.key)
		}
	}
	c.subs = nil
	c.pending = nil
}

// batch is a set of encoded frames that every loop writes to its own
// subscribers. It is read-only once built: loops share it.
//
// Frames are grouped by key, and each group's frames are contiguous in one
// buffer, so a stream of one key (the common case) gets every new event of
// its key in a single write: under load the ticker reads bigger batches
// (see pollFeed) and the syscalls per delivery fall. Streams of several keys
// get their frames one by one in id order, which Last-Event-ID needs.
type batch struct {
	now    int64
	groups []group  // one per key, in order of first appearance
	order  []*frame // every frame in id order
}

// group is the frames of one key in a batch.
type group struct {
	key    string
	b      []byte  // the frames, concatenated in id order
	frames []frame // each frame's bytes are a slice of b
}

type frame struct {
	id  uint64
	key string
	b   []byte
	off int // offset of b in its group's b
}

// fanout writes the frames of b to this loop's subscribers of their keys.
func (l *loop) fanout(b *batch) {
	start := time.Now()
	l.now = max(l.now, b.now)
	multi := false
	for gi := range b.groups {
		g := &b.groups[gi]
		ks := l.sets[g.key]
		if ks == nil {
			continue
		}
		last := g.frames[len(g.frames)-1].id
		for s := ks.head; s != nil; {
			// A failed write closes c at once (OnClose unlinks c's subs), so
			// take next first. next is another conn's: keys of one conn are
			// distinct, so c never owns two nodes of one list.
			next := s.next
			c := s.c
			switch {
			case c.pending != nil:
				for i := range g.frames {
					c.pending.frames = append(c.pending.frames, &g.frames[i])
				}
			case len(c.subs) > 1:
				multi = true
			case last > c.lastID:
				i := 0
				for g.frames[i].id <= c.lastID {
					i++ // the replay already sent these
				}
				l.sendFrames(c, g.b[g.frames[i].off:], last, len(g.frames)-i)
			}
			s = next
		}
	}
	if multi {
		for _, f := range b.order {
			ks := l.sets[f.key]
			if ks == nil {
				continue
			}
			for s := ks.head; s != nil; {
				next := s.next
				if c := s.c; len(c.subs) > 1 && c.pending == nil && f.id > c.lastID {
					l.send(c, f.b, f.id)
				}
				s = next
			}
		}
	}
	l.flushCounters()
	l.e.m.fanout.UpdateDuration(start)
}

// sendFrames writes n contiguous frames, the newest with id last.
func (l *loop) sendFrames(c *conn, b []byte, last uint64, n int) {
	if c.phase != phaseStream {
		return
	}
	c.lastID = last
	l.write(c, b)
	l.delivered += n
	l.checkOutbound(c)
}

// send writes one event frame to stream c and evicts c if it is not reading.
func (l *loop) send(c *conn, b []byte, id uint64) {
	if c.phase != phaseStream {
		return
	}
	if id > c.lastID {
		c.lastID = id
	}
	l.write(c, b)
	l.delivered++
	l.checkOutbound(c)
}

// write writes b to c and records the time for the heartbeat.
func (l *loop) write(c *conn, b []byte) {
	c.lastWrite = l.now
	l.written += len(b)
	_, _ = c.gc.Write(b)
}

// checkOutbound evicts a stream whose unsent data exceeds the limit: a
// client that stopped reading must not make the server hold unbounded
// memory. It reconnects with Last-Event-ID and replays what it missed.
func (l *loop) checkOutbound(c *conn) {
	if c.phase == phaseStream && c.gc.OutboundBuffered() > l.e.cfg.Limits.MaxOutboundBytes {
		l.e.m.slowEvicted.Inc()
		l.e.m.limit("max_outbound_bytes")
		l.close(c, reasonSlowConsumer)
	}
}

// close closes c after its pending output, from any point on the loop.
// A conn already closing (an error response was written and serve asked
// gnet to close it) keeps its first reason but is still closed: gnet's
// Close is idempotent, and a close requested by a return value of serve is
// lost when serve ran from a task rather than from OnTraffic.
func (l *loop) close(c *conn, reason closeReason) {
	if c.phase == phaseClosed {
		return
	}
	if c.phase != phaseClosing {
		c.phase = phaseClosing
		c.closeReason = reason
	}
	_ = c.gc.Close()
}

// interest is the set of keys with a subscriber on any loop, so the ticker
// encodes only events somebody will receive. Loops update it only when a key
// gains its first or loses its last subscriber on that loop.
type interest struct {
	mu sync.RWMutex
	m  map[string]int32
}

func (in *interest) add(key string) {
	in.mu.Lock()
	in.m[key]++
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

// len returns the number of keys with a subscriber on any loop.
func (in *interest) len() int {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return len(in.m)
}

func (in *interest) remove(key string) {
	in.mu.Lock()
	if in.m[key]--; in.m[key] <= 0 {
		delete(in.m, key)
	}
	in.mu.Unlock()
}

// announceGaps writes each key's gap event to the live streams of the key.
func (l *loop) announceGaps(gaps map[string][]byte) {
	for key, frame := range gaps {
		ks := l.sets[key]
		if ks == nil {
			continue
		}
		for s := ks.head; s != nil; {
			next := s.next
			if c := s.c; c.pending == nil && c.phase == phaseStream {
				l.write(c, frame)
				l.checkOutbound(c)
			}
			s = next
		}
	}
	l.flushCounters()
}
