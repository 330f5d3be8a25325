package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMillionScaledDown runs bench/million.sh as CI can afford: 60,000
// streams on 4 sseloop nodes sharing one port and one Redis, each stream on
// its own key and on the shared key. Every stream must be held, and the
// broadcast and the sampled per-user events must reach every subscriber
// once: no loss, no duplicate.
func TestMillionScaledDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 nodes, Redis and 4 load workers holding 60,000 streams")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SSELOOPTEST_REQUIRE_EXTERNAL") == "1" {
			t.Fatal("redis-server not installed (SSELOOPTEST_REQUIRE_EXTERNAL=1)")
		}
		t.Skip("redis-server not installed (set SSELOOPTEST_REQUIRE_EXTERNAL=1 to fail instead)")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Max < 15300 {
		t.Skipf("needs 15,300 open files per process, the hard limit is %d", lim.Max)
	}
	out := filepath.Join(t.TempDir(), "million.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "million.sh")
	cmd.Env = append(os.Environ(), "CONNS=60000", "NODES=4", "PER_NODE=15000", "PER_WORKER=15000",
		"QUIET=2s", "SETTLE=1s", "SAMPLE=200", "OUT="+out)
	// bash stops every process it started on SIGTERM.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	b, err := cmd.CombinedOutput()
	t.Logf("\n%s", b)
	if err != nil {
		t.Fatalf("million.sh: %v", err)
	}
	js, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rs []*Result
	if err := json.Unmarshal(js, &rs); err != nil || len(rs) != 1 {
		t.Fatalf("%v: %d results", err, len(rs))
	}
	r := rs[0]
	if r.Connected != 60000 || r.ConnectFailed != 0 || r.DroppedStreams != 0 {
		t.Errorf("connected %d failed %d dropped %d (%v)", r.Connected, r.ConnectFailed, r.DroppedStreams, r.Errors)
	}
	if r.SharedDeliveries != 60000 || r.SharedReceived != 60000 || r.SampleKeys != 200 ||
		r.DeliveriesExpected != 60200 || r.DeliveriesReceived != 60200 || r.Lost != 0 || r.Duplicates != 0 || r.BadData != 0 {
		t.Errorf("shared %d/%d, sample %d, deliveries %d/%d, lost %d dups %d bad %d", r.SharedReceived, r.SharedDeliveries,
			r.SampleKeys, r.DeliveriesReceived, r.DeliveriesExpected, r.Lost, r.Duplicates, r.BadData)
	}
	if len(r.Nodes) != 4 || r.Connect.To100 <= 0 || r.MemAvailDropPerConn <= 0 || r.QuietSeconds != 2 {
		t.Errorf("nodes %d, connect %+v, MemAvailable drop/conn %.0f, quiet %v", len(r.Nodes), r.Connect, r.MemAvailDropPerConn, r.QuietSeconds)
	}
	held := 0
	for _, n := range r.Nodes {
		held += n.FDs
	}
	if held < 60000 {
		t.Errorf("nodes hold %d descriptors in all, want >= 60000", held)
	}
	for _, want := range []string{"connect: 25%", "MemAvailable drop per conn B", "restore: sysctl", "idle cpu % core"} {
		if want == "restore: sysctl" && os.Geteuid() != 0 {
			continue
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
