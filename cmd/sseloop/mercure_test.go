package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sseloop/sseloop/internal/redistest"
)

// mercureStream is a raw Mercure subscription.
type mercureStream struct {
	t      *testing.T
	c      net.Conn
	r      *bufio.Reader
	header http.Header
}

func openMercure(t *testing.T, addr string, topics []string, headers ...string) *mercureStream {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET /.well-known/mercure?" + url.Values{"topic": topics}.Encode() + " HTTP/1.1\r\nHost: x\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("subscribe to %s: %v %v", addr, resp, err)
	}
	return &mercureStream{t: t, c: c, r: r, header: resp.Header}
}

func (s *mercureStream) close() { _ = s.c.Close() }

// next returns the id and data of the next event, skipping comments.
func (s *mercureStream) next() (id, data string) {
	s.t.Helper()
	seen := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("read: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && seen:
			return id, data
		case strings.HasPrefix(line, "id: "):
			id, seen = line[4:], true
		case strings.HasPrefix(line, "data: "):
			if seen && data != "" {
				data += "\n"
			}
			data, seen = data+line[6:], true
		}
	}
}

// publishAsSymfony posts an update the way symfony/mercure's Hub::publish
// does: a form with repeated topic=, + for spaces, Authorization: Bearer.
func publishAsSymfony(t *testing.T, hubURL, jwtSecret string, form url.Values) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"mercure": map[string]any{"publish": []string{"*"}}}).
		SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", hubURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("publish: %d %q", resp.StatusCode, b)
	}
	return string(b)
}

// TestMercureThreeNodesOnRedis: three nodes on one redis-server are one
// hub: a publish on node 1 reaches Mercure subscribers on nodes 2 and 3
// once (and native subscribers of the topic), and a custom id resumes on
// node 3.
func TestMercureThreeNodesOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newRedisPrefix()
	const secret = "three-node-secret-0123456789abcdef"
	env := []string{"SSELOOP_MERCURE__ENABLED=true", "SSELOOP_MERCURE__PUBLISHER_JWT__KEY=" + secret}
	var nodes []*serverProcess
	for range 3 {
		nodes = append(nodes, startProcessEnv(t, env, redisArgs(srv, prefix)...))
	}
	const topic = "https://example.com/orders/{id}"
	m2 := openMercure(t, nodes[1].addr, []string{topic})
	m3 := openMercure(t, nodes[2].addr, []string{topic, "*"})
	native := openStream(t, nodes[1].addr, "key="+url.QueryEscape("https://example.com/orders/1"))
	hub1 := "http://" + nodes[0].addr + "/.well-known/mercure"
	publishAsSymfony(t, hub1, secret, url.Values{"topic": {"https://example.com/orders/1"}, "data": {"first"}, "id": {"order-1"}})
	publishAsSymfony(t, hub1, secret, url.Values{"topic": {"https://example.com/orders/2"}, "data": {"second"}, "id": {"order-2"}})
	for i, s := range []*mercureStream{m2, m3} {
		for _, want := range []string{"order-1", "order-2"} {
			if id, _ := s.next(); id != want {
				t.Fatalf("node %d: got %q, want %q (each once, in order)", i+2, id, want)
			}
		}
	}
	if ev := native.mustNext(); ev.data != "first" {
		t.Fatalf("native subscriber on node 2 got %+v", ev)
	}
	r := openMercure(t, nodes[2].addr, []string{topic}, "Last-Event-ID: order-1")
	if got := r.header.Get("Last-Event-ID"); got != "order-1" {
		t.Errorf("Last-Event-ID header %q, want order-1", got)
	}
	if id, data := r.next(); id != "order-2" || data != "second" {
		t.Fatalf("replay on node 3 after order-1: got %q %q, want order-2", id, data)
	}
}

// mercureToken signs an HS256 token with the mercure claim m.
func mercureToken(t *testing.T, secret string, m map[string]any) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"mercure": m}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// mercureSubscription is one entry of the subscriptions API or one
// subscription event.
type mercureSubscription struct {
	ID         string `json:"id"`
	Subscriber string `json:"subscriber"`
	Topic      string `json:"topic"`
	Active     bool   `json:"active"`
	Payload    any    `json:"payload"`
}

// listSubscriptions returns the subscribers of topic that addr's
// subscriptions API lists, sorted.
func listSubscriptions(t *testing.T, addr, topic, token string) []string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/.well-known/mercure/subscriptions/"+url.QueryEscape(topic), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var list struct {
		Subscriptions []mercureSubscription `json:"subscriptions"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &list) != nil {
		t.Fatalf("subscriptions from %s: %d %s", addr, resp.StatusCode, b)
	}
	var out []string
	for _, s := range list.Subscriptions {
		if s.Topic != topic || !s.Active {
			t.Fatalf("subscriptions of %s from %s: %+v", topic, addr, s)
		}
		out = append(out, s.Subscriber)
	}
	slices.Sort(out)
	return out
}

// TestMercureSubscriptionsAcrossNodes: with three nodes on one
// redis-server, the subscriptions API of every node lists the
// subscriptions of every node; a stream that closes leaves every list; a
// node killed with SIGKILL leaves every list within presence.node_ttl, and
// its subscribers' "inactive" subscription events are published once.
func TestMercureSubscriptionsAcrossNodes(t *testing.T) {
	const interval, ttl = 200 * time.Millisecond, 2 * time.Second
	srv := redistest.Start(t)
	prefix := newRedisPrefix()
	const pubSecret, subSecret = "pub-secret-0123456789abcdef0123", "sub-secret-0123456789abcdef0123"
	env := []string{"SSELOOP_MERCURE__ENABLED=true", "SSELOOP_MERCURE__PUBLISHER_JWT__KEY=" + pubSecret,
		"SSELOOP_MERCURE__SUBSCRIBER_JWT__KEY=" + subSecret, "SSELOOP_MERCURE__ANONYMOUS=true", "SSELOOP_MERCURE__SUBSCRIPTIONS=true"}
	args := append(redisArgs(srv, prefix), "--presence.interval", interval.String(), "--presence.node_ttl", ttl.String())
	var nodes []*serverProcess
	for range 3 {
		nodes = append(nodes, startProcessEnv(t, env, args...))
	}
	const watchSel = "/.well-known/mercure/subscriptions{/topic}{/subscriber}"
	watchTok := mercureToken(t, subSecret, map[string]any{"subscribe": []string{watchSel}})
	watcher := openMercure(t, nodes[0].addr, []string{watchSel}, "Authorization: Bearer "+watchTok)
	const topic = "https://example.com/rooms/1"
	// Two anonymous subscribers on node 2, one with a payload on node 3.
	var subs []*mercureStream
	for range 2 {
		subs = append(subs, openMercure(t, nodes[1].addr, []string{topic}))
	}
	userTok := mercureToken(t, subSecret, map[string]any{"subscribe": []string{}, "payload": map[string]any{"user": "7"}})
	subs = append(subs, openMercure(t, nodes[2].addr, []string{topic}, "Authorization: Bearer "+userTok))

	// The watcher hears each of them start, once; their ids are the
	// subscribers every list must show.
	events := func(n int) map[string]bool {
		t.Helper()
		got := map[string]bool{}
		for len(got) < n {
			_, data := watcher.next()
			var ev mercureSubscription
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatalf("subscription event %q: %v", data, err)
			}
			if ev.Topic != topic {
				continue // the watcher's own
			}
			if _, dup := got[ev.Subscriber]; dup {
				t.Fatalf("subscription event twice: %+v", ev)
			}
			got[ev.Subscriber] = ev.Active
		}
		return got
	}
	started := events(3)
	var all []string
	for id, active := range started {
		if !active {
			t.Fatalf("a start announced inactive: %s", id)
		}
		all = append(all, id)
	}
	slices.Sort(all)
	waitList := func(nodes []*serverProcess, want []string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for _, n := range nodes {
			for {
				got := listSubscriptions(t, n.addr, topic, watchTok)
				if slices.Equal(got, want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("node %s lists %v, want %v", n.addr, got, want)
				}
				time.Sleep(interval / 4)
			}
		}
	}
	waitList(nodes, all, 10*time.Second)

	// The node-3 subscriber's payload reaches node 1's list.
	var node3Sub string
	{
		req, _ := http.NewRequest("GET", "http://"+nodes[0].addr+"/.well-known/mercure/subscriptions", nil)
		req.Header.Set("Authorization", "Bearer "+watchTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var list struct {
			Subscriptions []mercureSubscription `json:"subscriptions"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Subscriptions {
			if p, ok := s.Payload.(map[string]any); ok && p["user"] == "7" {
				node3Sub = s.Subscriber
			}
		}
		if node3Sub == "" {
			t.Fatalf("node 1 lists no subscription with node 3's payload: %s", b)
		}
	}

	// A stream that closes leaves every list (and is announced).
	closed := ""
	// Which of node 2's two streams is closed does not matter for the
	// lists; close the first and wait for its inactive event to learn it.
	subs[0].close()
	ended := events(1)
	for id, active := range ended {
		if active || id == node3Sub {
			t.Fatalf("closing a node-2 stream announced %s active=%v", id, active)
		}
		closed = id
	}
	waitList(nodes, without(all, closed), 10*time.Second)

	// Node 3 dies without a goodbye: it leaves every list about node_ttl
	// after its last renewal, and its subscriber's end is announced once.
	killed := time.Now()
	if err := nodes[2].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	left := without(without(all, closed), node3Sub)
	waitList(nodes[:2], left, ttl+interval+15*time.Second)
	t.Logf("the killed node left the lists %v after SIGKILL (node_ttl %v)", time.Since(killed).Round(10*time.Millisecond), ttl)
	if gone := events(1); len(gone) != 1 || gone[node3Sub] {
		t.Fatalf("after the kill: events %v, want %s inactive", gone, node3Sub)
	}
	// The registry loses every entry (evicted; Redis restarted without
	// persistence): each node puts its records again and announces them
	// active again.
	if err := srv.Client(t).Del(context.Background(), prefix+"{sseloop}:msubs:nodes").Err(); err != nil {
		t.Fatal(err)
	}
	if again := events(1); len(again) != 1 || !again[left[0]] {
		t.Fatalf("after the registry lost its entries: events %v, want %s active again", again, left[0])
	}
	waitList(nodes[:2], left, 10*time.Second)
	// Each change once: the next event is the next real change.
	subs[1].close()
	if next := events(1); len(next) != 1 {
		t.Fatalf("after closing the last node-2 stream: %v", next)
	} else if _, again := next[node3Sub]; again {
		t.Fatalf("after closing the last node-2 stream: %v", next)
	}
}

func without(ids []string, id string) []string {
	var out []string
	for _, x := range ids {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}
