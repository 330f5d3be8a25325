package hub

import (
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
)

// hubMetrics are the delivery metrics, registered in the owner's set so
// that one /metrics page shows the engine's and the hub's.
type hubMetrics struct {
	set *metrics.Set

	streams atomic.Int64 // open streams

	published      *metrics.Counter
	delivered      *metrics.Counter
	bytes          *metrics.Counter
	heartbeats     *metrics.Counter
	slowEvicted    *metrics.Counter
	expired        *metrics.Counter
	storeErr       *metrics.Counter
	feedGaps       *metrics.Counter
	feedResets     *metrics.Counter
	waitReads      *metrics.Counter // feed reads MaxBatchWait forced while loops were busy
	directPokes    *metrics.Counter
	replayPages    *metrics.Counter
	replayDeferred *metrics.Counter
	replayShared   *metrics.Counter

	presenceEvents  *metrics.Counter
	presenceQueries *metrics.Counter

	tick    *metrics.PrometheusHistogram
	fanout  *metrics.PrometheusHistogram
	storeRd *metrics.PrometheusHistogram
}

func newHubMetrics(s *metrics.Set, h *Hub) *hubMetrics {
	m := &hubMetrics{set: s}
	s.NewGauge("sseloop_subscriptions", func() float64 { return float64(m.streams.Load()) })
	// Replays paused until their client reads what it was sent.
	s.NewGauge("sseloop_replays_waiting", func() float64 { return float64(h.draining.Load()) })
	// Distinct keys with a subscriber anywhere in this process.
	s.NewGauge("sseloop_keys_active", func() float64 { return float64(h.interest.len()) })
	m.published = s.NewCounter("sseloop_events_published_total")
	m.delivered = s.NewCounter("sseloop_events_delivered_total")
	m.bytes = s.NewCounter("sseloop_bytes_written_total")
	m.heartbeats = s.NewCounter("sseloop_heartbeats_total")
	m.slowEvicted = s.NewCounter("sseloop_slow_consumers_evicted_total")
	m.expired = s.NewCounter("sseloop_tokens_expired_total")
	m.storeErr = s.NewCounter("sseloop_store_errors_total")
	m.feedGaps = s.NewCounter("sseloop_feed_gaps_total")
	m.feedResets = s.NewCounter("sseloop_feed_resets_total")
	m.waitReads = s.NewCounter("sseloop_feed_wait_reads_total")
	m.directPokes = s.NewCounter("sseloop_direct_pokes_total")
	m.replayPages = s.NewCounter("sseloop_replay_pages_total")
	m.replayDeferred = s.NewCounter("sseloop_replay_deferred_total")
	m.replayShared = s.NewCounter("sseloop_replay_shared_pages_total")
	// One per key and interval whose presence changed (not per subscriber).
	m.presenceEvents = s.NewCounter("sseloop_presence_events_total")
	m.presenceQueries = s.NewCounter("sseloop_presence_queries_total")
	m.tick = s.NewPrometheusHistogram("sseloop_tick_duration_seconds")
	m.fanout = s.NewPrometheusHistogram("sseloop_fanout_duration_seconds")
	m.storeRd = s.NewPrometheusHistogram("sseloop_store_read_duration_seconds")
	return m
}

// limit counts a stream closed by the named limit (the config key under
// limits.), in the same counter the engine uses for request limits.
func (m *hubMetrics) limit(name string) {
	m.set.GetOrCreateCounter(`sseloop_limit_exceeded_total{limit="` + name + `"}`).Inc()
}

// StoreError counts a failed store call made for the hub's owner.
func (h *Hub) StoreError() { h.m.storeErr.Inc() }

// Streams returns the number of open streams. Any goroutine.
func (h *Hub) Streams() int64 { return h.m.streams.Load() }
