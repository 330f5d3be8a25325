package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// publishAndStop publishes 20 events (data ev00..ev19, keys k0..k2) to a
// server on path, stops it cleanly and returns the acknowledged ids.
func publishAndStop(t *testing.T, path string) []string {
	t.Helper()
	p := startProcess(t, "--store.path", path, "--store.sync", "always")
	client := &http.Client{Timeout: 5 * time.Second}
	var ids []string
	for i := range 20 {
		resp, err := client.Post("http://"+p.addr+fmt.Sprintf("/trigger/k%d", i%3), "text/plain", strings.NewReader(fmt.Sprintf("ev%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("trigger %d: %d %s", i, resp.StatusCode, b)
		}
		var id string
		fmt.Sscanf(string(b), `{"id":"%s`, &id)
		ids = append(ids, strings.TrimSuffix(id, `"}`))
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
	return ids
}

// damageByte changes "from" to "to" (same length) where it occurs once in
// the file.
func damageByte(t *testing.T, path, from, to string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(data, []byte(from)) != 1 {
		t.Fatalf("%q occurs %d times in the file", from, bytes.Count(data, []byte(from)))
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(from), []byte(to), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runChild runs sseloop's main in a child process to completion.
func runChild(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSELOOP_") {
			base = append(base, kv)
		}
	}
	cmd.Env = append(base, childEnv+"=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A byte of one event's data changed on disk (ev11 -> ev19): sseloop refuses
// to start, naming the file, the offset, the event and --store.repair;
// started with --store.repair it keeps a copy, drops that event, and a client
// resuming from before it gets a gap naming the key, then every other event.
func TestDamagedFileRefusedThenRepaired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	ids := publishAndStop(t, path)
	damageByte(t, path, "ev11", "ev19")

	out, err := runChild(t, "--listen", "127.0.0.1:0", "--store.path", path)
	if err == nil {
		t.Fatalf("sseloop started on a damaged file:\n%s", out)
	}
	for _, want := range []string{path, "offset ", "event " + ids[11], "checksum mismatch", "--store.repair"} {
		if !strings.Contains(out, want) {
			t.Errorf("start-up error does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "sseloop listening") {
		t.Errorf("sseloop listened on a damaged file:\n%s", out)
	}

	p := startProcess(t, "--store.path", path, "--store.repair")
	if copies, _ := filepath.Glob(path + ".damaged-*"); len(copies) != 1 {
		t.Errorf("copies of the damaged file: %v, want one", copies)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr+"/events?key=k0&key=k1&key=k2&lastEventId="+ids[5], nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var gap string
	var got []string
	for sc.Scan() {
		line := sc.Text()
		if line == "event: gap" && sc.Scan() {
			gap = sc.Text()
		}
		if d, ok := strings.CutPrefix(line, "data: ev"); ok {
			got = append(got, d)
			if d == "19" {
				break // the last, or the damaged ev11 served as changed
			}
		}
	}
	if want := `data: {"keys":["k2"],`; !strings.HasPrefix(gap, want) {
		t.Errorf("gap event data %q, want it to start with %q (ev11 was k2's)", gap, want)
	}
	if g, w := strings.Join(got, ","), "06,07,08,09,10,12,13,14,15,16,17,18,19"; g != w {
		t.Errorf("resumed after ev05: %s, want %s", g, w)
	}
}

// sseloop repair FILE fixes a damaged file of a stopped server; the next
// start needs no repair.
func TestRepairCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	publishAndStop(t, path)
	damageByte(t, path, "ev04", "ev44")
	var stderr bytes.Buffer
	if code := run([]string{"repair", path}, nil, io.Discard, &stderr); code != 0 {
		t.Fatalf("repair exit %d:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "records_failing_checksum=1") {
		t.Errorf("repair output:\n%s", stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"repair", path}, nil, io.Discard, &stderr); code != 0 || strings.Contains(stderr.String(), "damaged") {
		t.Errorf("second repair: exit %d:\n%s", code, stderr.String())
	}
	if code := run([]string{"repair"}, nil, io.Discard, io.Discard); code != 2 {
		t.Errorf("repair without a file: exit %d, want 2", code)
	}
	if code := run([]string{"repair", path + ".missing"}, nil, io.Discard, io.Discard); code != 1 {
		t.Errorf("repair of a missing file: exit %d, want 1", code)
	}
}
