package engine

import (
	"io"
	"strconv"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
)

// engineMetrics holds one engine's metrics in its own metrics.Set, so that
// several engines in one process (tests) never share counters.
type engineMetrics struct {
	set *metrics.Set

	conns atomic.Int64 // open connections (also the max_conns check)
	subs  atomic.Int64 // open streams

	accepted    *metrics.Counter
	published   *metrics.Counter
	delivered   *metrics.Counter
	bytes       *metrics.Counter
	heartbeats  *metrics.Counter
	slowEvicted *metrics.Counter
	authFail    *metrics.Counter

	tick     *metrics.PrometheusHistogram
	fanout   *metrics.PrometheusHistogram
	storeRd  *metrics.PrometheusHistogram
	storeErr *metrics.Counter

	sourceFetch *metrics.Counter // pokes filled by a data source
	sourceErr   *metrics.Counter // data source failures (plain poke sent)
	directPokes *metrics.Counter // writes of watched app keys turned into pokes
	feedGaps    *metrics.Counter // change-feed reads that found removed events
}

func newEngineMetrics() *engineMetrics {
	s := metrics.NewSet()
	m := &engineMetrics{set: s}
	s.NewGauge("sseloop_connections", func() float64 { return float64(m.conns.Load()) })
	s.NewGauge("sseloop_subscriptions", func() float64 { return float64(m.subs.Load()) })
	m.accepted = s.NewCounter("sseloop_connections_accepted_total")
	m.published = s.NewCounter("sseloop_events_published_total")
	m.delivered = s.NewCounter("sseloop_events_delivered_total")
	m.bytes = s.NewCounter("sseloop_bytes_written_total")
	m.heartbeats = s.NewCounter("sseloop_heartbeats_total")
	m.slowEvicted = s.NewCounter("sseloop_slow_consumers_evicted_total")
	m.authFail = s.NewCounter("sseloop_auth_failures_total")
	m.storeErr = s.NewCounter("sseloop_store_errors_total")
	m.sourceFetch = s.NewCounter("sseloop_source_fetches_total")
	m.sourceErr = s.NewCounter("sseloop_source_errors_total")
	m.directPokes = s.NewCounter("sseloop_direct_pokes_total")
	m.feedGaps = s.NewCounter("sseloop_feed_gaps_total")
	m.tick = s.NewPrometheusHistogram("sseloop_tick_duration_seconds")
	m.fanout = s.NewPrometheusHistogram("sseloop_fanout_duration_seconds")
	m.storeRd = s.NewPrometheusHistogram("sseloop_store_read_duration_seconds")
	return m
}

// closed counts a closed connection by reason.
func (m *engineMetrics) closed(reason string) {
	m.set.GetOrCreateCounter(`sseloop_connections_closed_total{reason="` + reason + `"}`).Inc()
}

// limit counts a request or connection refused by the named limit (the
// config key under limits.).
func (m *engineMetrics) limit(name string) {
	m.set.GetOrCreateCounter(`sseloop_limit_exceeded_total{limit="` + name + `"}`).Inc()
}

// httpError counts an error response by status code.
func (m *engineMetrics) httpError(code int) {
	m.set.GetOrCreateCounter(`sseloop_http_errors_total{code="` + strconv.Itoa(code) + `"}`).Inc()
}

// write writes the engine's metrics and the process metrics (memory, CPU,
// open files) in Prometheus text format.
func (m *engineMetrics) write(w io.Writer) {
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}

// WriteMetrics writes the engine's metrics and the process metrics in
// Prometheus text format, as GET /metrics does. Safe for concurrent use; for
// serving metrics on a separate listener (metrics.listen).
func (e *Engine) WriteMetrics(w io.Writer) { e.m.write(w) }
