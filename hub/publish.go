package hub

import (
	"context"
	"errors"

	"github.com/sseloop/sseloop/store"
)

// Publication is one request to publish events: a trigger, a batch, or a
// direct poke. The hub owns it from Publish until Done is called.
type Publication struct {
	// Events are appended in order, all or nothing, together with the
	// other publications waiting at the time (one store call, one fsync).
	Events []store.Event
	// Prepare, if not nil, runs on a publisher goroutine before anything
	// else, off the event loop: it may parse a request body into Events and
	// check them. An error is passed to Done and nothing is appended.
	Prepare func(p *Publication) error
	// Done, if not nil, is called once on a publisher goroutine, with the
	// events (ids and times assigned) or the error: Prepare's, or one that
	// wraps ErrStore. evs is valid only until Done returns.
	Done func(evs []store.Event, err error)
}

// ErrStore wraps the store's error when an append failed: nothing of the
// publication was stored.
var ErrStore = errors.New("hub: store unavailable")

// Filler fetches the data of pokes from the application (the engine's data
// sources): once per change, not once per subscriber.
type Filler interface {
	// Wants reports whether a poke of key has a source. Any goroutine.
	Wants(key string) bool
	// Fill fetches the data of poke ev; on error ev stays a poke.
	Fill(ctx context.Context, ev *store.Event) error
}

// Publish queues p and reports false, without calling Done, when the queue
// is full (the caller answers "busy"). Any goroutine; never blocks.
func (h *Hub) Publish(p *Publication) bool {
	q := h.appendQ
	if p.Prepare != nil || h.wantsFill(p.Events) {
		q = h.fetchQ // off the appender: parse, then fill pokes from sources
	}
	select {
	case q <- p:
		return true
	default:
		return false
	}
}

func (h *Hub) wantsFill(evs []store.Event) bool {
	if h.cfg.Fill == nil {
		return false
	}
	for i := range evs {
		if fillable(&evs[i]) && h.cfg.Fill.Wants(evs[i].Key) {
			return true
		}
	}
	return false
}

// fillable reports whether ev is a poke a data source may fill: no data,
// and not a Mercure update (those have a publisher id; their empty data is
// the update's).
func fillable(ev *store.Event) bool { return len(ev.Data) == 0 && ev.PubID == "" }

// runFetcher prepares publications and fills their pokes, then hands them
// to the appender. Several run, so a slow source delays only its own
// publication.
func (h *Hub) runFetcher(ctx context.Context) {
	for {
		var p *Publication
		select {
		case <-ctx.Done():
			return
		case p = <-h.fetchQ:
		}
		if p.Prepare != nil {
			err := p.Prepare(p)
			p.Prepare = nil
			if err != nil {
				p.done(nil, err)
				continue
			}
		}
		if fill := h.cfg.Fill; fill != nil {
			for i := range p.Events {
				ev := &p.Events[i]
				if fillable(ev) && fill.Wants(ev.Key) {
					_ = fill.Fill(ctx, ev) // on error the poke goes out plain
				}
			}
		}
		select {
		case h.appendQ <- p:
		case <-ctx.Done():
			return
		}
	}
}

func (p *Publication) done(evs []store.Event, err error) {
	if p.Done != nil {
		p.Done(evs, err)
	}
}

// maxAppendBatch bounds how many waiting publications one store append
// combines. Combining is what makes store.sync=always affordable: one fsync
// commits every trigger that arrived while the previous one ran.
const maxAppendBatch = 256

// runAppender appends waiting publications to the store in one call and
// tells each how it went.
func (h *Hub) runAppender(ctx context.Context) {
	var ps []*Publication
	var evs []store.Event
	var firsts []int
	for {
		ps = ps[:0]
		select {
		case <-ctx.Done():
			return
		case p := <-h.appendQ:
			ps = append(ps, p)
		}
	gather:
		for len(ps) < maxAppendBatch {
			select {
			case p := <-h.appendQ:
				ps = append(ps, p)
			default:
				break gather
			}
		}
		evs, firsts = evs[:0], firsts[:0]
		for _, p := range ps {
			firsts = append(firsts, len(evs))
			evs = append(evs, p.Events...)
		}
		var err error
		if len(evs) > 0 {
			if err = h.st.Append(ctx, evs); err != nil {
				h.m.storeErr.Inc()
				h.log.Warn("store append failed", "err", err, "events", len(evs))
				err = errors.Join(ErrStore, err)
			} else {
				h.m.published.Add(len(evs))
				h.unreadSince.CompareAndSwap(0, h.cfg.Now().UnixNano())
				h.wakeFeed()
			}
		}
		for i, p := range ps {
			if err != nil {
				p.done(nil, err)
				continue
			}
			p.done(evs[firsts[i]:firsts[i]+len(p.Events)], nil)
		}
	}
}
