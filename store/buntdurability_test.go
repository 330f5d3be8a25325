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

// childEnv makes the test binary the child of TestKill9NoFalseGap: the
// file to write; childSyncEnv is its sync policy.
const (
	childEnv     = "SSELOOPTEST_BUNT_CHILD"
	childSyncEnv = "SSELOOPTEST_BUNT_CHILD_SYNC"
)

// TestKill9NoFalseGap appends 30 events in a child process, kills it with
// SIGKILL after they were acknowledged, reopens the file and resumes from
// the middle, under each sync policy. Why: an unclean shutdown that lost
// nothing must not make every client reload (a false gap is a thundering
// herd on the app right after a crash). Under everysecond and never nothing
// was lost only because the kernel that took the writes still runs (same
// boot id): the same file opened as if after a reboot must announce the gap,
// or the test could not tell.
func TestKill9NoFalseGap(t *testing.T) {
	if path := os.Getenv(childEnv); path != "" {
		kill9Child(path, os.Getenv(childSyncEnv))
		return
	}
	for _, sync := range []SyncPolicy{SyncAlways, SyncEverySecond, SyncNever} {
		t.Run(sync.String(), func(t *testing.T) {
			if sync != SyncAlways && KernelBootID() == "" {
				t.Skip("no kernel boot id on this platform: after a kill -9 under " + sync.String() + " every resume gets a gap")
			}
			testKill9NoFalseGap(t, sync)
		})
	}
}

func testKill9NoFalseGap(t *testing.T, sync SyncPolicy) {
	path := filepath.Join(t.TempDir(), "events.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9NoFalseGap$")
	cmd.Env = append(os.Environ(), childEnv+"="+path, childSyncEnv+"="+sync.String())
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
	killed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	from := acked[9] // Last-Event-ID: the 10th event

	b := openBunt(t, path, testOptions(sync))
	got, err := b.Replay(bg, []string{"ka", "kb"}, from, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || got[0].ID != acked[10] || got[19].ID != acked[29] {
		t.Fatalf("Replay after %d = %d events, want the 20 acknowledged after it", from, len(got))
	}
	for i, r := range mustRetention(t, b, "ka", "kb") {
		if r.Dropped != 0 {
			t.Errorf("Retention[%d] = %+v after kill -9 with nothing lost: want Dropped 0 (no gap)", i, r)
		}
	}
	if last, _ := b.LastID(bg); last <= acked[29] {
		t.Errorf("LastID %d after the crash, want above %d", last, acked[29])
	}

	// The same file after a reboot instead: only SyncAlways fsynced.
	SetBootID(t, "a boot after the crash")
	r := openBunt(t, writeCopy(t, killed), testOptions(sync))
	for i, ret := range mustRetention(t, r, "ka", "kb") {
		if gap := ret.Dropped > from; gap != (sync != SyncAlways) {
			t.Errorf("after a reboot under %s: Retention[%d] = %+v, gap %v for a resume from %d", sync, i, ret, gap, from)
		}
	}
}

// kill9Child appends 30 events under the sync policy named sync, printing
// each id once acknowledged, then waits to be killed.
func kill9Child(path, sync string) {
	policy, err := ParseSync(sync)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b, err := OpenBunt(path, Options{Sync: policy, SweepInterval: -1})
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

// TestBuntUncleanShutdownGapByBoot opens a file that was not closed cleanly
// (read while its store was open, as a kill -9 leaves it) under the boot id
// of the kernel that wrote it (the process died, the machine stayed up) or
// another (the machine crashed). Why: after a kill -9 every acknowledged
// append is in the page cache of the kernel still running, so a gap would be
// false and make every client reload at once; after a reboot under
// everysecond or never the last second(s) may be gone, and the gap is due.
func TestBuntUncleanShutdownGapByBoot(t *testing.T) {
	tests := []struct {
		name          string
		sync          SyncPolicy
		before, after string // boot ids of the open that crashed and of the next
		wantGap       bool
	}{
		{"everysecond_process_killed", SyncEverySecond, "boot-a", "boot-a", false},
		{"never_process_killed", SyncNever, "boot-a", "boot-a", false},
		{"everysecond_machine_rebooted", SyncEverySecond, "boot-a", "boot-b", true},
		{"never_machine_rebooted", SyncNever, "boot-a", "boot-b", true},
		{"everysecond_boot_unknown", SyncEverySecond, "", "", true},
		{"everysecond_boot_unknown_now", SyncEverySecond, "boot-a", "", true},
		{"always_machine_rebooted", SyncAlways, "boot-a", "boot-b", false},
	}
	keys := []string{"ka", "kb", "kc"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			SetBootID(t, tt.before)
			opts := testOptions(tt.sync)
			b := openBunt(t, filepath.Join(t.TempDir(), "live.db"), opts)
			var evs []Event
			for i := range 12 {
				evs = append(evs, mustAppend(t, b, keys[i%3])...)
			}
			live, err := os.ReadFile(b.path) // no n:clean
			if err != nil {
				t.Fatal(err)
			}
			path := writeCopy(t, live)

			SetBootID(t, tt.after)
			s := openBunt(t, path, opts)
			from, last := evs[3].ID, evs[len(evs)-1].ID
			got, err := s.Replay(bg, keys, from, 100)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(idsOf(got)) != fmt.Sprint(idsOf(evs[4:])) {
				t.Errorf("Replay after %d = %v, want %v", from, idsOf(got), idsOf(evs[4:]))
			}
			for i, r := range mustRetention(t, s, append(keys, "never")...) {
				switch {
				case tt.wantGap && r.Dropped < last:
					t.Errorf("Retention[%d] = %+v, want Dropped >= %d: a crash of the machine may have lost them", i, r, last)
				case !tt.wantGap && r.Dropped != 0:
					t.Errorf("Retention[%d] = %+v, want Dropped 0: nothing acknowledged was lost", i, r)
				}
			}
			if id := mustLastID(t, s); id != last+uncleanIDSkip {
				t.Errorf("LastID = %d, want %d (ids skip after any unclean shutdown)", id, last+uncleanIDSkip)
			}
		})
	}
}
