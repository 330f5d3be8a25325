// Package e2e holds end-to-end tests that drive sseloop from outside, like a
// user: a real browser against the real server.
package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sseloop/sseloop/engine"
)

// requireExternal is set by .ci/run: tests that need an external program
// fail instead of skipping when it is missing.
var requireExternal = os.Getenv("SSELOOPTEST_REQUIRE_EXTERNAL") == "1"

// chromiumPath finds Debian's chromium, or skips (fails in CI).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if requireExternal {
		t.Fatal("chromium not installed (SSELOOPTEST_REQUIRE_EXTERNAL=1): apt-get install -y chromium")
	}
	t.Skip("chromium not installed: apt-get install -y chromium (set SSELOOPTEST_REQUIRE_EXTERNAL=1 to fail instead)")
	return ""
}

func startServer(t *testing.T) string {
	t.Helper()
	base, _ := runEngine(t, "127.0.0.1:0", func(c *engine.Config) {
		c.Presence.Keys = []string{"demo"}
		c.Presence.Interval = 200 * time.Millisecond
	})
	return base
}

// TestDemoPageShowsTriggeredEvent opens the demo page in headless Chromium,
// publishes an event over HTTP and waits for the page to show it with its id.
// Why: the demo is the first thing a developer sees; it must work in a real
// browser's EventSource, not only in our own parser.
func TestDemoPageShowsTriggeredEvent(t *testing.T) {
	base := startServer(t)

	ctx := newBrowser(t)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#status.open`)),
	); err != nil {
		t.Fatalf("page did not connect: %v", err)
	}

	// The page shows who is online on its key: itself, then a second
	// subscriber that joins from outside, within one presence interval.
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.Search(`//span[@id="online" and contains(., "1 online")]`))); err != nil {
		t.Fatalf("the page does not show 1 online: %v", err)
	}
	other, err := http.Get(base + "/events/demo")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Body.Close()
	// Within 2.5 s: before the page's fallback GET (every 3 s) could show
	// it, so this is the live presence event.
	live, cancelLive := context.WithTimeout(ctx, 2500*time.Millisecond)
	defer cancelLive()
	if err := chromedp.Do(live, chromedp.WaitVisible(chromedp.Search(`//span[@id="online" and contains(., "2 online")]`))); err != nil {
		t.Fatalf("the page does not show 2 online from a presence event: %v", err)
	}

	// Publish from outside the page, as an app would.
	resp, err := http.Post(base+"/trigger/demo", "text/plain", strings.NewReader("from the test: 42"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("trigger: %d %s", resp.StatusCode, body)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(string(body)), `{"id":"`), `"}`)

	rowSel := chromedp.CSS(`#events tr[data-id="` + id + `"]`)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(rowSel)); err != nil {
		t.Fatalf("event %s did not appear on the page: %v", id, err)
	}
	row, err := chromedp.Run(ctx, chromedp.Text(rowSel))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(row, "from the test: 42") || !strings.Contains(row, "message") {
		t.Fatalf("row %q", row)
	}

	// A trigger sent from the page's own form reaches the page too.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#tdata`), "typed in the form"),
		chromedp.Click(chromedp.CSS(`#trigger`)),
		chromedp.WaitVisible(chromedp.Search(`//td[contains(., "typed in the form")]`)),
	); err != nil {
		t.Fatalf("form trigger: %v", err)
	}
	result, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#tresult`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(result, "sent, id ") {
		t.Fatalf("form result %q", result)
	}
}
