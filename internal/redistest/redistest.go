// Package redistest starts throwaway redis-server processes for tests.
//
// Start skips the test when redis-server is not installed, unless the
// environment sets SSELOOPTEST_REQUIRE_EXTERNAL=1 (as .ci/run does): then it
// fails, so CI can never pass by skipping.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process that a test started.
type Server struct {
	bin  string
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
	exit chan struct{}
}

// Start starts redis-server on a free port, in a temporary directory,
// without persistence unless extra arguments say otherwise. It skips the test
// if redis-server is not installed, unless SSELOOPTEST_REQUIRE_EXTERNAL=1.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("SSELOOPTEST_REQUIRE_EXTERNAL") == "1" {
			t.Fatal("redis-server not installed (SSELOOPTEST_REQUIRE_EXTERNAL=1)")
		}
		t.Skip("redis-server not installed: apt-get install redis-server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{bin: bin, port: port, dir: t.TempDir()}
	s.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir}, extra...)
	s.Start(t)
	t.Cleanup(func() { s.Kill(t) })
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Start runs the server and waits until it answers PING.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Dir = s.dir
	log, err := os.Create(fmt.Sprintf("%s/redis-%d.log", s.dir, time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	s.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { _ = cmd.Wait(); close(exit) }(s.cmd, s.exit)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	for deadline := time.Now().Add(20 * time.Second); ; {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		select {
		case <-s.exit:
			t.Fatalf("redis-server %v exited (log in %s)", s.args, s.dir)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s does not answer: %v", s.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL (no shutdown work) and waits for it.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exit
	s.cmd = nil
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Signal sends sig to the running server (e.g. SIGSTOP to freeze it).
func (s *Server) Signal(sig os.Signal) error {
	if s.cmd == nil {
		return fmt.Errorf("redistest: server on %s is not running", s.Addr())
	}
	return s.cmd.Process.Signal(sig)
}

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// StartSentinels starts n redis-sentinel processes on free loopback ports
// that monitor primary as master (quorum n/2+1, down after 1 s) and returns
// their addresses. It skips the test if redis-sentinel is not installed,
// unless SSELOOPTEST_REQUIRE_EXTERNAL=1.
func StartSentinels(t testing.TB, master string, primary *Server, n int) []string {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		if os.Getenv("SSELOOPTEST_REQUIRE_EXTERNAL") == "1" {
			t.Fatal("redis-sentinel not installed (SSELOOPTEST_REQUIRE_EXTERNAL=1)")
		}
		t.Skip("redis-sentinel not installed: apt-get install redis-sentinel")
	}
	var addrs []string
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		dir := t.TempDir()
		conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor %s 127.0.0.1 %d %d\n"+
			"sentinel down-after-milliseconds %s 1000\n"+
			"sentinel failover-timeout %s 5000\n",
			port, dir, master, primary.port, n/2+1, master, master)
		path := fmt.Sprintf("%s/sentinel-%d.conf", dir, i)
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		s := &Server{bin: bin, port: port, dir: dir, args: []string{path}}
		s.Start(t)
		t.Cleanup(func() { s.Kill(t) })
		addrs = append(addrs, s.Addr())
	}
	return addrs
}
