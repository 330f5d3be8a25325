package engine

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sseloop/sseloop/store"
)

// Tests named after what they protect. Each runs over real sockets against
// a real engine; see also badinput_test.go and auth_test.go.

// TestEveryLimitRefusesAndCounts sends one request over each limit. Why: a
// limit that is not counted cannot be alerted on, and one that is not
// enforced lets a single client make the server hold unbounded memory.
func TestEveryLimitRefusesAndCounts(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits.MaxHeadBytes = 2048
		c.Limits.MaxHeaders = 8
		c.Limits.MaxURIBytes = 256
		c.Limits.MaxBodyBytes = 1024
		c.Limits.MaxKeys = 2
		c.Limits.MaxBatchEvents = 2
	})
	headers := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "X-H%d: v\r\n", i)
		}
		return b.String()
	}
	batch3 := `{"events":[{"key":"a"},{"key":"b"},{"key":"c"}]}`
	tests := []struct {
		name   string
		raw    string
		status int
		limit  string
	}{
		{"max_headers", "GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers(8) + "\r\n", 431, "max_headers"},
		{"max_head_bytes", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 2100) + "\r\n\r\n", 431, "max_head_bytes"},
		{"max_uri_bytes", "GET /events?key=" + strings.Repeat("k", 300) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414, "max_uri_bytes"},
		{"max_body_bytes", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", 413, "max_body_bytes"},
		{"max_body_bytes_chunked", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + strings.Repeat("x", 2048) + "\r\n0\r\n\r\n", 413, "max_body_bytes"},
		{"max_keys", "GET /events?key=a&key=b&key=c HTTP/1.1\r\nHost: x\r\n\r\n", 400, "max_keys"},
		{"max_batch_events", fmt.Sprintf("POST /trigger HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(batch3), batch3), 400, "max_batch_events"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			metric := `sseloop_limit_exceeded_total{limit="` + tt.limit + `"}`
			before := metricValue(t, s, metric)
			out := rawExchange(t, s.addr, tt.raw)
			resp, err := http.ReadResponse(bufioReader(out), nil)
			if err != nil {
				t.Fatalf("unparsable answer %q: %v", out, err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := metricValue(t, s, metric) - before; got != 1 {
				t.Fatalf("%s grew by %v, want 1", metric, got)
			}
		})
	}
	// One header fewer than the limit is fine (the limit counts fields,
	// Host included).
	out := rawExchange(t, s.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+headers(6)+"\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200 ") {
		t.Fatalf("8 header fields refused: %q", out)
	}
}

// TestHeaderTimeoutCountsAsLimit: a slowloris client is closed with 408 and
// counted. Why: idle half-sent heads would otherwise hold descriptors.
func TestHeaderTimeoutCountsAsLimit(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.HeaderTimeout = 200 * time.Millisecond })
	out := rawExchange(t, s.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	if !strings.HasPrefix(out, "HTTP/1.1 408 ") {
		t.Fatalf("got %q", out)
	}
	if metricValue(t, s, `sseloop_limit_exceeded_total{limit="header_timeout"}`) != 1 {
		t.Fatal("header timeout not counted")
	}
}

// TestMaxConnsAnswers503AndKeepsOthers fills the server. Why: beyond
// limits.max_conns a client must get a clear 503 and close, and the clients
// already connected must not notice.
func TestMaxConnsAnswers503AndKeepsOthers(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.MaxConns = 3 })
	streams := []*sseStream{
		openSSE(t, s.addr, "/events?key=full"),
		openSSE(t, s.addr, "/events?key=full"),
		openSSE(t, s.addr, "/events?key=full"),
	}
	out := rawExchange(t, s.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 503 ") || !strings.Contains(out, "Connection: close") {
		t.Fatalf("4th connection got %q", out)
	}
	if metricValue(t, s, `sseloop_limit_exceeded_total{limit="max_conns"}`) < 1 {
		t.Fatal("max_conns refusal not counted")
	}
	streams[2].conn.Close()
	waitFor(t, "a free slot", func() bool { return s.e.m.conns.Load() == 2 })
	s.trigger(t, "full", "", "after the flood")
	for i, st := range streams[:2] {
		if ev := st.nextEvent(); ev.Data != "after the flood" {
			t.Fatalf("stream %d got %+v", i, ev)
		}
	}
}

// TestSmugglingAttemptsRejectedEndToEnd sends the classic desync requests
// through the whole server. Why: behind a proxy that reads the framing
// differently, an accepted ambiguous request lets an attacker inject a
// request into another user's connection. Each is refused and closed, and
// nothing hidden in a body is ever executed as a request.
func TestSmugglingAttemptsRejectedEndToEnd(t *testing.T) {
	s := startServer(t, nil)
	before, _ := s.st.LastID(t.Context()) // ids start at the clock, not at 1
	watcher := openSSE(t, s.addr, "/events?key=victim")
	hidden := "GET /events?key=victim HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"cl_te", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden, 400},
		{"te_cl", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + hidden, 400},
		{"duplicate_cl", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 45\r\n\r\n" + hidden, 400},
		{"cl_list", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 45\r\n\r\n" + hidden, 400},
		{"cl_plus_sign", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n", 400},
		{"cl_hex", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x0\r\n\r\n", 400},
		{"te_obfuscated", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501},
		{"te_space_before_colon", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
		{"te_obs_fold", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
		{"bad_chunk_size", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n", 400},
		{"bare_cr_in_header", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 45\r\n\r\n" + hidden, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := rawExchange(t, s.addr, tt.raw)
			resp, err := http.ReadResponse(bufioReader(out), nil)
			if err != nil {
				t.Fatalf("unparsable answer %q: %v", out, err)
			}
			if resp.StatusCode != tt.status || !resp.Close {
				t.Fatalf("status %d close %v, want %d and close (%q)", resp.StatusCode, resp.Close, tt.status, out)
			}
			if strings.Count(out, "HTTP/1.1 ") != 1 {
				t.Fatalf("more than one answer: the hidden request ran: %q", out)
			}
		})
	}
	if last, _ := s.st.LastID(t.Context()); last != before {
		t.Fatalf("a smuggling attempt stored an event (last id %d)", last)
	}
	// A chunked trigger is decoded, not refused (411 is never needed).
	out := rawExchange(t, s.addr, "POST /trigger/victim HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200 ") {
		t.Fatalf("chunked trigger: %q", out)
	}
	if ev := watcher.nextEvent(); ev.Data != "abcde" {
		t.Fatalf("watcher got %+v", ev)
	}
}

// TestSlowSubscriberEvictedMemoryBoundedOthersGetEverything publishes 16 MB
// to a key with one subscriber that never reads. Why: a client that stops
// reading must cost at most limits.max_outbound_bytes, never memory that
// grows with what is published, and must not slow down or starve the other
// subscribers of the same key, who receive every event.
func TestSlowSubscriberEvictedMemoryBoundedOthersGetEverything(t *testing.T) {
	// History holds 64 events (4 MiB): the change feed must never lag so
	// far behind that a key's events are trimmed before it reads them.
	st, err := store.OpenBunt(":memory:", store.Options{MaxEvents: 64})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWithStore(t, st, nil)
	const (
		eventSize = 64 << 10
		events    = 256 // 16 MiB
		readers   = 3
	)

	// The slow subscriber: a tiny receive buffer, and it never reads.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	slow, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "GET /events?key=big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	var fast []*sseStream
	for range readers {
		fast = append(fast, openSSE(t, s.addr, "/events?key=big"))
	}
	waitFor(t, "4 subscribers", func() bool { return s.e.hub.Streams() == readers+1 })

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	// Publish one event at a time and let the readers take it before the
	// next: the only data that can pile up is the stalled subscriber's.
	payload := strings.Repeat("x", eventSize)
	var peak uint64
	last := make([]uint64, readers)
	for i := range events {
		s.trigger(t, "big", "", payload)
		for r, f := range fast {
			ev := f.nextEvent()
			id := mustID(t, ev.ID)
			if id <= last[r] || len(ev.Data) != eventSize {
				t.Fatalf("reader %d, event %d: id %d after %d, %d bytes", r, i, id, last[r], len(ev.Data))
			}
			last[r] = id
		}
		if i%32 == 16 {
			// Live heap only: garbage awaiting collection is not held.
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if n := metricValue(t, s, "sseloop_slow_consumers_evicted_total"); n != 1 {
		t.Fatalf("slow consumers evicted: %v, want 1", n)
	}
	// The slow client sees its stream end (after what the kernel buffered).
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, slow); err != nil && !isPeerGone(err) {
		t.Fatalf("slow subscriber's stream did not end: %v", err)
	}
	grew := int64(peak) - int64(before.HeapInuse)
	t.Logf("live heap: %d KiB before, peak %d KiB while 16 MiB were published (+%d KiB)",
		before.HeapInuse>>10, peak>>10, grew>>10)
	// Bound: the retained history (64 events, 4 MiB), the stalled stream's
	// max_outbound_bytes (1 MiB) and some slack. Without the cap its
	// outbound buffer alone would grow to the whole 16 MiB.
	if grew > 8<<20 {
		t.Fatalf("heap grew by %d MiB while publishing 16 MiB to a stalled subscriber", grew>>20)
	}
}

// TestNoLeakAfterHostileClients runs a mix of hostile clients and checks
// that connections and goroutines return to where they were. Why: every
// abandoned request, refused token or half-sent head must release its
// connection state; a leak per hostile client is a slow denial of service.
func TestNoLeakAfterHostileClients(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Auth.JWTSecret = testSecret
		c.Auth.PublicKeys = []string{"open"}
		c.Auth.PublishKeys = []string{"leak-test-publisher"}
		c.Limits.HeaderTimeout = 300 * time.Millisecond
		c.Limits.MaxOutboundBytes = 64 << 10
	})
	// Warm up first, so that goroutines started lazily (the HTTP client's,
	// the workers' first jobs) are part of the baseline.
	s.trigger(t, "open", "", "warm-up")
	_ = rawExchange(t, s.addr, "GET /events?key=secret HTTP/1.1\r\nHost: x\r\n\r\n")
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, "no connections before the hostile clients", func() bool { return s.e.m.conns.Load() == 0 })
	baseG := runtime.NumGoroutine()

	hostile := []string{
		"GET /events?key=secret HTTP/1.1\r\nHost: x\r\n\r\n",                                    // no token
		"GET /events?key=secret HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a.b.c\r\n\r\n",     // bad token
		"GET /healthz HTTP/1.1\r\nHost: x\r\n",                                                  // slowloris
		"POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort",               // body never completes
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",                                          // TLS hello
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",                                                      // h2 preface
		"GET /events?key=open HTTP/1.1\r\nHost: x\r\n\r\n",                                      // stream, dropped
		"POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx" + "GET /x HTTP/1.1", // pipelined garbage
	}
	var wg sync.WaitGroup
	for round := range 20 {
		for i, raw := range hostile {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				_, _ = io.WriteString(c, raw)
				if (round+i)%2 == 0 {
					// Half the clients vanish at once, half wait for an answer.
					_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
					_, _ = bufio.NewReader(c).ReadString('\n')
				}
			}()
		}
	}
	wg.Wait()
	// A subscriber that never reads (with a tiny receive buffer, so the
	// kernel cannot absorb what it is sent) is evicted by the server: its
	// stream ends without the client closing it.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	stalled, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := io.WriteString(stalled, "GET /events?key=open HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stalled stream", func() bool { return s.e.hub.Streams() == 1 })
	evictedBefore := metricValue(t, s, "sseloop_slow_consumers_evicted_total")
	// The server's socket send buffer absorbs a few MiB before the
	// connection's own outbound buffer grows: publish until the eviction.
	for i := 0; metricValue(t, s, "sseloop_slow_consumers_evicted_total") == evictedBefore; i++ {
		if i == 1024 {
			t.Fatal("32 MiB published and the stalled subscriber was not evicted")
		}
		s.trigger(t, "open", "", strings.Repeat("y", 32<<10))
	}
	_ = stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, stalled); err != nil && !isPeerGone(err) {
		t.Fatalf("stalled subscriber's stream did not end: %v", err)
	}

	http.DefaultClient.CloseIdleConnections()
	waitFor(t, "no connections after the hostile clients", func() bool { return s.e.m.conns.Load() == 0 })
	deadline := time.Now().Add(10 * time.Second)
	for {
		http.DefaultClient.CloseIdleConnections()
		n := runtime.NumGoroutine()
		// Slack of 2 for runtime and gnet helpers that come and go; a
		// leak per hostile client would show as 160 or more.
		if n <= baseG+2 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the hostile clients:\n%s", n, baseG, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.e.hub.Streams() != 0 || metricValue(t, s, "sseloop_keys_active") != 0 {
		t.Fatalf("subscriptions %d, active keys %v after everyone left", s.e.hub.Streams(), metricValue(t, s, "sseloop_keys_active"))
	}
	if got := metricValue(t, s, "sseloop_connections"); got != 0 {
		t.Fatalf("sseloop_connections = %v after everyone left", got)
	}
}
