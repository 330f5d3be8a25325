// Package engine is the sseloop server: a gnet event handler that parses
// HTTP with httpparse, parks streams in per-loop subscriber sets, and fans
// out events read from a store.Store by one ticker goroutine.
//
// The one rule: everything a connection owns (its conn state, its timer, the
// loop's subscriber sets and timer wheel) is touched only on that
// connection's event-loop goroutine. Other goroutines (the ticker, the store
// workers) hand work to a loop with gnet's EventLoop.Execute, and never call
// the store from a loop.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/store"
)

// Engine is one sseloop server. Create it with New, start it with Run.
type Engine struct {
	gnet.BuiltinEventEngine

	cfg  Config
	st   store.Store
	log  *slog.Logger
	m    *engineMetrics
	lim  httpparse.Limits
	auth *authenticator
	cors *corsPolicy

	gnetEng gnet.Engine // set in OnBoot
	addr    atomic.Pointer[net.TCPAddr]
	ready   chan struct{}

	loopsMu sync.Mutex
	loopMap map[gnet.EventLoop]*loop
	loops   atomic.Pointer[[]*loop] // copy-on-write snapshot for the ticker

	interest interest
	wake     chan struct{} // a local trigger wakes the ticker
	deferred atomic.Bool   // the ticker skipped a read because loops were busy

	appendQ chan *appendJob
	fetchQ  chan *appendJob // jobs whose pokes a data source fills

	httpClient *http.Client // data sources
	workQ      chan func(context.Context)

	stopping atomic.Bool
}

// New checks cfg, fills in defaults and returns an engine that serves
// subscriptions and triggers from st. The caller owns st and closes it after
// Run returns.
func New(cfg Config, st store.Store) (*Engine, error) {
	if st == nil {
		return nil, errors.New("engine: nil store")
	}
	if err := cfg.fillDefaults(); err != nil {
		return nil, err
	}
	auth, err := newAuthenticator(cfg.Auth)
	if err != nil {
		return nil, err
	}
	cors, err := newCORSPolicy(cfg.CORS)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		auth:    auth,
		cors:    cors,
		cfg:     cfg,
		st:      st,
		log:     cfg.Logger,
		m:       newEngineMetrics(),
		ready:   make(chan struct{}),
		loopMap: make(map[gnet.EventLoop]*loop),
		wake:    make(chan struct{}, 1),
		appendQ: make(chan *appendJob, appendQueueLen),
		fetchQ:  make(chan *appendJob, appendQueueLen),
		httpClient: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: sourceWorkers,
			IdleConnTimeout:     90 * time.Second,
		}},
		workQ: make(chan func(context.Context), workQueueLen),
		lim: httpparse.Limits{
			MaxHeadBytes: cfg.Limits.MaxHeadBytes,
			MaxHeaders:   cfg.Limits.MaxHeaders,
			MaxURIBytes:  cfg.Limits.MaxURIBytes,
		},
	}
	e.interest.m = make(map[string]int32)
	// Distinct keys with a subscriber anywhere in this process.
	e.m.set.NewGauge("sseloop_keys_active", func() float64 { return float64(e.interest.len()) })
	// Records of the buntdb file that failed their checksum since open.
	if c, ok := st.(interface{ CorruptRecords() uint64 }); ok {
		e.m.set.NewGauge("sseloop_store_corrupt_records", func() float64 { return float64(c.CorruptRecords()) })
	}
	empty := []*loop{}
	e.loops.Store(&empty)
	return e, nil
}

// Config returns the effective configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Ready is closed once the engine listens; Addr is valid from then on.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// Addr returns the address the engine listens on (nil before Ready).
func (e *Engine) Addr() *net.TCPAddr { return e.addr.Load() }

const (
	appendQueueLen = 4096 // triggers waiting for the appender; beyond it: 503
	workQueueLen   = 4096 // replays, readiness checks, metrics; beyond it: 503
	workers        = 4    // goroutines serving workQ (store reads)
	stopTimeout    = 5 * time.Second
)

// Run serves until ctx is cancelled, then stops accepting, closes every
// connection and returns nil. It returns an error if the engine cannot start
// (for example the address is in use). Run may be called once.
func (e *Engine) Run(ctx context.Context) error {
	last, err := e.st.LastID(ctx)
	if err != nil {
		return fmt.Errorf("engine: read last event id: %w", err)
	}
	wctx, cancelWorkers := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3 + workers + sourceWorkers)
	go func() { defer wg.Done(); e.runTicker(wctx, last) }()
	go func() { defer wg.Done(); e.runAppender(wctx) }()
	go func() { defer wg.Done(); e.runDirect(wctx) }()
	for range sourceWorkers {
		go func() { defer wg.Done(); e.runFetcher(wctx) }()
	}
	for range workers {
		go func() { defer wg.Done(); e.runWorker(wctx) }()
	}
	defer func() {
		cancelWorkers()
		wg.Wait()
	}()

	addr, err := e.listenAddr()
	if err != nil {
		return err
	}
	loops := e.numLoops()
	errc := make(chan error, 1)
	go func() {
		// Every loop gets its own SO_REUSEPORT listener and accepts for
		// itself, even without cfg.ReusePort. Why: with one listener, gnet
		// accepts on a separate goroutine until the queue is empty and
		// hands each socket to a loop later, so a flood of connections can
		// hold any number of descriptors before OnOpen refuses them, and
		// gnet v2.9.7 stops the whole engine when accept fails with EMFILE.
		// Accepting on the loop runs OnOpen at once, so at most one refused
		// connection per loop holds a descriptor (fdPerLoop).
		errc <- gnet.Run(e, "tcp://"+addr,
			gnet.WithNumEventLoop(loops),
			gnet.WithReusePort(true),
			gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(gnetLogger{e.log}),
		)
	}()
	select {
	case err := <-errc:
		if err == nil {
			err = errors.New("engine: gnet stopped unexpectedly")
		}
		return fmt.Errorf("engine: serve %s: %w", e.cfg.Listen, err)
	case <-ctx.Done():
	}
	e.stopping.Store(true)
	// gnetEng is written in OnBoot, which closes ready: wait for it (or for
	// gnet to fail) before touching the engine.
	select {
	case <-e.ready:
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("engine: serve %s: %w", e.cfg.Listen, err)
		}
		return nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := e.gnetEng.Stop(sctx); err != nil {
		e.log.Warn("engine: stop", "err", err)
	}
	if err := <-errc; err != nil {
		e.log.Warn("engine: gnet returned", "err", err)
	}
	return nil
}

// listenAddr resolves cfg.Listen for per-loop SO_REUSEPORT listeners. Port 0
// is replaced by a free port, which every loop then shares. Without
// cfg.ReusePort the address is probed with a plain listener first, so that
// a port already in use fails at start instead of being silently shared
// with another process.
func (e *Engine) listenAddr() (string, error) {
	host, port, err := net.SplitHostPort(e.cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("engine: listen %q: %w", e.cfg.Listen, err)
	}
	if e.cfg.ReusePort && port != "0" {
		return e.cfg.Listen, nil
	}
	ln, err := net.Listen("tcp", e.cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("engine: serve %s: %w", e.cfg.Listen, err)
	}
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	_ = ln.Close()
	return net.JoinHostPort(host, port), nil
}

func (e *Engine) numLoops() int {
	if e.cfg.Loops > 0 {
		return e.cfg.Loops
	}
	return runtime.GOMAXPROCS(0)
}

// OnBoot records the engine handle and the bound address.
func (e *Engine) OnBoot(eng gnet.Engine) gnet.Action {
	e.gnetEng = eng
	fd, err := eng.Dup()
	if err == nil {
		sa, serr := syscall.Getsockname(fd)
		_ = syscall.Close(fd)
		if serr == nil {
			switch a := sa.(type) {
			case *syscall.SockaddrInet4:
				e.addr.Store(&net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port})
			case *syscall.SockaddrInet6:
				e.addr.Store(&net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port})
			}
		}
	}
	l := e.cfg.Limits
	attrs := append([]any{"addr", e.addr.Load().String(), "loops", e.numLoops(), "max_conns", l.MaxConns,
		"heartbeat", e.cfg.Heartbeat, "poll", e.cfg.Poll, "max_body_bytes", l.MaxBodyBytes,
		"max_outbound_bytes", l.MaxOutboundBytes, "header_timeout", l.HeaderTimeout}, e.cfg.StartupAttrs...)
	e.log.Info("sseloop listening", attrs...)
	if !e.auth.publishAuthConfigured() {
		e.log.Warn("no publisher auth configured (auth.publish_keys, auth.jwt_secret or auth.jwt_public_key): " +
			"triggers are accepted from loopback clients only, and every client of a local reverse proxy is one")
	}
	if s := e.cfg.Auth.JWTSecret; s != "" && len(s) < 32 {
		e.log.Warn("auth.jwt_secret is shorter than 32 bytes; HS256 keys that short can be brute-forced")
	}
	close(e.ready)
	return gnet.None
}

// loopFor returns the state of gnet loop el, creating it on first use. Called
// on el's goroutine (OnOpen); the lock guards the map against other loops.
func (e *Engine) loopFor(el gnet.EventLoop) *loop {
	e.loopsMu.Lock()
	defer e.loopsMu.Unlock()
	if l := e.loopMap[el]; l != nil {
		return l
	}
	l := newLoop(e, el)
	e.loopMap[el] = l
	next := append(append([]*loop(nil), *e.loops.Load()...), l)
	e.loops.Store(&next)
	return l
}

// OnOpen admits a connection, or answers 503 when the server is full.
func (e *Engine) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if e.m.conns.Add(1) > int64(e.cfg.Limits.MaxConns) || e.stopping.Load() {
		e.m.conns.Add(-1)
		e.m.httpError(503)
		if !e.stopping.Load() {
			e.m.limit("max_conns")
		}
		e.m.closed("over_limit")
		return respOverLimit, gnet.Close
	}
	e.m.accepted.Inc()
	l := e.loopFor(gc.EventLoop())
	c := &conn{gc: gc, l: l}
	c.fire = c.onTimer
	gc.SetContext(c)
	l.armIdle(c)
	return nil, gnet.None
}

// OnClose drops the connection from its subscriber sets and timer wheel.
func (e *Engine) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None
	}
	c.l.drop(c)
	reason := c.closeReason.String()
	if reason == "" {
		reason = "client"
		if err != nil && !isPeerGone(err) {
			reason = "error"
		}
	}
	e.m.closed(reason)
	e.m.conns.Add(-1)
	return gnet.None
}

// OnTraffic serves the bytes that arrived on a connection.
func (e *Engine) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	if c.l.serve(c) {
		return gnet.Close
	}
	return gnet.None
}

func isPeerGone(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF)
}

// gnetLogger sends gnet's own logs to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error("gnet: fatal: " + fmt.Sprintf(f, a...)) }
