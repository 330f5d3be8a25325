package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Environment of a re-executed child: the role, and its parameters.
const (
	envRole   = "SSEBENCH_ROLE"   // "worker" or "baseline"
	envSpec   = "SSEBENCH_SPEC"   // worker: WorkerSpec as JSON
	envListen = "SSEBENCH_LISTEN" // baseline: listen address
)

// Child runs the role this process was re-executed for, if any: a load
// worker (spec in the environment, commands on stdin, JSON-line reports on
// stdout) or a baseline server. Call it first in main (and in TestMain for
// tests that start children); ok is false in an ordinary process.
func Child() (code int, ok bool) {
	switch os.Getenv(envRole) {
	case "worker":
		if err := childWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "ssebench worker:", err)
			return 1, true
		}
		return 0, true
	case "baseline":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		if err := ServeBaseline(ctx, os.Getenv(envListen)); err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "ssebench baseline:", err)
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func childWorker(stdin io.Reader, stdout io.Writer) error {
	var spec WorkerSpec
	if err := json.Unmarshal([]byte(os.Getenv(envSpec)), &spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	w, err := newLoadWorker(spec)
	if err != nil {
		return err
	}
	cmds := make(chan string, 4)
	go func() {
		// EOF means the parent is gone: closing cmds ends the worker.
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		close(cmds)
	}()
	out := bufio.NewWriter(stdout)
	enc := json.NewEncoder(out)
	var werr error
	err = w.run(cmds, func(r *WorkerReport) {
		if werr == nil {
			werr = enc.Encode(r)
		}
		if werr == nil {
			werr = out.Flush()
		}
	})
	return errors.Join(err, werr)
}

// fleet is the parent's view of its workers, in process or re-executed.
type fleet struct {
	mu     sync.Mutex
	latest []*WorkerReport // newest report per worker
	sent   []bool          // a settled report with ConnPerKey arrived
	perKey []int           // connections per key, summed when settled
	done   []chan struct{} // closed when the worker ended
	errs   []error

	send []func(cmd string)
	stop []func() // end a worker now (after the final report or on error)
}

func (f *fleet) update(i int, r *WorkerReport) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.ConnPerKey != nil && !f.sent[i] {
		f.sent[i] = true
		for k, n := range r.ConnPerKey {
			f.perKey[r.KeyBase+k] += n
		}
	}
	f.latest[i] = r
}

func (f *fleet) finish(i int, err error) {
	f.mu.Lock()
	f.errs[i] = err
	f.mu.Unlock()
	close(f.done[i])
}

// startFleet starts one worker per spec: in this process when inProcess
// (one spec only), else as re-executed children of exe.
func startFleet(specs []WorkerSpec, keys int, inProcess bool, stderr io.Writer) (*fleet, error) {
	n := len(specs)
	f := &fleet{
		latest: make([]*WorkerReport, n), sent: make([]bool, n), perKey: make([]int, keys),
		done: make([]chan struct{}, n), errs: make([]error, n),
		send: make([]func(string), n), stop: make([]func(), n),
	}
	for i := range specs {
		f.done[i] = make(chan struct{})
		f.latest[i] = &WorkerReport{}
	}
	if inProcess {
		w, err := newLoadWorker(specs[0])
		if err != nil {
			return nil, err
		}
		cmds := make(chan string, 4)
		var once sync.Once
		f.send[0] = func(c string) {
			select {
			case cmds <- c:
			case <-f.done[0]:
			}
		}
		f.stop[0] = func() { once.Do(func() { close(cmds) }) }
		go func() { f.finish(0, w.run(cmds, func(r *WorkerReport) { f.update(0, r) })) }()
		return f, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: re-exec: %w", err)
	}
	for i, spec := range specs {
		js, _ := json.Marshal(spec)
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envRole+"=worker", envSpec+"="+string(js))
		cmd.Stderr = stderr
		cmd.SysProcAttr = childAttr()
		stdin, err := cmd.StdinPipe()
		if err != nil {
			f.kill()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			f.kill()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			f.kill()
			return nil, fmt.Errorf("bench: start worker: %w", err)
		}
		var mu sync.Mutex
		f.send[i] = func(c string) {
			mu.Lock()
			defer mu.Unlock()
			_, _ = io.WriteString(stdin, c+"\n")
		}
		var once sync.Once
		f.stop[i] = func() {
			once.Do(func() {
				_ = stdin.Close()
				// Give it a moment to exit on EOF, then kill it.
				t := time.AfterFunc(5*time.Second, func() { _ = cmd.Process.Kill() })
				go func() { <-f.done[i]; t.Stop() }()
			})
		}
		go func(i int) {
			dec := json.NewDecoder(bufio.NewReaderSize(stdout, 1<<16))
			var derr error
			for {
				r := new(WorkerReport)
				if err := dec.Decode(r); err != nil {
					if !errors.Is(err, io.EOF) {
						derr = fmt.Errorf("worker %d: reports: %w", i, err)
					}
					break
				}
				f.update(i, r)
			}
			werr := cmd.Wait()
			if werr != nil && derr == nil {
				f.mu.Lock()
				final := f.latest[i].Final
				f.mu.Unlock()
				if !final {
					derr = fmt.Errorf("worker %d: %w", i, werr)
				}
			}
			f.finish(i, derr)
		}(i)
	}
	return f, nil
}

// snapshot returns the newest report of every worker.
func (f *fleet) snapshot() []*WorkerReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*WorkerReport(nil), f.latest...)
}

// connPerKey returns the stable connections per key once all settled.
func (f *fleet) connPerKey() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.perKey...)
}

func (f *fleet) broadcast(cmd string) {
	for _, s := range f.send {
		if s != nil {
			s(cmd)
		}
	}
}

// firstErr returns the first worker error.
func (f *fleet) firstErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}

// finals sends stop and waits up to timeout for every final report.
func (f *fleet) finals(timeout time.Duration) ([]*WorkerReport, error) {
	f.broadcast(cmdStop)
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i := range f.done {
		for {
			f.mu.Lock()
			final := f.latest[i].Final
			f.mu.Unlock()
			if final {
				break
			}
			select {
			case <-f.done[i]:
				f.mu.Lock()
				final = f.latest[i].Final
				f.mu.Unlock()
				if !final {
					return nil, fmt.Errorf("bench: worker %d ended without a final report: %w", i, f.firstErr())
				}
			case <-t.C:
				return nil, fmt.Errorf("bench: worker %d: no final report after %s", i, timeout)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	f.kill()
	return f.snapshot(), nil
}

// kill ends every worker that is still running.
func (f *fleet) kill() {
	for _, s := range f.stop {
		if s != nil {
			s()
		}
	}
}
