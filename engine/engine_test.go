package engine

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sseloop/sseloop/store"
)

func TestStreamHeadersAndRetry(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Retry = 2500 * time.Millisecond })
	sse := openSSE(t, s.addr, "/events?key=a")
	if sse.Status != 200 {
		t.Fatalf("status %d", sse.Status)
	}
	for name, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"Connection":        "keep-alive",
		"X-Accel-Buffering": "no",
	} {
		if got := sse.Header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if ev := sse.next(); ev.Data != "retry: 2500" {
		t.Fatalf("first field %q, want retry: 2500", ev.Data)
	}
}

func TestTriggerReachesSubscriberWithIDEventAndLines(t *testing.T) {
	s := startServer(t, nil)
	sse := openSSE(t, s.addr, "/events?key=orders")
	id := s.trigger(t, "orders", "created", "line one\nline two")
	ev := sse.nextEvent()
	if ev.ID != fmt.Sprint(id) || ev.Event != "created" || ev.Data != "line one\nline two" {
		t.Fatalf("got %+v, want id %d event created two lines", ev, id)
	}
}

func TestPathKeySubscription(t *testing.T) {
	s := startServer(t, nil)
	sse := openSSE(t, s.addr, "/events/user%3A42")
	s.trigger(t, "user%3A42", "", "hi")
	if ev := sse.nextEvent(); ev.Data != "hi" {
		t.Fatalf("got %+v", ev)
	}
}

func TestMultiKeySubscriptionReceivesEveryKeyInOrder(t *testing.T) {
	s := startServer(t, nil)
	sse := openSSE(t, s.addr, "/events?key=a&key=b")
	other := openSSE(t, s.addr, "/events?key=c")
	ids := []uint64{
		s.trigger(t, "a", "", "1"),
		s.trigger(t, "c", "", "not for you"),
		s.trigger(t, "b", "", "2"),
		s.trigger(t, "a", "", "3"),
	}
	for i, want := range []struct {
		id   uint64
		data string
	}{{ids[0], "1"}, {ids[2], "2"}, {ids[3], "3"}} {
		ev := sse.nextEvent()
		if mustID(t, ev.ID) != want.id || ev.Data != want.data {
			t.Fatalf("event %d: got %+v, want id %d data %q", i, ev, want.id, want.data)
		}
	}
	if ev := other.nextEvent(); ev.Data != "not for you" {
		t.Fatalf("other got %+v", ev)
	}
}

func TestKeyPrefixIsNotAMatch(t *testing.T) {
	// Why: a subscriber of "a" must never see events of "a:b" or "ab".
	s := startServer(t, nil)
	sse := openSSE(t, s.addr, "/events?key=a")
	s.trigger(t, "a%3Ab", "", "x")
	s.trigger(t, "ab", "", "y")
	s.trigger(t, "a", "", "z")
	if ev := sse.nextEvent(); ev.Data != "z" {
		t.Fatalf("got %+v, want only the event of key a", ev)
	}
}

func TestPokeSendsJSON(t *testing.T) {
	s := startServer(t, nil)
	sse := openSSE(t, s.addr, "/events?key=k1")
	id := s.trigger(t, "k1", "", "")
	ev := sse.nextEvent()
	var poke struct {
		Key string `json:"key"`
		ID  string `json:"id"`
		TS  int64  `json:"ts"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &poke); err != nil {
		t.Fatalf("poke data %q: %v", ev.Data, err)
	}
	if poke.Key != "k1" || poke.ID != fmt.Sprint(id) || poke.TS <= 0 || ev.ID != poke.ID {
		t.Fatalf("poke %+v in event %+v", poke, ev)
	}
}

func TestBatchTrigger(t *testing.T) {
	s := startServer(t, nil)
	sse := openSSE(t, s.addr, "/events?key=x&key=y")
	body := `{"events":[{"key":"x","event":"e1","data":"plain"},{"key":"y","data":{"n":1}},{"key":"x"}]}`
	resp, err := http.Post(s.url("/trigger"), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ IDs []string }
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 || len(got.IDs) != 3 {
		t.Fatalf("status %d ids %v err %v", resp.StatusCode, got.IDs, err)
	}
	resp.Body.Close()
	want := []sseEvent{{ID: got.IDs[0], Event: "e1", Data: "plain"}, {ID: got.IDs[1], Data: `{"n":1}`}}
	for _, w := range want {
		ev := sse.nextEvent()
		if ev.ID != w.ID || ev.Event != w.Event || ev.Data != w.Data {
			t.Fatalf("got %+v, want %+v", ev, w)
		}
	}
	if ev := sse.nextEvent(); ev.ID != got.IDs[2] || !strings.Contains(ev.Data, `"key":"x"`) {
		t.Fatalf("poke: got %+v", ev)
	}
}

func TestBadBatchIsRejected(t *testing.T) {
	s := startServer(t, nil)
	before, _ := s.st.LastID(t.Context()) // ids start at the clock, not at 1
	for name, body := range map[string]string{
		"not_json":    `{"events":[`,
		"empty":       `{"events":[]}`,
		"bad_key":     `{"events":[{"key":""}]}`,
		"control_key": `{"events":[{"key":"a\nb"}]}`,
		"bad_name":    `{"events":[{"key":"a","event":"x\ny"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := http.Post(s.url("/trigger"), "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || strings.Contains(string(b), body) {
				t.Fatalf("status %d body %q", resp.StatusCode, b)
			}
		})
	}
	if last, _ := s.st.LastID(t.Context()); last != before {
		t.Fatalf("a rejected batch stored events: last id %d", last)
	}
}

func TestHeartbeatOnIdleStream(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Heartbeat = 100 * time.Millisecond })
	sse := openSSE(t, s.addr, "/events?key=quiet")
	if ev := sse.next(); !strings.HasPrefix(ev.Data, "retry:") {
		t.Fatalf("got %+v", ev)
	}
	for range 2 {
		if ev := sse.next(); !ev.Comment || ev.Data != ":" {
			t.Fatalf("want heartbeat comment, got %+v", ev)
		}
	}
}

func TestPipelinedTriggersAnswerInOrder(t *testing.T) {
	s := startServer(t, nil)
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req strings.Builder
	for i := range 5 {
		fmt.Fprintf(&req, "POST /trigger/p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d", i)
	}
	req.WriteString("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	var prev uint64
	for i := range 5 {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		var got struct{ ID string }
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := mustID(t, got.ID)
		if id <= prev {
			t.Fatalf("response %d id %d after %d", i, id, prev)
		}
		prev = id
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after pipeline: %v %v", resp, err)
	}
}

func TestExpectContinue(t *testing.T) {
	s := startServer(t, nil)
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := strings.Repeat("x", 2000)
	fmt.Fprintf(conn, "POST /trigger/big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(body))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("want 100 Continue before the body, got %q %v", line, err)
	}
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, body)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after body: %v %v", resp, err)
	}
}

func TestChunkedTriggerBody(t *testing.T) {
	s := startServer(t, nil)
	sse := openSSE(t, s.addr, "/events?key=ch")
	out := rawExchange(t, s.addr, "POST /trigger/ch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+
		"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200 ") {
		t.Fatalf("got %q", out)
	}
	if ev := sse.nextEvent(); ev.Data != "hello world" {
		t.Fatalf("got %+v", ev)
	}
}

func TestLastEventIDReplaysMissedEvents(t *testing.T) {
	s := startServer(t, nil)
	for _, how := range []string{"header", "query"} {
		t.Run(how, func(t *testing.T) {
			key := "r-" + how
			first := s.trigger(t, key, "", "one")
			s.trigger(t, "other", "", "no")
			second := s.trigger(t, key, "", "two")
			third := s.trigger(t, key, "", "three")
			path, hs := "/events?key="+key, []string{fmt.Sprintf("Last-Event-ID: %d", first)}
			if how == "query" {
				path, hs = fmt.Sprintf("/events?key=%s&lastEventId=%d", key, first), nil
			}
			sse := openSSE(t, s.addr, path, hs...)
			for _, want := range []uint64{second, third} {
				if ev := sse.nextEvent(); mustID(t, ev.ID) != want {
					t.Fatalf("got %+v, want id %d", ev, want)
				}
			}
			live := s.trigger(t, key, "", "four")
			if ev := sse.nextEvent(); mustID(t, ev.ID) != live {
				t.Fatalf("live after replay: got %+v, want %d", ev, live)
			}
		})
	}
}

func TestGapEventWhenHistoryWasTrimmed(t *testing.T) {
	s := startServer(t, nil)
	first := s.trigger(t, "g", "", "0")
	for i := range 1005 { // history.max_events defaults to 1000
		_ = i
		s.trigger(t, "g", "", "x")
	}
	sse := openSSE(t, s.addr, "/events?key=g", fmt.Sprintf("Last-Event-ID: %d", first))
	ev := sse.nextEvent()
	if ev.Event != "gap" || ev.HasID || !strings.Contains(ev.Data, `"keys":["g"]`) {
		t.Fatalf("want gap event first, got %+v", ev)
	}
	if ev := sse.nextEvent(); ev.Event == "gap" || !ev.HasID {
		t.Fatalf("want replay after gap, got %+v", ev)
	}
}

func TestHealthz(t *testing.T) {
	s := startServer(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(s.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
}

func TestMetricsEndpoint(t *testing.T) {
	s := startServer(t, nil)
	sse := openSSE(t, s.addr, "/events?key=m")
	s.trigger(t, "m", "", "x")
	sse.nextEvent()
	resp, err := http.Get(s.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"sseloop_connections ", "sseloop_events_published_total 1", "sseloop_subscriptions 1", "process_resident_memory_bytes"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestDemoPage(t *testing.T) {
	s := startServer(t, nil)
	resp, err := http.Get(s.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(string(b), "new EventSource(") {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestBatchOfInterleavedKeysKeepsIDOrder publishes a,b,a,b in one batch, so
// the ticker fans them out in one pass with frames grouped by key. Why: a
// stream of one key gets its group in one write, but a stream of several keys
// must still see ids in order, or its Last-Event-ID would skip events.
func TestBatchOfInterleavedKeysKeepsIDOrder(t *testing.T) {
	s := startServer(t, nil)
	both := openSSE(t, s.addr, "/events?key=a&key=b")
	onlyA := openSSE(t, s.addr, "/events?key=a")
	body := `{"events":[{"key":"a","data":"1"},{"key":"b","data":"2"},{"key":"a","data":"3"},{"key":"b","data":"4"}]}`
	resp, err := http.Post(s.url("/trigger"), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, want := range []string{"1", "2", "3", "4"} {
		if ev := both.nextEvent(); ev.Data != want {
			t.Fatalf("two-key stream: got %+v, want data %s", ev, want)
		}
	}
	for _, want := range []string{"1", "3"} {
		if ev := onlyA.nextEvent(); ev.Data != want {
			t.Fatalf("one-key stream: got %+v, want data %s", ev, want)
		}
	}
}

// TestEventsTrimmedBeforeDeliveryAnnounceAGap publishes more events of one
// key in one batch than history keeps, so the store drops some before the
// ticker can read them. Why: a live subscriber must be told in-band (a gap
// event) instead of silently missing them.
func TestEventsTrimmedBeforeDeliveryAnnounceAGap(t *testing.T) {
	st, err := store.OpenBunt(":memory:", store.Options{MaxEvents: 4})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWithStore(t, st, nil)
	sse := openSSE(t, s.addr, "/events?key=burst")
	var evs []string
	for i := range 10 {
		evs = append(evs, fmt.Sprintf(`{"key":"burst","data":"%d"}`, i))
	}
	resp, err := http.Post(s.url("/trigger"), "application/json", strings.NewReader(`{"events":[`+strings.Join(evs, ",")+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ev := sse.nextEvent()
	if ev.Event != "gap" || !strings.Contains(ev.Data, `"keys":["burst"]`) {
		t.Fatalf("want a gap event first, got %+v", ev)
	}
	for _, want := range []string{"6", "7", "8", "9"} {
		if ev := sse.nextEvent(); ev.Data != want {
			t.Fatalf("got %+v, want the retained event %s", ev, want)
		}
	}
}
