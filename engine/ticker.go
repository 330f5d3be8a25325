package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/sseloop/sseloop/store"
)

// feedPage is how many events one change-feed read returns at most.
const feedPage = 512

// runTicker is the engine's one store-polling goroutine. Every Tick it
// advances each loop's timer wheel; every Poll, or at once when a local
// trigger wakes it, it reads the change feed after cursor, encodes each event
// somebody here subscribes to once, and hands every loop one fan-out task.
func (e *Engine) runTicker(ctx context.Context, cursor uint64) {
	tick := time.NewTicker(e.cfg.Tick)
	defer tick.Stop()
	poll := time.NewTicker(e.cfg.Poll)
	defer poll.Stop()
	var backoff time.Duration
	var retryAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			e.tickLoops(now)
			continue
		case <-poll.C:
		case <-e.wake:
		}
		if backoff > 0 && time.Now().Before(retryAt) {
			continue
		}
		next, err := e.pollFeed(ctx, cursor)
		cursor = next
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.m.storeErr.Inc()
			backoff = min(max(2*backoff, e.cfg.Poll), 5*time.Second)
			retryAt = time.Now().Add(backoff)
			e.log.Warn("change feed read failed; retrying", "err", err, "backoff", backoff)
			continue
		}
		backoff = 0
	}
}

// tickLoops queues one wheel tick per loop, skipping a loop whose previous
// tick has not run yet (a loop busy with a huge fan-out must not collect a
// backlog of ticks).
func (e *Engine) tickLoops(now time.Time) {
	for _, l := range *e.loops.Load() {
		if !l.tickQueued.CompareAndSwap(false, true) {
			continue
		}
		l.execute(func() {
			l.tickQueued.Store(false)
			l.advance(now)
		})
	}
}

// maxQueuedFanouts is how many fan-out tasks a loop may have waiting before
// the ticker stops reading the feed. Without this bound a loop that cannot
// keep up collects an ever longer queue of small batches, and the trigger
// answers queued behind them wait seconds. With it, events accumulate in the
// store, the next read returns them as one bigger batch, and each stream gets
// more events per write: throughput adapts to load instead of latency.
const maxQueuedFanouts = 2

// loopsBusy reports whether some loop still has fan-outs waiting.
func (e *Engine) loopsBusy() bool {
	for _, l := range *e.loops.Load() {
		if l.fanouts.Load() >= maxQueuedFanouts {
			return true
		}
	}
	return false
}

// pollFeed delivers every event after cursor and returns the new cursor.
func (e *Engine) pollFeed(ctx context.Context, cursor uint64) (uint64, error) {
	start := time.Now()
	defer e.m.tick.UpdateDuration(start)
	for {
		if e.loopsBusy() {
			// The last fan-out to finish wakes the ticker again.
			e.deferred.Store(true)
			return cursor, nil
		}
		e.deferred.Store(false)
		rs := time.Now()
		evs, err := e.st.After(ctx, cursor, feedPage)
		e.m.storeRd.UpdateDuration(rs)
		if err != nil {
			return cursor, err
		}
		if len(evs) == 0 {
			return cursor, nil
		}
		if hasHole(cursor, evs) {
			e.announceDropped(ctx, cursor)
		}
		cursor = evs[len(evs)-1].ID
		if b := e.encode(evs); b != nil {
			for _, l := range *e.loops.Load() {
				l.fanouts.Add(1)
				l.execute(func() {
					l.fanout(b)
					if l.fanouts.Add(-1) == 0 && e.deferred.Load() {
						e.wakeTicker()
					}
				})
			}
		}
		if len(evs) < feedPage {
			return cursor, nil
		}
	}
}

// wakeTicker makes the ticker read the feed now.
func (e *Engine) wakeTicker() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// encode builds one frame per event that has a subscriber on some loop,
// grouped by key. The bytes are built once and shared by every loop and
// subscriber.
func (e *Engine) encode(evs []store.Event) *batch {
	// Group the watched events by key, keeping id order within each key.
	var groupOf map[string]int
	var members [][]int32
	var keys []string
	e.interest.mu.RLock()
	for i := range evs {
		k := evs[i].Key
		if e.interest.m[k] == 0 {
			continue
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
	e.interest.mu.RUnlock()
	if len(keys) == 0 {
		return nil
	}
	for gi := range members {
		members[gi] = coalescePokes(evs, members[gi])
	}
	b := &batch{now: time.Now().UnixNano(), groups: make([]group, len(keys))}
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

// appendEventFrame encodes ev, rendering a poke (empty data) as its JSON.
func appendEventFrame(dst []byte, ev *store.Event, scratch *[]byte) []byte {
	data := ev.Data
	if len(data) == 0 {
		*scratch = AppendPoke((*scratch)[:0], ev.Key, ev.ID, ev.Time)
		data = *scratch
	}
	return AppendFrame(dst, ev.ID, ev.Name, data)
}

// appendJob is one trigger request waiting for the appender.
type appendJob struct {
	l   *loop
	c   *conn
	evs []store.Event // POST /trigger/{key}
	raw []byte        // POST /trigger: the JSON batch, parsed off the loop
	// batch: raw was parsed by a fetcher (the answer lists ids)
	batch bool

	first, n int // the job's events in the appender's combined batch
	resp     []byte

	keepAlive, http10 bool   // of the request
	cors              string // CORS header lines for the answer
	checkKeys         bool   // a JWT publisher: every key must match publish
	publish           []string
}

// maxAppendJobs bounds how many waiting triggers one store append combines.
// Combining is what makes store.sync=always affordable: one fsync commits
// every trigger that arrived while the previous one ran.
const maxAppendJobs = 256

// runAppender appends triggered events to the store, combining the triggers
// that wait into one Append, and answers each on its connection's loop.
func (e *Engine) runAppender(ctx context.Context) {
	var jobs []*appendJob
	var evs []store.Event
	for {
		jobs = jobs[:0]
		select {
		case <-ctx.Done():
			return
		case j := <-e.appendQ:
			jobs = append(jobs, j)
		}
	gather:
		for len(jobs) < maxAppendJobs {
			select {
			case j := <-e.appendQ:
				jobs = append(jobs, j)
			default:
				break gather
			}
		}
		evs = evs[:0]
		for _, j := range jobs {
			if j.raw != nil {
				parsed, err := e.parseBatch(j.raw)
				if err != nil {
					j.resp = appendResponseH(nil, 400, "text/plain; charset=utf-8", j.cors, []byte(err.Error()+"\n"), false, false)
					e.m.httpError(400)
					continue
				}
				j.evs = parsed
			}
			if j.checkKeys && !j.covered() {
				e.m.authFail.Inc()
				e.m.httpError(403)
				j.resp = appendResponseH(nil, 403, "text/plain; charset=utf-8", j.cors, []byte(errorBodies[403]), false, false)
				continue
			}
			j.first, j.n = len(evs), len(j.evs)
			evs = append(evs, j.evs...)
		}
		var err error
		if len(evs) > 0 {
			err = e.st.Append(ctx, evs)
		}
		if err != nil {
			e.m.storeErr.Inc()
			e.log.Warn("store append failed", "err", err, "events", len(evs))
		} else if len(evs) > 0 {
			e.m.published.Add(len(evs))
			e.wakeTicker()
		}
		for _, j := range jobs {
			keep := true
			switch {
			case j.resp != nil:
				keep = false
			case err != nil:
				e.m.httpError(503)
				j.resp = appendResponseH(nil, 503, "text/plain; charset=utf-8", j.cors, []byte("store unavailable\n"), false, false)
				keep = false
			default:
				j.resp = appendIDs(j, evs[j.first:j.first+j.n], j.raw != nil || j.batch)
				keep = j.keepAlive
			}
			if j.c == nil {
				continue // a direct poke: nobody waits for an answer
			}
			l, c, resp := j.l, j.c, j.resp
			l.execute(func() { l.finish(c, resp, keep) })
		}
	}
}

// appendIDs renders the 200 answer of a trigger: {"id":"N"} for one event,
// {"ids":["N",…]} for a batch.
func appendIDs(j *appendJob, evs []store.Event, isBatch bool) []byte {
	var body []byte
	if isBatch {
		body = append(body, `{"ids":[`...)
		for i := range evs {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(body, '"')
			body = strconv.AppendUint(body, evs[i].ID, 10)
			body = append(body, '"')
		}
		body = append(body, "]}\n"...)
	} else {
		body = append(body, `{"id":"`...)
		body = strconv.AppendUint(body, evs[0].ID, 10)
		body = append(body, "\"}\n"...)
	}
	return appendResponseH(nil, 200, "application/json", j.cors, body, j.keepAlive, j.http10)
}

// covered reports whether the job's publish patterns cover all its keys.
func (j *appendJob) covered() bool {
	for i := range j.evs {
		if !matchAny(j.publish, j.evs[i].Key) {
			return false
		}
	}
	return true
}

// batchRequest is the body of POST /trigger.
type batchRequest struct {
	Events []struct {
		Key   string          `json:"key"`
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	} `json:"events"`
}

// parseBatch decodes and checks a POST /trigger body. data may be a JSON
// string (sent as is), any other JSON value (sent as its JSON text), or
// absent/null (a poke). Error messages never quote the input.
func (e *Engine) parseBatch(raw []byte) ([]store.Event, error) {
	var br batchRequest
	if err := json.Unmarshal(raw, &br); err != nil {
		return nil, errors.New("invalid JSON batch")
	}
	if len(br.Events) == 0 {
		return nil, errors.New("empty batch")
	}
	if len(br.Events) > e.cfg.Limits.MaxBatchEvents {
		e.m.limit("max_batch_events")
		return nil, errors.New("too many events in batch")
	}
	evs := make([]store.Event, len(br.Events))
	for i, in := range br.Events {
		if !validKey([]byte(in.Key)) {
			return nil, errors.New("invalid key at events[" + strconv.Itoa(i) + "]")
		}
		if !validEventName([]byte(in.Event)) {
			return nil, errors.New("invalid event name at events[" + strconv.Itoa(i) + "]")
		}
		evs[i] = store.Event{Key: in.Key, Name: in.Event}
		switch d := in.Data; {
		case len(d) == 0 || string(d) == "null":
		case d[0] == '"':
			var s string
			if err := json.Unmarshal(d, &s); err != nil {
				return nil, errors.New("invalid data at events[" + strconv.Itoa(i) + "]")
			}
			evs[i].Data = []byte(s)
		default:
			evs[i].Data = append([]byte(nil), d...)
		}
	}
	return evs, nil
}

// runWorker serves store reads for requests: replays, readiness, metrics.
func (e *Engine) runWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-e.workQ:
			job(ctx)
		}
	}
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

// announceDropped tells the streams whose keys lost events after cursor,
// in-band, with the same "gap" event a replay starts with, so the app can
// re-sync instead of silently missing data. The keys are those whose
// retention says they dropped an event after cursor; if none does (the feed
// itself was trimmed), every watched key is told, since a false gap is
// harmless and a missed one is not. Streams still waiting for a replay are
// skipped: their replay checks retention itself.
func (e *Engine) announceDropped(ctx context.Context, cursor uint64) {
	keys := e.interest.keys()
	var ret []store.Retention
	for len(keys) > len(ret) {
		chunk := keys[len(ret):min(len(keys), len(ret)+versionChunk)]
		r, err := e.st.Retention(ctx, chunk)
		if err != nil {
			e.log.Warn("events were dropped before delivery; reading retention failed", "err", err)
			return
		}
		ret = append(ret, r...)
	}
	explained := slices.ContainsFunc(ret, func(r store.Retention) bool { return r.Dropped > cursor })
	gaps := map[string][]byte{}
	for i, r := range ret {
		if !explained || r.Dropped > cursor {
			gaps[keys[i]] = appendGapFrame(nil, keys[i:i+1], r.Oldest)
		}
	}
	if len(gaps) == 0 {
		return
	}
	e.m.feedGaps.Inc()
	e.log.Warn("events were removed from history before they were delivered; sending gap events",
		"keys", len(gaps), "after_id", cursor)
	for _, l := range *e.loops.Load() {
		l.execute(func() { l.announceGaps(gaps) })
	}
}
