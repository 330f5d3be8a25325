package bench

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startBaseline(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeBaselineListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// subscribeSSE opens a stream and returns its response and a channel of
// parsed events; the channel closes when the stream ends.
func subscribeSSE(t *testing.T, url string) (*http.Response, <-chan gotEvent) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	ch := make(chan gotEvent, 16)
	// The first read returns the retry field: after it, the stream is
	// subscribed, so triggers sent later reach it.
	p := &Parser{}
	buf := make([]byte, 4096)
	for !p.HasRetry {
		n, err := resp.Body.Read(buf)
		if err != nil {
			t.Fatalf("reading stream start: %v", err)
		}
		_ = p.Feed(buf[:n], func(*Event) { t.Error("event before retry") })
	}
	go func() {
		defer close(ch)
		for {
			n, err := resp.Body.Read(buf)
			_ = p.Feed(buf[:n], func(e *Event) {
				ch <- gotEvent{string(e.ID), e.HasID, string(e.Type), string(e.Data)}
			})
			if err != nil {
				return
			}
		}
	}()
	return resp, ch
}

func next(t *testing.T, ch <-chan gotEvent) gotEvent {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return e
	case <-time.After(10 * time.Second): // a hang guard, not a timing assertion
		t.Fatal("no event")
	}
	return gotEvent{}
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBaselineStream(t *testing.T) {
	base := startBaseline(t)
	resp, ch := subscribeSSE(t, base+"/events?key=orders")
	for name, want := range map[string]string{
		"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
		"Connection": "keep-alive", "X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}

	code, body := post(t, base+"/trigger/orders?event=created", "first line\r\nsecond line")
	if code != 200 || body != `{"id":"1"}` {
		t.Fatalf("trigger: %d %q", code, body)
	}
	if e := next(t, ch); e != (gotEvent{"1", true, "created", "first line\nsecond line"}) {
		t.Fatalf("event %+v", e)
	}

	if code, body = post(t, base+"/trigger/orders", ""); code != 200 || body != `{"id":"2"}` {
		t.Fatalf("poke: %d %q", code, body)
	}
	e := next(t, ch)
	var poke struct {
		Key string `json:"key"`
		ID  string `json:"id"`
		TS  int64  `json:"ts"`
	}
	if err := json.Unmarshal([]byte(e.Data), &poke); err != nil || poke.Key != "orders" || poke.ID != "2" || poke.TS <= 0 || e.ID != "2" {
		t.Fatalf("poke event %+v (%v)", e, err)
	}
}

func TestBaselineMultiKeyAndPathForm(t *testing.T) {
	base := startBaseline(t)
	_, multi := subscribeSSE(t, base+"/events?key=a&key=b")
	_, path := subscribeSSE(t, base+"/events/b%2Fc")
	post(t, base+"/trigger/a", "1")
	post(t, base+"/trigger/other", "x")
	post(t, base+"/trigger/b", "2")
	post(t, base+"/trigger/b%2Fc", "3")
	if e := next(t, multi); e.ID != "1" || e.Data != "1" {
		t.Fatalf("multi first %+v", e)
	}
	if e := next(t, multi); e.ID != "3" || e.Data != "2" {
		t.Fatalf("multi second %+v", e)
	}
	if e := next(t, path); e.ID != "4" || e.Data != "3" {
		t.Fatalf("path form %+v", e)
	}
}

func TestBaselineErrors(t *testing.T) {
	base := startBaseline(t)
	tests := []struct {
		name, method, path, body string
		code                     int
	}{
		{"no_key", "GET", "/events", "", 400},
		{"empty_key", "GET", "/events?key=", "", 400},
		{"long_key", "GET", "/events?key=" + strings.Repeat("k", 257), "", 400},
		{"control_key", "POST", "/trigger/a%01b", "", 400},
		{"bad_event_name", "POST", "/trigger/a?event=x%0Ay", "d", 400},
		{"body_too_large", "POST", "/trigger/a", strings.Repeat("x", baselineMaxBody+1), 413},
		{"unknown_route", "GET", "/nope", "", 404},
		{"wrong_method", "POST", "/events?key=a", "", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.code)
			}
			if strings.Contains(string(b), "kkkk") {
				t.Fatalf("body echoes the input: %q", b)
			}
		})
	}
}

// TestBaselineSlowConsumer fills a stream's queue without reading it: the
// hub drops the stream instead of blocking the publisher.
func TestBaselineSlowConsumer(t *testing.T) {
	b := NewBaseline()
	s := &stream{ch: make(chan []byte, 2), dropped: make(chan struct{})}
	b.subscribe(s, []string{"a", "b"})
	for range 3 {
		b.publish("a", "", []byte("x"), false)
	}
	b.publish("b", "", []byte("x"), false) // must not close dropped twice
	select {
	case <-s.dropped:
	default:
		t.Fatal("slow stream not dropped")
	}
	b.unsubscribe(s, []string{"a", "b"})
	if len(b.subs) != 0 {
		t.Fatalf("subs left: %v", b.subs)
	}
}
