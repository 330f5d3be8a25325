// Package engine is the sseloop server's network side: gnet event loops,
// HTTP parsing (httpparse), routing, authentication and CORS. Everything
// about delivering events (subscriber sets, the change feed, replay,
// heartbeats, publishing) is the hub's (package hub); the engine turns
// requests into hub calls and hub results into HTTP.
//
// The one rule: everything a connection owns (its conn state, its timer,
// its loop's hub.Loop) is touched only on that connection's event-loop
// goroutine. Other goroutines (the hub's, the store workers) reach a loop
// with loop.Execute, and a loop never calls the store.
//
// A trigger, from request to socket: OnTraffic → loop.serve (parse) →
// loop.route → loop.trigger (auth, build a hub.Publication) → Hub.Publish →
// the hub's appender (store.Append) → Publication.Done → loop.finish (the
// HTTP answer). The hub's feed reader then reads the new events and each
// loop's fan-out writes them to its streams (hub/feed.go, hub/loop.go).
//
// With mercure.enabled the Mercure protocol is served under
// /.well-known/mercure (mercure.go, mercure_auth.go, mercure_subs.go) on
// the same hub, store and ids.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/hub"
	"github.com/sseloop/sseloop/store"
)

// Engine is one sseloop server. Create it with New, start it with Run.
// Its methods are safe for concurrent use.
type Engine struct {
	cfg  Config
	st   store.Store
	hub  *hub.Hub
	log  *slog.Logger
	m    *engineMetrics
	lim  httpparse.Limits
	auth *authenticator
	cors *corsPolicy
	src  *sources

	merc *mercureAuth // nil unless mercure.enabled
	// subsReg is the subscriptions registry shared with other nodes: nil
	// unless mercure.subscriptions and a store implementing
	// store.Subscriptions.
	subsReg *subsRegistry
	mcors   *corsPolicy // mercure.cors_origins

	gnetEng gnet.Engine // set in OnBoot
	addr    atomic.Pointer[net.TCPAddr]
	ready   chan struct{}

	loopsMu sync.Mutex
	loopMap map[gnet.EventLoop]*loop

	stopping atomic.Bool
}

// handler is the gnet event handler. It is a separate type so that the
// loop-only callbacks are not methods of the public Engine.
type handler struct {
	gnet.BuiltinEventEngine
	e *Engine
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
		lim: httpparse.Limits{
			MaxHeadBytes: cfg.Limits.MaxHeadBytes,
			MaxHeaders:   cfg.Limits.MaxHeaders,
			MaxURIBytes:  cfg.Limits.MaxURIBytes,
		},
	}
	hcfg := hub.Config{
		Tick:             cfg.Tick,
		Poll:             cfg.Poll,
		Heartbeat:        cfg.Heartbeat,
		MaxOutboundBytes: cfg.Limits.MaxOutboundBytes,
		Workers:          workers,
		QueueLen:         queueLen,
		Fetchers:         sourceWorkers,
		DirectPoll:       cfg.DirectPoll,
		Logger:           cfg.Logger,
		Metrics:          e.m.set,
		Presence: hub.PresenceConfig{
			Off:        cfg.Presence.Off,
			Interval:   cfg.Presence.Interval,
			MaxUserIDs: cfg.Presence.MaxUserIDs,
			NodeTTL:    cfg.Presence.NodeTTL,
		},
	}
	if pats := cfg.Presence.Keys; len(pats) > 0 {
		hcfg.Presence.Live = func(key string) bool { return matchAny(pats, key) }
	}
	if len(cfg.Sources) > 0 {
		e.src = newSources(cfg.Sources, cfg.Limits.MaxBodyBytes, e.m, e.log)
		hcfg.Fill = e.src
	}
	if cfg.Mercure.Enabled {
		if err := e.initMercure(); err != nil {
			return nil, err
		}
	}
	// Records of the buntdb file that failed their checksum since open.
	if c, ok := st.(interface{ CorruptRecords() uint64 }); ok {
		e.m.set.NewGauge("sseloop_store_corrupt_records", func() float64 { return float64(c.CorruptRecords()) })
	}
	if e.hub, err = hub.New(hcfg, st); err != nil {
		return nil, err
	}
	if ss, ok := st.(store.Subscriptions); ok && cfg.Mercure.Enabled && cfg.Mercure.Subscriptions {
		e.subsReg = newSubsRegistry(e, ss)
	}
	return e, nil
}

// Config returns the effective configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Ready is closed once the engine listens; Addr is valid from then on.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// Addr returns the address the engine listens on (nil before Ready).
func (e *Engine) Addr() *net.TCPAddr { return e.addr.Load() }

const (
	queueLen    = 4096 // triggers waiting for the appender, and jobs for the workers; beyond it: 503
	workers     = 4    // goroutines serving store reads (replays, readiness, metrics, slow JWT checks)
	stopTimeout = 5 * time.Second
)

// Run serves until ctx is cancelled, then stops accepting, closes every
// connection and returns nil. It returns an error if the engine cannot start
// (for example the address is in use). Run may be called once.
func (e *Engine) Run(ctx context.Context) error {
	if _, err := e.st.LastID(ctx); err != nil {
		return fmt.Errorf("engine: read last event id: %w", err)
	}
	hctx, cancelHub := context.WithCancel(context.Background())
	hubDone := make(chan error, 1)
	go func() { hubDone <- e.hub.Run(hctx) }()
	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		if e.subsReg != nil {
			e.subsReg.run(hctx)
		}
	}()
	defer func() {
		cancelHub()
		<-hubDone
		<-regDone
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
		errc <- gnet.Run(&handler{e: e}, "tcp://"+addr,
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
func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	e := h.e
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
	return l
}

// OnOpen admits a connection, or answers 503 when the server is full.
func (h *handler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	e := h.e
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
	c := &conn{}
	c.Init(gc, l.hl, c.onTimer, e.cfg.Limits.IdleTimeout)
	gc.SetContext(c)
	return nil, gnet.None
}

// OnClose drops the connection from its subscriber sets and timer wheel.
func (h *handler) OnClose(gc gnet.Conn, err error) gnet.Action {
	e := h.e
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None
	}
	c.Loop().Leave(&c.Stream)
	c.phase = phaseClosed
	reason := c.closeReason.String()
	if r := c.Reason(); r != hub.ReasonNone {
		reason = r.String()
	}
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
func (h *handler) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	if c.l().serve(c) {
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
