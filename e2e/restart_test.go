package e2e

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sseloop/sseloop/engine"
	"github.com/sseloop/sseloop/store"
)

// runEngine serves an in-memory store on listen until stop is called (or
// the test ends); mutate, if not nil, adjusts the config first.
func runEngine(t *testing.T, listen string, mutate func(*engine.Config)) (base string, stop func()) {
	t.Helper()
	st, err := store.OpenBunt(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.Listen = listen
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := engine.New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	select {
	case <-e.Ready():
	case err := <-done:
		t.Fatalf("engine: %v", err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			_ = st.Close()
		}
	}
	t.Cleanup(stop)
	return "http://" + e.Addr().String(), stop
}

func triggerDemo(t *testing.T, base, data string) string {
	t.Helper()
	resp, err := http.Post(base+"/trigger/demo", "text/plain", strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("trigger: %d %s", resp.StatusCode, body)
	}
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(string(body)), `{"id":"`), `"}`)
}

// TestDemoPageRestartWalkthrough does what the demo page tells a new user
// to do: close the server and start it again. Why: with the default
// in-memory store the restarted server knows nothing of the ids the page
// has seen; the browser reconnects with its Last-Event-ID and must be told
// (a gap row), then show the new server's events, never go silent.
func TestDemoPageRestartWalkthrough(t *testing.T) {
	fastRetry := func(c *engine.Config) { c.Retry = 500 * time.Millisecond }
	base, stop := runEngine(t, "127.0.0.1:0", fastRetry)
	listen := strings.TrimPrefix(base, "http://")

	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#status.open`))); err != nil {
		t.Fatalf("page did not connect: %v", err)
	}
	before := triggerDemo(t, base, "before the restart")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#events tr[data-id="`+before+`"]`))); err != nil {
		t.Fatalf("event %s did not appear: %v", before, err)
	}

	stop() // the user closes the server...
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#status.connecting`))); err != nil {
		t.Fatalf("the page did not notice the server went away: %v", err)
	}
	base, _ = runEngine(t, listen, fastRetry) // ...and starts it again: a new, empty store

	// The browser reconnects with Last-Event-ID = before: the page shows a
	// gap (the history it came from is gone), then the new server's events.
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#status.open`)),
		chromedp.WaitVisible(chromedp.Search(`//tr/td[2][normalize-space(.)="gap"]`)),
	); err != nil {
		t.Fatalf("no gap row after the restart: %v", err)
	}
	after := triggerDemo(t, base, "after the restart")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#events tr[data-id="`+after+`"]`))); err != nil {
		t.Fatalf("event %s after the restart did not appear: %v", after, err)
	}
}
