package hub

import (
	"context"
	"time"

	"github.com/sseloop/sseloop/store"
)

// directClaimTTL is how long a claim on one (key, version) is remembered:
// far longer than any poll interval, so no node handles a change twice.
const directClaimTTL = 10 * time.Minute

// versionChunk bounds the keys of one MGET.
const versionChunk = 1000

// runDirect watches the application keys of the keys that have subscribers
// here, for stores that expose them (Redis: <watch_prefix><key>, read only).
// Any program that writes a new value there (a PHP app's
// Cache::write($key, microtime(true)) on a Redis cache whose prefix is the
// watch prefix) makes the key's subscribers get a poke within about
// DirectPoll. Every node sees the change; the one that
// wins the store's claim publishes the poke (and runs the data source), so
// there is one event per change, not one per node.
//
// Cost: one MGET per DirectPoll for every key with a subscriber on this node
// (in chunks of 1,000). DirectPoll 0 turns it off.
func (h *Hub) runDirect(ctx context.Context) {
	vr, ok := h.st.(store.VersionReader)
	cl, ok2 := h.st.(store.Claimer)
	if !ok || !ok2 || h.cfg.DirectPoll <= 0 {
		return
	}
	t := time.NewTicker(h.cfg.DirectPoll)
	defer t.Stop()
	known := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		keys := h.interest.keys()
		next := make(map[string]string, len(keys))
		var changed []string
		var err error
		for len(keys) > 0 {
			chunk := keys[:min(len(keys), versionChunk)]
			keys = keys[len(chunk):]
			var vals []string
			if vals, err = vr.Versions(ctx, chunk); err != nil {
				h.log.Debug("direct pokes: read versions", "err", err)
				break
			}
			for i, k := range chunk {
				v := vals[i]
				next[k] = v
				if prev, seen := known[k]; seen && v != prev && v != "" {
					changed = append(changed, k)
				}
			}
		}
		if err != nil {
			continue // keep the old baseline; retry next interval
		}
		known = next
		if len(changed) == 0 {
			continue
		}
		// The watched keys are the app's alone: every change is a poke.
		var evs []store.Event
		for _, k := range changed {
			v := known[k]
			won, err := cl.Claim(ctx, k, v, directClaimTTL)
			if err != nil || !won {
				continue
			}
			h.m.directPokes.Inc()
			evs = append(evs, store.Event{Key: k})
		}
		if len(evs) > 0 && !h.Publish(&Publication{Events: evs}) {
			h.log.Warn("direct pokes dropped: publish queue full", "keys", len(evs))
		}
	}
}
