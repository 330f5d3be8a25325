package engine

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/sseloop/sseloop/hub"
	"github.com/sseloop/sseloop/store"
)

// The subscriptions API across nodes. With a store shared by several nodes
// (Redis, [store.Subscriptions]) each node keeps its Mercure subscribers in
// the store's registry: one record per subscriber, put by one goroutine
// (subsRegistry.run) right after a stream opens or leaves, and renewed
// every presence.interval. GET /.well-known/mercure/subscriptions lists
// the answering node's streams from memory and the other live nodes'
// records from the store. A node that dies without a goodbye drops out of
// every list presence.node_ttl after its last renewal; the next node to
// renew then gets its records and publishes their "inactive" subscription
// events, so that a client following the events sees them end.

// subsRecord is a subscriber's record data.
type subsRecord struct {
	Topics  []string        `json:"topics"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func recordOf(ms *hub.MercureSub) []byte {
	b, _ := json.Marshal(&subsRecord{Topics: ms.Topics, Payload: ms.Payload})
	return b
}

// subOfRecord returns the subscription of a record, nil if it cannot be
// read (written by another version: left out, never an error).
func subOfRecord(rec store.SubscriptionRecord) *hub.MercureSub {
	var r subsRecord
	if json.Unmarshal(rec.Data, &r) != nil || rec.ID == "" {
		return nil
	}
	return &hub.MercureSub{ID: rec.ID, Topics: r.Topics, Payload: r.Payload}
}

// subsRegistry is this node's side of the registry.
type subsRegistry struct {
	e        *Engine
	st       store.Subscriptions
	node     string
	interval time.Duration
	ttl      time.Duration

	mu      sync.Mutex
	pending map[string][]byte // subscriber → record, nil: remove
	wake    chan struct{}     // capacity 1: something is pending

	put bool // the store has had this node's records once (run's goroutine only)
}

func newSubsRegistry(e *Engine, st store.Subscriptions) *subsRegistry {
	return &subsRegistry{e: e, st: st, node: e.hub.NodeID(), interval: e.cfg.Presence.Interval,
		ttl: e.cfg.Presence.NodeTTL, pending: map[string][]byte{}, wake: make(chan struct{}, 1)}
}

// set records that subscriber id's record is now data (nil: removed).
// Any goroutine; in order per subscriber (its loop).
func (r *subsRegistry) set(id string, data []byte) {
	r.mu.Lock()
	r.pending[id] = data
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run puts pending records as soon as there are any (one store call at a
// time: changes made meanwhile go in the next) and renews this node every
// interval, until ctx ends; then it says goodbye.
func (r *subsRegistry) run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			bye, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := r.st.LeaveSubscriptions(bye, r.node); err != nil {
				r.e.log.Warn("mercure: subscriptions registry goodbye failed; other nodes drop this one after presence.node_ttl", "err", err)
			}
			cancel()
			return
		case <-t.C:
		case <-r.wake:
		}
		r.flush(ctx)
	}
}

func (r *subsRegistry) flush(ctx context.Context) {
	r.mu.Lock()
	taken := r.pending
	r.pending = map[string][]byte{}
	r.mu.Unlock()
	recs := make([]store.SubscriptionRecord, 0, len(taken))
	for id, data := range taken {
		recs = append(recs, store.SubscriptionRecord{ID: id, Data: data})
	}
	fresh, dead, err := r.st.PutSubscriptions(ctx, r.node, r.ttl, recs)
	if err != nil {
		// Put them back unless a newer change came meanwhile; the next
		// tick retries.
		r.mu.Lock()
		for id, data := range taken {
			if _, newer := r.pending[id]; !newer {
				r.pending[id] = data
			}
		}
		r.mu.Unlock()
		if ctx.Err() == nil {
			r.e.log.Debug("mercure: subscriptions registry: put failed; retrying next interval", "err", err)
		}
		return
	}
	// Dead nodes' subscribers: announce their end, once (the store hands
	// each dead node's records to one node).
	for _, rec := range dead {
		if ms := subOfRecord(rec); ms != nil {
			r.e.publishSubscriptionEvents(ms, false)
		}
	}
	if fresh && r.put {
		// The store lost this node's records, or took it for dead and
		// another node announced its subscribers' end: put them all again
		// and announce them active again.
		r.e.log.Warn("mercure: subscriptions registry lost this node's entry; announcing its subscriptions again")
		_ = r.e.hub.MercureStreams(ctx, func(ms *hub.MercureSub) {
			if ms.ID == "" {
				return
			}
			r.set(ms.ID, recordOf(ms))
			r.e.publishSubscriptionEvents(ms, true)
		})
	}
	r.put = true
}

// remote returns the subscriptions of the other live nodes, sorted by
// subscriber.
func (r *subsRegistry) remote(ctx context.Context) ([]*hub.MercureSub, error) {
	recs, err := r.st.ListSubscriptions(ctx, r.node)
	if err != nil {
		return nil, err
	}
	out := make([]*hub.MercureSub, 0, len(recs))
	for _, rec := range recs {
		if ms := subOfRecord(rec); ms != nil {
			out = append(out, ms)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
