package hub

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sseloop/sseloop/store"
)

// fakeLoop is an event loop without a network: Execute queues a function,
// and the loop's goroutine (started by newTestHub) runs them in order.
type fakeLoop struct {
	mu    sync.Mutex
	queue []func()
	kick  chan struct{}
	hl    *Loop
}

func (f *fakeLoop) Execute(fn func()) {
	f.mu.Lock()
	f.queue = append(f.queue, fn)
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *fakeLoop) run(ctx context.Context) {
	for {
		f.mu.Lock()
		q := f.queue
		f.queue = nil
		f.mu.Unlock()
		for _, fn := range q {
			fn()
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		}
	}
}

// do runs fn on the loop and waits for it.
func (f *fakeLoop) do(fn func()) {
	done := make(chan struct{})
	f.Execute(func() { fn(); close(done) })
	<-done
}

// fakeConn is a connection whose client reads only when told: written
// bytes stay "buffered" until drain, which moves them to got.
type fakeConn struct {
	mu       sync.Mutex
	buf      bytes.Buffer // written, not yet read by the client
	got      bytes.Buffer // read by the client
	autoRead bool         // the client reads everything at once
	closed   bool
	onClose  func()
}

func (c *fakeConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, io.ErrClosedPipe
	}
	if c.autoRead {
		c.got.Write(b)
	} else {
		c.buf.Write(b)
	}
	return len(b), nil
}

func (c *fakeConn) OutboundBuffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Len()
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if !already && c.onClose != nil {
		c.onClose() // on the loop, like gnet's OnClose after Close
	}
	return nil
}

// drain lets the client read up to n buffered bytes (all with n < 0).
func (c *fakeConn) drain(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < 0 || n > c.buf.Len() {
		n = c.buf.Len()
	}
	c.got.Write(c.buf.Next(n))
}

func (c *fakeConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// received returns the events the client has read, parsed.
func (c *fakeConn) received() []sseEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return parseSSE(c.got.String())
}

type sseEvent struct {
	id      uint64
	hasID   bool
	name    string
	data    string
	comment bool
}

// parseSSE parses a stream the hub wrote (LF line ends), skipping the head.
func parseSSE(s string) []sseEvent {
	var out []sseEvent
	for _, block := range strings.Split(s, "\n\n") {
		if block == "" {
			continue
		}
		var ev sseEvent
		var data []string
		for _, line := range strings.Split(block, "\n") {
			switch {
			case line == ":" || strings.HasPrefix(line, ": "):
				ev.comment = true
			case strings.HasPrefix(line, "id: "):
				ev.id, _ = strconv.ParseUint(line[4:], 10, 64)
				ev.hasID = true
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[6:])
			}
		}
		ev.data = strings.Join(data, "\n")
		if ev.comment || ev.hasID || ev.name != "" || data != nil {
			out = append(out, ev)
		}
	}
	return out
}

// testStream is a stream on a fake loop, with its fake connection.
type testStream struct {
	Stream
	c *fakeConn
}

// testHub is a running hub with loops on fake event loops.
type testHub struct {
	t     testing.TB
	h     *Hub
	st    store.Store
	loops []*fakeLoop
}

func newTestHub(t testing.TB, st store.Store, loops int, mutate func(*Config)) *testHub {
	t.Helper()
	if st == nil {
		var err error
		st, err = store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	cfg := Config{
		Tick:             10 * time.Millisecond,
		Poll:             20 * time.Millisecond,
		Heartbeat:        time.Second,
		MaxOutboundBytes: 64 << 10,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	th := &testHub{t: t, h: h, st: st}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range loops {
		fl := &fakeLoop{kick: make(chan struct{}, 1)}
		fl.hl = h.NewLoop(fl)
		th.loops = append(th.loops, fl)
		wg.Add(1)
		go func() { defer wg.Done(); fl.run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = h.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return th
}

// open opens a stream of keys on loop i.
func (th *testHub) open(i int, sub Subscription, autoRead bool) *testStream {
	fl := th.loops[i]
	ts := &testStream{c: &fakeConn{autoRead: autoRead}}
	fl.do(func() {
		ts.Init(ts.c, fl.hl, func() { fl.hl.Fire(&ts.Stream) }, time.Hour)
		ts.c.onClose = func() { fl.hl.Leave(&ts.Stream) }
		fl.hl.Open(&ts.Stream, sub)
	})
	return ts
}

// publish appends evs through the hub's appender and returns their ids.
func (th *testHub) publish(evs ...store.Event) []uint64 {
	th.t.Helper()
	type result struct {
		ids []uint64
		err error
	}
	done := make(chan result, 1)
	ok := th.h.Publish(&Publication{Events: evs, Done: func(evs []store.Event, err error) {
		var ids []uint64
		for _, ev := range evs {
			ids = append(ids, ev.ID)
		}
		done <- result{ids, err}
	}})
	if !ok {
		th.t.Fatal("publish queue full")
	}
	r := <-done
	if r.err != nil {
		th.t.Fatal(r.err)
	}
	return r.ids
}

func keys(ks ...string) [][]byte {
	out := make([][]byte, len(ks))
	for i, k := range ks {
		out[i] = []byte(k)
	}
	return out
}

// ids returns the ids of the events (not comments or gaps) in evs.
func ids(evs []sseEvent) []uint64 {
	var out []uint64
	for _, ev := range evs {
		if ev.hasID {
			out = append(out, ev.id)
		}
	}
	return out
}
