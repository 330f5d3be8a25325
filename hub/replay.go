package hub

import (
	"context"
	"slices"

	"github.com/sseloop/sseloop/store"
)

// A replay sends a resuming stream the retained events of its keys after
// its Last-Event-ID, then hands it over to live delivery, with no gap and
// no duplicate at the seam and with bounded memory:
//
//   - It is read page by page on a store worker, and the next page is read
//     only when the connection has drained below half of MaxOutboundBytes.
//     A page is about a quarter of MaxOutboundBytes, and it is written only
//     as far as the connection's unsent bytes stay within the limit, so a
//     client that does not read makes the server hold at most about
//     MaxOutboundBytes plus one page, however long the history; a client
//     that reads gets all of it, however long, and is never evicted by it.
//   - While it replays, the stream gets no live frames (and holds none):
//     live events are in the store, and the replay reads them from there.
//     The loop remembers how far the feed it fanned out has reached
//     (Loop.seen); the replay hands over to live delivery once a page that
//     was not full was read from a store position at or past it. Every
//     later fan-out carries only newer events, and the stream's lastID
//     drops any it already has.
//   - A page keeps only events at or below the store's last id read just
//     before it: those were committed before the read began, so a store
//     whose multi-key reads are not one snapshot (Redis) cannot return a
//     later event while missing an earlier one.
//   - Every page checks retention, so events trimmed while the client was
//     away, or during a long replay, are announced with a gap event; an id
//     newer than anything in the store (the store was replaced or wiped)
//     is announced too, and the stream then takes every event from the
//     store's current position on: an id the store does not know never
//     silently filters what comes next.
type replay struct {
	keys    []string
	after   uint64   // the next page starts after this id
	gapMark uint64   // the highest Dropped already announced
	first   bool     // no page read yet
	reading bool     // a page read is on a worker
	waiting bool     // in the loop's waiting list
	limit   int      // events per page, adapted to their size
	page    *page    // read, not yet wholly written
	merc    *mstream // a Mercure stream: read the feed, filtered (mercure.go)
}

// page is one read of a replay, encoded on the worker.
type page struct {
	err     error
	gap     []byte   // a gap event to write before the frames, or nil
	buf     []byte   // the frames, back to back
	ends    []int    // end offset in buf of each frame
	ids     []uint64 // id of each frame
	pos     int      // frames written so far
	last    uint64   // the position after this page
	upTo    uint64   // the store's last id just before the read
	gapMark uint64
	full    bool // more events may follow: read another page
	reset   bool // the client's id was unknown: start over at upTo
}

const (
	// firstPageEvents is the first page's size in events: the store pages
	// by count, not bytes, so a replay starts small and grows its pages (at
	// most fourfold each time) towards a quarter of MaxOutboundBytes.
	firstPageEvents = 1
	maxPageEvents   = 1000
)

// startReplay starts the replay of keys after lastID. s is open.
func (l *Loop) startReplay(s *Stream, keys []string, lastID uint64) {
	s.replay = &replay{keys: keys, after: lastID, gapMark: lastID, first: true, limit: firstPageEvents}
	l.readNext(s)
}

// pageReq is what a worker needs to read one page, copied off the loop.
type pageReq struct {
	keys           []string
	after, gapMark uint64
	limit          int
	first          bool
	pageBytes      int
	merc           *mstream
	seen           uint64 // the loop's Loop.seen when the page was asked for
}

// startMercureReplay starts the replay of Mercure stream s after lastID.
func (l *Loop) startMercureReplay(s *Stream, lastID uint64) {
	s.replay = &replay{after: lastID, gapMark: lastID, first: true, limit: firstMercurePage, merc: l.merc.streams[s]}
	l.readNext(s)
}

// firstMercurePage is the first page of a Mercure replay, in events read:
// they are filtered after the read, so a page of one could match nothing.
const firstMercurePage = 64

// readNext reads s's next page on a store worker. When every worker is
// busy and the queue is full (a reconnect storm: thousands of streams
// resuming at once), s waits in the loop's waiting list, and the drain
// check tries again: the client keeps the stream it was admitted with and
// gets its replay a little later. It reports false then.
func (l *Loop) readNext(s *Stream) bool {
	r := s.replay
	req := pageReq{keys: r.keys, after: r.after, gapMark: r.gapMark, limit: r.limit, first: r.first,
		pageBytes: l.h.cfg.MaxOutboundBytes / 4, merc: r.merc, seen: l.seen}
	h := l.h
	ok := h.Go(func(ctx context.Context) {
		p := h.sharedPage(ctx, req)
		l.exec.Execute(func() { l.onPage(s, r, p) })
	})
	if !ok {
		h.m.replayDeferred.Inc()
		l.wait(s)
		return false
	}
	r.reading, r.first = true, false
	return true
}

// head reads the store's position before a page: its last id, and on a
// replay's first page its epoch too (stores that tell), to recognise an id
// of a lost incarnation.
func (h *Hub) head(ctx context.Context, first bool) (store.Head, error) {
	if hr, ok := h.st.(store.HeadReader); ok && first {
		return hr.Head(ctx)
	}
	last, err := h.st.LastID(ctx)
	return store.Head{LastID: last}, err
}

// readPage reads and encodes one page. Store worker.
func (h *Hub) readPage(ctx context.Context, req pageReq) *page {
	if req.merc != nil {
		return h.readMercurePage(ctx, req)
	}
	p := &page{gapMark: req.gapMark, last: req.after}
	head, err := h.head(ctx, req.first)
	if err != nil {
		return &page{err: err}
	}
	upTo := head.LastID
	p.upTo = upTo
	ret, err := h.st.Retention(ctx, req.keys)
	if err != nil {
		return &page{err: err}
	}
	after := req.after
	switch {
	case req.first && after > upTo:
		// An id from the future: the store was wiped or replaced since the
		// client got it. Say so, and start from what the store has.
		p.gap = AppendGap(nil, req.keys, oldestOf(ret))
		p.reset, after, p.last, p.gapMark = true, upTo, upTo, upTo
	case req.first && after > 0 && after < head.Epoch:
		// An id of an incarnation the store lost (an in-memory server
		// restarted, a wiped Redis): whatever followed it is gone.
		p.gap = AppendGap(nil, req.keys, oldestOf(ret))
		p.gapMark = after
		for _, r := range ret {
			p.gapMark = max(p.gapMark, r.Dropped)
		}
	default:
		p.gap = appendDropped(nil, req.keys, ret, after, &p.gapMark)
	}
	evs, err := h.st.Replay(ctx, req.keys, after, req.limit)
	if err != nil {
		return &page{err: err}
	}
	p.full = len(evs) == req.limit
	if i := slices.IndexFunc(evs, func(ev store.Event) bool { return ev.ID > upTo }); i >= 0 {
		evs, p.full = evs[:i], true // committed after the read began: next page
	}
	if len(evs) > 0 {
		p.last = evs[len(evs)-1].ID
	}
	var poke []byte
	for i := range evs {
		if evs[i].Private {
			continue // private Mercure events are for Mercure streams only
		}
		p.buf = appendEventFrame(p.buf, &evs[i], &poke)
		p.ends = append(p.ends, len(p.buf))
		p.ids = append(p.ids, evs[i].ID)
	}
	return p
}

// appendDropped appends a gap event naming the keys that dropped events
// after after (and after the gap already announced, *mark), and raises
// *mark to what it announced.
func appendDropped(dst []byte, keys []string, ret []store.Retention, after uint64, mark *uint64) []byte {
	var gapKeys []string
	var oldest, high uint64
	for i, r := range ret {
		if r.Dropped <= max(after, *mark) {
			continue
		}
		gapKeys = append(gapKeys, keys[i])
		high = max(high, r.Dropped)
		if r.Oldest != 0 && (oldest == 0 || r.Oldest < oldest) {
			oldest = r.Oldest
		}
	}
	if len(gapKeys) == 0 {
		return dst
	}
	*mark = high
	return AppendGap(dst, gapKeys, oldest)
}

// oldestOf returns the oldest retained id among ret (0 if none).
func oldestOf(ret []store.Retention) uint64 {
	var oldest uint64
	for _, r := range ret {
		if r.Oldest != 0 && (oldest == 0 || r.Oldest < oldest) {
			oldest = r.Oldest
		}
	}
	return oldest
}

// onPage takes a page read for s's replay r. Loop goroutine.
func (l *Loop) onPage(s *Stream, r *replay, p *page) {
	if s.replay != r || s.state != stateOpen {
		return // the stream closed while the page was read
	}
	r.reading = false
	if p.err != nil {
		l.h.m.storeErr.Inc()
		l.h.log.Warn("replay failed; closing stream so the client retries", "err", p.err)
		l.close(s, ReasonStoreError)
		return
	}
	l.h.m.replayPages.Inc()
	if p.reset {
		s.lastID = p.upTo
	}
	r.gapMark = p.gapMark
	// Size the next page to about pageBytes.
	if n := len(p.ids); n > 0 {
		per := max(len(p.buf)/n, 1)
		r.limit = min(max(l.h.cfg.MaxOutboundBytes/4/per, 1), 4*r.limit, maxPageEvents)
	} else if r.merc != nil {
		r.limit = min(4*r.limit, maxPageEvents) // nothing matched: read further
	}
	r.page = p
	l.writePage(s, r)
	l.flushCounters()
}

// writePage writes as much of r's page as the connection's limit allows,
// then reads the next page, waits for the connection to drain, or hands
// the stream over to live delivery.
func (l *Loop) writePage(s *Stream, r *replay) {
	p := r.page
	if p.gap != nil {
		l.write(s, p.gap)
		p.gap = nil
	}
	limit := l.h.cfg.MaxOutboundBytes
	buffered := s.conn.OutboundBuffered()
	from, to := p.pos, p.pos
	start := 0
	if from > 0 {
		start = p.ends[from-1]
	}
	for to < len(p.ids) {
		// Within the limit, or one frame on an empty connection: a frame
		// larger than the limit cannot be split, and live delivery would
		// send it too.
		if buffered+p.ends[to]-start > limit && (to > from || buffered > 0) {
			break
		}
		to++
	}
	if to > from {
		l.write(s, p.buf[start:p.ends[to-1]])
		s.lastID = p.ids[to-1]
		l.delivered += to - from
		p.pos = to
	}
	if s.state != stateOpen {
		return // the write failed and closed the stream
	}
	if p.pos < len(p.ids) {
		l.wait(s)
		return
	}
	r.page = nil
	r.after = p.last
	switch {
	case p.full:
		if s.conn.OutboundBuffered() > limit/2 {
			l.wait(s)
			return
		}
		l.readNext(s)
	case p.upTo >= l.seen:
		s.replay = nil // caught up: live from here on
		l.sendPresenceState(s)
	default:
		// The feed fanned out events past this read while it ran; they
		// were not written to s. Read them from the store.
		l.readNext(s)
	}
}

// wait puts s on the list of replays waiting for their connection to drain.
func (l *Loop) wait(s *Stream) {
	r := s.replay
	if r.waiting {
		return
	}
	r.waiting = true
	l.waiting = append(l.waiting, s)
	l.nWaiting.Store(int32(len(l.waiting)))
	if l.h.draining.Add(1) == 1 {
		select {
		case l.h.drainWake <- struct{}{}:
		default:
		}
	}
}

// unwait takes s off the waiting list.
func (l *Loop) unwait(s *Stream) {
	i := slices.Index(l.waiting, s)
	if i < 0 {
		return
	}
	l.waiting = slices.Delete(l.waiting, i, i+1)
	l.nWaiting.Store(int32(len(l.waiting)))
	l.h.draining.Add(-1)
}

// checkDrained resumes the waiting replays whose connections drained below
// half the limit.
func (l *Loop) checkDrained() {
	low := l.h.cfg.MaxOutboundBytes / 2
	for i := 0; i < len(l.waiting); {
		s := l.waiting[i]
		if s.state == stateOpen && s.conn.OutboundBuffered() > low {
			i++
			continue
		}
		l.waiting = slices.Delete(l.waiting, i, i+1)
		l.h.draining.Add(-1)
		r := s.replay
		if s.state != stateOpen || r == nil {
			continue
		}
		r.waiting = false
		if r.page != nil {
			l.writePage(s, r)
		} else if !r.reading && !l.readNext(s) {
			break // the queue is full: s waits again (at the end), and so do the rest
		}
	}
	l.nWaiting.Store(int32(len(l.waiting)))
	l.flushCounters()
}
