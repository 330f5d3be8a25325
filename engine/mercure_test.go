package engine

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// mercureServer starts an engine with the Mercure routes, publishers
// verified with testSecret (HS256).
func mercureServer(t *testing.T, mutate func(*Mercure)) *testServer {
	t.Helper()
	return startServer(t, func(c *Config) {
		c.Mercure.Enabled = true
		c.Mercure.PublisherJWT = MercureJWT{Key: testSecret}
		if mutate != nil {
			mutate(&c.Mercure)
		}
	})
}

// mercureToken is an HS256 token with a mercure claim, valid for an hour.
func mercureToken(t testing.TB, key string, claim map[string]any) string {
	t.Helper()
	return mint(t, jwt.SigningMethodHS256, []byte(key), jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "mercure": claim})
}

var publishAll = map[string]any{"publish": []string{"*"}}

// mercurePublish posts a form as symfony/mercure's Hub::publish does
// (repeated topic=, + for spaces, Authorization: Bearer) and returns the
// status and body.
func mercurePublish(t *testing.T, s *testServer, form url.Values, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", s.url(mercurePath), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// mustPublish publishes with a token allowed everything and returns the id.
func mustPublish(t *testing.T, s *testServer, form url.Values) string {
	t.Helper()
	code, body := mercurePublish(t, s, form, "Authorization: Bearer "+mercureToken(t, testSecret, publishAll))
	if code != 200 {
		t.Fatalf("publish %v: %d %q", form, code, body)
	}
	return body
}

// mevent is one Mercure event as read off the wire.
type mevent struct {
	ID, Event, Data, Retry string
}

// nextM reads the next event block, skipping comment lines (the ":" the
// stream starts with and heartbeats).
func (s *sseStream) nextM() mevent {
	s.t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ev mevent
	var data []string
	seen := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("read Mercure event: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if !seen {
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		name, value, _ := strings.Cut(line, ": ")
		seen = true
		switch name {
		case "id":
			ev.ID = value
		case "event":
			ev.Event = value
		case "retry":
			ev.Retry = value
		case "data":
			data = append(data, value)
		}
	}
}

func topicQuery(topics ...string) string {
	q := url.Values{"topic": topics}
	return mercurePath + "?" + q.Encode()
}

// TestMercureSubscribeAndPublish: the stream's head and first bytes are the
// Mercure hub's, a form publish answers its id as text/plain, and the event
// is framed as the hub frames it (event, retry, id, one data line per line).
func TestMercureSubscribeAndPublish(t *testing.T) {
	s := mercureServer(t, nil)
	sse := openSSE(t, s.addr, topicQuery("https://example.com/books/1"))
	if sse.Status != 200 {
		t.Fatalf("status %d", sse.Status)
	}
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "private, no-cache, no-store, must-revalidate, max-age=0",
		"X-Accel-Buffering": "no",
	} {
		if got := sse.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if sse.Header.Get("Last-Event-ID") != "" {
		t.Errorf("Last-Event-ID header without a Last-Event-ID request")
	}
	first, _ := sse.r.ReadString('\n')
	if first != ":\n" {
		t.Fatalf("first line %q, want \":\\n\"", first)
	}
	id := mustPublish(t, s, url.Values{"topic": {"https://example.com/books/1"}, "data": {"line 1\nline 2"},
		"type": {"book update"}, "retry": {"2500"}})
	if !strings.HasPrefix(id, "urn:uuid:") || len(id) != len("urn:uuid:")+36 || id[len("urn:uuid:")+14] != '7' {
		t.Errorf("generated id %q is not urn:uuid:<UUIDv7>", id)
	}
	raw := ""
	for !strings.HasSuffix(raw, "\n\n") {
		line, err := sse.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		raw += line
	}
	want := "event: book update\nretry: 2500\nid: " + id + "\ndata: line 1\ndata: line 2\n\n"
	if raw != want {
		t.Errorf("frame %q, want %q", raw, want)
	}
}

// TestMercureTopicSelectors: URI templates match as the Mercure hub
// matches them, over real sockets.
func TestMercureTopicSelectors(t *testing.T) {
	s := mercureServer(t, nil)
	idTpl := openSSE(t, s.addr, topicQuery("https://example.com/{id}"))
	pathTpl := openSSE(t, s.addr, topicQuery("https://example.com/{+path}"))
	exact := openSSE(t, s.addr, topicQuery("https://example.com/a"))
	star := openSSE(t, s.addr, topicQuery("*"))
	deep := mustPublish(t, s, url.Values{"topic": {"https://example.com/a/b"}, "data": {"deep"}})
	flat := mustPublish(t, s, url.Values{"topic": {"https://example.com/a"}, "data": {"flat"}})
	if ev := idTpl.nextM(); ev.ID != flat {
		t.Errorf("{id} got %q (%s) first, want only %s: {id} must not match /a/b", ev.ID, ev.Data, flat)
	}
	if ev := pathTpl.nextM(); ev.ID != deep {
		t.Errorf("{+path} got %s, want %s", ev.ID, deep)
	}
	if ev := pathTpl.nextM(); ev.ID != flat {
		t.Errorf("{+path} got %s, want %s", ev.ID, flat)
	}
	if ev := exact.nextM(); ev.ID != flat {
		t.Errorf("exact got %s, want %s", ev.ID, flat)
	}
	if ev := star.nextM(); ev.ID != deep {
		t.Errorf("* got %s, want %s", ev.ID, deep)
	}
}

// TestMercurePrivateAlternateTopic: a private update reaches only
// subscribers whose mercure.subscribe selectors match one of its topics,
// here its alternate topic (the hub's documented trick), never an
// anonymous subscriber of the same topic, nor a native one.
func TestMercurePrivateAlternateTopic(t *testing.T) {
	const subSecret = "subscriber-secret-0123456789abcdef"
	s := mercureServer(t, func(m *Mercure) {
		m.SubscriberJWT = MercureJWT{Key: subSecret, Alg: "HS256"}
		m.Anonymous = true
	})
	const book, user = "https://example.com/books/1", "https://example.com/users/7/books"
	tok := mercureToken(t, subSecret, map[string]any{"subscribe": []string{"https://example.com/users/7/{rest}"}})
	authorized := openSSE(t, s.addr, topicQuery(book), "Authorization: Bearer "+tok)
	anonymous := openSSE(t, s.addr, topicQuery(book))
	native := openSSE(t, s.addr, "/events?key="+url.QueryEscape(book))
	for _, x := range []*sseStream{authorized, anonymous, native} {
		if x.Status != 200 {
			t.Fatalf("status %d", x.Status)
		}
	}
	priv := mustPublish(t, s, url.Values{"topic": {book, user}, "data": {"secret"}, "private": {"on"}})
	pub := mustPublish(t, s, url.Values{"topic": {book}, "data": {"public"}})
	if ev := authorized.nextM(); ev.ID != priv || ev.Data != "secret" {
		t.Errorf("authorized got %+v first, want the private update", ev)
	}
	if ev := authorized.nextM(); ev.ID != pub {
		t.Errorf("authorized got %+v, want the public update", ev)
	}
	if ev := anonymous.nextM(); ev.ID != pub {
		t.Errorf("anonymous got %+v first: a private update leaked", ev)
	}
	if ev := native.nextEvent(); ev.Data != "public" {
		t.Errorf("native got %+v first: a private update leaked", ev)
	}
	// A subscriber token must be valid: a bad one is 401, no token is
	// anonymous only with mercure.anonymous.
	if x := openSSE(t, s.addr, topicQuery(book), "Authorization: Bearer "+mercureToken(t, "wrong-secret-0123456789abcdef", nil)); x.Status != 401 {
		t.Errorf("bad token: status %d, want 401", x.Status)
	}
	expired := mint(t, jwt.SigningMethodHS256, []byte(subSecret), jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix(), "mercure": map[string]any{}})
	if x := openSSE(t, s.addr, topicQuery(book), "Authorization: Bearer "+expired); x.Status != 401 {
		t.Errorf("expired token: status %d, want 401", x.Status)
	}
}

// TestMercureAnonymousOff: with a subscriber key and anonymous off, a
// subscriber needs a token.
func TestMercureAnonymousOff(t *testing.T) {
	s := mercureServer(t, func(m *Mercure) { m.SubscriberJWT = MercureJWT{Key: "subscriber-secret-0123456789abcdef"} })
	if x := openSSE(t, s.addr, topicQuery("t")); x.Status != 401 {
		t.Errorf("no token: status %d, want 401", x.Status)
	}
}

// TestMercureCookieAndPublishOrigins: the cookie carries subscriber and
// publisher tokens; a cookie publish needs an Origin (or Referer) listed
// in publish_origins, because browsers send cookies with cross-site posts.
func TestMercureCookieAndPublishOrigins(t *testing.T) {
	s := mercureServer(t, func(m *Mercure) {
		m.SubscriberJWT = MercureJWT{Key: testSecret}
		m.PublishOrigins = []string{"https://app.example.com"}
	})
	both := mercureToken(t, testSecret, map[string]any{"publish": []string{"*"}, "subscribe": []string{"*"}})
	cookie := "Cookie: other=1; mercureAuthorization=" + both
	sse := openSSE(t, s.addr, topicQuery("t"), cookie)
	if sse.Status != 200 {
		t.Fatalf("cookie subscribe: status %d", sse.Status)
	}
	form := url.Values{"topic": {"t"}, "data": {"x"}, "private": {""}}
	tests := []struct {
		name    string
		headers []string
		want    int
	}{
		{"listed_origin", []string{cookie, "Origin: https://app.example.com"}, 200},
		{"listed_referer", []string{cookie, "Referer: https://app.example.com/page?x=1"}, 200},
		{"other_origin", []string{cookie, "Origin: https://evil.example.com"}, 401},
		{"no_origin", []string{cookie}, 401},
		{"no_credentials", nil, 401},
	}
	var ids []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := mercurePublish(t, s, form, tt.headers...)
			if code != tt.want {
				t.Fatalf("status %d (%q), want %d", code, body, tt.want)
			}
			if code == 200 {
				ids = append(ids, body)
			}
		})
	}
	for _, id := range ids {
		if ev := sse.nextM(); ev.ID != id {
			t.Errorf("cookie subscriber got %q, want private update %q", ev.ID, id)
		}
	}
}

// TestMercureHistory: a publisher's id is the SSE id and finds its place
// in history (header or lastEventID query), "earliest" replays everything
// retained, the response says where it started, and an unknown id gets an
// explicit gap event, then live updates.
func TestMercureHistory(t *testing.T) {
	s := mercureServer(t, nil)
	var ids []string
	for _, id := range []string{"first", "second", "third"} {
		ids = append(ids, mustPublish(t, s, url.Values{"topic": {"h"}, "data": {id}, "id": {id}}))
	}
	mustPublish(t, s, url.Values{"topic": {"other"}, "data": {"not mine"}})
	if ids[0] != "first" {
		t.Fatalf("publish answered %q, want the given id", ids[0])
	}
	check := func(name string, x *sseStream, header string, want ...string) {
		t.Helper()
		if got := x.Header.Get("Last-Event-ID"); got != header {
			t.Errorf("%s: Last-Event-ID header %q, want %q", name, got, header)
		}
		for _, w := range want {
			if ev := x.nextM(); ev.ID != w {
				t.Errorf("%s: got %+v, want id %q", name, ev, w)
			}
		}
	}
	check("header", openSSE(t, s.addr, topicQuery("h"), "Last-Event-ID: first"), "first", "second", "third")
	check("query", openSSE(t, s.addr, topicQuery("h")+"&lastEventID=second"), "second", "third")
	check("earliest", openSSE(t, s.addr, topicQuery("h")+"&lastEventID=earliest"), "earliest", "first", "second", "third")
	unknown := openSSE(t, s.addr, topicQuery("h"), "Last-Event-ID: never-published")
	if ev := unknown.nextM(); ev.Event != "gap" || ev.ID != "" {
		t.Errorf("unknown id: got %+v, want a gap event first", ev)
	}
	live := mustPublish(t, s, url.Values{"topic": {"h"}, "data": {"live"}})
	check("unknown_then_live", unknown, "", live)
}

// TestMercurePublishErrors: every bad publish gets its status and a fixed
// body.
func TestMercurePublishErrors(t *testing.T) {
	s := mercureServer(t, nil)
	all := "Authorization: Bearer " + mercureToken(t, testSecret, publishAll)
	many := make([]string, maxMercureTopics+1)
	for i := range many {
		many[i] = fmt.Sprint("t", i)
	}
	tests := []struct {
		name    string
		form    url.Values
		headers []string
		want    int
	}{
		{"missing_topic", url.Values{"data": {"x"}}, []string{all}, 400},
		{"bad_retry", url.Values{"topic": {"t"}, "retry": {"soon"}}, []string{all}, 400},
		{"cr_in_id", url.Values{"topic": {"t"}, "id": {"a\rretry: 1"}}, []string{all}, 400},
		{"lf_in_type", url.Values{"topic": {"t"}, "type": {"a\ndata: x"}}, []string{all}, 400},
		{"nul_in_id", url.Values{"topic": {"t"}, "id": {"a\x00"}}, []string{all}, 400},
		{"too_many_topics", url.Values{"topic": many}, []string{all}, 400},
		{"reserved_topic", url.Values{"topic": {"t", "https://h/.well-known/mercure/subscriptions/x"}}, []string{all}, 403},
		{"no_token", url.Values{"topic": {"t"}}, nil, 401},
		{"short_header", url.Values{"topic": {"t"}}, []string{"Authorization: Bearer abc"}, 401},
		{"bad_signature", url.Values{"topic": {"t"}}, []string{"Authorization: Bearer " + mercureToken(t, "another-secret-0123456789abcdef", publishAll)}, 401},
		{"no_publish_claim", url.Values{"topic": {"t"}}, []string{"Authorization: Bearer " + mercureToken(t, testSecret, map[string]any{"subscribe": []string{"*"}})}, 401},
		{"topic_not_covered", url.Values{"topic": {"https://a/1", "https://b/1"}},
			[]string{"Authorization: Bearer " + mercureToken(t, testSecret, map[string]any{"publish": []string{"https://a/{id}"}})}, 403},
		{"template_covers", url.Values{"topic": {"https://a/1"}},
			[]string{"Authorization: Bearer " + mercureToken(t, testSecret, map[string]any{"publish": []string{"https://a/{id}"}})}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := mercurePublish(t, s, tt.form, tt.headers...)
			if code != tt.want {
				t.Fatalf("status %d (%q), want %d", code, body, tt.want)
			}
			if code != 200 && (strings.Contains(body, "soon") || strings.Contains(body, ": ")) {
				t.Errorf("error body %q echoes the input", body)
			}
		})
	}
}

// TestMercureNativeInterop: one store, one id space: a native trigger on
// key k reaches Mercure subscribers of topic k (its decimal id is the SSE
// id and resumes), and a Mercure publish on t reaches native subscribers
// of key t.
func TestMercureNativeInterop(t *testing.T) {
	s := mercureServer(t, nil)
	m := openSSE(t, s.addr, topicQuery("shared"))
	n := openSSE(t, s.addr, "/events?key=shared")
	nid := s.trigger(t, "shared", "", "from native")
	if ev := m.nextM(); ev.ID != fmt.Sprint(nid) || ev.Data != "from native" {
		t.Errorf("Mercure subscriber got %+v, want the trigger %d", ev, nid)
	}
	if ev := n.nextEvent(); ev.Data != "from native" {
		t.Errorf("native subscriber got %+v", ev)
	}
	mid := mustPublish(t, s, url.Values{"topic": {"shared"}, "data": {"from mercure"}})
	if ev := n.nextEvent(); ev.Data != "from mercure" {
		t.Errorf("native subscriber got %+v, want the Mercure update", ev)
	}
	if ev := m.nextM(); ev.ID != mid {
		t.Errorf("Mercure subscriber got %+v, want %s", ev, mid)
	}
	r := openSSE(t, s.addr, topicQuery("shared"), fmt.Sprintf("Last-Event-ID: %d", nid))
	if ev := r.nextM(); ev.ID != mid {
		t.Errorf("resumed from the native id, got %+v, want %s", ev, mid)
	}
}

// TestMercureHeartbeatAndExpiry: Mercure streams get ":\n" heartbeats at
// mercure.heartbeat, and close when the subscriber's token expires.
func TestMercureHeartbeatAndExpiry(t *testing.T) {
	t.Parallel() // waits ~2s for the token to expire
	s := mercureServer(t, func(m *Mercure) {
		m.Heartbeat = 50 * time.Millisecond
		m.SubscriberJWT = MercureJWT{Key: testSecret}
	})
	exp := time.Now().Add(2 * time.Second)
	tok := mint(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"exp": exp.Unix(), "mercure": map[string]any{"subscribe": []string{"*"}}})
	sse := openSSE(t, s.addr, topicQuery("t"), "Authorization: Bearer "+tok)
	if sse.Status != 200 {
		t.Fatalf("status %d", sse.Status)
	}
	_ = sse.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	b, err := io.ReadAll(sse.r)
	if err != nil {
		t.Fatalf("stream did not close at token expiry: %v", err)
	}
	if time.Now().Before(exp.Truncate(time.Second)) {
		t.Fatal("stream closed before the token expired")
	}
	if string(b) != strings.Repeat(":\n", len(b)/2) || len(b) < 4 {
		t.Errorf("stream body %q, want only \":\\n\" heartbeats", b)
	}
}

// TestMercureKeyAlgorithms: publisher and subscriber keys are separate and
// take the algorithms golang-jwt offers; a token of the other key or
// algorithm is refused. The subscriber token comes in the authorization
// query parameter here.
func TestMercureKeyAlgorithms(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	tests := []struct {
		alg    string
		method jwt.SigningMethod
		sign   any
		pubPEM string
	}{
		{"RS256", jwt.SigningMethodRS256, rsaKey, pemOf(&rsaKey.PublicKey)},
		{"ES384", jwt.SigningMethodES384, ecKey, pemOf(&ecKey.PublicKey)},
		{"EdDSA", jwt.SigningMethodEdDSA, edPriv, pemOf(edPub)},
		{"HS512", jwt.SigningMethodHS512, []byte(testSecret), testSecret},
	}
	for _, tt := range tests {
		t.Run(tt.alg, func(t *testing.T) {
			const subSecret = "subscriber-secret-0123456789abcdef"
			s := mercureServer(t, func(m *Mercure) {
				m.PublisherJWT = MercureJWT{Key: tt.pubPEM, Alg: tt.alg}
				m.SubscriberJWT = MercureJWT{Key: subSecret, Alg: "HS384"}
			})
			exp := time.Now().Add(time.Hour).Unix()
			sub := mint(t, jwt.SigningMethodHS384, []byte(subSecret), jwt.MapClaims{"exp": exp, "mercure": map[string]any{"subscribe": []string{"*"}}})
			sse := openSSE(t, s.addr, topicQuery("k")+"&authorization="+sub)
			if sse.Status != 200 {
				t.Fatalf("subscribe with the query token: %d", sse.Status)
			}
			pub := mint(t, tt.method, tt.sign, jwt.MapClaims{"exp": exp, "mercure": map[string]any{"publish": []string{"*"}}})
			form := url.Values{"topic": {"k"}, "data": {"x"}, "private": {"on"}}
			if code, body := mercurePublish(t, s, form, "Authorization: Bearer "+sub); code != 401 {
				t.Errorf("the subscriber key publishes: %d %s", code, body)
			}
			code, id := mercurePublish(t, s, form, "Authorization: Bearer "+pub)
			if code != 200 {
				t.Fatalf("publish %s: %d %s", tt.alg, code, id)
			}
			if ev := sse.nextM(); ev.ID != id {
				t.Errorf("subscriber got %+v, want the private update %s", ev, id)
			}
		})
	}
}
