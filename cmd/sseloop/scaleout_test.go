package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sseloop/sseloop/internal/redistest"
)

var redisPrefixes atomic.Int64

// redisArgs points a node at srv with a prefix no other test uses.
func redisArgs(srv *redistest.Server, prefix string) []string {
	return []string{"--store.driver", "redis", "--store.redis.addr", srv.Addr(),
		"--store.redis.prefix", prefix, "--poll", "50ms"}
}

func newRedisPrefix() string { return fmt.Sprintf("scale%d-%d:", os.Getpid(), redisPrefixes.Add(1)) }

// stream is a raw subscription to a node.
type stream struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func openStream(t *testing.T, addr, query string) *stream {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /events?%s HTTP/1.1\r\nHost: x\r\n\r\n", query)
	s := &stream{t: t, conn: c, r: bufio.NewReader(c)}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := s.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("subscribe to %s: %q %v", addr, status, err)
	}
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "retry:") {
			return s
		}
	}
}

type event struct{ id, name, data string }

// next reads the next event within d; ok is false on timeout.
func (s *stream) next(d time.Duration) (ev event, ok bool) {
	s.t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(d))
	var data []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if ne, isNet := err.(net.Error); isNet && ne.Timeout() {
				return ev, false
			}
			s.t.Fatalf("stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.id != "" || len(data) > 0 {
				ev.data = strings.Join(data, "\n")
				return ev, true
			}
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.name = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:])
		}
	}
}

func (s *stream) mustNext() event {
	s.t.Helper()
	ev, ok := s.next(10 * time.Second)
	if !ok {
		s.t.Fatal("no event within 10s")
	}
	return ev
}

// expectQuiet checks that no further event arrives within d (a duplicate
// would arrive within one poll interval).
func (s *stream) expectQuiet(d time.Duration) {
	s.t.Helper()
	if ev, ok := s.next(d); ok {
		s.t.Fatalf("unexpected extra event %+v", ev)
	}
}

func post(t *testing.T, addr, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+path, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// TestThreeNodesShareRedis runs three sseloop processes on one redis-server.
// Why: scale-out must deliver an event triggered on any node to the
// subscribers of every node, exactly once.
func TestThreeNodesShareRedis(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newRedisPrefix()
	var nodes []*serverProcess
	for range 3 {
		nodes = append(nodes, startProcess(t, redisArgs(srv, prefix)...))
	}
	var streams []*stream
	for _, n := range nodes {
		for range 2 {
			streams = append(streams, openStream(t, n.addr, "key=orders"))
		}
	}
	for round, from := range []int{0, 2} {
		code, body := post(t, nodes[from].addr, "/trigger/orders", fmt.Sprint("order ", round))
		if code != 200 {
			t.Fatalf("trigger on node %d: %d %s", from, code, body)
		}
		for i, s := range streams {
			if ev := s.mustNext(); ev.data != fmt.Sprint("order ", round) {
				t.Fatalf("stream %d (node %d): got %+v", i, i/2, ev)
			}
		}
	}
	for _, s := range streams {
		s.expectQuiet(300 * time.Millisecond)
	}
}

// TestReusePortNodesShareOnePort starts two processes on one port.
func TestReusePortNodesShareOnePort(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newRedisPrefix()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := append(redisArgs(srv, prefix), "--listen", addr, "--reuseport")
	startProcess(t, args...)
	startProcess(t, args...) // fails to listen without SO_REUSEPORT
	var streams []*stream
	for range 16 {
		streams = append(streams, openStream(t, addr, "key=shared"))
	}
	if code, _ := post(t, addr, "/trigger/shared", "to all"); code != 200 {
		t.Fatalf("trigger: %d", code)
	}
	for i, s := range streams {
		if ev := s.mustNext(); ev.data != "to all" {
			t.Fatalf("stream %d: %+v", i, ev)
		}
	}
}

// TestDirectPokeFromAppCacheWrite writes <watch_prefix><key> the way a PHP
// app's Redis cache does (SET with an expiry). Why: the classic recipe's apps
// already write a timestamp there; sseloop must turn that into exactly one
// poke, whatever the number of nodes, and leave the app's key exactly as the
// app wrote it: the app's cache is the app's.
func TestDirectPokeFromAppCacheWrite(t *testing.T) {
	srv := redistest.Start(t)
	prefix, watch := newRedisPrefix(), "cake_"+newRedisPrefix()
	args := append(redisArgs(srv, prefix), "--store.redis.direct_poll", "100ms", "--store.redis.watch_prefix", watch)
	a, b := startProcess(t, args...), startProcess(t, args...)
	sa, sb := openStream(t, a.addr, "key=user:7"), openStream(t, b.addr, "key=user:7")
	// Let each node read a baseline of the watched key first.
	time.Sleep(300 * time.Millisecond)
	rc := srv.Client(t)
	var v string
	for round := range 2 {
		v = strconv.FormatFloat(float64(time.Now().UnixMicro())/1e6, 'f', 4, 64)
		if err := rc.Set(t.Context(), watch+"user:7", v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*stream{sa, sb} {
			ev := s.mustNext()
			if !strings.Contains(ev.data, `"key":"user:7"`) || ev.id == "" {
				t.Fatalf("round %d: want a poke of user:7, got %+v", round, ev)
			}
		}
	}
	// One poke per write, not one per node.
	sa.expectQuiet(500 * time.Millisecond)
	sb.expectQuiet(100 * time.Millisecond)
	// A trigger gives exactly one event.
	if code, _ := post(t, a.addr, "/trigger/user:7", "real"); code != 200 {
		t.Fatal("trigger failed")
	}
	for _, s := range []*stream{sa, sb} {
		if ev := s.mustNext(); ev.data != "real" {
			t.Fatalf("got %+v", ev)
		}
	}
	sb.expectQuiet(500 * time.Millisecond)
	// The app's key is exactly what the app wrote: value and expiry.
	if got, err := rc.Get(t.Context(), watch+"user:7").Result(); err != nil || got != v {
		t.Errorf("app key = %q, %v; want %q as written", got, err, v)
	}
	if ttl, err := rc.TTL(t.Context(), watch+"user:7").Result(); err != nil || ttl <= 0 || ttl > time.Hour {
		t.Errorf("app key TTL = %v, %v; want the app's expiry kept", ttl, err)
	}
	if keys, _ := rc.Keys(t.Context(), watch+"*").Result(); len(keys) != 1 {
		t.Errorf("keys under the watch prefix: %q, want only the app's", keys)
	}
	// The app clears its cache (CakePHP's Cache::clear(): KEYS prefix* and
	// DEL): replay and delivery go on.
	keys, _ := rc.Keys(t.Context(), watch+"*").Result()
	if err := rc.Del(t.Context(), keys...).Err(); err != nil {
		t.Fatal(err)
	}
	if code, _ := post(t, b.addr, "/trigger/user:7", "after clear"); code != 200 {
		t.Fatal("trigger after the app's cache clear failed")
	}
	if ev := sa.mustNext(); ev.data != "after clear" {
		t.Fatalf("after the app's cache clear got %+v", ev)
	}
	replay := openStream(t, b.addr, "key=user:7&lastEventId=0")
	var got []string
	for len(got) < 4 {
		got = append(got, replay.mustNext().data)
	}
	if got[2] != "real" || got[3] != "after clear" {
		t.Fatalf("replay after the app's cache clear: %q", got)
	}
}

// TestDataSourceFetchedOncePerChange configures a source for user:* and
// pokes from a trigger and from a cache write on two nodes. Why: the data
// callback must run once per change, not once per subscriber or node, and a
// failing source must still deliver the poke.
func TestDataSourceFetchedOncePerChange(t *testing.T) {
	var fetches atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if r.Header.Get("Authorization") != "Bearer app-token" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/user:broken") {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, `{"for":%q,"unread":3}`, r.Header.Get("X-Sseloop-Key"))
	}))
	defer app.Close()
	cfgFile := filepath.Join(t.TempDir(), "sources.yaml")
	yaml := fmt.Sprintf("sources:\n  - pattern: \"user:*\"\n    url: %q\n    headers:\n      Authorization: \"Bearer app-token\"\n    timeout: 2s\n", app.URL+"/sse/{key}")
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t)
	prefix := newRedisPrefix()
	args := append(redisArgs(srv, prefix), "--config", cfgFile, "--store.redis.direct_poll", "100ms", "--store.redis.watch_prefix", "app_"+prefix)
	a, b := startProcess(t, args...), startProcess(t, args...)
	sa, sb := openStream(t, a.addr, "key=user:1&key=user:broken&key=other"), openStream(t, b.addr, "key=user:1")

	if code, body := post(t, a.addr, "/trigger/user:1", ""); code != 200 {
		t.Fatalf("trigger: %d %s", code, body)
	}
	for _, s := range []*stream{sa, sb} {
		if ev := s.mustNext(); ev.data != `{"for":"user:1","unread":3}` {
			t.Fatalf("want the source's data, got %+v", ev)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("source fetched %d times for one trigger, want 1", n)
	}

	// A direct cache write: both nodes see it, one fetches.
	time.Sleep(300 * time.Millisecond) // baseline read
	if err := srv.Client(t).Set(t.Context(), "app_"+prefix+"user:1", "1700000000.5", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*stream{sa, sb} {
		if ev := s.mustNext(); ev.data != `{"for":"user:1","unread":3}` {
			t.Fatalf("direct poke: got %+v", ev)
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("source fetched %d times after two changes, want 2", n)
	}

	// A failing source sends the plain poke; a key without a source too.
	post(t, a.addr, "/trigger/user:broken", "")
	if ev := sa.mustNext(); !strings.Contains(ev.data, `"key":"user:broken"`) {
		t.Fatalf("failed source: want the plain poke, got %+v", ev)
	}
	post(t, a.addr, "/trigger/other", "")
	if ev := sa.mustNext(); !strings.Contains(ev.data, `"key":"other"`) {
		t.Fatalf("no source: want the plain poke, got %+v", ev)
	}
	resp, err := http.Get("http://" + a.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "sseloop_source_errors_total 1") {
		t.Fatalf("source error not counted")
	}
}

// TestRedisOutageTriggers503AndRecovers stops redis-server under a running
// node. Why: an outage must not drop subscribers or lose acknowledged events;
// triggers must say 503 instead of pretending, and delivery must resume.
func TestRedisOutageTriggers503AndRecovers(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	prefix := newRedisPrefix()
	n := startProcess(t, redisArgs(srv, prefix)...)
	s := openStream(t, n.addr, "key=k")
	var acked []string
	for i := range 3 {
		code, body := post(t, n.addr, "/trigger/k", fmt.Sprint("before ", i))
		if code != 200 {
			t.Fatalf("trigger: %d", code)
		}
		acked = append(acked, body)
		s.mustNext()
	}
	srv.Kill(t)
	if code, _ := post(t, n.addr, "/trigger/k", "during"); code != 503 {
		t.Fatalf("trigger during outage: %d, want 503", code)
	}
	srv.Start(t)
	// The same stream, still open, gets events again.
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _ := post(t, n.addr, "/trigger/k", "after")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("triggers still fail after redis came back: %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ev := s.mustNext(); ev.data != "after" {
		t.Fatalf("after the outage the open stream got %+v", ev)
	}
	// Nothing acknowledged before the outage is lost.
	r := openStream(t, n.addr, "key=k&lastEventId=0")
	for i := range acked {
		if ev := r.mustNext(); ev.data != fmt.Sprint("before ", i) {
			t.Fatalf("replay %d: %+v", i, ev)
		}
	}
}

// TestRedisWipeUnderRunningNodes flushes Redis (as a restart without
// persistence or an app's FLUSHDB would) under two running nodes. Why: ids
// restarting at 1 made every node deliver nothing, to old and new
// subscribers, until the id passed its old high-water mark.
func TestRedisWipeUnderRunningNodes(t *testing.T) {
	srv := redistest.Start(t)
	args := redisArgs(srv, newRedisPrefix())
	a, b := startProcess(t, args...), startProcess(t, args...)
	sa, sb := openStream(t, a.addr, "key=k"), openStream(t, b.addr, "key=k")
	if code, _ := post(t, a.addr, "/trigger/k", "before"); code != 200 {
		t.Fatal("trigger failed")
	}
	for _, s := range []*stream{sa, sb} {
		if ev := s.mustNext(); ev.data != "before" {
			t.Fatalf("got %+v", ev)
		}
	}
	if err := srv.Client(t).FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if code, body := post(t, []string{a.addr, b.addr}[i%2], "/trigger/k", fmt.Sprint("after ", i)); code != 200 {
			t.Fatalf("trigger after the wipe: %d %s", code, body)
		}
	}
	fresh := openStream(t, b.addr, "key=k")
	if code, _ := post(t, a.addr, "/trigger/k", "after 3"); code != 200 {
		t.Fatal("trigger failed")
	}
	for _, s := range []*stream{sa, sb} {
		for i := range 4 {
			ev := s.mustNext()
			for ev.name == "gap" { // lost state may be announced; never a silent hole
				t.Logf("gap: %s", ev.data)
				ev = s.mustNext()
			}
			if ev.data != fmt.Sprint("after ", i) {
				t.Fatalf("event %d after the wipe = %+v", i, ev)
			}
		}
	}
	// The new subscriber joined live: it gets what its node delivers from
	// then on (some of the earlier events, if the node had not read them
	// yet), ending with the last.
	for i := 0; ; i++ {
		ev := fresh.mustNext()
		if ev.data == "after 3" {
			break
		}
		if i == 4 {
			t.Fatalf("a new subscriber after the wipe got %+v, not the new event", ev)
		}
	}
}

// TestRedisSyncSettingIsNeverIgnored starts a node with store.sync=always on
// a Redis without an append-only file. Why: store.sync used to be ignored for
// Redis silently; an operator asking for durability must be told Redis does
// not provide it.
func TestRedisSyncSettingIsNeverIgnored(t *testing.T) {
	srv := redistest.Start(t) // appendonly no
	p := startProcess(t, append(redisArgs(srv, newRedisPrefix()), "--store.sync", "always")...)
	if w := p.logged("store.sync and Redis persistence differ"); len(w) != 1 || !strings.Contains(w[0], "appendonly") {
		t.Fatalf("start-up warnings: %q, want one about appendonly", w)
	}
	aof := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	q := startProcess(t, append(redisArgs(aof, newRedisPrefix()), "--store.sync", "always")...)
	if w := q.logged("store.sync and Redis persistence differ"); len(w) != 0 {
		t.Fatalf("warned although Redis fsyncs every write: %q", w)
	}
}

// TestNodeFindsPrimaryThroughSentinel configures only the sentinel. Why: the
// store.redis.sentinel keys must reach the store (addr is then unused).
func TestNodeFindsPrimaryThroughSentinel(t *testing.T) {
	primary := redistest.Start(t)
	sentinels := redistest.StartSentinels(t, "sseloop-node", primary, 1)
	p := startProcess(t, "--store.driver", "redis", "--store.redis.addr", "127.0.0.1:1",
		"--store.redis.prefix", newRedisPrefix(), "--poll", "50ms",
		"--store.redis.sentinel.master", "sseloop-node", "--store.redis.sentinel.addrs", strings.Join(sentinels, ","))
	s := openStream(t, p.addr, "key=k")
	if code, body := post(t, p.addr, "/trigger/k", "via sentinel"); code != 200 {
		t.Fatalf("trigger: %d %s", code, body)
	}
	if ev := s.mustNext(); ev.data != "via sentinel" {
		t.Fatalf("got %+v", ev)
	}
	if n, err := primary.Client(t).DBSize(t.Context()).Result(); err != nil || n == 0 {
		t.Fatalf("the primary holds %d keys (%v): the node did not write there", n, err)
	}
}
