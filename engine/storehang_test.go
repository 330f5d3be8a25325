package engine

import (
	"bufio"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sseloop/sseloop/internal/redistest"
	"github.com/sseloop/sseloop/store"
)

// TestTimersFireWhileRedisIsStopped: with redis-server frozen (SIGSTOP) for
// 5 s, a stream keeps getting its heartbeat comments and a slowloris client
// still gets its 408. Why: the goroutine that advances the timer wheels
// used to be the one blocked in the change-feed read, so every heartbeat,
// header timeout and token expiry of the process stopped with the store.
func TestTimersFireWhileRedisIsStopped(t *testing.T) {
	srv := redistest.Start(t)
	st, err := store.OpenRedis(store.RedisConfig{Addr: srv.Addr(), Prefix: "hang:"}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWithStore(t, st, func(c *Config) {
		c.Heartbeat = time.Second
		c.Limits.HeaderTimeout = time.Second
	})
	stream := openSSE(t, s.addr, "/events?key=k")
	slow, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()

	if err := srv.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	defer func() { _ = srv.Signal(syscall.SIGCONT) }()
	// The slowloris starts a head and never ends it.
	if _, err := io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	beats := 0
	for beats < 3 {
		ev, err := stream.read(5*time.Second - time.Since(frozen))
		if err != nil {
			t.Fatalf("%d heartbeats while Redis was stopped, then: %v", beats, err)
		}
		if ev.Comment {
			beats++
		}
	}
	_ = slow.SetReadDeadline(frozen.Add(5 * time.Second))
	line, err := bufio.NewReader(slow).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 408 ") {
		t.Fatalf("slowloris got %q, %v while Redis was stopped; want 408", line, err)
	}
}
