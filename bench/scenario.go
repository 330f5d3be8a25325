package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Scenarios.
const (
	ScenarioIdle       = "idle"
	ScenarioFanout     = "fanout"
	ScenarioThroughput = "throughput"
	ScenarioChurn      = "churn"
	// ScenarioStorm kills the server (SIGKILL), restarts it on the same
	// data, publishes while the clients are away and lets every client
	// reconnect at once with its Last-Event-ID. It needs a Restarter, so
	// compare runs it (only when asked: --scenarios storm).
	ScenarioStorm = "storm"
	// ScenarioHold holds Conns streams, each on its own per-user key and
	// on one shared key, measures memory and idle CPU, then broadcasts
	// Events events to the shared key (one at a time, each once the
	// previous reached everyone) and one event to each of Sample per-user
	// keys. bench/million.sh runs it across many nodes.
	ScenarioHold = "hold"
)

// Scenarios lists the scenarios compare runs by default, in order.
var Scenarios = []string{ScenarioIdle, ScenarioFanout, ScenarioThroughput, ScenarioChurn}

// AllScenarios is Scenarios and the storm, in table order.
var AllScenarios = append(slices.Clip(Scenarios), ScenarioStorm, ScenarioHold)

// Restarter kills and restarts the server under test (storm scenario).
type Restarter interface {
	// Kill ends the server with SIGKILL and waits until it is gone.
	Kill() error
	// Start starts it again on the same address and data and returns
	// once it answers; pids are the new processes (one per node).
	Start(ctx context.Context) (pids []int, err error)
}

// ErrBadConfig means a RunConfig or CompareConfig value is invalid.
var ErrBadConfig = errors.New("bench: bad configuration")

// perProcessConns is how many connections one worker holds: the open-files
// cap of this machine is 20,000 per process, minus headroom.
const perProcessConns = 18000

// perSource is how many connections a worker makes from one source address.
const perSource = 5000

// RunConfig describes one scenario run against one server. Zero values
// take the scenario's default, listed per field.
type RunConfig struct {
	Target   string // base URL, e.g. http://127.0.0.1:8080
	Server   string // label in the result; default the target's host:port
	Scenario string
	// Proto is the API the server speaks: ProtoSseloop (default; the
	// baseline too) or ProtoMercure.
	Proto string
	// JWTKey is the HS256 key publisher JWTs are signed with (Mercure).
	JWTKey string
	Conns  int // stable connections
	// Keys: idle: Conns (one key per stream, like per-user keys);
	// fanout: 1; throughput: 100; churn: 10.
	Keys int
	// Events is how many events fanout publishes (20).
	Events int
	// Rate is events per second: throughput 2000, churn 20. Fanout sends
	// each event once the previous one reached every subscriber.
	Rate float64
	// Duration of the publishing phase of throughput and churn (10s).
	Duration time.Duration
	// ChurnRate is connections opened and closed per second in churn (100);
	// ChurnHold how long each stays open (1s).
	ChurnRate float64
	ChurnHold time.Duration
	// Settle is the pause after connecting before memory is read (2s);
	// Quiet the idle CPU window (5s).
	Settle time.Duration
	Quiet  time.Duration
	// PID of the server, for RSS and CPU from /proc; 0 = not measured.
	PID int
	// MorePIDs are further server processes (several nodes behind one port
	// with SO_REUSEPORT): RSS and CPU are summed over PID and these.
	MorePIDs []int
	// Procs: 0 = automatic (in this process up to 18,000 connections, else
	// one worker process per 18,000); P > 0 = P worker processes, worker i
	// dialing from 127.0.0.(2+i).
	Procs int
	// ConnectTimeout bounds one connection attempt, from connect to a
	// complete response head (10s); a stream that misses it is failed.
	ConnectTimeout time.Duration
	// Inflight bounds connection attempts in flight per worker (256).
	Inflight int
	// Senders is the number of concurrent trigger senders (16; 256 with
	// OpenLoop).
	Senders int
	// OpenLoop makes throughput and churn offer every server the same load:
	// each event is due at its place in the Rate schedule and is stamped
	// with that due time, not with the moment a sender got to it, so a
	// wait for a free sender (a server slow to answer triggers) counts as
	// latency instead of lowering the offered rate. Default (false): a
	// closed loop of Senders senders, each waiting for the answer before
	// its next event; a server that answers slowly is offered less
	// (offered_events_per_second), and its latency is measured at that
	// lower load.
	OpenLoop bool
	// Sample is how many per-user keys get one event after the broadcast
	// (hold; default min(1000, Keys)).
	Sample int
	// StormLimit bounds the wait until every client is re-admitted after
	// the restart (storm; default 60s).
	StormLimit time.Duration
	// Restarter restarts the server (storm only).
	Restarter Restarter
	// Progress gets a progress bar (nil = none); Stderr the workers' stderr.
	Progress io.Writer
	Stderr   io.Writer
}

func (c *RunConfig) defaults() error {
	if !slices.Contains(AllScenarios, c.Scenario) {
		return fmt.Errorf("%w: scenario %q (want %s)", ErrBadConfig, c.Scenario, strings.Join(AllScenarios, ", "))
	}
	if c.Scenario == ScenarioStorm && c.Restarter == nil {
		return fmt.Errorf("%w: the storm scenario restarts the server: give ssebench run --server-cmd, or use ssebench compare --scenarios storm", ErrBadConfig)
	}
	if c.Conns <= 0 {
		return fmt.Errorf("%w: conns must be > 0", ErrBadConfig)
	}
	switch c.Proto {
	case "":
		c.Proto = ProtoSseloop
	case ProtoSseloop:
	case ProtoMercure:
		if c.JWTKey == "" {
			return fmt.Errorf("%w: the mercure protocol needs a JWT key", ErrBadConfig)
		}
	default:
		return fmt.Errorf("%w: proto %q (want %s or %s)", ErrBadConfig, c.Proto, ProtoSseloop, ProtoMercure)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	deff := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	switch c.Scenario {
	case ScenarioIdle:
		def(&c.Keys, c.Conns)
	case ScenarioFanout:
		def(&c.Keys, 1)
		deff(&c.Rate, 1) // one trigger at a time
	case ScenarioThroughput:
		def(&c.Keys, min(100, c.Conns))
		deff(&c.Rate, 2000)
	case ScenarioChurn:
		def(&c.Keys, min(10, c.Conns))
		deff(&c.Rate, 20)
	case ScenarioHold:
		def(&c.Keys, c.Conns)
		def(&c.Events, 1)
		def(&c.Sample, min(1000, c.Keys))
		deff(&c.Rate, 1000)
		c.Sample = min(c.Sample, c.Keys)
	case ScenarioStorm:
		def(&c.Keys, min(100, c.Conns))
		defd(&c.StormLimit, time.Minute)
		def(&c.Events, 2*c.Keys) // per phase: two per key before, two while away
		deff(&c.Rate, 500)
		// Every client reconnects at once: no cap on attempts in flight.
		def(&c.Inflight, c.Conns)
	}
	def(&c.Events, 20)
	defd(&c.Duration, 10*time.Second)
	deff(&c.ChurnRate, 100)
	defd(&c.ChurnHold, time.Second)
	defd(&c.Settle, 2*time.Second)
	defd(&c.Quiet, 5*time.Second)
	def(&c.Inflight, 256)
	defd(&c.ConnectTimeout, 10*time.Second)
	if c.OpenLoop {
		// Enough that the senders are not the bottleneck: at 2,000
		// events/s a 100 ms answer keeps 200 in flight.
		def(&c.Senders, 256)
	}
	def(&c.Senders, 16)
	if c.Procs < 0 {
		return fmt.Errorf("%w: procs must be >= 0", ErrBadConfig)
	}
	if c.Procs > 250 {
		return fmt.Errorf("%w: procs must be <= 250 (one source address each)", ErrBadConfig)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	u, err := url.Parse(c.Target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("%w: target %q must be http://host:port", ErrBadConfig, c.Target)
	}
	if c.Server == "" {
		c.Server = u.Host
	}
	return nil
}

// Result is the outcome of one scenario against one server.
type Result struct {
	Server        string  `json:"server"`
	Scenario      string  `json:"scenario"`
	Target        string  `json:"target"`
	Conns         int     `json:"conns"`
	Connected     int     `json:"connected"`
	ConnectFailed int     `json:"connect_failed"`
	Keys          int     `json:"keys"`
	Procs         int     `json:"procs"`
	RSSBefore     int64   `json:"rss_before_bytes"`
	RSSBytes      int64   `json:"rss_bytes"`
	RSSPerConn    float64 `json:"rss_per_conn_bytes"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	// QuietSeconds is the idle CPU window (idle scenario).
	QuietSeconds float64 `json:"quiet_seconds,omitempty"`
	// CPUPerDelivery is server CPU microseconds per delivered event.
	CPUPerDelivery      float64          `json:"cpu_us_per_delivery"`
	Events              int64            `json:"events"`
	TriggerErrors       int64            `json:"trigger_errors"`
	OfferedRate         float64          `json:"offered_events_per_second"`
	DeliveriesExpected  int64            `json:"deliveries_expected"`
	DeliveriesReceived  int64            `json:"deliveries_received"`
	Lost                int64            `json:"lost"`
	Duplicates          int64            `json:"duplicates"`
	Latency             LatencyMS        `json:"latency_ms"`
	DeliveriesPerSecond float64          `json:"deliveries_per_second"`
	DroppedStreams      int64            `json:"dropped_streams"`
	NoID                int64            `json:"events_without_id"`
	BadData             int64            `json:"events_bad_data"`
	Heartbeats          int64            `json:"heartbeats"`
	ChurnOpened         int64            `json:"churn_opened,omitempty"`
	ChurnOK             int64            `json:"churn_ok,omitempty"`
	ChurnErrors         int64            `json:"churn_errors,omitempty"`
	ChurnDeliveries     int64            `json:"churn_deliveries,omitempty"`
	Errors              map[string]int64 `json:"errors,omitempty"`
	DurationSeconds     float64          `json:"duration_seconds"`
	// LoadAvg is the host's 1-minute load average when the run ended
	// (0 if unknown): the server shares the machine, so a busy host
	// shows up in latency and CPU.
	LoadAvg   float64 `json:"load_avg,omitempty"`
	ServerLog string  `json:"server_log,omitempty"`
	// Hold scenario: the idle CPU window's server CPU (CPUSeconds is the
	// broadcast's), the machine's MemAvailable drop from before the
	// workers started until the streams were held, per connection too,
	// and the deliveries of the broadcast to the shared key.
	IdleCPUSeconds      float64 `json:"idle_cpu_seconds,omitempty"`
	MemAvailDropBytes   int64   `json:"mem_available_drop_bytes,omitempty"`
	MemAvailDropPerConn float64 `json:"mem_available_drop_per_conn_bytes,omitempty"`
	SharedDeliveries    int64   `json:"shared_deliveries_expected,omitempty"`
	SharedReceived      int64   `json:"shared_deliveries_received,omitempty"`
	SampleKeys          int     `json:"sample_keys,omitempty"`
	// Nodes: per server process (PID, then MorePIDs) while the streams
	// are held: RSS and open descriptors (streams plus a few).
	Nodes []NodeStat `json:"nodes,omitempty"`
	// Connect is how fast the stable streams were established.
	Connect ConnectRate `json:"connect"`
	// Gaps counts "gap" events: loss the server announced (a stream
	// resumed from an id it no longer has). Not counted in Lost.
	Gaps int64 `json:"gaps"`
	// Storm holds the storm scenario's own figures.
	Storm *StormResult `json:"storm,omitempty"`
}

// Run runs one scenario against a running server.
func Run(ctx context.Context, cfg RunConfig) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	began := time.Now()
	u, _ := url.Parse(cfg.Target)
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "80")
	}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	prefix := "sb" + hex.EncodeToString(rnd[:]) + "-" + cfg.Scenario + "-"
	keys := make([]string, cfg.Keys)
	for k := range keys {
		keys[k] = keyName(prefix, k)
	}
	res := &Result{Server: cfg.Server, Scenario: cfg.Scenario, Target: cfg.Target, Conns: cfg.Conns, Keys: cfg.Keys}

	procs, inProcess := cfg.Procs, false
	if procs == 0 {
		procs = (cfg.Conns + perProcessConns - 1) / perProcessConns
		inProcess = procs == 1
	}
	res.Procs = procs
	if inProcess {
		res.Procs = 0
	}
	specs := make([]WorkerSpec, procs)
	churnRate := 0.0
	if cfg.Scenario == ScenarioChurn {
		churnRate = cfg.ChurnRate / float64(procs)
	}
	f := 0
	for i := range specs {
		n := cfg.Conns / procs
		if i < cfg.Conns%procs {
			n++
		}
		specs[i] = WorkerSpec{
			Target: host, Proto: cfg.Proto, KeyPrefix: prefix, Keys: cfg.Keys, First: f, Conns: n,
			Inflight: cfg.Inflight, ConnectTimeout: cfg.ConnectTimeout,
			ChurnRate: churnRate, ChurnHold: cfg.ChurnHold, MaxLife: time.Hour,
			Resume: cfg.Scenario == ScenarioStorm,
		}
		if cfg.Scenario == ScenarioHold {
			specs[i].Shared = prefix + "shared"
		}
		if !inProcess {
			specs[i].Source = "127.0.0." + strconv.Itoa(2+i)
			specs[i].Spread = (n + perSource - 1) / perSource
		}
		f += n
	}

	if cfg.PID > 0 {
		var err error
		if res.RSSBefore, err = sumProc(procRSS, cfg.PID, cfg.MorePIDs); err != nil {
			return nil, fmt.Errorf("bench: server pid %d: %w", cfg.PID, err)
		}
	}
	memBefore := memAvailable()
	fl, err := startFleet(specs, cfg.Keys, inProcess, cfg.Stderr)
	if err != nil {
		return nil, err
	}
	defer fl.kill()

	// Connect phase: bounded by the per-attempt timeout times the number
	// of attempt waves, plus slack.
	waves := (cfg.Conns/max(1, procs))/cfg.Inflight + 1
	limit := time.Duration(waves)*cfg.ConnectTimeout + 30*time.Second
	// and at least 500 connections per second over all.
	limit = max(limit, time.Duration(cfg.Conns/500)*time.Second)
	bar := newBar(cfg.Progress, cfg.Server+" "+cfg.Scenario+" connect", int64(cfg.Conns))
	cr := newConnectRate(cfg.Conns)
	err = waitForEvery(ctx, limit, 20*time.Millisecond, func() (bool, error) {
		reps := fl.snapshot()
		settled := true
		var done, connected int64
		for _, r := range reps {
			settled = settled && r.Settled
			done += int64(r.Connected + r.Failed)
			connected += int64(r.Connected)
		}
		cr.observe(connected)
		bar.set(done)
		return settled, fl.firstErr()
	})
	bar.end()
	res.Connect = cr.result()
	if err != nil {
		return nil, fmt.Errorf("bench: connect phase: %w", err)
	}
	perKey := fl.connPerKey()

	cpu := func() float64 {
		if cfg.PID <= 0 {
			return 0
		}
		v, _ := sumProc(procCPU, cfg.PID, cfg.MorePIDs)
		return v
	}
	rss := func() int64 {
		if cfg.PID <= 0 {
			return 0
		}
		v, _ := sumProc(procRSS, cfg.PID, cfg.MorePIDs)
		return v
	}
	var pub pubStats
	var storm *stormRun
	switch cfg.Scenario {
	case ScenarioStorm:
		if storm, err = runStorm(ctx, &cfg, fl, keys, perKey, res); err != nil {
			return nil, err
		}
		pub = storm.pub
	case ScenarioHold:
		if err := sleepCtx(ctx, cfg.Settle); err != nil {
			return nil, err
		}
		res.RSSBytes = rss()
		if cfg.PID > 0 {
			res.Nodes = nodeStats(append([]int{cfg.PID}, cfg.MorePIDs...))
		}
		if memBefore > 0 {
			res.MemAvailDropBytes = memBefore - memAvailable()
		}
		c0 := cpu()
		if err := sleepCtx(ctx, cfg.Quiet); err != nil {
			return nil, err
		}
		res.IdleCPUSeconds = cpu() - c0
		res.QuietSeconds = cfg.Quiet.Seconds()
		if pub, err = runHold(ctx, &cfg, fl, keys, perKey, res, cpu); err != nil {
			return nil, err
		}
	case ScenarioIdle:
		if err := sleepCtx(ctx, cfg.Settle); err != nil {
			return nil, err
		}
		res.RSSBytes = rss()
		c0 := cpu()
		if err := sleepCtx(ctx, cfg.Quiet); err != nil {
			return nil, err
		}
		res.CPUSeconds = cpu() - c0
		res.QuietSeconds = cfg.Quiet.Seconds()
	default:
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
		res.RSSBytes = rss()
		c0 := cpu()
		if cfg.Scenario == ScenarioChurn {
			fl.broadcast(cmdGo)
		}
		deliveredBy := func(expected int64, label string) {
			// Until all arrived, or nothing new for 3 s, or 60 s.
			bar := newBar(cfg.Progress, label, expected)
			var last int64
			lastChange := time.Now()
			_ = waitForEvery(ctx, 60*time.Second, 10*time.Millisecond, func() (bool, error) {
				var got int64
				for _, r := range fl.snapshot() {
					got += r.Received
				}
				bar.set(got)
				if got != last {
					last, lastChange = got, time.Now()
				}
				return got >= expected || time.Since(lastChange) > 3*time.Second, fl.firstErr()
			})
			bar.end()
		}
		expectedOf := func(p pubStats) (e int64) {
			for k, n := range p.sent {
				e += n * int64(perKey[k])
			}
			return e
		}
		if cfg.Scenario == ScenarioFanout {
			// Closed loop: each event is sent once the previous one
			// reached every subscriber, so the latency is the fan-out
			// itself, not a queue of events behind it.
			pub = pubStats{sent: make([]int64, len(keys))}
			quiet := cfg
			quiet.Progress = io.Discard
			for i := range cfg.Events {
				p := publish(ctx, quiet, keys, false, i, 1, 0)
				pub.merge(p)
				res.DeliveriesExpected = expectedOf(pub)
				deliveredBy(res.DeliveriesExpected, fmt.Sprintf("%s fanout event %d/%d", cfg.Server, i+1, cfg.Events))
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
			}
		} else {
			pub = publish(ctx, cfg, keys, false, 0, 0, cfg.Duration)
			res.DeliveriesExpected = expectedOf(pub)
			deliveredBy(res.DeliveriesExpected, cfg.Server+" "+cfg.Scenario+" deliver")
		}
		res.CPUSeconds = cpu() - c0
	}

	finals, err := fl.finals(30 * time.Second)
	if err != nil {
		return nil, err
	}
	var hist Hist
	var lastRecv int64
	res.Errors = make(map[string]int64)
	for _, r := range finals {
		res.Connected += r.Connected
		res.ConnectFailed += r.Failed
		res.DeliveriesReceived += r.Received
		res.Duplicates += r.Duplicates
		res.DroppedStreams += r.Dropped
		res.NoID += r.NoID
		res.BadData += r.BadData
		res.Heartbeats += r.Comments
		res.ChurnOpened += r.ChurnOpened
		res.ChurnOK += r.ChurnOK
		res.ChurnErrors += r.ChurnErrors
		res.ChurnDeliveries += r.ChurnDeliveries
		res.Gaps += r.Gaps
		res.SharedReceived += r.RecvShared
		if storm != nil {
			storm.add(r)
		}
		lastRecv = max(lastRecv, r.LastRecvNs)
		if r.Hist != nil {
			hist.Merge(r.Hist)
		}
		for k, v := range r.Errors {
			res.Errors[k] += v
		}
	}
	if len(res.Errors) == 0 {
		res.Errors = nil
	}
	if res.Connected > 0 {
		res.MemAvailDropPerConn = float64(res.MemAvailDropBytes) / float64(res.Connected)
	}
	if res.Connected > 0 && cfg.PID > 0 {
		res.RSSPerConn = float64(res.RSSBytes-res.RSSBefore) / float64(res.Connected)
	}
	res.Events = pub.total
	res.TriggerErrors = pub.errors
	if pub.errSample != "" {
		if res.Errors == nil {
			res.Errors = make(map[string]int64)
		}
		res.Errors["trigger: "+pub.errSample] += pub.errors
	}
	if s := pub.last.Sub(pub.first).Seconds(); s > 0 && pub.total > 1 {
		res.OfferedRate = float64(pub.total-1) / s
	}
	res.Lost = max(0, res.DeliveriesExpected-res.DeliveriesReceived)
	res.Latency = hist.summary()
	if res.DeliveriesReceived > 0 && lastRecv > 0 {
		if s := float64(lastRecv-pub.first.UnixNano()) / 1e9; s > 0 {
			res.DeliveriesPerSecond = float64(res.DeliveriesReceived) / s
		}
		res.CPUPerDelivery = res.CPUSeconds * 1e6 / float64(res.DeliveriesReceived)
	}
	if storm != nil {
		storm.finish(res, lastRecv)
	}
	res.DurationSeconds = time.Since(began).Seconds()
	res.LoadAvg = loadAvg()
	return res, nil
}

// pubStats is what publish did.
type pubStats struct {
	sent        []int64 // successful triggers per key
	total       int64
	errors      int64
	errSample   string
	first, last time.Time // first and last send
}

func (p *pubStats) merge(o pubStats) {
	for k, n := range o.sent {
		p.sent[k] += n
	}
	p.total += o.total
	p.errors += o.errors
	if p.errSample == "" {
		p.errSample = o.errSample
	}
	if p.first.IsZero() || (!o.first.IsZero() && o.first.Before(p.first)) {
		p.first = o.first
	}
	if o.last.After(p.last) {
		p.last = o.last
	}
}

// publish sends events at cfg.Rate per second: count of them, or for dur.
// Publish number n (from first) goes to key n % len(keys) with the payload
// "SEQ NS": SEQ = n / len(keys) numbers the key's events, NS is the send
// time. Senders are bounded. In a closed loop (the default) the schedule
// waits for a free sender, so when they all wait on the server the offered
// rate drops (reported as offered_events_per_second) and NS is when the
// event was actually sent. With cfg.OpenLoop the schedule never waits:
// events queue for a sender and NS is the time the schedule said, so the
// latency includes that queue (no coordinated omission).
//
// shared marks the payloads as events of the shared key (hold).
func publish(ctx context.Context, cfg RunConfig, keys []string, shared bool, first, count int, dur time.Duration) pubStats {
	st := pubStats{sent: make([]int64, len(keys))}
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.Senders, MaxConnsPerHost: cfg.Senders, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	pc, err := newPublisher(cfg)
	if err != nil {
		st.errors, st.errSample = 1, err.Error()
		return st
	}

	total := count
	if count == 0 {
		total = int(dur.Seconds()*cfg.Rate + 0.5)
	}
	var mu sync.Mutex
	var firstSet atomic.Bool
	// A job is a publish number and its due time (open loop only).
	type job struct {
		n   int
		due time.Time
	}
	var jobs chan job
	if cfg.OpenLoop {
		// Never blocks the schedule: every event of the run fits.
		jobs = make(chan job, max(total, 1))
	} else {
		jobs = make(chan job)
	}
	var wg sync.WaitGroup
	bar := newBar(cfg.Progress, cfg.Server+" "+cfg.Scenario+" publish", int64(total))
	var done atomic.Int64
	for range cfg.Senders {
		wg.Go(func() {
			var body []byte
			for j := range jobs {
				i := j.n
				k := i % len(keys)
				now := time.Now()
				if firstSet.CompareAndSwap(false, true) {
					mu.Lock()
					st.first = now
					mu.Unlock()
				}
				stamp := now
				if cfg.OpenLoop {
					stamp = j.due
				}
				body = appendPayloadMark(body[:0], shared, uint64(i/len(keys)), stamp.UnixNano())
				err := pc.send(ctx, client, keys[k], string(body))
				mu.Lock()
				if now.After(st.last) {
					st.last = now
				}
				if err != nil {
					st.errors++
					if st.errSample == "" {
						st.errSample = err.Error()
					}
				} else {
					st.sent[k]++
					st.total++
				}
				mu.Unlock()
				bar.set(done.Add(1))
			}
		})
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / cfg.Rate)
loop:
	for i := 0; ; i++ {
		if count > 0 && i >= count {
			break
		}
		due := start.Add(time.Duration(i) * interval)
		if dur > 0 && due.Sub(start) >= dur {
			break
		}
		if d := time.Until(due); d > 0 {
			if sleepCtx(ctx, d) != nil {
				break
			}
		}
		select {
		case jobs <- job{n: first + i, due: due}:
		case <-ctx.Done():
			break loop
		}
	}
	close(jobs)
	wg.Wait()
	bar.end()
	return st
}

// publisher sends one event in the server's protocol.
type publisher struct {
	proto string
	url   string // sseloop: base of /trigger/{K}; mercure: the hub URL
	auth  string // mercure: "Bearer <publisher JWT>"
}

func newPublisher(cfg RunConfig) (*publisher, error) {
	base := strings.TrimSuffix(cfg.Target, "/")
	if cfg.Proto != ProtoMercure {
		return &publisher{proto: ProtoSseloop, url: base + "/trigger/"}, nil
	}
	tok, err := MercurePublisherJWT(cfg.JWTKey)
	if err != nil {
		return nil, err
	}
	return &publisher{proto: ProtoMercure, url: base + "/.well-known/mercure", auth: "Bearer " + tok}, nil
}

// MercurePublisherJWT returns an HS256 JWT signed with key that lets its
// bearer publish to every topic (claim mercure.publish ["*"]).
func MercurePublisherJWT(key string) (string, error) {
	claims := jwt.MapClaims{"mercure": map[string]any{"publish": []string{"*"}}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
}

// send publishes data to key and checks the answer.
func (p *publisher) send(ctx context.Context, client *http.Client, key, data string) error {
	var req *http.Request
	var err error
	if p.proto == ProtoMercure {
		form := url.Values{"topic": {key}, "data": {data}}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, p.url, strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", p.auth)
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, p.url+url.PathEscape(key), strings.NewReader(data))
		if err == nil {
			req.Header.Set("Content-Type", "text/plain")
		}
	}
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	want := `{"id":"`
	if p.proto == ProtoMercure {
		want = "urn:uuid:"
	}
	if !strings.HasPrefix(string(body), want) {
		return fmt.Errorf("unexpected publish answer %.40q", body)
	}
	return nil
}

// waitFor polls cond every 100 ms until it is true, returns an error, ctx
// ends or limit passes.
func waitFor(ctx context.Context, limit time.Duration, cond func() (bool, error)) error {
	return waitForEvery(ctx, limit, 100*time.Millisecond, cond)
}

// waitForEvery is waitFor polling every period.
func waitForEvery(ctx context.Context, limit, period time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: gave up after %s", limit)
		}
		if err := sleepCtx(ctx, period); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bar draws a progress bar on w, at most every 200 ms.
type bar struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	total int64
	cur   int64
	drawn time.Time
	any   bool
}

func newBar(w io.Writer, label string, total int64) *bar {
	return &bar{w: w, label: label, total: total}
}

func (b *bar) set(v int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cur = v
	if time.Since(b.drawn) >= 200*time.Millisecond {
		b.draw()
	}
}

func (b *bar) draw() {
	if b.w == io.Discard {
		return
	}
	const width = 30
	fill := 0
	if b.total > 0 {
		fill = int(min(b.cur, b.total) * width / b.total)
	}
	fmt.Fprintf(b.w, "\r%-32s [%s%s] %d/%d ", b.label, strings.Repeat("#", fill), strings.Repeat(".", width-fill), b.cur, b.total)
	b.drawn, b.any = time.Now(), true
}

func (b *bar) end() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.w == io.Discard {
		return
	}
	b.draw()
	fmt.Fprintln(b.w)
}
