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

	accepted *metrics.Counter
	authFail *metrics.Counter

	sourceFetch *metrics.Counter // pokes filled by a data source
	sourceErr   *metrics.Counter // data source failures (plain poke sent)
}

func newEngineMetrics() *engineMetrics {
	s := metrics.NewSet()
	m := &engineMetrics{set: s}
	s.NewGauge("sseloop_connections", func() float64 { return float64(m.conns.Load()) })
	m.accepted = s.NewCounter("sseloop_connections_accepted_total")
	m.authFail = s.NewCounter("sseloop_auth_failures_total")
	m.sourceFetch = s.NewCounter("sseloop_source_fetches_total")
	m.sourceErr = s.NewCounter("sseloop_source_errors_total")
	// The delivery metrics (subscriptions, events, bytes, heartbeats,
	// evictions, store and feed) are the hub's, registered in this set.
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
