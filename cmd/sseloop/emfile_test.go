package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConnectionFloodNeverHitsEMFILE runs sseloop with a low open-files
// limit and floods it with more connections than it may hold. Why: gnet
// v2.9.7 stops the whole engine, dropping every client, when accept(2)
// fails with EMFILE. The connection cap must refuse the excess with 503
// before that can happen, even when hundreds of connections arrive at once;
// admitted clients must stay connected and keep receiving events, and the
// server must keep serving once slots free up.
func TestConnectionFloodNeverHitsEMFILE(t *testing.T) {
	const nofile = 256
	p := startProcessEnv(t, []string{nofileEnv + "=" + strconv.Itoa(nofile)}, "--loops", "2")
	m := regexp.MustCompile(`max_conns=(\d+)`).FindStringSubmatch(p.line)
	if m == nil {
		t.Fatalf("no max_conns in %q", p.line)
	}
	maxConns, _ := strconv.Atoi(m[1])
	if maxConns <= 0 || maxConns >= nofile {
		t.Fatalf("max_conns %d with an open-files limit of %d", maxConns, nofile)
	}

	// Flood: 3× the cap, all dialling and subscribing at once.
	flood := 3 * maxConns
	type result struct {
		conn   net.Conn
		r      *bufio.Reader
		status int // 0: refused without a status line (reset after the 503)
	}
	results := make([]result, flood)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			_, _ = io.WriteString(c, "GET /events?key=flood HTTP/1.1\r\nHost: x\r\n\r\n")
			r := bufio.NewReader(c)
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				c.Close()
				return
			}
			results[i] = result{conn: c, r: r, status: resp.StatusCode}
			if resp.StatusCode != 200 {
				c.Close()
			}
		}()
	}
	close(start)
	wg.Wait()
	var streams []result
	refused503 := 0
	for _, r := range results {
		switch r.status {
		case 200:
			streams = append(streams, r)
			t.Cleanup(func() { r.conn.Close() })
		case 503:
			refused503++
		case 0:
		default:
			t.Errorf("unexpected status %d", r.status)
		}
	}
	t.Logf("max_conns %d, flood %d: %d streams, %d refused with 503, %d reset", maxConns, flood, len(streams), refused503, flood-len(streams)-refused503)
	if len(streams) != maxConns {
		t.Fatalf("%d streams admitted, want exactly max_conns=%d", len(streams), maxConns)
	}
	if refused503 == 0 {
		t.Fatal("no connection was refused with 503")
	}
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("sseloop exited during the flood: %v", err)
	default:
	}

	// Free a few slots; the server serves new clients again.
	const freed = 5
	for _, s := range streams[:freed] {
		s.conn.Close()
	}
	streams = streams[freed:]
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Post("http://"+p.addr+"/trigger/flood", "text/plain", strings.NewReader("still serving"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trigger accepted after freeing slots: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Every admitted client that stayed receives the event.
	for i, s := range streams {
		_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d of %d lost: %v", i, len(streams), err)
			}
			if line == "data: still serving\n" {
				break
			}
		}
	}
}
