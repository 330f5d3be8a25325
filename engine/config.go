package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"syscall"
	"time"
)

// Config configures an Engine. The koanf tags are the configuration keys that
// cmd/sseloop reads from file, environment and flags; configs/sseloop.yaml
// documents each of them. Zero values mean the documented default.
type Config struct {
	// Listen is the TCP address to serve on. Default ":8080".
	Listen string `koanf:"listen"`
	// Loops is the number of gnet event loops. 0 = one per usable core
	// (GOMAXPROCS, which respects cgroup limits, unlike gnet's Multicore).
	Loops int `koanf:"loops"`
	// ReusePort sets SO_REUSEPORT so that several processes can share Listen.
	ReusePort bool `koanf:"reuseport"`
	// Tick is the resolution of the per-loop timer wheels (heartbeats,
	// request timeouts). Default 100ms.
	Tick time.Duration `koanf:"tick"`
	// Poll is how often the change feed is read when nothing woke the ticker.
	// It bounds the latency of events written by other processes; triggers
	// received by this process are delivered at once. Default 100ms.
	Poll time.Duration `koanf:"poll"`
	// Heartbeat is how long a stream may stay silent before a ":" comment is
	// written to keep proxies from closing it. Default 30s.
	Heartbeat time.Duration `koanf:"heartbeat"`
	// Retry is the reconnection delay sent to clients in the "retry:" field.
	// Default 3s.
	Retry time.Duration `koanf:"retry"`
	// Limits bounds what one client can make the server hold.
	Limits Limits `koanf:"limits"`
	// Auth decides who may subscribe and publish (see README.md, "Security").
	Auth Auth `koanf:"auth"`
	// CORS lets pages of other origins subscribe and trigger.
	CORS CORS `koanf:"cors"`

	// Sources fetch the data of pokes from the app, once per change (see
	// Source). Configured in the file only: a list of {pattern, url,
	// headers, timeout}.
	Sources []Source `koanf:"sources"`
	// DirectPoll is how often the watched app keys of keys with subscribers are read
	// from stores that have them (Redis), to turn writes by other programs
	// into pokes. 0 = off. Set from store.redis.direct_poll.
	DirectPoll time.Duration `koanf:"-"`

	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger `koanf:"-"`
	// StartupAttrs are added to the one start-up log line (e.g. the store).
	StartupAttrs []any `koanf:"-"`
}

// Limits are the per-client bounds. Every limit has a counter in the
// sseloop_http_errors_total or sseloop_connections_closed_total metrics.
type Limits struct {
	// MaxConns is the most connections held at once; beyond it a new
	// connection gets 503 and is closed. 0 = the open-files limit minus a
	// headroom of 64 descriptors (store files, listeners, DNS), so that
	// accept(2) never fails with EMFILE (gnet stops the whole engine then).
	MaxConns int `koanf:"max_conns"`
	// MaxHeadBytes bounds the request line plus headers (431). Default 8192.
	MaxHeadBytes int `koanf:"max_head_bytes"`
	// MaxHeaders bounds the number of header fields (431). Default 64.
	MaxHeaders int `koanf:"max_headers"`
	// MaxURIBytes bounds the request target (414). Default 4096.
	MaxURIBytes int `koanf:"max_uri_bytes"`
	// MaxBodyBytes bounds a trigger body (413). Default 1 MiB.
	MaxBodyBytes int `koanf:"max_body_bytes"`
	// MaxKeys bounds the keys of one subscription (400). Default 32.
	MaxKeys int `koanf:"max_keys"`
	// MaxBatchEvents bounds the events of one POST /trigger batch (413).
	// Default 1000.
	MaxBatchEvents int `koanf:"max_batch_events"`
	// MaxOutboundBytes bounds the data queued for a stream that is not
	// reading; beyond it the stream is closed (the client reconnects with
	// Last-Event-ID and replays). Default 1 MiB.
	MaxOutboundBytes int `koanf:"max_outbound_bytes"`
	// HeaderTimeout is how long a client may take to send a whole request
	// head once it started one (slowloris). Default 10s.
	HeaderTimeout time.Duration `koanf:"header_timeout"`
	// IdleTimeout is how long a keep-alive connection may wait between
	// requests. Default 60s.
	IdleTimeout time.Duration `koanf:"idle_timeout"`
}

// Auth configures subscriber and publisher authentication. With neither
// JWTSecret nor JWTPublicKey set, anyone may subscribe to any key.
type Auth struct {
	// JWTSecret is the HS256 key that verifies tokens. "" = HS256 tokens
	// are refused. Use at least 32 random bytes.
	JWTSecret string `koanf:"jwt_secret"`
	// JWTPublicKey is the path of a PEM file holding an RSA public key
	// (tokens signed RS256) or a P-256 ECDSA public key (ES256). "" = none.
	JWTPublicKey string `koanf:"jwt_public_key"`
	// CookieName is the cookie a subscriber token may come in, after the
	// Authorization header and the "token" query parameter. Default
	// "sseloop_token".
	CookieName string `koanf:"cookie_name"`
	// PublicKeys are key patterns ("*" matches any run of characters) that
	// anyone may subscribe to without a token. Empty = none.
	PublicKeys []string `koanf:"public_keys"`
	// PublishKeys are static bearer keys that may trigger any key. With no
	// PublishKeys and no JWT key, triggers are accepted only from loopback
	// clients.
	PublishKeys []string `koanf:"publish_keys"`
}

// CORS configures cross-origin access to streams and triggers.
type CORS struct {
	// AllowedOrigins are the origins (scheme://host[:port]) whose pages may
	// read streams and trigger. Listed origins are also allowed credentials
	// (cookies); "*" allows every origin, without credentials. Empty = no
	// CORS headers.
	AllowedOrigins []string `koanf:"allowed_origins"`
	// MaxAge is how long a browser may cache a preflight answer. Default 10m.
	MaxAge time.Duration `koanf:"max_age"`
}

// DefaultConfig returns the configuration with every default filled in
// (MaxConns stays 0: it is derived from the open-files limit at start).
func DefaultConfig() Config {
	return Config{
		Listen:    ":8080",
		Tick:      100 * time.Millisecond,
		Poll:      100 * time.Millisecond,
		Heartbeat: 30 * time.Second,
		Retry:     3 * time.Second,
		Limits: Limits{
			MaxHeadBytes:     8192,
			MaxHeaders:       64,
			MaxURIBytes:      4096,
			MaxBodyBytes:     1 << 20,
			MaxKeys:          32,
			MaxBatchEvents:   1000,
			MaxOutboundBytes: 1 << 20,
			HeaderTimeout:    10 * time.Second,
			IdleTimeout:      60 * time.Second,
		},
		Auth: Auth{CookieName: "sseloop_token"},
		CORS: CORS{MaxAge: 10 * time.Minute},
	}
}

// fillDefaults replaces zero values with defaults and checks the rest.
func (c *Config) fillDefaults() error {
	d := DefaultConfig()
	// Copy the sources: checkSources fills in their defaults.
	c.Sources = append([]Source(nil), c.Sources...)
	if err := checkSources(c.Sources); err != nil {
		return err
	}
	setDur := func(p *time.Duration, def time.Duration) {
		if *p == 0 {
			*p = def
		}
	}
	setInt := func(p *int, def int) {
		if *p == 0 {
			*p = def
		}
	}
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	setDur(&c.Tick, d.Tick)
	setDur(&c.Poll, d.Poll)
	setDur(&c.Heartbeat, d.Heartbeat)
	setDur(&c.Retry, d.Retry)
	setInt(&c.Limits.MaxHeadBytes, d.Limits.MaxHeadBytes)
	setInt(&c.Limits.MaxHeaders, d.Limits.MaxHeaders)
	setInt(&c.Limits.MaxURIBytes, d.Limits.MaxURIBytes)
	setInt(&c.Limits.MaxBodyBytes, d.Limits.MaxBodyBytes)
	setInt(&c.Limits.MaxKeys, d.Limits.MaxKeys)
	setInt(&c.Limits.MaxBatchEvents, d.Limits.MaxBatchEvents)
	setInt(&c.Limits.MaxOutboundBytes, d.Limits.MaxOutboundBytes)
	setDur(&c.Limits.HeaderTimeout, d.Limits.HeaderTimeout)
	setDur(&c.Limits.IdleTimeout, d.Limits.IdleTimeout)
	setDur(&c.CORS.MaxAge, d.CORS.MaxAge)
	if c.Auth.CookieName == "" {
		c.Auth.CookieName = d.Auth.CookieName
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for name, v := range map[string]time.Duration{
		"tick": c.Tick, "poll": c.Poll, "heartbeat": c.Heartbeat, "retry": c.Retry,
		"limits.header_timeout": c.Limits.HeaderTimeout, "limits.idle_timeout": c.Limits.IdleTimeout,
		"cors.max_age": c.CORS.MaxAge,
	} {
		if v < 0 {
			return fmt.Errorf("engine: %s must be positive, got %v", name, v)
		}
	}
	for name, v := range map[string]int{
		"loops": c.Loops, "limits.max_conns": c.Limits.MaxConns,
		"limits.max_head_bytes": c.Limits.MaxHeadBytes, "limits.max_headers": c.Limits.MaxHeaders,
		"limits.max_uri_bytes": c.Limits.MaxURIBytes, "limits.max_body_bytes": c.Limits.MaxBodyBytes,
		"limits.max_keys": c.Limits.MaxKeys, "limits.max_batch_events": c.Limits.MaxBatchEvents,
		"limits.max_outbound_bytes": c.Limits.MaxOutboundBytes,
	} {
		if v < 0 {
			return fmt.Errorf("engine: %s must not be negative, got %d", name, v)
		}
	}
	if c.Limits.MaxConns == 0 {
		n, err := defaultMaxConns(c.Loops)
		if err != nil {
			return err
		}
		c.Limits.MaxConns = n
	}
	return nil
}

// fdHeadroom is how many descriptors MaxConns leaves free by default: the
// store file, log files, /proc reads for metrics, DNS. Each loop adds
// fdPerLoop: its listener, epoll and eventfd, and the one connection it may
// have accepted but not yet refused (see Engine.Run: every loop accepts for
// itself, so no more than one refused connection per loop holds a
// descriptor at any time).
const (
	fdHeadroom = 64
	fdPerLoop  = 4
)

func defaultMaxConns(loops int) (int, error) {
	if loops <= 0 {
		loops = runtime.GOMAXPROCS(0)
	}
	// The Go runtime has already raised the soft limit to the hard one.
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("engine: read open-files limit: %w", err)
	}
	n := int(rl.Cur) - fdHeadroom - fdPerLoop*loops
	if n < 1 {
		return 0, errors.New("engine: open-files limit too low; raise ulimit -n")
	}
	return n, nil
}
