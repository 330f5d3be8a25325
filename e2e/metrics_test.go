package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape reads /metrics and returns each sample by its full name with labels.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("metrics content type %q", ct)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		m[line[:i]] = v
	}
	return m
}

// subscribe opens a raw stream and reads through the retry field.
func subscribe(t *testing.T, base, query string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /events?%s HTTP/1.1\r\nHost: x\r\n\r\n", query)
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "retry:") {
			return c, r
		}
	}
}

// readEvents reads n events (blank-line terminated blocks with an id).
func readEvents(t *testing.T, r *bufio.Reader, n int) {
	t.Helper()
	for got := 0; got < n; {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "id: ") {
			got++
		}
	}
}

// TestMetricsCountWhatHappened opens subscribers, triggers events and checks
// that counters and gauges moved by exactly the right amounts. Why: operators
// alert on these numbers; a counter that drifts is worse than none.
func TestMetricsCountWhatHappened(t *testing.T) {
	base := startServer(t)
	before := scrape(t, base)

	c1, r1 := subscribe(t, base, "key=a&key=b")
	_, r2 := subscribe(t, base, "key=a")
	_, r3 := subscribe(t, base, "key=c")
	for _, key := range []string{"a", "a", "b"} {
		resp, err := http.Post(base+"/trigger/"+key, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	readEvents(t, r1, 3) // a, a, b
	readEvents(t, r2, 2) // a, a
	_ = r3               // c: nothing

	// Errors are counted by status code.
	for range 2 {
		resp, err := http.Get(base + "/nope")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	mid := scrape(t, base)
	delta := func(name string) float64 { return mid[name] - before[name] }
	checks := []struct {
		name string
		want float64
	}{
		{"sseloop_subscriptions", 3},
		{"sseloop_keys_active", 3},
		{"sseloop_events_published_total", 3},
		{"sseloop_events_delivered_total", 5},
		{`sseloop_http_errors_total{code="404"}`, 2},
	}
	for _, c := range checks {
		if got := delta(c.name); got != c.want {
			t.Errorf("%s moved by %v, want %v", c.name, got, c.want)
		}
	}
	// 3 streams + 3 trigger connections (keep-alive, maybe reused) + 2 + scrape.
	if got := delta("sseloop_connections_accepted_total"); got < 5 {
		t.Errorf("accepted moved by %v, want at least 5", got)
	}
	if got := delta("sseloop_bytes_written_total"); got <= 0 {
		t.Errorf("bytes written moved by %v", got)
	}
	for _, name := range []string{"sseloop_tick_duration_seconds_count", "sseloop_fanout_duration_seconds_count",
		"sseloop_store_read_duration_seconds_count", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if _, ok := mid[name]; !ok {
			t.Errorf("missing %s", name)
		}
	}
	if _, ok := mid[`sseloop_tick_duration_seconds_bucket{le="+Inf"}`]; !ok {
		t.Errorf("tick histogram lacks Prometheus le buckets")
	}

	// Closing a stream moves the gauges back and counts the close.
	c1.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := scrape(t, base)
		if after["sseloop_subscriptions"]-before["sseloop_subscriptions"] == 2 {
			if after["sseloop_keys_active"]-before["sseloop_keys_active"] != 2 { // a, c
				t.Errorf("keys_active after close: %v", after["sseloop_keys_active"])
			}
			if after[`sseloop_connections_closed_total{reason="client"}`] < 1 {
				t.Errorf("client close not counted")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriptions gauge did not drop after a client closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
