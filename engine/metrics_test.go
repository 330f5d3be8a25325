package engine

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func getMetrics(t *testing.T, s *testServer) string {
	t.Helper()
	resp, err := http.Get(s.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != metricsContentType {
		t.Fatalf("GET /metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(b)
}

func TestMetricsHaveHelpAndType(t *testing.T) {
	// Why: Prometheus exporters document each family with "# HELP" and
	// "# TYPE"; without TYPE, Prometheus treats every family as untyped.
	s := startServer(t, nil)
	// Make the labelled counters exist: a 414 counts an http error and a limit.
	resp, err := http.Get(s.url("/" + strings.Repeat("x", 5000)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	body := getMetrics(t, s)

	help, typ := map[string]string{}, map[string]string{}
	families := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, text, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			help[name] = text
		case strings.HasPrefix(line, "# TYPE "):
			name, text, _ := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			typ[name] = text
		case line == "" || line[0] == '#':
			t.Fatalf("unexpected line %q", line)
		default:
			name := line[:strings.IndexAny(line, "{ ")]
			fam := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if f, ok := strings.CutSuffix(name, suf); ok && (typ[f] == "histogram" || typ[f] == "summary") {
					fam = f
				}
			}
			if _, ok := typ[fam]; !ok {
				t.Errorf("sample %q has no # TYPE line before it", line)
			}
			families[fam] = true
		}
	}
	for _, want := range []string{"sseloop_connections", "sseloop_http_errors_total", "sseloop_limit_exceeded_total",
		"sseloop_tick_duration_seconds", "process_open_fds", "process_max_fds", "process_resident_memory_bytes"} {
		if !families[want] {
			t.Errorf("no %s in /metrics", want)
		}
	}
	for fam := range families {
		if (strings.HasPrefix(fam, "sseloop_") || strings.HasSuffix(fam, "_fds")) && help[fam] == "" {
			t.Errorf("%s: # HELP without text (add it to metricHelp)", fam)
		}
	}
	if typ["sseloop_events_published_total"] != "counter" || typ["sseloop_connections"] != "gauge" || typ["sseloop_tick_duration_seconds"] != "histogram" {
		t.Errorf("types: %v", typ)
	}
}

func TestMetricsHeadHasNoBody(t *testing.T) {
	// Why: HEAD is how monitoring checks that an endpoint exists; a body
	// after a HEAD answer would corrupt the next response on the connection.
	s := startServer(t, nil)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := io.WriteString(c, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, &http.Request{Method: "HEAD"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != metricsContentType || resp.ContentLength <= 0 {
		t.Fatalf("HEAD /metrics: %d %q length %d", resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength)
	}
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("response after HEAD: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Fatalf("after HEAD: %d %q", resp.StatusCode, b)
	}
}

func TestNoPublicMetrics(t *testing.T) {
	// Why: with metrics on an internal listener, the public port must not
	// show connection counts and limits to anyone who asks.
	s := startServer(t, func(c *Config) { c.NoPublicMetrics = true })
	for _, m := range []string{"GET", "HEAD"} {
		req, _ := http.NewRequest(m, s.url("/metrics"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("%s /metrics: %d, want 404", m, resp.StatusCode)
		}
	}
	var b strings.Builder
	s.e.WriteMetrics(&b)
	if !strings.Contains(b.String(), "sseloop_connections ") {
		t.Fatal("WriteMetrics is empty")
	}
}
