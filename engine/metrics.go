package engine

import (
	"bytes"
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

// metricsContentType is the Prometheus text exposition format, version 0.0.4.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

func init() {
	// Prometheus exporters write "# HELP" and "# TYPE" before each family;
	// VictoriaMetrics/metrics does only when asked (process-wide).
	metrics.ExposeMetadata(true)
}

// metricHelp is the "# HELP" text of each family this package writes (and
// of the file-descriptor gauges): VictoriaMetrics/metrics writes the HELP
// line without text, write fills it in. TestMetricsHaveHelpAndType keeps it
// complete.
var metricHelp = map[string]string{
	"sseloop_connections":                  "Open client connections.",
	"sseloop_subscriptions":                "Open event streams.",
	"sseloop_keys_active":                  "Distinct keys with at least one subscriber in this process.",
	"sseloop_connections_accepted_total":   "Connections accepted.",
	"sseloop_connections_closed_total":     "Connections closed, by reason.",
	"sseloop_events_published_total":       "Events this process appended to the store (triggers and direct pokes).",
	"sseloop_events_delivered_total":       "Event frames written to streams.",
	"sseloop_bytes_written_total":          "Bytes written to streams.",
	"sseloop_heartbeats_total":             "Heartbeat comments written to silent streams.",
	"sseloop_slow_consumers_evicted_total": "Streams closed because their unsent bytes passed limits.max_outbound_bytes.",
	"sseloop_auth_failures_total":          "Requests refused for a missing, invalid or expired token or publish key.",
	"sseloop_store_errors_total":           "Failed store operations.",
	"sseloop_source_fetches_total":         "Pokes whose data came from a configured source.",
	"sseloop_source_errors_total":          "Source fetches that failed (the plain poke was sent).",
	"sseloop_direct_pokes_total":           "Writes by other programs to watched keys turned into pokes.",
	"sseloop_feed_gaps_total":              "Change-feed reads that found events already removed.",
	"sseloop_limit_exceeded_total":         "Requests or connections refused by a limit, by the limits.<key>.",
	"sseloop_http_errors_total":            "Error responses, by status code.",
	"sseloop_tick_duration_seconds":        "Time of one feed-reader pass (feed read, encode, hand-off to the loops).",
	"sseloop_tokens_expired_total":         "Streams closed because their token expired.",
	"sseloop_feed_resets_total":            "Times the store's id counter restarted under a running node (wipe, replacement).",
	"sseloop_feed_wait_reads_total":        "Change-feed reads made while the loops were busy because an unread event had waited the batch bound (50 ms).",
	"sseloop_replay_pages_total":           "Replay pages read from the store.",
	"sseloop_replay_deferred_total":        "Replay page reads put off because every store worker was busy and the queue full; the stream waits and is served when a worker frees.",
	"sseloop_replay_shared_pages_total":    "Replay pages served from another stream's read of the same page (streams resuming from the same id).",
	"sseloop_replays_waiting":              "Replays paused until their client reads what it was sent.",
	"sseloop_fanout_duration_seconds":      "Time one loop takes to write a batch of frames to its streams.",
	"sseloop_store_read_duration_seconds":  "Time of one change-feed read from the store.",
	"sseloop_presence_events_total":        "Presence events sent: one per key and presence.interval whose presence changed, not per subscriber.",
	"sseloop_presence_queries_total":       "GET /presence requests answered.",
	"sseloop_store_corrupt_records":        "Records of the buntdb file that failed their checksum since open (dropped by store.repair, or skipped by reads).",
	"process_open_fds":                     "Open file descriptors.",
	"process_max_fds":                      "Limit on open file descriptors (ulimit -n).",
}

// write writes the engine's metrics and the process metrics (memory, CPU,
// open files) in Prometheus text format, with HELP and TYPE lines.
func (m *engineMetrics) write(w io.Writer) {
	var b bytes.Buffer
	m.set.WritePrometheus(&b)
	metrics.WriteProcessMetrics(&b)
	metrics.WriteFDMetrics(&b)
	_, _ = w.Write(addHelp(b.Bytes()))
}

// addHelp appends metricHelp's text to the empty "# HELP name" lines of a
// Prometheus text exposition.
func addHelp(in []byte) []byte {
	out := make([]byte, 0, len(in)+len(in)/8)
	for len(in) > 0 {
		line := in
		if i := bytes.IndexByte(in, '\n'); i >= 0 {
			line = in[:i+1]
		}
		in = in[len(line):]
		name, ok := bytes.CutPrefix(bytes.TrimSuffix(line, []byte("\n")), []byte("# HELP "))
		if help := metricHelp[string(name)]; ok && help != "" {
			out = append(out, "# HELP "...)
			out = append(out, name...)
			out = append(out, ' ')
			out = append(out, help...)
			out = append(out, '\n')
			continue
		}
		out = append(out, line...)
	}
	return out
}

// WriteMetrics writes the engine's metrics and the process metrics in
// Prometheus text format, as GET /metrics does. Safe for concurrent use; for
// serving metrics on a separate listener (metrics.listen).
func (e *Engine) WriteMetrics(w io.Writer) { e.m.write(w) }
