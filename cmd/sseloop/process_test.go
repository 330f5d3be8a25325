package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary run sseloop's main instead of the tests, so
// process tests need no separate build.
const childEnv = "SSELOOPTEST_RUN_MAIN" // not SSELOOP_: that prefix is config

// nofileEnv, in a child, sets its open-files limit (soft and hard) before
// run(), like `ulimit -n` would: the Go runtime raises the soft limit to the
// hard one at start, so only lowering both sticks.
const nofileEnv = "SSELOOPTEST_NOFILE"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if v := os.Getenv(nofileEnv); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err == nil {
				err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n})
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "set open-files limit:", err)
				os.Exit(3)
			}
		}
		os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// serverProcess is sseloop running as a child process.
type serverProcess struct {
	cmd  *exec.Cmd
	addr string
	line string // the "sseloop listening" log line
	done chan error
}

var listenRE = regexp.MustCompile(`msg="sseloop listening" addr=(\S+)`)

// startProcess runs sseloop with args in a child process and waits until it
// listens. The child is killed when the test ends.
func startProcess(t *testing.T, args ...string) *serverProcess {
	t.Helper()
	return startProcessEnv(t, nil, args...)
}

// startProcessEnv is startProcess with extra environment variables.
func startProcessEnv(t *testing.T, env []string, args ...string) *serverProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	// The child reads SSELOOP_* as config: pass none of the test runner's.
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSELOOP_") {
			base = append(base, kv)
		}
	}
	cmd.Env = append(append(base, childEnv+"=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd, done: make(chan error, 1)}
	addrc := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- [2]string{m[1], sc.Text()}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	select {
	case a := <-addrc:
		p.addr, p.line = a[0], a[1]
	case err := <-p.done:
		p.done <- err
		t.Fatalf("sseloop exited before listening: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("sseloop did not listen within 20s")
	}
	return p
}

func TestSigtermStopsGracefully(t *testing.T) {
	p := startProcess(t)
	resp, err := http.Get("http://" + p.addr + "/events?key=a")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for Cleanup
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
	// The stream was closed, not left hanging.
	if _, err := io.ReadAll(resp.Body); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Logf("stream ended with %v", err)
	}
}

// TestSyncAlwaysSurvivesKill9 checks the durability promise of
// store.sync=always: every trigger answered 200 survives SIGKILL.
func TestSyncAlwaysSurvivesKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	p := startProcess(t, "--store.path", path, "--store.sync", "always")
	var acked []string
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 200 {
		resp, err := client.Post("http://"+p.addr+fmt.Sprintf("/trigger/k%d", i%3), "text/plain", strings.NewReader(fmt.Sprint("event ", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("trigger %d: %d", i, resp.StatusCode)
		}
		var id string
		fmt.Sscanf(string(b), `{"id":"%s`, &id)
		acked = append(acked, strings.TrimSuffix(id, `"}`))
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil

	p2 := startProcess(t, "--store.path", path, "--store.sync", "always")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p2.addr+"/events?key=k0&key=k1&key=k2&lastEventId=0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var got []string
	for len(got) < len(acked) && sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			got = append(got, id)
		}
	}
	if strings.Join(got, ",") != strings.Join(acked, ",") {
		t.Fatalf("after kill -9 replay has %d of %d acknowledged events\n got %v\nwant %v", len(got), len(acked), got, acked)
	}
}

// TestMetricsOnSeparateListener scrapes metrics.listen, the internal port an
// operator points Prometheus at.
func TestMetricsOnSeparateListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	startProcess(t, "--metrics.listen", addr)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "sseloop_connections ") || !strings.Contains(string(b), "process_resident_memory_bytes") {
		t.Fatalf("status %d, body %.200q", resp.StatusCode, b)
	}
}
