package engine

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// presenceAnswerJSON is one object of a GET /presence answer.
type presenceAnswerJSON struct {
	Key         string    `json:"key"`
	Connections int       `json:"connections"`
	Users       int       `json:"users"`
	UserIDs     *[]string `json:"user_ids"`
	Truncated   bool      `json:"truncated"`
}

// withSub adds a subject to claims.
func withSub(c jwt.MapClaims, sub string) jwt.MapClaims {
	c["sub"] = sub
	return c
}

// TestPresenceQueryAuth checks who may ask GET /presence over real
// sockets. Why: presence lists who is online, which is as private as the
// stream itself: the same 401/403 as subscribing, and the user ids of a key
// never reach a token that does not cover it.
func TestPresenceQueryAuth(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Auth.JWTSecret = testSecret
		c.Auth.PublicKeys = []string{"public:*"}
		c.Auth.PublishKeys = []string{"static-publisher-key-0123456789"}
		c.Presence.MaxUserIDs = 2
	})
	hs := func(claims jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, []byte(testSecret), claims) }
	// Three users hold streams of room:7, one of public:lobby.
	for _, u := range []string{"42", "17", "99"} {
		st := openSSE(t, s.addr, "/events/room:7", "Authorization: Bearer "+hs(withSub(subClaims("room:*"), u)))
		if st.Status != 200 {
			t.Fatalf("subscribe as %s: %d", u, st.Status)
		}
	}
	openSSE(t, s.addr, "/events/public:lobby")
	waitFor(t, "four streams", func() bool { return s.e.hub.Streams() == 4 })

	room := hs(subClaims("room:*"))
	tests := []struct {
		name    string
		target  string
		headers []string
		status  int
	}{
		{"no_token", "/presence/room:7", nil, 401},
		{"bad_token", "/presence/room:7", []string{"Authorization: Bearer " + tamper(room)}, 401},
		{"unknown_static_key", "/presence/room:7", []string{"Authorization: Bearer not-a-publish-key"}, 401},
		{"token_not_covering", "/presence/room:7", []string{"Authorization: Bearer " + hs(subClaims("user:*"))}, 403},
		{"one_key_not_covered", "/presence?key=room:7&key=admin", []string{"Authorization: Bearer " + room}, 403},
		{"public_needs_no_token", "/presence/public:lobby", nil, 200},
		{"public_and_private_needs_token", "/presence?key=public:lobby&key=room:7", nil, 401},
		{"subscriber_token", "/presence/room:7", []string{"Authorization: Bearer " + room}, 200},
		{"subscriber_token_in_query", "/presence/room:7?token=" + room, nil, 200},
		{"subscriber_token_in_cookie", "/presence/room:7", []string{"Cookie: sseloop_token=" + room}, 200},
		{"publisher_jwt", "/presence/room:7", []string{"Authorization: Bearer " + hs(pubClaims("room:*"))}, 200},
		{"static_publish_key", "/presence/room:7", []string{"Authorization: Bearer static-publisher-key-0123456789"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := exchange(t, s.addr, "GET", tt.target, tt.headers...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if tt.status != 200 {
				// The refusal is the fixed error body: no count, no id.
				if want := map[int]string{401: "unauthorized\n", 403: "forbidden\n"}[tt.status]; body != want {
					t.Fatalf("body %q, want %q", body, want)
				}
				if strings.Contains(body, "42") || strings.Contains(body, "connections") {
					t.Fatalf("a refused query leaked %q", body)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var got presenceAnswerJSON
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("answer %q: %v", body, err)
			}
			if got.Key == "public:lobby" {
				if got.Connections != 1 || got.Users != 0 {
					t.Fatalf("public:lobby: %+v", got)
				}
				return
			}
			// max_user_ids 2 of three users: cut, and said so.
			if got.Key != "room:7" || got.Connections != 3 || got.Users != 3 || got.UserIDs == nil ||
				strings.Join(*got.UserIDs, ",") != "17,42" || !got.Truncated {
				t.Fatalf("room:7: %s", body)
			}
		})
	}
	// Several keys: an array, in order.
	resp, body := exchange(t, s.addr, "GET", "/presence?key=room:7&key=room:8", "Authorization: Bearer "+room)
	var list []presenceAnswerJSON
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list) != 2 ||
		list[0].Key != "room:7" || list[0].Connections != 3 || list[1].Key != "room:8" || list[1].Connections != 0 {
		t.Fatalf("two keys: %d %s", resp.StatusCode, body)
	}
	if n := metricValue(t, s, "sseloop_presence_queries_total"); n != 7 { // the answered ones
		t.Fatalf("sseloop_presence_queries_total = %v", n)
	}
}

// TestPresenceQueryBadInput: bad keys are 400 with a fixed message.
func TestPresenceQueryBadInput(t *testing.T) {
	s := startServer(t, nil)
	for name, target := range map[string]string{
		"missing_key":    "/presence",
		"empty_key":      "/presence?key=",
		"control_char":   "/presence/a%01b",
		"path_and_query": "/presence/a?key=b",
		"too_many_keys": "/presence?" + strings.Repeat("key=k&", 0) + func() string {
			var q []string
			for i := range 40 {
				q = append(q, "key=k"+string(rune('a'+i%26))+string(rune('a'+i/26)))
			}
			return strings.Join(q, "&")
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := exchange(t, s.addr, "GET", target)
			if resp.StatusCode != 400 || strings.Contains(body, "a\x01b") {
				t.Fatalf("%s: %d %q", target, resp.StatusCode, body)
			}
		})
	}
	resp, _ := exchange(t, s.addr, "POST", "/presence/a")
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, OPTIONS" {
		t.Fatalf("POST: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// Auth off: counts, no user_ids.
	openSSE(t, s.addr, "/events/k")
	waitFor(t, "the stream", func() bool { return s.e.hub.Streams() == 1 })
	resp, body := exchange(t, s.addr, "GET", "/presence/k")
	if resp.StatusCode != 200 || body != `{"key":"k","connections":1,"users":0,"truncated":false}`+"\n" {
		t.Fatalf("auth off: %d %q", resp.StatusCode, body)
	}
}

// TestPresenceEventsOverSockets: with presence.keys, real subscribers get
// the key's state at once (as of the last interval), then one presence
// event per interval that saw a change.
func TestPresenceEventsOverSockets(t *testing.T) {
	const interval = 200 * time.Millisecond
	s := startServer(t, func(c *Config) {
		c.Auth.JWTSecret = testSecret
		c.Presence.Keys = []string{"room:*"}
		c.Presence.Interval = interval
	})
	hs := func(claims jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, []byte(testSecret), claims) }
	a := openSSE(t, s.addr, "/events/room:1", "Authorization: Bearer "+hs(withSub(subClaims("room:*"), "alice")))
	a.next() // retry
	ev := a.nextEvent()
	if ev.Event != "presence" || ev.HasID || ev.Data != `{"key":"room:1","connections":1,"users":1,"joined":["alice"],"left":[]}` {
		t.Fatalf("first presence event: %+v", ev)
	}
	b := openSSE(t, s.addr, "/events/room:1", "Authorization: Bearer "+hs(withSub(subClaims("room:*"), "bob")))
	b.next()
	if ev := a.nextEvent(); ev.Data != `{"key":"room:1","connections":2,"users":2,"joined":["bob"],"left":[]}` {
		t.Fatalf("after bob joined, alice got %+v", ev)
	}
	// Bob gets the state as of the last interval at once (alice alone, if
	// his loop already had a stream of the key), then the same change as
	// everyone; or, on a loop new to the key, the whole state with the next
	// interval. State plus changes is always right.
	ev = b.nextEvent()
	if ev.Data == `{"key":"room:1","connections":1,"users":1,"joined":["alice"],"left":[]}` {
		ev = b.nextEvent()
		if ev.Data != `{"key":"room:1","connections":2,"users":2,"joined":["bob"],"left":[]}` {
			t.Fatalf("bob's second presence event: %+v", ev)
		}
	} else if ev.Data != `{"key":"room:1","connections":2,"users":2,"joined":["alice","bob"],"left":[]}` {
		t.Fatalf("bob's first presence event: %+v", ev)
	}
	b.conn.Close()
	if ev := a.nextEvent(); ev.Data != `{"key":"room:1","connections":1,"users":1,"joined":[],"left":["bob"]}` {
		t.Fatalf("after bob left, alice got %+v", ev)
	}
	if n := metricValue(t, s, "sseloop_presence_events_total"); n != 3 {
		t.Fatalf("sseloop_presence_events_total = %v, want 3", n)
	}
}

// TestPresenceOffIs404: with presence.off the route does not exist.
func TestPresenceOffIs404(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Presence.Off = true })
	resp := rawExchange(t, s.addr, "GET /presence/k HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 404 ") {
		t.Fatalf("GET /presence with presence off: %q", resp)
	}
}
