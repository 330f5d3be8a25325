package engine

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReconnectStressNoLossNoDuplicate publishes from several goroutines to
// several keys while subscribers connect, read a little, drop the connection
// and resume with the last id they saw. Why: a dropped connection must never
// mean a lost or repeated notification; each subscriber's ids must equal the
// store's ids for its keys from its starting point, in order.
func TestReconnectStressNoLossNoDuplicate(t *testing.T) {
	s := startServer(t, nil)
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	const publishers, perPublisher, subscribers = 4, 150, 6

	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			client := &http.Client{}
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			for i := range perPublisher {
				key := keys[rng.IntN(len(keys))]
				resp, err := client.Post(s.url("/trigger/"+key), "text/plain", strings.NewReader(fmt.Sprintf("p%d-%d", p, i)))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("trigger: %d", resp.StatusCode)
					return
				}
			}
		}()
	}

	type result struct {
		keys   []string
		start  uint64
		got    []uint64
		rounds int
	}
	results := make([]*result, subscribers)
	done := make(chan struct{})
	var subs sync.WaitGroup
	for i := range subscribers {
		rng := rand.New(rand.NewPCG(uint64(i), 2))
		mine := slices.Clone(keys)
		rng.Shuffle(len(mine), func(a, b int) { mine[a], mine[b] = mine[b], mine[a] })
		mine = mine[:1+rng.IntN(3)]
		start, _ := s.st.LastID(t.Context())
		r := &result{keys: mine, start: start}
		results[i] = r
		subs.Add(1)
		go func() {
			defer subs.Done()
			last := start
			var final uint64 // set once publishing is over
			for round := 0; round < 10000; round++ {
				n := 1 + rng.IntN(40) // events to read before dropping the connection
				got, err := readSome(s.addr, r.keys, last, n, 300*time.Millisecond)
				if err != nil {
					t.Errorf("subscriber %d: %v", i, err)
					return
				}
				r.got = append(r.got, got...)
				r.rounds++
				if len(got) > 0 {
					last = got[len(got)-1]
				}
				if final == 0 {
					select {
					case <-done:
						final, _ = s.st.LastID(t.Context())
					default:
					}
				}
				if final != 0 && len(got) < n {
					return // idle after publishing ended: caught up
				}
			}
		}()
	}
	pubs.Wait()
	close(done)
	subs.Wait()

	for i, r := range results {
		evs, err := s.st.Replay(t.Context(), r.keys, r.start, 100000)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]uint64, len(evs))
		for j := range evs {
			want[j] = evs[j].ID
		}
		if r.rounds < 3 || len(want) == 0 {
			t.Errorf("subscriber %d: %d connections for %d events: the test did not exercise reconnects", i, r.rounds, len(want))
		}
		if !slices.Equal(r.got, want) {
			t.Errorf("subscriber %d (keys %v from %d): got %d ids, want %d\n got %v\nwant %v",
				i, r.keys, r.start, len(r.got), len(want), r.got, want)
		}
	}
}

// readSome subscribes with Last-Event-ID last, reads up to n events (or until
// idle for quiet), closes the connection and returns their ids.
func readSome(addr string, keys []string, last uint64, n int, quiet time.Duration) ([]uint64, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	q := "key=" + strings.Join(keys, "&key=")
	fmt.Fprintf(conn, "GET /events?%s HTTP/1.1\r\nHost: x\r\nLast-Event-ID: %d\r\n\r\n", q, last)
	r := bufio.NewReader(conn)
	var ids []uint64
	for len(ids) < n {
		_ = conn.SetReadDeadline(time.Now().Add(quiet))
		line, err := r.ReadString('\n')
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return ids, nil
			}
			return ids, err
		}
		if strings.HasPrefix(line, "HTTP/1.1 ") && !strings.HasPrefix(line, "HTTP/1.1 200") {
			return ids, fmt.Errorf("subscribe: %s", strings.TrimSpace(line))
		}
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			var v uint64
			fmt.Sscan(id, &v)
			ids = append(ids, v)
		}
	}
	return ids, nil
}
