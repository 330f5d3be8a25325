package bench

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWorkerCountsPayloadSequences: the load generator counts deliveries
// and duplicates on the payload's sequence, so a server whose ids are
// opaque strings (Mercure's urn:uuid) is measured like one with numeric
// ids, and events that arrive out of order are not taken for duplicates.
func TestWorkerCountsPayloadSequences(t *testing.T) {
	now := time.Now().UnixNano()
	ev := func(id string, seq int) string {
		return fmt.Sprintf("id: %s\ndata: %d %d\n\n", id, seq, now)
	}
	tests := []struct {
		name, proto, wantTarget string
		ids                     [4]string
	}{
		{"sseloop", ProtoSseloop, "/events?key=k-0", [4]string{"7", "5", "8", "9"}},
		{"mercure", ProtoMercure, "/.well-known/mercure?topic=k-0", [4]string{
			"urn:uuid:0b1e3c0a-1111-4e5f-9a2b-000000000001", "urn:uuid:0b1e3c0a-1111-4e5f-9a2b-000000000002",
			"urn:uuid:0b1e3c0a-1111-4e5f-9a2b-000000000003", "urn:uuid:0b1e3c0a-1111-4e5f-9a2b-000000000004"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// seq 1, then 0 (late, not a duplicate), then 1 again (a
			// duplicate), then data that is no bench payload.
			stream := ":\n" + ev(tt.ids[0], 1) + ev(tt.ids[1], 0) + ev(tt.ids[2], 1) + "id: " + tt.ids[3] + "\ndata: hello\n\n"
			target := serveOneStream(t, stream)
			w, err := newLoadWorker(WorkerSpec{Target: target.addr, Proto: tt.proto, KeyPrefix: "k-", Keys: 1, Conns: 1})
			if err != nil {
				t.Fatal(err)
			}
			cmds := make(chan string, 1)
			reports := make(chan *WorkerReport, 1024)
			done := make(chan error, 1)
			go func() {
				done <- w.run(cmds, func(r *WorkerReport) {
					select {
					case reports <- r:
					default:
					}
				})
			}()
			var last *WorkerReport
			deadline := time.After(10 * time.Second)
		wait:
			for {
				select {
				case last = <-reports:
					if last.Received+last.Duplicates+last.BadData >= 4 {
						break wait
					}
				case <-deadline:
					t.Fatalf("worker saw %+v", last)
				}
			}
			cmds <- cmdStop
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := <-target.request; got != tt.wantTarget {
				t.Errorf("request target %q, want %q", got, tt.wantTarget)
			}
			if last.Received != 2 || last.Duplicates != 1 || last.BadData != 1 || last.NoID != 0 || last.Connected != 1 {
				t.Errorf("received %d duplicates %d bad %d noid %d connected %d; want 2 1 1 0 1",
					last.Received, last.Duplicates, last.BadData, last.NoID, last.Connected)
			}
		})
	}
}

type oneStream struct {
	addr    string
	request chan string // the request target
}

// serveOneStream accepts one connection on 127.0.0.1:0, answers its request
// with a chunked text/event-stream carrying body, and holds it open until
// the test ends.
func serveOneStream(t *testing.T, body string) *oneStream {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &oneStream{addr: ln.Addr().String(), request: make(chan string, 1)}
	var wg sync.WaitGroup
	var conn net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		if conn != nil {
			conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		conn = c
		mu.Unlock()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			s.request <- "bad request: " + err.Error()
			return
		}
		s.request <- req.RequestURI
		var b strings.Builder
		b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(body), body)
		_, _ = c.Write([]byte(b.String()))
	})
	return s
}
