package engine

import (
	"cmp"
	"context"
	"slices"
	"strconv"

	"github.com/sseloop/sseloop/store"
)

// replayState holds the live frames that reach a stream while its history is
// being read. They are written after the replay, skipping what the replay
// already sent, so the seam between replay and live has no gap and no
// duplicate: the replay reads the store after the stream joined its sets, so
// it covers every event the live path may have missed.
type replayState struct {
	frames []*frame
}

// replayPage is how many events one store read of a replay returns.
const replayPage = 1000

// startReplay reads the history of keys after lastID on a store worker and
// writes it to c before any live event.
func (l *loop) startReplay(c *conn, keys []string, lastID uint64) {
	c.pending = &replayState{}
	job := func(ctx context.Context) {
		buf, last, err := l.e.readReplay(ctx, keys, lastID)
		l.execute(func() { l.finishReplay(c, buf, last, err) })
	}
	select {
	case l.e.workQ <- job:
	default:
		l.e.log.Warn("replay queue full; closing stream so the client retries")
		l.close(c, reasonStoreError)
	}
}

// readReplay encodes the in-band gap notice (if the history no longer reaches
// back to lastID) and every retained event of keys after lastID.
func (e *Engine) readReplay(ctx context.Context, keys []string, lastID uint64) (buf []byte, last uint64, err error) {
	ret, err := e.st.Retention(ctx, keys)
	if err != nil {
		return nil, 0, err
	}
	buf = appendGap(buf, keys, ret, lastID)
	var poke []byte
	last = lastID
	for {
		evs, err := e.st.Replay(ctx, keys, last, replayPage)
		if err != nil {
			return nil, 0, err
		}
		for i := range evs {
			buf = appendEventFrame(buf, &evs[i], &poke)
		}
		if len(evs) > 0 {
			last = evs[len(evs)-1].ID
		}
		if len(evs) < replayPage {
			return buf, last, nil
		}
	}
}

// appendGap appends an event named "gap" when some key has dropped events
// after lastID (MaxEvents or TTL), so the app can re-sync instead of silently
// missing data. Its data names those keys and the oldest id still retained
// among them: {"keys":["a","b"],"oldest":"81"} ("oldest" is "0" when nothing
// is retained). It has no id field, so it does not move the client's
// Last-Event-ID.
func appendGap(dst []byte, keys []string, ret []store.Retention, lastID uint64) []byte {
	var gapKeys []string
	var oldest uint64
	for i, r := range ret {
		if lastID >= r.Dropped {
			continue
		}
		gapKeys = append(gapKeys, keys[i])
		if r.Oldest != 0 && (oldest == 0 || r.Oldest < oldest) {
			oldest = r.Oldest
		}
	}
	if len(gapKeys) == 0 {
		return dst
	}
	return appendGapFrame(dst, gapKeys, oldest)
}

// appendGapFrame appends the "gap" event for keys.
func appendGapFrame(dst []byte, keys []string, oldest uint64) []byte {
	dst = append(dst, "event: gap\ndata: {\"keys\":["...)
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
	}
	dst = append(dst, `],"oldest":"`...)
	dst = strconv.AppendUint(dst, oldest, 10)
	return append(dst, "\"}\n\n"...)
}

// finishReplay writes the replay and then the live frames held meanwhile.
func (l *loop) finishReplay(c *conn, buf []byte, last uint64, err error) {
	if c.phase != phaseStream {
		return
	}
	p := c.pending
	c.pending = nil
	if err != nil {
		l.e.m.storeErr.Inc()
		l.e.log.Warn("replay failed; closing stream so the client retries", "err", err)
		l.close(c, reasonStoreError)
		return
	}
	if len(buf) > 0 {
		l.write(c, buf)
	}
	c.lastID = max(c.lastID, last)
	// Frames were held per key; a stream of several keys needs id order.
	slices.SortFunc(p.frames, func(a, b *frame) int { return cmp.Compare(a.id, b.id) })
	for _, f := range p.frames {
		if f.id > c.lastID {
			l.send(c, f.b, f.id)
		}
	}
	l.flushCounters()
}
