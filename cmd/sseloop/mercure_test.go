package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sseloop/sseloop/internal/redistest"
)

// mercureStream is a raw Mercure subscription.
type mercureStream struct {
	t      *testing.T
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
	return &mercureStream{t: t, r: r, header: resp.Header}
}

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
			data, seen = line[6:], true
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
