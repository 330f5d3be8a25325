package hub

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sseloop/sseloop/store"
	"github.com/yosida95/uritemplate/v3"
)

// Mercure streams. A Mercure subscriber names topic selectors instead of
// keys: "*" (every topic), a URI template (RFC 6570, matched the way the
// Mercure hub matches it: the template's regular expression, from the same
// library), or an exact topic. An event matches a selector when its
// canonical topic (store.Event.Key) or one of its alternate topics
// (store.Event.Topics) does; a private event also needs one of the
// stream's authorized selectors (the mercure.subscribe claim) to match one
// of its topics, not necessarily the same one.
//
// Matching costs per distinct selector, not per subscriber. Each loop keeps
// its Mercure streams in sets by selector: exact topics in a map by topic
// (an event looks up its canonical and alternate topics), templates in a
// map by template, "*" in one set. Each distinct template is compiled once
// (the hub's refcounted registry) and tried once per new event by the feed
// reader, which hands the loops the list of templates that matched; a loop
// then visits only the sets that the event's topics and templates name.
// A stream reachable through several sets gets the event once: it is
// written only while its id is newer than the stream's last id.
//
// Frames are built once per event, in the Mercure format (event:, retry:,
// id:, data:), with the publisher's id (store.Event.PubID) as the SSE id,
// or the decimal sseloop id for events without one (native triggers).
// Native streams never see private events: they have no Mercure claims.

// MercureSub makes [Subscription] a Mercure stream.
type MercureSub struct {
	// Topics are the topic selectors, distinct. They are copied.
	Topics []string
	// Auth are the selectors of the mercure.subscribe claim: the private
	// events the stream may receive. nil = public events only.
	Auth []string
	// Heartbeat replaces the hub's Heartbeat for this stream; 0 = the hub's.
	Heartbeat time.Duration
	// ID and Payload are the owner's (the subscriptions API); the hub only
	// keeps them for [Hub.MercureStreams].
	ID      string
	Payload []byte
	// Left, if not nil, is called on the loop when the stream leaves.
	Left func()
}

// selector is one topic selector, compiled.
type selector struct {
	s  string
	re *regexp.Regexp // nil: "*" or an exact topic
}

func (x *selector) match(topic string) bool {
	return x.s == "*" || x.s == topic || (x.re != nil && x.re.MatchString(topic))
}

// matchAny reports whether x matches the canonical or an alternate topic.
func (x *selector) matchAny(ev *store.Event) bool {
	if x.match(ev.Key) {
		return true
	}
	for _, t := range ev.Topics {
		if x.match(t) {
			return true
		}
	}
	return false
}

// isTemplate reports whether s may be a URI template: Mercure treats a
// selector without "{" as a plain topic, and one that fails to parse too.
func isTemplate(s string) bool { return strings.Contains(s, "{") }

// templates is the hub's registry of the URI templates some stream uses,
// each compiled once and counted.
type templates struct {
	mu   sync.Mutex
	m    map[string]*template
	list atomic.Pointer[[]*template] // copy-on-write snapshot for the feed reader
}

type template struct {
	sel  selector
	refs int
}

// acquire returns the compiled selector of s, compiling a new template.
func (ts *templates) acquire(s string) selector {
	if s == "*" || !isTemplate(s) {
		return selector{s: s}
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t := ts.m[s]; t != nil {
		t.refs++
		return t.sel
	}
	sel := selector{s: s}
	if tpl, err := uritemplate.New(s); err == nil {
		sel.re = tpl.Regexp()
	}
	if sel.re == nil {
		return sel // not a template after all: an exact topic
	}
	if ts.m == nil {
		ts.m = make(map[string]*template)
	}
	ts.m[s] = &template{sel: sel, refs: 1}
	ts.publish()
	return sel
}

// release drops one reference to the template of sel.
func (ts *templates) release(sel selector) {
	if sel.re == nil {
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t := ts.m[sel.s]; t != nil {
		if t.refs--; t.refs == 0 {
			delete(ts.m, sel.s)
			ts.publish()
		}
	}
}

func (ts *templates) publish() {
	list := make([]*template, 0, len(ts.m))
	for _, t := range ts.m {
		list = append(list, t)
	}
	ts.list.Store(&list)
}

func (ts *templates) snapshot() []*template {
	if p := ts.list.Load(); p != nil {
		return *p
	}
	return nil
}

// mstream is the Mercure state of one stream, kept by its loop (the
// Stream itself has no room for it: see TestConnStaysSmall in engine).
// Its selectors are read-only once built, so replay workers read them.
type mstream struct {
	s       *Stream
	sub     *MercureSub
	topics  []selector
	auth    []selector
	authAll bool
	hb      time.Duration
	nodes   []mnode // one per topic selector, in the loop's sets
}

// matches reports whether the stream may receive ev: Mercure's rule.
func (m *mstream) matches(ev *store.Event) bool {
	subscribed := false
	for i := range m.topics {
		if m.topics[i].matchAny(ev) {
			subscribed = true
			break
		}
	}
	if !subscribed || !ev.Private {
		return subscribed
	}
	for i := range m.auth {
		if m.auth[i].matchAny(ev) {
			return true
		}
	}
	return false
}

// mayRead reports whether the stream may receive private frame f, with the
// templates the feed reader found matching f.
func (m *mstream) mayRead(f *mframe) bool {
	if m.authAll {
		return true
	}
	for i := range m.auth {
		a := m.auth[i].s
		if a == f.key || slices.Contains(f.alt, a) || (m.auth[i].re != nil && slices.Contains(f.tmpls, a)) {
			return true
		}
	}
	return false
}

// mset is the Mercure streams of one selector on one loop: an intrusive
// list of the nodes embedded in each stream's state, as keySet is for
// native streams, so joining allocates only the set of a new selector and
// leaving nothing.
type mset struct {
	sel  string
	head *mnode
	n    int
}

// mnode is one stream's membership of one mset.
type mnode struct {
	next, prev *mnode
	m          *mstream
	set        *mset
}

// mloop is a loop's Mercure streams, by selector.
type mloop struct {
	exact   map[string]*mset // exact topic
	tmpl    map[string]*mset // URI template
	all     mset             // "*"
	streams map[*Stream]*mstream
}

// mframe is one event encoded for Mercure streams.
type mframe struct {
	id      uint64
	key     string
	alt     []string
	private bool
	tmpls   []string // the registered templates that match one of its topics
	b       []byte
}

func (l *Loop) joinMercure(s *Stream, sub *MercureSub) {
	ts := &l.h.tmpls
	m := &mstream{s: s, sub: sub, hb: sub.Heartbeat}
	if m.hb <= 0 {
		m.hb = l.h.cfg.Heartbeat
	}
	for _, t := range sub.Topics {
		m.topics = append(m.topics, ts.acquire(t))
	}
	for _, a := range sub.Auth {
		if a == "*" {
			m.authAll = true
		}
		m.auth = append(m.auth, ts.acquire(a))
	}
	ml := l.merc
	if ml == nil {
		ml = &mloop{exact: map[string]*mset{}, tmpl: map[string]*mset{}, all: mset{sel: "*"}, streams: map[*Stream]*mstream{}}
		l.merc = ml
	}
	ml.streams[s] = m
	// Selectors are distinct, so a stream is at most once in a set.
	m.nodes = make([]mnode, len(m.topics))
	for i := range m.topics {
		sel := &m.topics[i]
		var set *mset
		switch {
		case sel.s == "*":
			set = &ml.all
		case sel.re != nil:
			set = setOf(ml.tmpl, sel.s)
		default:
			set = setOf(ml.exact, sel.s)
		}
		u := &m.nodes[i]
		u.m, u.set, u.next = m, set, set.head
		if set.head != nil {
			set.head.prev = u
		}
		set.head = u
		set.n++
	}
	l.h.m.streams.Add(1)
	l.h.mercN.Add(1)
}

// setOf returns the set of selector k, creating it.
func setOf(sets map[string]*mset, k string) *mset {
	set := sets[k]
	if set == nil {
		set = &mset{sel: k}
		sets[k] = set
	}
	return set
}

// leaveMercure removes s from the Mercure sets, if it is a Mercure stream.
func (l *Loop) leaveMercure(s *Stream) bool {
	ml := l.merc
	if ml == nil {
		return false
	}
	m := ml.streams[s]
	if m == nil {
		return false
	}
	delete(ml.streams, s)
	for i := range m.nodes {
		u := &m.nodes[i]
		set := u.set
		if u.prev != nil {
			u.prev.next = u.next
		} else {
			set.head = u.next
		}
		if u.next != nil {
			u.next.prev = u.prev
		}
		u.next, u.prev = nil, nil
		if set.n--; set.n == 0 && set != &ml.all {
			if m.topics[i].re != nil {
				delete(ml.tmpl, set.sel)
			} else {
				delete(ml.exact, set.sel)
			}
		}
	}
	m.nodes = nil
	for i := range m.topics {
		l.h.tmpls.release(m.topics[i])
	}
	for i := range m.auth {
		l.h.tmpls.release(m.auth[i])
	}
	l.h.mercN.Add(-1)
	if m.sub.Left != nil {
		m.sub.Left()
	}
	return true
}

// MercureStreams calls fn with the subscription of every open Mercure
// stream, loop by loop, on each loop's goroutine (never two at once), and
// returns once every loop has answered or ctx is done. It blocks: call it
// from a worker, never from a loop. fn must not keep ms past its return
// unless it copies what it needs.
func (h *Hub) MercureStreams(ctx context.Context, fn func(ms *MercureSub)) error {
	for _, l := range *h.loops.Load() {
		done := make(chan struct{})
		l.exec.Execute(func() {
			defer close(done)
			if l.merc == nil {
				return
			}
			for s, m := range l.merc.streams {
				if s.state == stateOpen {
					fn(m.sub)
				}
			}
		})
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// mercureOf returns the Mercure state of s, or nil for a native stream.
func (l *Loop) mercureOf(s *Stream) *mstream {
	if l.merc == nil || s.subs != nil {
		return nil
	}
	return l.merc.streams[s]
}

// encodeMercure adds the Mercure frames of evs to b when some loop has a
// Mercure stream: each event encoded once, each registered template tried
// once against its topics.
func (h *Hub) encodeMercure(b *batch, evs []store.Event) {
	if h.mercN.Load() == 0 || len(evs) == 0 {
		return
	}
	tmpls := h.tmpls.snapshot()
	frames := make([]mframe, len(evs))
	ends := make([]int, len(evs))
	var buf, poke []byte
	for i := range evs {
		ev := &evs[i]
		f := &frames[i]
		f.id, f.key, f.alt, f.private = ev.ID, ev.Key, ev.Topics, ev.Private
		for _, t := range tmpls {
			if t.sel.matchAny(ev) {
				f.tmpls = append(f.tmpls, t.sel.s)
			}
		}
		buf = AppendMercureFrame(buf, ev, &poke)
		ends[i] = len(buf)
	}
	start := 0
	for i := range frames {
		frames[i].b = buf[start:ends[i]:ends[i]]
		start = ends[i]
	}
	b.merc = frames
}

// fanoutMercure writes b's Mercure frames to this loop's live Mercure
// streams, in id order, each at most once per event.
func (l *Loop) fanoutMercure(b *batch) {
	ml := l.merc
	if ml == nil || len(ml.streams) == 0 {
		return
	}
	for i := range b.merc {
		f := &b.merc[i]
		l.deliverSet(ml.exact[f.key], f)
		for _, t := range f.alt {
			l.deliverSet(ml.exact[t], f)
		}
		for _, t := range f.tmpls {
			l.deliverSet(ml.tmpl[t], f)
		}
		l.deliverSet(&ml.all, f)
	}
}

func (l *Loop) deliverSet(set *mset, f *mframe) {
	if set == nil {
		return
	}
	for u := set.head; u != nil; {
		// A failed write closes the stream at once (Leave unlinks its
		// nodes), so take next first: it is another stream's node.
		next := u.next
		m := u.m
		s := m.s
		switch {
		case s.state != stateOpen || s.replay != nil || f.id <= s.lastID:
			// closed, replaying (it reads f from the store), or has f already
		case f.private && !m.mayRead(f):
		default:
			l.send(s, f.b, f.id, 1)
		}
		u = next
	}
}

// mercureHeartbeat is the comment the Mercure hub sends.
var mercureHeartbeat = []byte(":\n")

// AppendMercureFrame appends ev as the Mercure hub writes it:
//
//	event: <name>     (only when set)
//	retry: <ms>       (only when set)
//	id: <PubID, or the decimal id when there is none>
//	data: <line>      (one per line of data, at least one)
//	<blank line>
//
// A native poke (no data, no PubID) carries its JSON, as on native streams.
func AppendMercureFrame(dst []byte, ev *store.Event, scratch *[]byte) []byte {
	if ev.Name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, ev.Name...)
		dst = append(dst, '\n')
	}
	if ev.Retry > 0 {
		dst = append(dst, "retry: "...)
		dst = strconv.AppendInt(dst, ev.Retry, 10)
		dst = append(dst, '\n')
	}
	dst = append(dst, "id: "...)
	if ev.PubID != "" {
		dst = append(dst, ev.PubID...)
	} else {
		dst = strconv.AppendUint(dst, ev.ID, 10)
	}
	dst = append(dst, '\n')
	data := ev.Data
	if len(data) == 0 && ev.PubID == "" {
		*scratch = AppendPoke((*scratch)[:0], ev.Key, ev.ID, ev.Time)
		data = *scratch
	}
	return append(appendDataLines(dst, data), '\n')
}

// appendDataLines appends one "data: " line per line of data (CR, LF and
// CRLF end a line, as in browsers), at least one.
func appendDataLines(dst, data []byte) []byte {
	for {
		i := 0
		for i < len(data) && data[i] != '\n' && data[i] != '\r' {
			i++
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if i == len(data) {
			return dst
		}
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// readMercurePage reads one replay page of a Mercure stream: the change
// feed after req.after, filtered by the stream's selectors (a Mercure
// stream may match any topic, so there is no per-key history to read).
// Store worker.
func (h *Hub) readMercurePage(ctx context.Context, req pageReq) *page {
	p := &page{gapMark: req.gapMark, last: req.after}
	head, err := h.head(ctx, req.first)
	if err != nil {
		return &page{err: err}
	}
	upTo := head.LastID
	p.upTo = upTo
	after := req.after
	switch {
	case req.first && after > upTo:
		// An id from the future (the store was wiped or replaced): say so
		// and go on from what the store has, as key replays do.
		p.gap = AppendGap(nil, nil, 0)
		p.reset, after, p.last, p.gapMark = true, upTo, upTo, upTo
	case req.first && after > 0 && after < head.Epoch:
		// An id of an incarnation the store lost: what followed it is gone.
		p.gap = AppendGap(nil, nil, 0)
	}
	evs, err := h.st.After(ctx, after, req.limit)
	if err != nil {
		return &page{err: err}
	}
	p.full = len(evs) == req.limit
	if i := slices.IndexFunc(evs, func(ev store.Event) bool { return ev.ID > upTo }); i >= 0 {
		evs, p.full = evs[:i], true
	}
	// Ids are contiguous within an incarnation: an id missing after the
	// cursor is an event the store removed before this stream read it
	// (max_events, history.ttl, the Redis feed's cap). Its topics went with
	// it, so the stream is told it may have missed something: a gap where
	// the ids jump (false for a stream its topics would not have matched).
	// Not on a replay from "earliest" (req.gapMark 0: it asked for what is
	// retained), nor where a gap was just announced.
	if req.gapMark != 0 && p.gap == nil {
		next := after + 1
		for i := range evs {
			if evs[i].ID == next {
				next++
				continue
			}
			if i == 0 {
				p.gap = AppendGap(nil, nil, 0)
				next = evs[i].ID + 1
				continue
			}
			// Stop before the hole: the next page starts with it.
			evs, p.full = evs[:i], true
			break
		}
		if !p.full && next <= upTo {
			if len(evs) == 0 {
				// Everything up to upTo is gone.
				p.gap = AppendGap(nil, nil, 0)
				p.last = upTo
			} else {
				p.full = true // the next page starts with the hole
			}
		}
	}
	if len(evs) > 0 {
		p.last = evs[len(evs)-1].ID // read, matched or not
	}
	var poke []byte
	for i := range evs {
		if !req.merc.matches(&evs[i]) {
			continue
		}
		p.buf = AppendMercureFrame(p.buf, &evs[i], &poke)
		p.ends = append(p.ends, len(p.buf))
		p.ids = append(p.ids, evs[i].ID)
	}
	return p
}

// MatchSelector reports whether the Mercure selector sel matches topic. It
// compiles a template on every call: for one-off checks off the event
// loop (a publisher's claim), not for delivery.
func MatchSelector(sel, topic string) bool {
	x := selector{s: sel}
	if sel != "*" && isTemplate(sel) {
		if tpl, err := uritemplate.New(sel); err == nil {
			x.re = tpl.Regexp()
		}
	}
	return x.match(topic)
}
