package engine

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// TestMercureSubscriptions: with mercure.subscriptions, a subscriber
// authorized for the subscriptions topics gets a private update when a
// subscription starts and ends, and the API lists the active ones (with
// the token's payload) as JSON-LD with an ETag.
func TestMercureSubscriptions(t *testing.T) {
	const subSecret = "subscriber-secret-0123456789abcdef"
	s := mercureServer(t, func(m *Mercure) {
		m.SubscriberJWT = MercureJWT{Key: subSecret}
		m.Subscriptions = true
	})
	const book = "https://example.com/books/1"
	const watchSel = "/.well-known/mercure/subscriptions{/topic}{/subscriber}"
	watchTok := mercureToken(t, subSecret, map[string]any{"subscribe": []string{watchSel}})
	watcher := openSSE(t, s.addr, topicQuery(watchSel), "Authorization: Bearer "+watchTok)
	if watcher.Status != 200 {
		t.Fatalf("watcher: status %d", watcher.Status)
	}
	// next returns the next subscription event of topic book (the
	// watcher's own may come or not: it is published as it joins).
	next := func() subscription {
		t.Helper()
		for {
			var sub subscription
			if err := json.Unmarshal([]byte(watcher.nextM().Data), &sub); err != nil {
				t.Fatal(err)
			}
			if sub.Topic == book {
				return sub
			}
		}
	}
	userTok := mercureToken(t, subSecret, map[string]any{"subscribe": []string{}, "payload": map[string]any{"user": "7"}})
	user := openSSE(t, s.addr, topicQuery(book), "Authorization: Bearer "+userTok)
	if user.Status != 200 {
		t.Fatalf("user: status %d", user.Status)
	}
	on := next()
	var payload bytes.Buffer
	_ = json.Compact(&payload, on.Payload)
	if !on.Active || on.Topic != book || !strings.HasPrefix(on.Subscriber, "urn:uuid:") || on.Type != "Subscription" ||
		on.Context != jsonldContext || on.ID != subscriptionID(book, on.Subscriber) || payload.String() != `{"user":"7"}` {
		t.Fatalf("subscription event %+v", on)
	}

	resp, body := exchange(t, s.addr, "GET", subscriptionsPath, "Authorization: Bearer "+watchTok)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/ld+json" || resp.Header.Get("ETag") == "" {
		t.Fatalf("list: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	var list subscriptionCollection
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if list.Type != "Subscriptions" || list.LastEventID != resp.Header.Get("ETag") || len(list.Subscriptions) != 2 {
		t.Fatalf("list %+v", list)
	}
	resp, _ = exchange(t, s.addr, "GET", subscriptionsPath, "Authorization: Bearer "+watchTok, "If-None-Match: "+list.LastEventID)
	if resp.StatusCode != 304 {
		t.Errorf("If-None-Match: status %d, want 304", resp.StatusCode)
	}
	one := subscriptionsPath + "/" + url.QueryEscape(book) + "/" + url.QueryEscape(on.Subscriber)
	resp, body = exchange(t, s.addr, "GET", one, "Authorization: Bearer "+watchTok)
	var single subscription
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &single) != nil || single.ID != on.ID || single.LastEventID == "" {
		t.Fatalf("single: %d %s", resp.StatusCode, body)
	}
	if resp, _ := exchange(t, s.addr, "GET", subscriptionsPath+"/"+url.QueryEscape(book)+"/urn%3Auuid%3Anone", "Authorization: Bearer "+watchTok); resp.StatusCode != 404 {
		t.Errorf("unknown subscriber: status %d, want 404", resp.StatusCode)
	}
	if resp, _ := exchange(t, s.addr, "GET", subscriptionsPath, "Authorization: Bearer "+userTok); resp.StatusCode != 401 {
		t.Errorf("token without the subscriptions selector: status %d, want 401", resp.StatusCode)
	}

	user.conn.Close()
	off := next()
	if off.Active || off.ID != on.ID {
		t.Fatalf("end event %+v, want inactive %s", off, on.ID)
	}
}
