package hub

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/sseloop/sseloop/store"
)

// feedPage is how many events one change-feed read returns at most.
const feedPage = 512

// runFeed is the hub's one change-feed reader. Every Poll, or at once when
// a local publish wakes it, it reads the feed after cursor (one store call),
// encodes each event somebody here subscribes to once, and hands every loop
// one fan-out task. It may block on the store; timers do not depend on it
// (see runClock).
func (h *Hub) runFeed(ctx context.Context, cursor uint64) {
	poll := time.NewTicker(h.cfg.Poll)
	defer poll.Stop()
	// due fires when the oldest event held back for busy loops reaches
	// MaxBatchWait (see holdBack). Go 1.23 timers: Reset alone discards a
	// stale expiry.
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	var backoff time.Duration
	var retryAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		case <-h.wake:
		case <-due.C:
		}
		if backoff > 0 && time.Now().Before(retryAt) {
			continue
		}
		next, hold, err := h.pollFeed(ctx, cursor)
		if hold > 0 {
			due.Reset(hold)
		} else {
			due.Stop()
		}
		cursor = next
		h.cursor.Store(cursor)
		if errors.Is(err, store.ErrCursorAhead) {
			// Not a failure to retry: the store's state is gone.
			h.stateLost(ctx, cursor)
			err = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.m.storeErr.Inc()
			backoff = min(max(2*backoff, h.cfg.Poll), 5*time.Second)
			retryAt = time.Now().Add(backoff)
			h.log.Warn("change feed read failed; retrying", "err", err, "backoff", backoff)
			continue
		}
		backoff = 0
	}
}

// maxQueuedFanouts is how many fan-out tasks a loop may have waiting before
// the feed reader holds back. Without this bound a loop that cannot keep
// up collects an ever longer queue of small batches, and the answers to
// triggers queued behind them wait seconds. With it, events accumulate in
// the store, the next read returns them as one bigger batch, and each
// stream gets more events per write: throughput adapts to load instead of
// latency.
const maxQueuedFanouts = 2

// maxQueuedFanoutsHard is how many fan-out tasks a loop may have waiting
// before the feed reader holds back whatever the age of the unread events:
// a loop that far behind is overloaded, and more batches queued on it
// would only hold more memory, not deliver sooner.
const maxQueuedFanoutsHard = 4

// defaultMaxBatchWait is Config.MaxBatchWait's default: about one fan-out
// under load. Holding back gathers the events that arrive while the loops
// write into one bigger batch; it pays for as long as the running fan-out
// lasts, and at 19,000 streams on 2 cores a fan-out under saturation
// takes 20-45 ms (median) to 150-280 ms (p90). Without a bound an event
// waits for the running and the queued fan-out of the slowest loop before
// it is even read. Measured (README, "fair latency"): 5 ms broke the batching (30 %
// fewer deliveries per second, 40 % more CPU per delivery, a longer tail),
// 20 ms traded 12 % of throughput for a 12 % lower median, 50 ms changed
// neither beyond the noise: it bounds the wait without costing throughput.
const defaultMaxBatchWait = 50 * time.Millisecond

// holdBack reports whether the feed reader leaves the unread events in the
// store for now because the loops are busy, and if so, wait > 0 is when the
// oldest of them, appended by this hub, reaches MaxBatchWait: the reader
// must look again by then. wait is 0 while nothing this hub appended is
// unread (another node's writes wait for the loops or the next Poll) and
// while some loop is overloaded (maxQueuedFanoutsHard); a finishing
// fan-out wakes the reader then.
func (h *Hub) holdBack() (hold bool, wait time.Duration) {
	var most int32
	for _, l := range *h.loops.Load() {
		most = max(most, l.fanouts.Load())
	}
	switch {
	case most < maxQueuedFanouts:
		return false, 0
	case most >= maxQueuedFanoutsHard:
		return true, 0
	}
	since := h.unreadSince.Load()
	if since == 0 {
		return true, 0
	}
	wait = time.Duration(since + int64(h.cfg.MaxBatchWait) - h.cfg.Now().UnixNano())
	if wait <= 0 {
		h.m.waitReads.Inc()
		return false, 0
	}
	return true, wait
}

// pollFeed delivers every event after cursor and returns the new cursor.
// hold > 0 means it held events back for busy loops and must run again
// within hold (see holdBack).
func (h *Hub) pollFeed(ctx context.Context, cursor uint64) (next uint64, hold time.Duration, err error) {
	start := time.Now()
	defer h.m.tick.UpdateDuration(start)
	for {
		// Set the flag before looking: a loop that finishes its last
		// fan-out between the look and the flag would otherwise see no
		// flag and never wake the reader, adding up to one Poll of latency.
		h.deferred.Store(true)
		if held, wait := h.holdBack(); held {
			return cursor, wait, nil // a finishing fan-out or the wait wakes the reader
		}
		h.deferred.Store(false)
		// Clear the age before the read: an append that lands after it
		// starts a new one. If the read leaves events unread (an error, a
		// full page), put the old age back: it is no younger than theirs.
		since := h.unreadSince.Swap(0)
		rs := time.Now()
		evs, err := h.st.After(ctx, cursor, feedPage)
		h.m.storeRd.UpdateDuration(rs)
		if err != nil || len(evs) == feedPage {
			h.unreadSince.CompareAndSwap(0, since)
		}
		if err != nil {
			return cursor, 0, err
		}
		if len(evs) == 0 {
			return cursor, 0, nil
		}
		// After a wipe the first events read are the new incarnation's:
		// the jump of their ids was announced when the state was found gone.
		wasLost := h.lost.Load() && h.lost.Swap(false)
		if hasHole(cursor, evs) && !wasLost {
			if h.newIncarnation(ctx) {
				// Wiped and written again between two polls: the jump is
				// the new incarnation's, and everything unread is gone.
				h.stateLost(ctx, cursor)
				h.lost.Store(false)
			} else {
				h.announceDropped(ctx, cursor)
			}
		}
		cursor = evs[len(evs)-1].ID
		b := h.encode(evs)
		if b == nil {
			// Nobody here watches these events, but a replay on a loop
			// must still learn that the feed moved past them.
			b = &batch{}
		}
		h.encodeMercure(b, evs)
		b.upTo = cursor
		h.dispatch(b)
		if len(evs) < feedPage {
			return cursor, 0, nil
		}
	}
}

// dispatch hands b to every loop.
func (h *Hub) dispatch(b *batch) {
	for _, l := range *h.loops.Load() {
		l.fanouts.Add(1)
		l.exec.Execute(func() {
			l.fanout(b)
			// Wake a reader that holds back when this loop runs out of
			// work, or drops below the hard limit (old events may wait).
			if n := l.fanouts.Add(-1); (n == 0 || n == maxQueuedFanoutsHard-1) && h.deferred.Load() {
				h.wakeFeed()
			}
		})
	}
}

// batch is a set of encoded frames that every loop writes to its own
// subscribers. It is read-only once built: loops share it.
//
// Frames are grouped by key, and each group's frames are contiguous in one
// buffer, so a stream of one key (the common case) gets every new event of
// its key in a single write: under load the feed reader reads bigger
// batches (see pollFeed) and the syscalls per delivery fall. Streams of
// several keys get their frames one by one in id order.
type batch struct {
	now    int64
	upTo   uint64   // the feed position after this batch
	groups []group  // one per key, in order of first appearance
	order  []*frame // every frame, in id order
	merc   []mframe // Mercure frames of every event, in id order (mercure.go)
}

type group struct {
	key    string
	b      []byte  // the group's frames, contiguous
	frames []frame // in id order
}

type frame struct {
	id  uint64
	key string
	b   []byte
	off int // offset of b in its group's b
}

// encode builds one frame per event that has a subscriber on some loop,
// grouped by key. The bytes are built once and shared by every loop and
// subscriber. It returns nil when nobody watches any of evs.
func (h *Hub) encode(evs []store.Event) *batch {
	// Group the watched events by key, keeping id order within each key.
	var groupOf map[string]int
	var members [][]int32
	var keys []string
	h.interest.mu.RLock()
	for i := range evs {
		k := evs[i].Key
		if h.interest.m[k] == 0 || evs[i].Private {
			continue // private Mercure events are for Mercure streams only
		}
		if groupOf == nil {
			groupOf = make(map[string]int)
		}
		gi, ok := groupOf[k]
		if !ok {
			gi = len(keys)
			groupOf[k] = gi
			keys = append(keys, k)
			members = append(members, nil)
		}
		members[gi] = append(members[gi], int32(i))
	}
	h.interest.mu.RUnlock()
	if len(keys) == 0 {
		return nil
	}
	for gi := range members {
		members[gi] = coalescePokes(evs, members[gi])
	}
	b := &batch{now: h.cfg.Now().UnixNano(), groups: make([]group, len(keys))}
	var buf, poke []byte
	n := 0
	for _, idx := range members {
		n += len(idx)
	}
	ends := make([]int, 0, n) // end offset in buf of each frame, group by group
	starts := make([]int, len(keys)+1)
	for gi, idx := range members {
		starts[gi] = len(buf)
		for _, i := range idx {
			buf = appendEventFrame(buf, &evs[i], &poke)
			ends = append(ends, len(buf))
		}
	}
	starts[len(keys)] = len(buf)
	// Slice only now: buf may have moved while it grew.
	frames := make([]frame, 0, n)
	for gi, idx := range members {
		g := &b.groups[gi]
		g.key = keys[gi]
		g.b = buf[starts[gi]:starts[gi+1]:starts[gi+1]]
		from, pos := len(frames), starts[gi]
		for _, i := range idx {
			end := ends[len(frames)]
			frames = append(frames, frame{id: evs[i].ID, key: g.key, b: buf[pos:end:end], off: pos - starts[gi]})
			pos = end
		}
		g.frames = frames[from:len(frames):len(frames)]
	}
	b.order = make([]*frame, len(frames))
	for i := range frames {
		b.order[i] = &frames[i]
	}
	slices.SortFunc(b.order, func(x, y *frame) int { return cmp.Compare(x.id, y.id) })
	return b
}

// coalescePokes drops every poke of a key that a later poke of the same key
// and event name in the same batch supersedes: a poke only says "this key
// changed", so a burst of pokes within one poll interval reaches each
// subscriber once, with the newest id. Events with data never coalesce.
// idx are the batch positions of one key's events, in id order.
func coalescePokes(evs []store.Event, idx []int32) []int32 {
	pokes := 0
	for _, i := range idx {
		if len(evs[i].Data) == 0 {
			pokes++
		}
	}
	if pokes < 2 {
		return idx
	}
	var seen []string // event names with a later poke (few: usually just "")
	keep := idx[:0:0]
	for j := len(idx) - 1; j >= 0; j-- {
		ev := &evs[idx[j]]
		if len(ev.Data) == 0 {
			if slices.Contains(seen, ev.Name) {
				continue
			}
			seen = append(seen, ev.Name)
		}
		keep = append(keep, idx[j])
	}
	slices.Reverse(keep)
	return keep
}

// hasHole reports whether evs, read after cursor, skip an id. Ids are
// assigned one by one, so a missing id is an event that was removed
// (history.max_events or ttl) before this node read it: its subscribers
// here never got it live.
func hasHole(cursor uint64, evs []store.Event) bool {
	next := cursor + 1
	for i := range evs {
		if evs[i].ID != next {
			return true
		}
		next++
	}
	return false
}

// newIncarnation reports whether the store's epoch changed since the feed
// reader last looked (stores that tell, store.HeadReader). It is asked only
// when the feed skips ids, which a trim does too.
func (h *Hub) newIncarnation(ctx context.Context) bool {
	hr, ok := h.st.(store.HeadReader)
	if !ok {
		return false
	}
	head, err := hr.Head(ctx)
	if err != nil {
		return false
	}
	old := h.epoch.Swap(head.Epoch)
	return old != 0 && head.Epoch != old
}

// stateLost handles a store whose ids went back below the feed's cursor (a
// wiped or restarted Redis, a replaced file): the events after the cursor
// that this node had not read are gone, so every live stream is told with a
// gap event, once, and delivery goes on with the store's new incarnation
// (whose ids start above every old one, see store's Incarnations).
func (h *Hub) stateLost(ctx context.Context, cursor uint64) {
	if h.lost.Swap(true) {
		return // announced already; waiting for the new incarnation's events
	}
	h.m.feedResets.Inc()
	h.log.Warn("the store lost its events (wiped, restarted without persistence or replaced); "+
		"sending gap events to every stream", "cursor", cursor)
	keys := h.interest.keys()
	var ret []store.Retention
	for len(keys) > len(ret) {
		chunk := keys[len(ret):min(len(keys), len(ret)+retentionChunk)]
		r, err := h.st.Retention(ctx, chunk)
		if err != nil {
			r = make([]store.Retention, len(chunk)) // oldest unknown: "0"
		}
		ret = append(ret, r...)
	}
	gaps := make(map[string][]byte, len(keys))
	for i, k := range keys {
		gaps[k] = AppendGap(nil, keys[i:i+1], ret[i].Oldest)
	}
	for _, l := range *h.loops.Load() {
		l.exec.Execute(func() { l.announce(gaps, math.MaxUint64) })
	}
}

// retentionChunk bounds the keys of one Retention call.
const retentionChunk = 1000

// announceDropped tells the live streams whose keys lost events after
// cursor, and the live Mercure streams, in-band, with the same "gap" event
// a replay starts with. The keys are those whose retention says they
// dropped an event after cursor; if
// none does (the feed itself was trimmed), every watched key is told, since
// a false gap is harmless and a missed one is not.
func (h *Hub) announceDropped(ctx context.Context, cursor uint64) {
	// Mercure streams may match any topic, and the removed events' topics
	// are gone: every live one not already past cursor is told, whatever
	// the native keys' retention says (or whether it can be read).
	if h.mercN.Load() > 0 {
		h.m.feedGaps.Inc()
		h.log.Warn("events were removed from the feed before they were delivered; sending gap events to Mercure streams",
			"after_id", cursor)
		gap := AppendGap(nil, nil, 0)
		for _, l := range *h.loops.Load() {
			l.exec.Execute(func() { l.announceMercure(gap, cursor) })
		}
	}
	keys := h.interest.keys()
	var ret []store.Retention
	for len(keys) > len(ret) {
		chunk := keys[len(ret):min(len(keys), len(ret)+retentionChunk)]
		r, err := h.st.Retention(ctx, chunk)
		if err != nil {
			h.log.Warn("events were dropped before delivery; reading retention failed", "err", err)
			return
		}
		ret = append(ret, r...)
	}
	explained := slices.ContainsFunc(ret, func(r store.Retention) bool { return r.Dropped > cursor })
	gaps := map[string][]byte{}
	for i, r := range ret {
		if !explained || r.Dropped > cursor {
			gaps[keys[i]] = AppendGap(nil, keys[i:i+1], r.Oldest)
		}
	}
	if len(gaps) == 0 {
		return
	}
	h.m.feedGaps.Inc()
	h.log.Warn("events were removed from history before they were delivered; sending gap events",
		"keys", len(gaps), "after_id", cursor)
	for _, l := range *h.loops.Load() {
		l.exec.Execute(func() { l.announce(gaps, cursor) })
	}
}
