package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// newBrowser starts headless Chromium (the setup of
// TestDemoPageShowsTriggeredEvent) and returns a context bounded to a
// minute; extra flags are added to the defaults.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	exe := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// Start the browser on the undecorated context (a timeout on the first
	// run would stop the whole browser), then bound every step.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

// runInPage opens a page of base's origin (so that the snippet's relative
// /events URLs reach sseloop) and evaluates prelude and the snippet there.
func runInPage(t *testing.T, ctx context.Context, base, prelude, body string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/healthz")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](prelude+"\n"+body+"\n;true")); err != nil {
		t.Fatalf("snippet: %v", err)
	}
}

func pollPage(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr)); err != nil {
		t.Fatalf("waiting for %s: %v", expr, err)
	}
}

func runBrowserRecipe(t *testing.T, s snippet) {
	ctx := newBrowser(t)
	addr := startSseloop(t, nil)
	base := "http://" + addr
	// The app's own functions the snippet calls.
	prelude := `window.__got = []; function render(d) { __got.push(d); } function reloadEverything() { __got.push('reload'); }`
	runInPage(t, ctx, base, prelude, s.body)
	waitSubscribers(t, addr, 1)
	post(t, base+"/trigger/user:42?event=notification", `{"unread":3}`)
	pollPage(t, ctx, `__got.length > 0`)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(__got)`))
	if err != nil || got != `[{"unread":3}]` {
		t.Fatalf("render got %s (%v)", got, err)
	}
}

func runBrowserListen(t *testing.T, s snippet) {
	ctx := newBrowser(t)
	addr := startSseloop(t, nil)
	base := "http://" + addr
	prelude := `window.__log = []; console.log = (...a) => __log.push(a.join(' '));`
	runInPage(t, ctx, base, prelude, s.body)
	waitSubscribers(t, addr, 1)
	_, named := post(t, base+"/trigger/orders?event=created", "a named event")
	_, plain := post(t, base+"/trigger/orders", "an unnamed event")
	pollPage(t, ctx, `__log.length >= 2`)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`__log`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{idOf(t, named) + " created a named event", idOf(t, plain) + " message an unnamed event"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("listen() saw %q, want %q", got, want)
	}
}
