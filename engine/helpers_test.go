package engine

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sseloop/sseloop/store"
)

// testServer is a real engine on 127.0.0.1:0 with an in-memory store.
type testServer struct {
	e      *Engine
	st     store.Store
	addr   string
	pubKey string // first auth.publish_keys entry, sent by trigger
}

// startServer starts an engine; mutate adjusts the config first. The server
// stops when the test ends.
func startServer(t testing.TB, mutate func(*Config)) *testServer {
	t.Helper()
	st, err := store.OpenBunt(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return startServerWithStore(t, st, mutate)
}

func startServerWithStore(t testing.TB, st store.Store, mutate func(*Config)) *testServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Loops = 2
	cfg.Tick = 10 * time.Millisecond
	cfg.Poll = 20 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	select {
	case <-e.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("engine did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("engine did not start in 10s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = st.Close()
	})
	ts := &testServer{e: e, st: st, addr: e.Addr().String()}
	if len(cfg.Auth.PublishKeys) > 0 {
		ts.pubKey = cfg.Auth.PublishKeys[0]
	}
	return ts
}

func (s *testServer) url(path string) string { return "http://" + s.addr + path }

// trigger publishes data to key with net/http and returns the event id.
func (s *testServer) trigger(t *testing.T, key, event, data string) uint64 {
	t.Helper()
	u := s.url("/trigger/" + key)
	if event != "" {
		u += "?event=" + event
	}
	req, err := http.NewRequest("POST", u, strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if s.pubKey != "" {
		req.Header.Set("Authorization", "Bearer "+s.pubKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("trigger %s: %d %s", key, resp.StatusCode, body)
	}
	var id uint64
	if _, err := fmt.Sscanf(string(body), `{"id":"%d"}`, &id); err != nil {
		t.Fatalf("trigger answer %q: %v", body, err)
	}
	return id
}

// sseEvent is one parsed SSE event, or a comment when Comment is set.
type sseEvent struct {
	ID, Event, Data string
	HasID           bool
	Comment         bool
}

// sseStream reads an event stream over a raw TCP connection.
type sseStream struct {
	t      *testing.T
	conn   net.Conn
	r      *bufio.Reader
	Status int
	Header http.Header
	resp   *http.Response
}

// openSSE sends a GET for path with extra header lines and reads the
// response head.
func openSSE(t *testing.T, addr, path string, headers ...string) *sseStream {
	t.Helper()
	return openSSEMethod(t, addr, "GET", path, headers...)
}

// openSSEMethod is openSSE with another method.
func openSSEMethod(t *testing.T, addr, method, path string, headers ...string) *sseStream {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := method + " " + path + " HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	s := &sseStream{t: t, conn: conn, r: bufio.NewReader(conn)}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(s.r, nil)
	if err != nil {
		t.Fatalf("read response head: %v", err)
	}
	s.Status, s.Header, s.resp = resp.StatusCode, resp.Header, resp
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		// The body is close-delimited: keep reading from s.r directly.
		return s
	}
	return s
}

// next returns the next event or comment, failing the test after 10s.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	ev, err := s.read(10 * time.Second)
	if err != nil {
		s.t.Fatalf("read event: %v", err)
	}
	return ev
}

// nextEvent skips comments and "retry" blocks and returns the next event.
func (s *sseStream) nextEvent() sseEvent {
	s.t.Helper()
	for {
		ev := s.next()
		if !ev.Comment {
			return ev
		}
	}
}

func (s *sseStream) read(timeout time.Duration) (sseEvent, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(timeout))
	var ev sseEvent
	var data []string
	seen := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if !seen {
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			if !seen {
				return sseEvent{Comment: true, Data: line}, nil
			}
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "retry":
			ev = sseEvent{Comment: true, Data: line}
			seen = false
			if _, err := s.r.ReadString('\n'); err != nil {
				return ev, err
			}
			return ev, nil
		case "id":
			ev.ID, ev.HasID = value, true
		case "event":
			ev.Event = value
		case "data":
			data = append(data, value)
		}
		seen = true
	}
}

// rawExchange writes raw bytes on a new connection and returns everything the
// server sends until it closes the connection (or 5s pass).
func rawExchange(t *testing.T, addr string, raw string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(conn)
	return string(b)
}

func mustID(t *testing.T, s string) uint64 {
	t.Helper()
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("bad id %q", s)
	}
	return id
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue returns the value of one sample of the engine's metrics (0
// when absent).
func metricValue(t *testing.T, s *testServer, name string) float64 {
	t.Helper()
	var b strings.Builder
	s.e.m.set.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// slogTo returns a logger writing text to w (safe for concurrent use).
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w}, nil))
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func netResolve(addr string) (net.Addr, error) { return net.ResolveTCPAddr("tcp", addr) }

func newMemStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenBunt(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func writePEMBytes(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
