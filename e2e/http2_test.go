package e2e

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// openTenStreams is evaluated in a page: ten EventSources on one origin,
// counting opens and received events.
const openTenStreams = `
window.__open = 0; window.__got = 0; window.__es = [];
for (let i = 0; i < 10; i++) {
  const es = new EventSource('/events?key=h2');
  es.onopen = () => { __open++; };
  es.onmessage = () => { __got++; };
  __es.push(es);
}
true`

// TestBrowserHTTP2ThroughProxies opens ten EventSources in one page of
// headless Chromium through each documented TLS proxy config. Over HTTP/2
// they share one connection, so all ten open and receive an event. Why:
// the browser's limit of 6 HTTP/1.1 connections per origin is the reason
// the docs put a proxy with HTTP/2 in front; TestBrowserHTTP1StallsAtSix is
// the control that shows the same page stalls without it.
func TestBrowserHTTP2ThroughProxies(t *testing.T) {
	for name, startProxy := range map[string]func(*testing.T, snippet) *proxied{
		"nginx": startNginx, "caddy": startCaddy, "haproxy": startHAProxy,
	} {
		t.Run(name, func(t *testing.T) {
			ctx := newBrowser(t, chromedp.Flag("ignore-certificate-errors", true))
			p := startProxy(t, findSnippet(t, name))
			// Any page of the proxy's origin: the streams are same-origin.
			if err := chromedp.Do(ctx, chromedp.Navigate(p.url("/page"))); err != nil {
				t.Fatalf("navigate: %v", err)
			}
			if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](openTenStreams)); err != nil {
				t.Fatal(err)
			}
			proto, err := chromedp.Run(ctx, chromedp.Evaluate[string](`performance.getEntriesByType('navigation')[0].nextHopProtocol`))
			if err != nil || proto != "h2" {
				t.Fatalf("page protocol %q (%v), want h2", proto, err)
			}
			pollPage(t, ctx, `__open === 10`)
			waitSubscribers(t, p.sseloop, 10)
			code, body := postWith(t, p.client("127.0.0.2"), p.url("/trigger/h2"), "to all ten")
			if code != 200 {
				t.Fatalf("trigger: %d %s", code, body)
			}
			pollPage(t, ctx, `__got === 10`)
		})
	}
}

// TestBrowserHTTP1StallsAtSix is the control for
// TestBrowserHTTP2ThroughProxies: the same page straight against sseloop
// (HTTP/1.1) gets six streams; the other four wait for a connection and
// miss the event the six receive.
func TestBrowserHTTP1StallsAtSix(t *testing.T) {
	ctx := newBrowser(t)
	addr := startSseloop(t, nil)
	base := "http://" + addr
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/healthz")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](openTenStreams)); err != nil {
		t.Fatal(err)
	}
	pollPage(t, ctx, `__open === 6`)
	waitSubscribers(t, addr, 6)
	post(t, base+"/trigger/h2", "to whoever is connected")
	pollPage(t, ctx, `__got === 6`)
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`JSON.stringify([__open, __got, __es.filter((e) => e.readyState === EventSource.CONNECTING).length])`))
	if err != nil {
		t.Fatal(err)
	}
	if state != "[6,6,4]" {
		t.Fatalf("open, received, still connecting = %s, want [6,6,4]", state)
	}
}
