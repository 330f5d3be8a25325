package hub

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/sseloop/sseloop/timerwheel"
)

// Loop is the hub's state of one event loop: its subscriber sets and its
// timer wheel. Every method and field except the atomics is owned by the
// loop's goroutine (see the package rule).
type Loop struct {
	h     *Hub
	exec  Executor
	wheel *timerwheel.Wheel
	now   int64 // loop clock in unix nanoseconds, refreshed by every task
	sets  map[string]*keySet
	merc  *mloop // Mercure streams (mercure.go); nil until the first

	// seen is the feed position of the newest batch fanned out here: every
	// event up to it was offered to this loop's live streams. A replay
	// hands its stream over to live delivery only once it has read the
	// store up to seen (see Loop.onPage), so nothing falls in between.
	seen uint64

	waiting []*Stream // replays waiting for their connection to drain

	// users is the user of each open stream that has one (see presence.go):
	// a side table, so that Stream does not grow for a field most
	// deployments leave empty.
	users     map[*Stream]string
	pres      map[*keySet]*keyPresence // keys with users, or all while tracking
	presDirty map[string]struct{}      // tracked keys whose presence changed

	// counters batched per task and flushed to the shared metrics, so that a
	// fan-out to 10,000 streams costs one atomic add, not 10,000.
	delivered, written, heartbeats int

	tickQueued  atomic.Bool  // a wheel tick is queued; the clock skips one
	drainQueued atomic.Bool  // a drain check is queued
	nWaiting    atomic.Int32 // len(waiting), for the drain goroutine
	fanouts     atomic.Int32 // fan-out tasks queued and not yet run
	presFlag    atomic.Bool  // presDirty is not empty
}

// NewLoop registers a loop whose functions run through exec. Call it once
// per event loop, from any goroutine, before the loop opens streams.
func (h *Hub) NewLoop(exec Executor) *Loop {
	now := h.cfg.Now()
	// Enough slots that every heartbeat is less than one revolution away,
	// so Advance never walks timers that are not due.
	slots := int(h.cfg.Heartbeat/h.cfg.Tick) + 1
	slots = min(max(slots, 64), 1<<16)
	l := &Loop{
		h:     h,
		exec:  exec,
		wheel: timerwheel.New(h.cfg.Tick, slots, now),
		now:   now.UnixNano(),
		sets:  make(map[string]*keySet),
	}
	h.loopsMu.Lock()
	next := append(append([]*Loop(nil), *h.loops.Load()...), l)
	h.loops.Store(&next)
	h.loopsMu.Unlock()
	return l
}

// Executor returns the executor the loop was registered with.
func (l *Loop) Executor() Executor { return l.exec }

// Wheel returns the loop's timer wheel, for the owner's own timers (request
// timeouts). Loop goroutine only.
func (l *Loop) Wheel() *timerwheel.Wheel { return l.wheel }

// Now returns the loop clock in unix nanoseconds, as of the last task the
// hub ran on the loop. Loop goroutine only.
func (l *Loop) Now() int64 { return l.now }

// advance moves the loop clock and its timer wheel to now.
func (l *Loop) advance(now time.Time) {
	l.now = max(l.now, now.UnixNano())
	l.wheel.Advance(now)
	l.flushCounters()
}

func (l *Loop) flushCounters() {
	m := l.h.m
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

// Reason says why the hub closed a stream.
type Reason uint8

// The reasons the hub closes a stream.
const (
	ReasonNone         Reason = iota
	ReasonSlowConsumer        // more than MaxOutboundBytes unsent
	ReasonTokenExpired        // the stream's token expired
	ReasonStoreError          // its replay could not be read
)

// String returns the reason as the connections_closed_total label.
func (r Reason) String() string {
	switch r {
	case ReasonSlowConsumer:
		return "slow_consumer"
	case ReasonTokenExpired:
		return "token_expired"
	case ReasonStoreError:
		return "store_error"
	}
	return ""
}

// Stream is one subscriber connection. The owner embeds it in its own
// connection state (one allocation per connection) and calls [Stream.Init]
// when the connection opens; [Loop.Open] makes it an event stream. Its
// fields are owned by its loop's goroutine.
//
// It is laid out for size: with the engine's four bytes of HTTP state the
// connection struct fills the 128-byte size class exactly.
type Stream struct {
	conn   Conn
	loop   *Loop
	timer  timerwheel.Timer // the owner's request timeouts, then heartbeat and expiry
	subs   []sub            // one per subscribed key
	replay *replay          // non-nil until the stream has caught up with live delivery

	lastID    uint64 // id of the newest event written to this stream
	lastWrite int64  // loop clock at the last write, for heartbeats
	expires   uint32 // token expiry in unix seconds, 0 = never
	state     streamState
	reason    Reason
}

type streamState uint8

const (
	stateIdle    streamState = iota // not a stream (yet)
	stateOpen                       // in its loop's sets
	stateClosing                    // the hub closed it; Leave follows
	stateLeft                       // Leave ran
)

// Init binds s to its connection and loop and arms the connection's timer
// to call fire after d (the owner's first request timeout). fire is bound
// once: [Stream.Arm] and the hub re-arm the timer with it, so it must call
// [Loop.Fire] while the connection is a stream. Loop goroutine.
func (s *Stream) Init(c Conn, l *Loop, fire func(), d time.Duration) {
	s.conn, s.loop = c, l
	l.wheel.Schedule(&s.timer, d, fire)
}

// Conn returns the connection given to Init.
func (s *Stream) Conn() Conn { return s.conn }

// Loop returns the loop given to Init.
func (s *Stream) Loop() *Loop { return s.loop }

// Arm arms the connection's timer for d, with the callback given to Init.
func (s *Stream) Arm(d time.Duration) { s.loop.wheel.Reset(&s.timer, d) }

// Disarm stops the connection's timer.
func (s *Stream) Disarm() { s.timer.Stop() }

// Streaming reports whether s is an open event stream.
func (s *Stream) Streaming() bool { return s.state == stateOpen }

// Reason returns why the hub closed s (ReasonNone if it did not).
func (s *Stream) Reason() Reason { return s.reason }

// keySet is a loop's subscribers of one key: an intrusive list of the subs
// embedded in each stream, so joining and leaving allocate nothing.
type keySet struct {
	key  string
	head *sub
	n    int
}

// sub is one stream's membership of one keySet.
type sub struct {
	next, prev *sub
	s          *Stream
	ks         *keySet
}

// Subscription describes a stream to open.
type Subscription struct {
	// Keys are the stream's keys, distinct and valid. They are copied.
	Keys [][]byte
	// Head is written first (the HTTP response head and the retry field).
	Head []byte
	// Resume asks for the retained events after LastID before live ones.
	Resume bool
	// LastID is the id of the newest event the client has: only newer
	// events are written.
	LastID uint64
	// Expires is when the stream's token expires, unix seconds; 0 = never.
	Expires uint32
	// Mercure, if not nil, makes the stream a Mercure stream of these
	// selectors (Keys is then ignored): see mercure.go.
	Mercure *MercureSub
	// User is who opens the stream (the token's subject), for presence;
	// "" = nobody in particular, and nothing is kept for the stream.
	User string
}

// Open turns s into an event stream: it joins the subscriber sets of
// sub.Keys, writes sub.Head, arms the heartbeat and, with sub.Resume,
// starts the replay. It joins before writing the head: a client that sees
// the head may publish at once, and that event must find this stream.
func (l *Loop) Open(s *Stream, sub Subscription) {
	s.state = stateOpen
	s.lastID = sub.LastID
	s.expires = sub.Expires
	hb := l.h.cfg.Heartbeat
	if sub.Mercure != nil {
		l.joinMercure(s, sub.Mercure)
		hb = l.merc.streams[s].hb
	} else {
		l.join(s, sub.Keys, sub.User)
	}
	l.write(s, sub.Head)
	// The first heartbeat comes after a random part of the interval, so
	// that streams opened together (a reconnect storm after a restart) do
	// not all get their comment in the same tick ever after.
	l.armStream(s, hb/2+time.Duration(rand.Int64N(int64(hb/2)+1)))
	if sub.Mercure != nil {
		if sub.Resume {
			l.startMercureReplay(s, sub.LastID)
		}
		return
	}
	if sub.Resume {
		keys := make([]string, len(sub.Keys))
		for i, k := range sub.Keys {
			keys[i] = string(k)
		}
		l.startReplay(s, keys, sub.LastID)
	} else {
		l.sendPresenceState(s)
	}
}

func (l *Loop) join(s *Stream, keys [][]byte, user string) {
	s.subs = make([]sub, len(keys))
	l.h.m.streams.Add(1)
	if l.h.pres.cfg.Off {
		user = "" // presence off: nobody asks who is online
	}
	if user != "" {
		if l.users == nil {
			l.users = make(map[*Stream]string)
		}
		l.users[s] = user
	}
	for i, k := range keys {
		ks := l.sets[string(k)] // no allocation for the lookup
		if ks == nil {
			ks = &keySet{key: string(k)}
			l.sets[ks.key] = ks
			l.h.interest.add(ks.key)
		}
		u := &s.subs[i]
		u.s, u.ks, u.next = s, ks, ks.head
		if ks.head != nil {
			ks.head.prev = u
		}
		ks.head = u
		ks.n++
		if user != "" || l.h.pres.on {
			l.joinPresence(ks, user)
		}
	}
}

// Leave removes s from its sets and stops its timer. The owner calls it
// when the connection has closed, whatever closed it. Loop goroutine.
func (l *Loop) Leave(s *Stream) {
	s.timer.Stop()
	if s.state == stateLeft {
		return
	}
	if s.state != stateIdle {
		l.h.m.streams.Add(-1)
	}
	s.state = stateLeft
	if s.subs == nil {
		l.leaveMercure(s)
	}
	var user string
	if len(l.users) > 0 {
		user = l.users[s]
		delete(l.users, s)
	}
	for i := range s.subs {
		u := &s.subs[i]
		ks := u.ks
		if u.prev != nil {
			u.prev.next = u.next
		} else {
			ks.head = u.next
		}
		if u.next != nil {
			u.next.prev = u.prev
		}
		u.next, u.prev = nil, nil
		ks.n--
		if len(l.pres) > 0 || l.h.pres.shared != nil {
			l.leavePresence(ks, user)
		}
		if ks.n == 0 {
			delete(l.sets, ks.key)
			l.h.interest.remove(ks.key)
		}
	}
	s.subs = nil
	if s.replay != nil {
		s.replay = nil
		l.unwait(s)
	}
}

// close closes s for reason; Leave follows from the owner.
func (l *Loop) close(s *Stream, reason Reason) {
	if s.state != stateOpen {
		return
	}
	s.state = stateClosing
	s.reason = reason
	_ = s.conn.Close()
}

// Fire runs a stream's timer: a heartbeat comment when the stream has been
// silent for Heartbeat, or its close when its token expired. The owner's
// timer callback calls it while the connection is a stream.
func (l *Loop) Fire(s *Stream) {
	if s.state != stateOpen {
		return
	}
	if s.expires != 0 && l.now/int64(time.Second) >= int64(s.expires) {
		l.h.m.expired.Inc()
		l.close(s, ReasonTokenExpired)
		return
	}
	hb, comment := l.h.cfg.Heartbeat, heartbeatComment
	if m := l.mercureOf(s); m != nil {
		hb, comment = m.hb, mercureHeartbeat
	}
	if quiet := time.Duration(l.now - s.lastWrite); quiet < hb {
		l.armStream(s, hb-quiet)
		return
	}
	l.write(s, comment)
	l.heartbeats++
	l.checkOutbound(s)
	if s.state == stateOpen {
		l.armStream(s, hb)
	}
}

// armStream arms a stream's timer for the next heartbeat in d, or for its
// token's expiry if that comes first: one timer serves both.
func (l *Loop) armStream(s *Stream, d time.Duration) {
	if s.expires != 0 {
		left := time.Duration(int64(s.expires)*int64(time.Second) - l.now)
		d = max(min(d, left), 0)
	}
	l.wheel.Reset(&s.timer, d)
}

var heartbeatComment = []byte(":\n\n")

// write writes b to s and records the time for the heartbeat.
func (l *Loop) write(s *Stream, b []byte) {
	s.lastWrite = l.now
	l.written += len(b)
	_, _ = s.conn.Write(b)
}

// Write writes b to s outside the event path (the owner's own frames).
// Loop goroutine.
func (l *Loop) Write(s *Stream, b []byte) {
	if s.state == stateOpen {
		l.write(s, b)
		l.checkOutbound(s)
	}
}

// send writes n contiguous event frames, the newest with id last, to live
// stream s and evicts s if it is not reading.
func (l *Loop) send(s *Stream, b []byte, last uint64, n int) {
	if s.state != stateOpen {
		return
	}
	s.lastID = max(s.lastID, last)
	l.write(s, b)
	l.delivered += n
	l.checkOutbound(s)
}

// checkOutbound evicts a stream whose unsent data exceeds the limit: a
// client that stopped reading must not make the server hold unbounded
// memory. It reconnects with Last-Event-ID and replays what it missed.
func (l *Loop) checkOutbound(s *Stream) {
	if s.state == stateOpen && s.conn.OutboundBuffered() > l.h.cfg.MaxOutboundBytes {
		l.h.m.slowEvicted.Inc()
		l.h.m.limit("max_outbound_bytes")
		l.close(s, ReasonSlowConsumer)
	}
}

// fanout writes the frames of b to this loop's live subscribers of their
// keys. Streams still replaying are skipped: their replay reads these
// events from the store (see Loop.onPage).
func (l *Loop) fanout(b *batch) {
	start := time.Now()
	l.now = max(l.now, b.now)
	l.seen = max(l.seen, b.upTo)
	multi := false
	for gi := range b.groups {
		g := &b.groups[gi]
		ks := l.sets[g.key]
		if ks == nil {
			continue
		}
		last := g.frames[len(g.frames)-1].id
		for u := ks.head; u != nil; {
			// A failed write closes s at once (Leave unlinks its subs), so
			// take next first. next is another stream's: keys of one stream
			// are distinct, so s never owns two nodes of one list.
			next := u.next
			s := u.s
			switch {
			case s.replay != nil:
			case len(s.subs) > 1:
				multi = true
			case last > s.lastID:
				i := 0
				for g.frames[i].id <= s.lastID {
					i++ // already written (a replay, or an earlier batch)
				}
				l.send(s, g.b[g.frames[i].off:], last, len(g.frames)-i)
			}
			u = next
		}
	}
	l.fanoutMercure(b)
	if multi {
		// Streams of several keys get their frames one by one in id order,
		// which Last-Event-ID needs.
		for _, f := range b.order {
			ks := l.sets[f.key]
			if ks == nil {
				continue
			}
			for u := ks.head; u != nil; {
				next := u.next
				if s := u.s; len(s.subs) > 1 && s.replay == nil && f.id > s.lastID {
					l.send(s, f.b, f.id, 1)
				}
				u = next
			}
		}
	}
	l.flushCounters()
	l.h.m.fanout.UpdateDuration(start)
}

// announceMercure writes frame to every live Mercure stream that has not
// been written an event after cursor, where the feed found events removed:
// not to those in a replay, nor to those a replay already took past
// cursor (a replay finds the hole itself). Loop goroutine.
func (l *Loop) announceMercure(frame []byte, cursor uint64) {
	if l.merc == nil {
		return
	}
	for s := range l.merc.streams {
		if s.replay == nil && s.lastID <= cursor {
			l.Write(s, frame)
		}
	}
	l.flushCounters()
}

// announce writes each key's notice (a gap event) to the live streams of
// the key that have not been written an event after cursor
// (math.MaxUint64: all of them). Replaying streams are skipped, and so are
// those a replay took past cursor: their replay checks retention itself.
// Loop goroutine.
func (l *Loop) announce(notices map[string][]byte, cursor uint64) {
	for key, frame := range notices {
		ks := l.sets[key]
		if ks == nil {
			continue
		}
		for u := ks.head; u != nil; {
			next := u.next
			if s := u.s; s.replay == nil && s.lastID <= cursor {
				l.Write(s, frame)
			}
			u = next
		}
	}
	l.flushCounters()
}
