package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// orderFile wraps the descriptor Bunt fsyncs through and records, for every
// fsync that returned, how many bytes of the file it covered (buntdb writes
// with write(2) on its own descriptor, so the file's size at the fsync is
// what the fsync made durable).
type orderFile struct {
	syncFile
	path string
	mu   *sync.Mutex
	log  *[]int64 // file sizes covered by returned fsyncs, in order
}

func (f orderFile) Sync() error {
	fi, err := os.Stat(f.path) // written before the fsync starts
	if err != nil {
		return err
	}
	if err := f.syncFile.Sync(); err != nil {
		return err
	}
	f.mu.Lock()
	*f.log = append(*f.log, fi.Size())
	f.mu.Unlock()
	return nil
}

// unsyncedReturns appends n events one by one and counts the Appends that
// returned while some of the file's bytes (their events) were not covered by
// an fsync that had returned: write -> fsync -> return is the promise of
// SyncAlways.
func unsyncedReturns(t *testing.T, policy SyncPolicy, n int) int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	var mu sync.Mutex
	var log []int64
	open := func(p string) (syncFile, error) {
		f, err := openSyncFile(p)
		if err != nil {
			return nil, err
		}
		return orderFile{syncFile: f, path: p, mu: &mu, log: &log}, nil
	}
	b, err := openBuntFile(path, testOptions(policy), open)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bad := 0
	for i := range n {
		if err := b.Append(bg, []Event{{Key: "k", Data: fmt.Appendf(nil, "event %d", i)}}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		covered := int64(0)
		if len(log) > 0 {
			covered = log[len(log)-1]
		}
		mu.Unlock()
		if covered < fi.Size() {
			bad++
		}
	}
	return bad
}

// TestSyncAlwaysFsyncsBeforeAppendReturns: under SyncAlways an Append returns
// only after an fsync covering its events returned. Why: the trigger's 200
// promises the event survives power loss; kill -9 alone cannot show that (the
// page cache survives a killed process), so the order is recorded instead.
// The same check under SyncNever must see unsynced returns, or it proves
// nothing.
func TestSyncAlwaysFsyncsBeforeAppendReturns(t *testing.T) {
	if n := unsyncedReturns(t, SyncAlways, 50); n != 0 {
		t.Errorf("SyncAlways: %d of 50 Appends returned before their fsync", n)
	}
	if n := unsyncedReturns(t, SyncNever, 50); n == 0 {
		t.Errorf("SyncNever: every Append was fsynced: the check cannot tell")
	}
}

// childEnv makes the test binary the child of TestKill9SyncAlwaysNoFalseGap.
const childEnv = "SSELOOPTEST_BUNT_CHILD"

// TestKill9SyncAlwaysNoFalseGap appends 30 events in a child process with
// SyncAlways, kills it with SIGKILL after they were acknowledged, reopens the
// file and resumes from the middle. Why: an unclean shutdown that lost
// nothing must not make every client reload (a false gap is a thundering
// herd on the app right after a crash).
func TestKill9SyncAlwaysNoFalseGap(t *testing.T) {
	if path := os.Getenv(childEnv); path != "" {
		kill9Child(path)
		return
	}
	path := filepath.Join(t.TempDir(), "events.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9SyncAlwaysNoFalseGap$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var acked []uint64
	sc := bufio.NewScanner(out)
	timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	for len(acked) < 30 && sc.Scan() {
		id, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		acked = append(acked, id)
	}
	if len(acked) != 30 {
		t.Fatalf("child acknowledged %d events, want 30 (%v)", len(acked), sc.Err())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	b := openBunt(t, path, testOptions(SyncAlways))
	from := acked[9] // Last-Event-ID: the 10th event
	got, err := b.Replay(bg, []string{"ka", "kb"}, from, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || got[0].ID != acked[10] || got[19].ID != acked[29] {
		t.Fatalf("Replay after %d = %d events, want the 20 acknowledged after it", from, len(got))
	}
	ret, err := b.Retention(bg, []string{"ka", "kb"})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range ret {
		if r.Dropped > from || r.Dropped != 0 {
			t.Errorf("Retention[%d] = %+v after kill -9 with nothing lost: want Dropped 0 (no gap)", i, r)
		}
	}
	if last, _ := b.LastID(bg); last <= acked[29] {
		t.Errorf("LastID %d after the crash, want above %d", last, acked[29])
	}
}

// kill9Child appends 30 events, printing each id once acknowledged, then
// waits to be killed.
func kill9Child(path string) {
	b, err := OpenBunt(path, Options{Sync: SyncAlways, SweepInterval: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := range 30 {
		evs := []Event{{Key: []string{"ka", "kb"}[i%2], Data: fmt.Appendf(nil, "event %d", i)}}
		if err := b.Append(bg, evs); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(evs[0].ID)
	}
	time.Sleep(time.Minute) // killed long before
	os.Exit(1)
}
