package engine

import (
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/sseloop/sseloop/store"
)

// TestReplayFloodMemoryBounded: 20 clients that each ask for the replay of
// 8 keys of 80 KB events and never read make the server hold at most
// max_outbound_bytes each (plus a replay page and some slack), and a client
// that reads then gets the whole replay and the live events after it. Why:
// a replay built in one piece let 20 such clients grow the server by
// 1.3 GB in 4 s.
func TestReplayFloodMemoryBounded(t *testing.T) {
	const (
		keys      = 8
		perKey    = 25
		eventSize = 80 << 10
		hogs      = 20
		limit     = 1 << 20
	)
	st, err := store.OpenBunt(":memory:", store.Options{MaxEvents: perKey})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWithStore(t, st, func(c *Config) { c.Limits.MaxOutboundBytes = limit })
	var names []string
	query := "/events?lastEventId=0"
	for k := range keys {
		name := "k" + string(rune('0'+k))
		names = append(names, name)
		query += "&key=" + name
	}
	payload := []byte(strings.Repeat("z", eventSize))
	for range perKey {
		var evs []store.Event
		for _, k := range names {
			evs = append(evs, store.Event{Key: k, Data: payload})
		}
		if err := st.Append(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	// Tiny receive buffers: the kernel cannot absorb the replay for them.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	for range hogs {
		c, err := d.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET "+query+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every hog's replay to wait for its client", func() bool {
		return metricValue(t, s, "sseloop_replays_waiting") == hogs
	})
	var peak runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&peak)
	grew := int64(peak.HeapInuse) - int64(before.HeapInuse)
	bound := int64(hogs*(limit+limit/4+eventSize) + 8<<20)
	t.Logf("live heap grew by %d KiB with %d stalled replays of %d MiB each (bound %d KiB)",
		grew>>10, hogs, keys*perKey*eventSize>>20, bound>>10)
	if grew > bound {
		t.Fatalf("heap grew by %d MiB with %d stalled replays; bound %d MiB", grew>>20, hogs, bound>>20)
	}
	if n := metricValue(t, s, "sseloop_slow_consumers_evicted_total"); n != 0 {
		t.Fatalf("%v stalled replays were evicted; a replay must wait for its client instead", n)
	}

	// A client that reads gets the whole replay, then live events.
	r := openSSE(t, s.addr, query)
	last, err := st.LastID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last -= keys * perKey // ids are contiguous: the replay starts after this
	for i := range keys * perKey {
		ev := r.nextEvent()
		id := mustID(t, ev.ID)
		if id != last+1 || len(ev.Data) != eventSize {
			t.Fatalf("replay event %d: id %d after %d, %d bytes", i, id, last, len(ev.Data))
		}
		last = id
	}
	live := s.trigger(t, "k3", "", "live")
	if ev := r.nextEvent(); mustID(t, ev.ID) != live || ev.Data != "live" {
		t.Fatalf("after the replay got %+v, want the live event %d", ev, live)
	}
}
