package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"time"
)

// StormResult is what the storm scenario measures after the restart. The
// clock starts when the clients are released (they all reconnect at once).
type StormResult struct {
	// RestartSeconds: from exec of the new server until it answers.
	RestartSeconds float64 `json:"restart_seconds"`
	// Disconnected: streams that saw the server go away.
	Disconnected int64 `json:"disconnected"`
	// Readmitted: streams admitted again; ReadmitSeconds until the last.
	Readmitted     int64   `json:"readmitted"`
	ReadmitSeconds float64 `json:"readmit_seconds"`
	// MissedExpected: deliveries of the events published while the
	// clients were away; MissedReceived how many of them arrived.
	MissedExpected int64 `json:"missed_expected"`
	MissedReceived int64 `json:"missed_received"`
	// CatchupSeconds: until the last delivery after the release (0 when
	// none came).
	CatchupSeconds float64 `json:"catchup_seconds"`
	// ReconnectErrors: failed attempts (refused, timed out), each retried
	// after 100 ms.
	ReconnectErrors int64 `json:"reconnect_errors"`
	// PeakRSSBytes and CPUSeconds of the restarted server, from its exec
	// until the catch-up ended.
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	CPUSeconds   float64 `json:"cpu_seconds"`
}

// stormRun carries the storm's state between its phases and the final
// reports.
type stormRun struct {
	res         *StormResult
	pub         pubStats
	releasedNs  int64
	lastReadmit int64
	received1   int64 // deliveries before the kill
}

func (s *stormRun) add(r *WorkerReport) {
	s.res.Disconnected += r.Disconnects
	s.res.Readmitted += r.Readmitted
	s.res.ReconnectErrors += r.ReconnectErrors
	s.lastReadmit = max(s.lastReadmit, r.LastReadmitNs)
}

func (s *stormRun) finish(res *Result, lastRecv int64) {
	if s.lastReadmit > s.releasedNs {
		s.res.ReadmitSeconds = float64(s.lastReadmit-s.releasedNs) / 1e9
	}
	s.res.MissedReceived = res.DeliveriesReceived - s.received1
	if lastRecv > s.releasedNs && s.res.MissedReceived > 0 {
		s.res.CatchupSeconds = float64(lastRecv-s.releasedNs) / 1e9
	}
	res.Storm = s.res
}

// runStorm: publish Events events and wait until every stream has them;
// wait Settle (a store synced every second has them on disk); SIGKILL the
// server and wait until every stream noticed; start it again; publish
// Events more events while the clients are away; release every client at
// once (each reconnects with its Last-Event-ID) and wait until all are
// admitted and have every event. Memory and CPU (res.RSSBytes,
// res.CPUSeconds) are the restarted server's.
func runStorm(ctx context.Context, cfg *RunConfig, fl *fleet, keys []string, perKey []int, res *Result) (*stormRun, error) {
	st := &stormRun{res: &StormResult{}}
	quiet := *cfg
	quiet.Progress = io.Discard
	expectedOf := func(p pubStats) (e int64) {
		for k, n := range p.sent {
			e += n * int64(perKey[k])
		}
		return e
	}
	received := func() (got int64, waiting int) {
		for _, r := range fl.snapshot() {
			got += r.Received
			waiting += r.Waiting
		}
		return got, waiting
	}
	// deliveredBy waits until want deliveries arrived, or nothing new
	// came for 3 s, or StormLimit (at least 60 s) passed.
	deliveredBy := func(want int64, label string) error {
		b := newBar(cfg.Progress, label, want)
		defer b.end()
		var last int64
		lastChange := time.Now()
		return waitForEvery(ctx, max(cfg.StormLimit, 60*time.Second), 10*time.Millisecond, func() (bool, error) {
			got, _ := received()
			b.set(got)
			if got != last {
				last, lastChange = got, time.Now()
			}
			return got >= want || time.Since(lastChange) > 3*time.Second, fl.firstErr()
		})
	}

	// Phase 1: events every stream has before the crash.
	p1 := publish(ctx, quiet, keys, false, 0, cfg.Events, 0)
	st.pub = p1
	want1 := expectedOf(p1)
	if err := deliveredBy(want1, cfg.Server+" storm before"); err != nil {
		return nil, err
	}
	if cfg.PID > 0 {
		res.RSSBytes, _ = procRSS(cfg.PID)
	}
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return nil, err
	}
	st.received1, _ = received()

	// Crash.
	if err := cfg.Restarter.Kill(); err != nil {
		return nil, fmt.Errorf("bench: storm: kill: %w", err)
	}
	connected := 0
	for _, r := range fl.snapshot() {
		connected += r.Connected
	}
	if err := waitFor(ctx, 30*time.Second, func() (bool, error) {
		_, waiting := received()
		return waiting >= connected, fl.firstErr()
	}); err != nil {
		return nil, fmt.Errorf("bench: storm: streams noticing the kill: %w", err)
	}

	// Restart, sampling the new process's memory until the catch-up ends.
	began := time.Now()
	pids, err := cfg.Restarter.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: storm: restart: %w", err)
	}
	st.res.RestartSeconds = time.Since(began).Seconds()
	var peak int64
	var mu sync.Mutex
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := sumProc(procRSS, pids[0], pids[1:]); err == nil {
				mu.Lock()
				peak = max(peak, v)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		sampler.Wait()
	}()

	// Phase 2: events published while every client is away.
	p2 := publish(ctx, quiet, keys, false, cfg.Events, cfg.Events, 0)
	st.pub.merge(p2)
	st.res.MissedExpected = expectedOf(p2)
	res.DeliveriesExpected = want1 + st.res.MissedExpected

	// The storm: everyone at once.
	st.releasedNs = time.Now().UnixNano()
	fl.broadcast(cmdGo)
	b := newBar(cfg.Progress, cfg.Server+" storm readmit", int64(connected))
	// A server that never re-admits everyone is a result, not an error:
	// Readmitted tells how far it got.
	err = waitForEvery(ctx, cfg.StormLimit, 10*time.Millisecond, func() (bool, error) {
		_, waiting := received()
		b.set(int64(connected - waiting))
		return waiting == 0, fl.firstErr()
	})
	b.end()
	if err != nil && (ctx.Err() != nil || fl.firstErr() != nil) {
		return nil, fmt.Errorf("bench: storm: readmit: %w", err)
	}
	if err := deliveredBy(res.DeliveriesExpected, cfg.Server+" storm catch-up"); err != nil {
		return nil, err
	}
	close(stop)
	sampler.Wait()
	st.res.PeakRSSBytes = peak
	st.res.CPUSeconds, _ = sumProc(procCPU, pids[0], pids[1:])
	res.CPUSeconds = st.res.CPUSeconds
	return st, nil
}

// ServerCommand is a server that ssebench started itself, so that the
// storm scenario of ssebench run can kill and restart it: the command must
// serve addr and answer GET /healthz with 200 once ready.
type ServerCommand struct{ r *restarter }

// StartServerCommand starts argv (no shell) nodes times on addr and waits
// until addr answers /healthz and every process listens on its port: with
// nodes > 1 the command must share the port (SO_REUSEPORT, e.g. sseloop
// --reuseport on a shared store). Every restart runs the same argv.
func StartServerCommand(ctx context.Context, argv []string, addr string, nodes int) (*ServerCommand, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: empty server command", ErrBadConfig)
	}
	mk := func(string) *exec.Cmd { return exec.Command(argv[0], argv[1:]...) }
	r := &restarter{name: argv[0], mk: mk, nodes: max(nodes, 1), addr: addr}
	srvs, err := startNodes(ctx, argv[0], mk, addr, r.nodes)
	if err != nil {
		return nil, err
	}
	r.srvs = srvs
	return &ServerCommand{r: r}, nil
}

// Restarter returns the Restarter for RunConfig.
func (c *ServerCommand) Restarter() Restarter { return c.r }

// PIDs are the running server processes (none between kill and restart).
func (c *ServerCommand) PIDs() []int { return pidsOf(c.r.srvs) }

// Stop ends the servers (SIGTERM, then SIGKILL after 10 s) and returns the
// tail of their output.
func (c *ServerCommand) Stop() string {
	out := c.r.log
	for _, s := range c.r.srvs {
		out += s.stop()
	}
	c.r.srvs = nil
	return out
}
