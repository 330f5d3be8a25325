package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Server labels used by Compare.
const (
	ServerSseloop  = "sseloop"
	ServerBaseline = "baseline"
	// ServerMercure is the Mercure hub library (bench/mercurepeer) with
	// its local transport: in memory, no history.
	ServerMercure = "mercure"
	// ServerMercureBolt is the same with the bolt transport: every update
	// written to a bbolt file (history, like sseloop's store).
	ServerMercureBolt = "mercure-bolt"
	// ServerSseloopRef is a second sseloop binary (CompareConfig.SseloopRefBin,
	// e.g. a build of main), run with the same flags: before and after a
	// change, in one run.
	ServerSseloopRef = "sseloop-ref"
)

// Servers lists the servers Compare knows, in table order.
var Servers = []string{ServerSseloop, ServerSseloopRef, ServerBaseline, ServerMercure, ServerMercureBolt}

// DefaultServers is what Compare runs when CompareConfig.Servers is empty.
var DefaultServers = []string{ServerSseloop, ServerBaseline}

// CompareConfig describes a side-by-side run.
type CompareConfig struct {
	// Run holds the load parameters; Target, Server, Scenario and PID are
	// set per run.
	Run       RunConfig
	Scenarios []string // default: all
	Servers   []string // default: DefaultServers
	JSON      string   // results file, "" = none
	Chart     string   // SVG file, "" = none
	Out       io.Writer
	// SseloopBin is the sseloop binary; "" builds
	// github.com/sseloop/sseloop/cmd/sseloop with the go command.
	SseloopBin string
	// SseloopArgs are extra flags for sseloop (and sseloop-ref).
	SseloopArgs []string
	// SseloopRefBin is the binary of the sseloop-ref server; required when
	// Servers lists it.
	SseloopRefBin string
	// MercureBin is the bench/mercurepeer binary; "" builds it with the go
	// command from its own module (bench/mercurepeer/go.mod, next to this
	// package's source), which needs the module proxy or a filled module
	// cache on first use.
	MercureBin string
}

// Compare starts each server as a separate process, a fresh one for every
// scenario so that memory is measured from a clean start, runs each
// scenario against every server in turn, prints the table to Out and
// writes the JSON and chart files.
func Compare(ctx context.Context, cfg CompareConfig) ([]*Result, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if len(cfg.Scenarios) == 0 {
		cfg.Scenarios = Scenarios
	}
	for _, s := range cfg.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return nil, fmt.Errorf("%w: scenario %q", ErrBadConfig, s)
		}
	}
	if cfg.Run.Conns <= 0 {
		return nil, fmt.Errorf("%w: conns must be > 0", ErrBadConfig)
	}
	if len(cfg.Servers) == 0 {
		cfg.Servers = DefaultServers
	}
	for i, s := range cfg.Servers {
		if !slices.Contains(Servers, s) || slices.Contains(cfg.Servers[:i], s) {
			return nil, fmt.Errorf("%w: server %q (want some of %s, once each)", ErrBadConfig, s, strings.Join(Servers, ", "))
		}
	}
	if slices.Contains(cfg.Servers, ServerSseloopRef) && cfg.SseloopRefBin == "" {
		return nil, fmt.Errorf("%w: server %s needs its binary (--sseloop-ref)", ErrBadConfig, ServerSseloopRef)
	}
	if cfg.Run.Stderr == nil {
		cfg.Run.Stderr = os.Stderr
	}
	tmp, err := os.MkdirTemp("", "ssebench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	uses := func(names ...string) bool {
		return slices.ContainsFunc(cfg.Servers, func(s string) bool { return slices.Contains(names, s) })
	}
	bin := cfg.SseloopBin
	if bin == "" && uses(ServerSseloop) {
		bin = filepath.Join(tmp, "sseloop")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/sseloop/sseloop/cmd/sseloop")
		build.Stderr = cfg.Run.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("bench: go build sseloop: %w", err)
		}
	}
	mercureBin := cfg.MercureBin
	if mercureBin == "" && uses(ServerMercure, ServerMercureBolt) {
		mercureBin = filepath.Join(tmp, "mercurepeer")
		if err := BuildMercurePeer(ctx, mercureBin, cfg.Run.Stderr); err != nil {
			return nil, err
		}
	}
	jwtKey := rand.Text()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// Each start function gets the run number: a restart (storm) of the
	// same run reuses the same data file.
	sseloop := func(bin string) func(addr string, run int) *exec.Cmd {
		return func(addr string, run int) *exec.Cmd {
			args := []string{"--listen", addr, "--log.level", "warn"}
			if slices.Contains(cfg.Scenarios, ScenarioStorm) {
				// History on a file, as in production, so that a
				// restarted server still has what its clients missed.
				args = append(args, "--store.path", filepath.Join(tmp, fmt.Sprintf("sseloop-%d.db", run)), "--store.sync", "everysecond")
			}
			return exec.Command(bin, append(args, cfg.SseloopArgs...)...)
		}
	}
	start := map[string]func(addr string, run int) *exec.Cmd{
		ServerSseloop:    sseloop(bin),
		ServerSseloopRef: sseloop(cfg.SseloopRefBin),
		ServerBaseline: func(addr string, _ int) *exec.Cmd {
			c := exec.Command(exe)
			c.Env = append(os.Environ(), envRole+"=baseline", envListen+"="+addr)
			return c
		},
		ServerMercure: func(addr string, _ int) *exec.Cmd {
			c := exec.Command(mercureBin, "--listen", addr, "--transport", "local")
			c.Env = append(os.Environ(), "MERCUREPEER_JWT_KEY="+jwtKey)
			return c
		},
		ServerMercureBolt: func(addr string, run int) *exec.Cmd {
			// A new file per run: every scenario starts empty.
			db := filepath.Join(tmp, fmt.Sprintf("mercure-%d.db", run))
			c := exec.Command(mercureBin, "--listen", addr, "--transport", "bolt", "--bolt", db)
			c.Env = append(os.Environ(), "MERCUREPEER_JWT_KEY="+jwtKey)
			return c
		},
	}
	var results []*Result
	run := 0
	for _, scen := range cfg.Scenarios {
		for _, name := range cfg.Servers {
			run++
			mk := func(addr string) *exec.Cmd { return start[name](addr, run) }
			srv, err := startServer(ctx, name, mk, "")
			if err != nil {
				return results, err
			}
			rc := cfg.Run
			rc.Target, rc.Server, rc.Scenario, rc.PID = "http://"+srv.addr, name, scen, srv.cmd.Process.Pid
			var rs *restarter
			if scen == ScenarioStorm {
				rs = &restarter{name: name, mk: mk, srvs: []*server{srv}}
				rc.Restarter = rs
			}
			rc.Proto, rc.JWTKey = ProtoSseloop, ""
			if name == ServerMercure || name == ServerMercureBolt {
				rc.Proto, rc.JWTKey = ProtoMercure, jwtKey
			}
			res, err := Run(ctx, rc)
			logTail := ""
			if rs != nil {
				srv, logTail = nil, rs.log
				if len(rs.srvs) > 0 {
					srv = rs.srvs[0]
				}
			}
			if srv != nil {
				logTail += srv.stop()
			}
			if err != nil {
				return results, fmt.Errorf("%s %s: %w (server log: %s)", name, scen, err, logTail)
			}
			res.ServerLog = logTail
			results = append(results, res)
		}
	}
	WriteTable(cfg.Out, results)
	if cfg.JSON != "" {
		if err := WriteJSON(cfg.JSON, results); err != nil {
			return results, err
		}
	}
	if cfg.Chart != "" {
		if err := os.WriteFile(cfg.Chart, Chart(results), 0o644); err != nil {
			return results, err
		}
	}
	return results, nil
}

// BuildMercurePeer builds bench/mercurepeer, a module of its own, into bin
// with the go command. The module is found next to this package's source
// (runtime caller), so the working directory does not matter.
func BuildMercurePeer(ctx context.Context, bin string, stderr io.Writer) error {
	_, file, _, ok := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "mercurepeer")
	if !ok {
		return errors.New("bench: mercurepeer source not found")
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return fmt.Errorf("bench: mercurepeer source: %w (pass its binary instead)", err)
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOWORK=off")
	build.Stderr = stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("bench: go build mercurepeer: %w", err)
	}
	return nil
}

// server is a started server process.
type server struct {
	cmd  *exec.Cmd
	addr string
	log  *tailBuffer
	done chan struct{}
}

// restarter kills and restarts a server on its address (storm): one
// process in compare, nodes processes sharing the address (SO_REUSEPORT)
// with ssebench run --server-nodes.
type restarter struct {
	name  string
	mk    func(addr string) *exec.Cmd
	nodes int       // processes on addr; 0 means 1
	srvs  []*server // nil between Kill and a successful Start
	addr  string
	log   string // output of the killed processes
}

// Kill sends SIGKILL to every process at once, then waits for them.
func (r *restarter) Kill() error {
	for _, s := range r.srvs {
		if err := s.cmd.Process.Kill(); err != nil {
			return err
		}
	}
	r.log = ""
	for _, s := range r.srvs {
		<-s.done
		r.addr = s.addr
		r.log += strings.TrimSpace(s.log.String()) + "\n[SIGKILL, restarted]\n"
	}
	r.srvs = nil
	return nil
}

func (r *restarter) Start(ctx context.Context) ([]int, error) {
	srvs, err := startNodes(ctx, r.name, r.mk, r.addr, max(r.nodes, 1))
	if err != nil {
		return nil, err
	}
	r.srvs = srvs
	return pidsOf(srvs), nil
}

func pidsOf(srvs []*server) []int {
	pids := make([]int, len(srvs))
	for i, s := range srvs {
		pids[i] = s.cmd.Process.Pid
	}
	return pids
}

// startNodes starts n processes of mk on addr ("" = a free loopback port):
// the first until /healthz answers, each further one until it listens on
// the port (they share it with SO_REUSEPORT, so /healthz cannot tell them
// apart).
func startNodes(ctx context.Context, name string, mk func(addr string) *exec.Cmd, addr string, n int) ([]*server, error) {
	first, err := startServer(ctx, name, mk, addr)
	if err != nil {
		return nil, err
	}
	srvs := []*server{first}
	fail := func(err error) ([]*server, error) {
		for _, s := range srvs {
			s.stop()
		}
		return nil, err
	}
	_, portS, _ := net.SplitHostPort(first.addr)
	port, _ := strconv.Atoi(portS)
	for len(srvs) < n {
		s, err := spawnServer(name, mk, first.addr)
		if err != nil {
			return fail(err)
		}
		srvs = append(srvs, s)
		err = waitFor(ctx, 30*time.Second, func() (bool, error) {
			select {
			case <-s.done:
				return false, fmt.Errorf("bench: %s node %d exited at start: %s", name, len(srvs), s.log.String())
			default:
			}
			return listensOn(s.cmd.Process.Pid, port), nil
		})
		if err != nil {
			return fail(err)
		}
	}
	return srvs, nil
}

func spawnServer(name string, mk func(addr string) *exec.Cmd, addr string) (*server, error) {
	cmd := mk(addr)
	s := &server{cmd: cmd, addr: addr, log: &tailBuffer{max: 8 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(s.done) }()
	return s, nil
}

// startServer starts a server on addr ("" = a free loopback port) and
// waits until its /healthz answers 200.
func startServer(ctx context.Context, name string, mk func(addr string) *exec.Cmd, addr string) (*server, error) {
	if addr == "" {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	s, err := spawnServer(name, mk, addr)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: time.Second}
	err = waitFor(ctx, 30*time.Second, func() (bool, error) {
		select {
		case <-s.done:
			return false, fmt.Errorf("bench: %s exited at start: %s", name, s.log.String())
		default:
		}
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// stop sends SIGTERM, kills after 10 s, and returns the tail of the
// server's output (and its exit status when it failed).
func (s *server) stop() string {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		s.log.Write([]byte("[killed after 10 s without exiting on SIGTERM]\n"))
	}
	if st := s.cmd.ProcessState; st != nil && !st.Success() && !strings.Contains(s.log.String(), "[killed") {
		s.log.Write([]byte("[exit: " + st.String() + "]\n"))
	}
	return strings.TrimSpace(s.log.String())
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// WriteJSON writes results as an indented JSON array.
func WriteJSON(path string, results []*Result) error {
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteResult prints one result as aligned name/value lines.
func WriteResult(w io.Writer, r *Result) {
	tw := &table{}
	tw.row("server", r.Server)
	tw.row("scenario", r.Scenario)
	for _, m := range metrics(r.Scenario) {
		tw.row(m.name, m.format(m.get(r)))
	}
	tw.write(w)
	writeConnectRate(w, r.Connect)
	writeNodes(w, r.Nodes)
	writeNotes(w, []*Result{r})
}

// metric is one table row.
type metric struct {
	name   string
	get    func(*Result) float64
	format func(float64) string
	// ratio: print sseloop/other for each other server
	ratio bool
}

// idleCPUPercent is the server's CPU over the idle window as a percentage
// of one core.
func idleCPUPercent(r *Result) float64 {
	if r.QuietSeconds <= 0 {
		return 0
	}
	return r.CPUSeconds / r.QuietSeconds * 100
}

func fInt(v float64) string    { return fmt.Sprintf("%.0f", v) }
func fFloat3(v float64) string { return fmt.Sprintf("%.3f", v) }

// storm reads a storm figure (0 for other scenarios).
func storm(get func(*StormResult) float64) func(*Result) float64 {
	return func(r *Result) float64 {
		if r.Storm == nil {
			return 0
		}
		return get(r.Storm)
	}
}
func fMS(v float64) string    { return fmt.Sprintf("%.2f", v) }
func fFloat(v float64) string { return fmt.Sprintf("%.2f", v) }

func metrics(scenario string) []metric {
	common := []metric{
		{"connected", func(r *Result) float64 { return float64(r.Connected) }, fInt, false},
		{"connects/s", func(r *Result) float64 { return r.Connect.Mean }, fInt, true},
		{"host load avg", func(r *Result) float64 { return r.LoadAvg }, fFloat, false},
	}
	delivery := []metric{
		{"events", func(r *Result) float64 { return float64(r.Events) }, fInt, false},
		{"deliveries expected", func(r *Result) float64 { return float64(r.DeliveriesExpected) }, fInt, false},
		{"deliveries received", func(r *Result) float64 { return float64(r.DeliveriesReceived) }, fInt, false},
		{"lost", func(r *Result) float64 { return float64(r.Lost) }, fInt, false},
		{"duplicates", func(r *Result) float64 { return float64(r.Duplicates) }, fInt, false},
		{"latency p50 ms", func(r *Result) float64 { return r.Latency.P50 }, fMS, true},
		{"latency p90 ms", func(r *Result) float64 { return r.Latency.P90 }, fMS, true},
		{"latency p99 ms", func(r *Result) float64 { return r.Latency.P99 }, fMS, true},
		{"latency p99.9 ms", func(r *Result) float64 { return r.Latency.P999 }, fMS, true},
		{"latency max ms", func(r *Result) float64 { return r.Latency.Max }, fMS, true},
		{"offered events/s", func(r *Result) float64 { return r.OfferedRate }, fFloat, false},
		{"deliveries/s", func(r *Result) float64 { return r.DeliveriesPerSecond }, fInt, true},
		{"server cpu s", func(r *Result) float64 { return r.CPUSeconds }, fFloat, true},
		{"cpu us/delivery", func(r *Result) float64 { return r.CPUPerDelivery }, fFloat, true},
		{"server rss MiB", func(r *Result) float64 { return float64(r.RSSBytes) / (1 << 20) }, fFloat, true},
	}
	switch scenario {
	case ScenarioIdle:
		return append(common,
			metric{"server rss MiB", func(r *Result) float64 { return float64(r.RSSBytes) / (1 << 20) }, fFloat, true},
			metric{"rss per conn B", func(r *Result) float64 { return r.RSSPerConn }, fInt, true},
			metric{"idle cpu s", func(r *Result) float64 { return r.CPUSeconds }, fFloat, true},
			metric{"idle cpu % core", idleCPUPercent, fFloat, true},
		)
	case ScenarioHold:
		return append(append(common,
			metric{"server rss MiB", func(r *Result) float64 { return float64(r.RSSBytes) / (1 << 20) }, fFloat, true},
			metric{"rss per conn B", func(r *Result) float64 { return r.RSSPerConn }, fInt, true},
			metric{"MemAvailable drop MiB", func(r *Result) float64 { return float64(r.MemAvailDropBytes) / (1 << 20) }, fFloat, false},
			metric{"MemAvailable drop per conn B", func(r *Result) float64 { return r.MemAvailDropPerConn }, fInt, false},
			metric{"idle cpu s", func(r *Result) float64 { return r.IdleCPUSeconds }, fFloat, true},
			metric{"idle cpu % core", func(r *Result) float64 {
				if r.QuietSeconds <= 0 {
					return 0
				}
				return r.IdleCPUSeconds / r.QuietSeconds * 100
			}, fFloat, true},
			metric{"shared deliveries expected", func(r *Result) float64 { return float64(r.SharedDeliveries) }, fInt, false},
			metric{"shared deliveries received", func(r *Result) float64 { return float64(r.SharedReceived) }, fInt, false},
			metric{"sampled per-user keys", func(r *Result) float64 { return float64(r.SampleKeys) }, fInt, false},
		), delivery...)
	case ScenarioStorm:
		return append(common,
			metric{"events before + while away", func(r *Result) float64 { return float64(r.Events) }, fInt, false},
			metric{"deliveries expected", func(r *Result) float64 { return float64(r.DeliveriesExpected) }, fInt, false},
			metric{"deliveries received", func(r *Result) float64 { return float64(r.DeliveriesReceived) }, fInt, false},
			metric{"lost", func(r *Result) float64 { return float64(r.Lost) }, fInt, false},
			metric{"duplicates", func(r *Result) float64 { return float64(r.Duplicates) }, fInt, false},
			metric{"gap events (announced loss)", func(r *Result) float64 { return float64(r.Gaps) }, fInt, false},
			metric{"missed expected", storm(func(s *StormResult) float64 { return float64(s.MissedExpected) }), fInt, false},
			metric{"missed received", storm(func(s *StormResult) float64 { return float64(s.MissedReceived) }), fInt, false},
			metric{"restart to healthy s", storm(func(s *StormResult) float64 { return s.RestartSeconds }), fFloat3, true},
			metric{"readmitted", storm(func(s *StormResult) float64 { return float64(s.Readmitted) }), fInt, false},
			metric{"all readmitted s", storm(func(s *StormResult) float64 { return s.ReadmitSeconds }), fFloat3, true},
			metric{"all caught up s", storm(func(s *StormResult) float64 { return s.CatchupSeconds }), fFloat3, true},
			metric{"reconnect errors", storm(func(s *StormResult) float64 { return float64(s.ReconnectErrors) }), fInt, false},
			metric{"peak rss MiB", storm(func(s *StormResult) float64 { return float64(s.PeakRSSBytes) / (1 << 20) }), fFloat, true},
			metric{"server cpu s", storm(func(s *StormResult) float64 { return s.CPUSeconds }), fFloat, true},
			metric{"latency p50 ms", func(r *Result) float64 { return r.Latency.P50 }, fMS, false},
			metric{"latency max ms", func(r *Result) float64 { return r.Latency.Max }, fMS, false},
		)
	case ScenarioChurn:
		return append(append(common, delivery...),
			metric{"churn opened", func(r *Result) float64 { return float64(r.ChurnOpened) }, fInt, false},
			metric{"churn errors", func(r *Result) float64 { return float64(r.ChurnErrors) }, fInt, false},
			metric{"dropped streams", func(r *Result) float64 { return float64(r.DroppedStreams) }, fInt, false},
		)
	}
	return append(append(common, delivery...),
		metric{"dropped streams", func(r *Result) float64 { return float64(r.DroppedStreams) }, fInt, false})
}

// WriteTable prints results side by side per scenario, one column per
// server in the order of first appearance, then sseloop/other ratios.
func WriteTable(w io.Writer, results []*Result) {
	servers := resultServers(results)
	var others []string
	if slices.Contains(servers, ServerSseloop) {
		for _, s := range servers {
			if s != ServerSseloop {
				others = append(others, s)
			}
		}
	}
	head := append([]string{"scenario", "metric"}, servers...)
	for _, o := range others {
		head = append(head, ServerSseloop+"/"+o)
	}
	tw := &table{}
	tw.row(head...)
	for _, scen := range AllScenarios {
		rs := make([]*Result, len(servers))
		found := false
		for i, s := range servers {
			rs[i] = find(results, s, scen)
			found = found || rs[i] != nil
		}
		if !found {
			continue
		}
		for _, m := range metrics(scen) {
			cells := []string{scen, m.name}
			for _, r := range rs {
				cell := "-"
				if r != nil {
					cell = m.format(m.get(r))
				}
				cells = append(cells, cell)
			}
			a := find(results, ServerSseloop, scen)
			for _, o := range others {
				cell := ""
				if b := find(results, o, scen); m.ratio && a != nil && b != nil && m.get(b) != 0 {
					cell = fmt.Sprintf("%.3f", m.get(a)/m.get(b))
				}
				cells = append(cells, cell)
			}
			tw.row(cells...)
		}
	}
	tw.write(w)
	fmt.Fprintln(w, ratioNote)
	writeNotes(w, results)
}

// ratioNote explains the ratio columns under the comparison table.
const ratioNote = "ratio = sseloop / that server: below 1 means sseloop needed less (latency, CPU, memory), " +
	"which is better; for deliveries/s, above 1 is better."

// resultServers lists the servers of results in order of first appearance.
func resultServers(results []*Result) []string {
	var servers []string
	for _, r := range results {
		if !slices.Contains(servers, r.Server) {
			servers = append(servers, r.Server)
		}
	}
	return servers
}

// writeNotes prints errors, and the server's own output only when the run
// shows a failure (errors, lost or duplicate events, dropped streams):
// start-up warnings of a healthy run are not news.
func writeNotes(w io.Writer, results []*Result) {
	for _, r := range results {
		var notes []string
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			notes = append(notes, fmt.Sprintf("%s x%d", k, r.Errors[k]))
		}
		if r.NoID > 0 {
			notes = append(notes, fmt.Sprintf("%d events without id", r.NoID))
		}
		if r.BadData > 0 {
			notes = append(notes, fmt.Sprintf("%d events with unexpected data", r.BadData))
		}
		if len(notes) > 0 {
			fmt.Fprintf(w, "note: %s %s: %s\n", r.Server, r.Scenario, strings.Join(notes, "; "))
		}
		failed := len(notes) > 0 || r.Lost > 0 || r.Gaps > 0 || r.Duplicates > 0 || r.DroppedStreams > 0 || r.Connected < r.Conns
		if r.ServerLog != "" && failed {
			log := r.ServerLog
			if len(log) > 600 {
				log = "..." + log[len(log)-600:]
			}
			fmt.Fprintf(w, "note: %s %s server output:\n%s\n", r.Server, r.Scenario, log)
		}
	}
}

func find(results []*Result, server, scenario string) *Result {
	for _, r := range results {
		if r.Server == server && r.Scenario == scenario {
			return r
		}
	}
	return nil
}

// table aligns columns: the first two left, the rest right.
type table struct{ rows [][]string }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		var line strings.Builder
		for i, c := range r {
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", widths[i]-len(c))
			if i < 2 {
				line.WriteString(c + pad)
			} else {
				line.WriteString(pad + c)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	_, _ = io.WriteString(w, b.String())
}
