package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"syscall"
	"time"

	"github.com/sseloop/sseloop/internal/option"
)

// Config configures an Engine. The koanf tags are the configuration keys that
// cmd/sseloop reads from file, environment and flags. Each key's default,
// unit and help text live in one place, the Options table; DefaultConfig,
// the zero-value defaults of New, cmd/sseloop's flags and --help come from
// it, and a test checks that configs/sseloop.yaml documents exactly those
// keys with those defaults. Zero values mean the default.
type Config struct {
	// Listen is the TCP address to serve on.
	Listen string `koanf:"listen"`
	// Loops is the number of gnet event loops. 0 = one per usable core
	// (GOMAXPROCS, which respects cgroup limits, unlike gnet's Multicore).
	Loops int `koanf:"loops"`
	// ReusePort sets SO_REUSEPORT so that several processes can share Listen.
	ReusePort bool `koanf:"reuseport"`
	// Tick is the resolution of the per-loop timer wheels (heartbeats,
	// request timeouts, token expiry): a timer fires less than one tick
	// after its deadline. Each tick wakes every event loop, which is most
	// of what an idle server costs, so it is as coarse as the timers allow:
	// token expiry has one-second precision anyway.
	Tick time.Duration `koanf:"tick"`
	// Poll is how often the change feed is read when nothing woke the feed reader.
	// It bounds the latency of events written by other processes; triggers
	// received by this process are delivered at once.
	Poll time.Duration `koanf:"poll"`
	// Heartbeat is how long a stream may stay silent before a ":" comment is
	// written to keep proxies from closing it.
	Heartbeat time.Duration `koanf:"heartbeat"`
	// Retry is the reconnection delay sent to clients in the "retry:" field.
	Retry time.Duration `koanf:"retry"`
	// Limits bounds what one client can make the server hold.
	Limits Limits `koanf:"limits"`
	// Auth decides who may subscribe and publish (see README.md, "Security").
	Auth Auth `koanf:"auth"`
	// CORS lets pages of other origins subscribe and trigger.
	CORS CORS `koanf:"cors"`
	// Presence configures who-is-online queries (GET /presence) and events.
	Presence Presence `koanf:"presence"`

	// Mercure serves the Mercure protocol under /.well-known/mercure, on
	// the same store and hub as the native routes (see README.md,
	// "Migrating from the Mercure hub"). Off by default.
	Mercure Mercure `koanf:"mercure"`

	// Sources fetch the data of pokes from the app, once per change (see
	// Source). Configured in the file only: a list of {pattern, url,
	// headers, timeout}.
	Sources []Source `koanf:"sources"`
	// DirectPoll is how often the watched app keys of keys with subscribers are read
	// from stores that have them (Redis), to turn writes by other programs
	// into pokes. 0 = off. Set from store.redis.direct_poll.
	DirectPoll time.Duration `koanf:"-"`
	// NoPublicMetrics makes GET /metrics on Listen answer 404, for when the
	// metrics are served on a separate, internal listener.
	NoPublicMetrics bool `koanf:"-"`

	// Logger receives the engine's logs. Default slog.Default().
	Logger *slog.Logger `koanf:"-"`
	// StartupAttrs are added to the one start-up log line (e.g. the store).
	StartupAttrs []any `koanf:"-"`
}

// Limits are the per-client bounds. Every refusal by a limit is counted in
// sseloop_limit_exceeded_total{limit="<key>"}.
type Limits struct {
	// MaxConns is the most connections held at once; beyond it a new
	// connection gets 503 and is closed. 0 = the open-files limit minus a
	// headroom (64 descriptors, plus 4 per event loop), so that accept(2)
	// never fails with EMFILE (gnet stops the whole engine then).
	MaxConns int `koanf:"max_conns"`
	// MaxHeadBytes bounds the request line plus headers (431).
	MaxHeadBytes int `koanf:"max_head_bytes"`
	// MaxHeaders bounds the number of header fields (431).
	MaxHeaders int `koanf:"max_headers"`
	// MaxURIBytes bounds the request target (414).
	MaxURIBytes int `koanf:"max_uri_bytes"`
	// MaxBodyBytes bounds a trigger body (413).
	MaxBodyBytes int `koanf:"max_body_bytes"`
	// MaxKeys bounds the keys of one subscription (400).
	MaxKeys int `koanf:"max_keys"`
	// MaxBatchEvents bounds the events of one POST /trigger batch (400).
	MaxBatchEvents int `koanf:"max_batch_events"`
	// MaxOutboundBytes bounds the data queued for a stream that is not
	// reading; beyond it the stream is closed (the client reconnects with
	// Last-Event-ID and replays).
	MaxOutboundBytes int `koanf:"max_outbound_bytes"`
	// HeaderTimeout is how long a client may take to send a whole request
	// head once it started one (slowloris; 408).
	HeaderTimeout time.Duration `koanf:"header_timeout"`
	// IdleTimeout is how long a keep-alive connection may wait between
	// requests.
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
	// Authorization header and the "token" query parameter.
	CookieName string `koanf:"cookie_name"`
	// PublicKeys are key patterns ("*" matches any run of characters) that
	// anyone may subscribe to without a token. Empty = none.
	PublicKeys []string `koanf:"public_keys"`
	// PublishKeys are static bearer keys that may trigger any key. With no
	// PublishKeys and no JWT key, triggers are accepted only from loopback
	// clients.
	PublishKeys []string `koanf:"publish_keys"`
}

// Mercure configures the Mercure hub routes. Each field is the Caddyfile
// directive of the Mercure hub with the same name.
type Mercure struct {
	// Enabled serves GET and POST /.well-known/mercure.
	Enabled bool `koanf:"enabled"`
	// PublisherJWT verifies publishers' tokens (publisher_jwt KEY ALG).
	// Without it only loopback clients may publish.
	PublisherJWT MercureJWT `koanf:"publisher_jwt"`
	// SubscriberJWT verifies subscribers' tokens (subscriber_jwt KEY ALG).
	// Without it every subscriber is anonymous: public updates only.
	SubscriberJWT MercureJWT `koanf:"subscriber_jwt"`
	// Anonymous lets subscribers without a token in when SubscriberJWT is
	// set (they get public updates only).
	Anonymous bool `koanf:"anonymous"`
	// PublishOrigins are the origins allowed to publish with the cookie
	// ("*" = all; a pattern may hold one "*"). Empty = no cookie publishing.
	PublishOrigins []string `koanf:"publish_origins"`
	// CORSOrigins are the origins whose pages may use the Mercure routes
	// (with credentials); "*" = all, without credentials. Empty = none.
	CORSOrigins []string `koanf:"cors_origins"`
	// CookieName is the cookie holding a token.
	CookieName string `koanf:"cookie_name"`
	// Subscriptions enables the subscriptions API and subscription events
	// (GET /.well-known/mercure/subscriptions...; private updates when a
	// subscription starts and ends). The API lists this node's streams
	// only.
	Subscriptions bool `koanf:"subscriptions"`
	// Heartbeat is the ":" comment interval of Mercure streams.
	Heartbeat time.Duration `koanf:"heartbeat"`
}

// MercureJWT is a JWT verification key and its algorithm.
type MercureJWT struct {
	// Key is the HMAC secret, or the PEM public key (RS*, PS*, ES*, EdDSA).
	Key string `koanf:"key"`
	// Alg is the algorithm.
	Alg string `koanf:"alg"`
}

// CORS configures cross-origin access to streams and triggers.
type CORS struct {
	// AllowedOrigins are the origins (scheme://host[:port]) whose pages may
	// read streams and trigger. Listed origins are also allowed credentials
	// (cookies); "*" allows every origin, without credentials. Empty = no
	// CORS headers.
	AllowedOrigins []string `koanf:"allowed_origins"`
	// MaxAge is how long a browser may cache a preflight answer.
	MaxAge time.Duration `koanf:"max_age"`
}

// Presence configures presence: GET /presence/{key} answers how many
// streams and which users (token subjects) a key has, on every node of a
// Redis store; keys matching Keys also push "presence" events.
type Presence struct {
	// Off turns presence off: GET /presence answers 404, streams record no
	// user, and no node publishes its counts to Redis. With the Redis
	// store presence costs every node a count per subscribed key and a
	// publish per interval for the keys that changed; Off removes that for
	// deployments that do not use it (default false: presence on).
	Off bool `koanf:"off"`
	// Keys are key patterns ("*" matches any run of characters) whose
	// subscribers get live "presence" events. Empty = none (the default):
	// then, with buntdb, joins and leaves cost nothing extra.
	Keys []string `koanf:"keys"`
	// Interval is the least time between two presence events of one key,
	// and how often a node publishes its changed counts to Redis.
	Interval time.Duration `koanf:"interval"`
	// MaxUserIDs caps the user_ids of an answer and the joined/left lists
	// of an event (the counts stay exact; "truncated" says one was cut).
	MaxUserIDs int `koanf:"max_user_ids"`
	// NodeTTL is how long a node's counts outlive its last heartbeat in
	// Redis: a node killed without a goodbye leaves every count within
	// NodeTTL. It must exceed Interval.
	NodeTTL time.Duration `koanf:"node_ttl"`
}

// Option documents one configuration key: its default, unit and help.
type Option = option.Option

// Options lists every key of Config with its default: the one place where
// a default is written. Keys are relative to Config (cmd/sseloop puts them
// at the top level of its file).
var Options = []Option{
	{Key: "listen", Default: ":8080", Help: "TCP address to serve on"},
	{Key: "loops", Default: 0, ZeroAllowed: true, Help: "gnet event loops; 0 = one per usable core (GOMAXPROCS)"},
	{Key: "reuseport", Default: false, Help: "set SO_REUSEPORT so that several sseloop processes share one port"},
	{Key: "tick", Default: time.Second, Help: "resolution of the timer wheels (heartbeats, request timeouts, token expiry)"},
	{Key: "poll", Default: 100 * time.Millisecond, Help: "how often the change feed is read; bounds the latency of events written by other processes"},
	{Key: "heartbeat", Default: 30 * time.Second, Help: `a stream silent this long gets a ":" comment so proxies keep it open`},
	{Key: "retry", Default: 3 * time.Second, Help: `reconnection delay sent to clients in the "retry:" field`},

	{Key: "limits.max_conns", Default: 0, Unit: "connections", ZeroAllowed: true, Help: "connections held at once, beyond it 503; 0 = the open-files limit minus 64 and 4 per loop"},
	{Key: "limits.max_head_bytes", Default: 8192, Unit: "bytes", Help: "request line plus headers (431 beyond)"},
	{Key: "limits.max_headers", Default: 64, Unit: "fields", Help: "header fields per request (431 beyond)"},
	{Key: "limits.max_uri_bytes", Default: 4096, Unit: "bytes", Help: "request target (414 beyond)"},
	{Key: "limits.max_body_bytes", Default: 1 << 20, Unit: "bytes", Help: "trigger body (413 beyond)"},
	{Key: "limits.max_keys", Default: 32, Unit: "keys", Help: "keys in one subscription (400 beyond)"},
	{Key: "limits.max_batch_events", Default: 1000, Unit: "events", Help: "events in one POST /trigger batch (400 beyond)"},
	{Key: "limits.max_outbound_bytes", Default: 1 << 20, Unit: "bytes", Help: "unsent bytes queued for one stream; beyond it the stream is closed (slow consumer)"},
	{Key: "limits.header_timeout", Default: 10 * time.Second, Help: "time to send a whole request head once started (slowloris; 408)"},
	{Key: "limits.idle_timeout", Default: 60 * time.Second, Help: "time a keep-alive connection may sit between requests"},

	{Key: "auth.jwt_secret", Default: "", ZeroAllowed: true, Help: `HS256 key for subscriber and publisher JWTs (secret); "" = HS256 tokens refused`},
	{Key: "auth.jwt_public_key", Default: "", ZeroAllowed: true, Help: `PEM file with an RSA (RS256) or P-256 (ES256) public key; "" = none`},
	{Key: "auth.cookie_name", Default: "sseloop_token", Help: "cookie that may carry a subscriber token"},
	{Key: "auth.public_keys", Default: []string{}, ZeroAllowed: true, Help: "key patterns anyone may subscribe to without a token"},
	{Key: "auth.publish_keys", Default: []string{}, ZeroAllowed: true, Help: "static bearer keys that may trigger any key (secret); none = loopback only"},

	{Key: "cors.allowed_origins", Default: []string{}, ZeroAllowed: true, Help: `origins whose pages may read streams and trigger; "*" = any, without credentials`},
	{Key: "cors.max_age", Default: 10 * time.Minute, Help: "how long a browser may cache a preflight answer"},

	{Key: "mercure.enabled", Default: false, Help: "serve the Mercure protocol under /.well-known/mercure"},
	{Key: "mercure.publisher_jwt.key", Default: "", ZeroAllowed: true, Help: `publishers' JWT key: HMAC secret or PEM public key (secret); "" = loopback-only publishing`},
	{Key: "mercure.publisher_jwt.alg", Default: "HS256", Help: "publishers' JWT algorithm: HS256/384/512, RS*, PS*, ES*, EdDSA"},
	{Key: "mercure.subscriber_jwt.key", Default: "", ZeroAllowed: true, Help: `subscribers' JWT key (secret); "" = every subscriber is anonymous`},
	{Key: "mercure.subscriber_jwt.alg", Default: "HS256", Help: "subscribers' JWT algorithm"},
	{Key: "mercure.anonymous", Default: false, Help: "with subscriber_jwt, let subscribers without a token get public updates"},
	{Key: "mercure.publish_origins", Default: []string{}, ZeroAllowed: true, Help: `origins that may publish with the cookie; "*" = all`},
	{Key: "mercure.cors_origins", Default: []string{}, ZeroAllowed: true, Help: `origins whose pages may use the Mercure routes; "*" = all, without credentials`},
	{Key: "mercure.cookie_name", Default: "mercureAuthorization", Help: "cookie that may carry a Mercure token"},
	{Key: "mercure.subscriptions", Default: false, Help: "subscription events and the subscriptions API"},
	{Key: "mercure.heartbeat", Default: 40 * time.Second, Help: `a Mercure stream silent this long gets a ":" comment`},
	{Key: "presence.off", Default: false, ZeroAllowed: true, Help: "turn presence off: GET /presence is 404, no per-stream bookkeeping, no node counts in Redis"},
	{Key: "presence.keys", Default: []string{}, ZeroAllowed: true, Help: `key patterns whose subscribers get live "presence" events; none = off`},
	{Key: "presence.interval", Default: time.Second, Help: "at most one presence event per key per interval; how often a node renews its presence counts and Mercure subscriptions in Redis"},
	{Key: "presence.max_user_ids", Default: 100, Unit: "ids", Help: "user ids in a presence answer and in an event's joined/left lists (counts stay exact)"},
	{Key: "presence.node_ttl", Default: 15 * time.Second, Help: "Redis: a node killed without a goodbye leaves every presence count and Mercure subscriptions list within this long; must exceed presence.interval"},

	{Key: "sources", Default: []Source{}, ZeroAllowed: true, Help: "data sources fetched once per poke (file only)"},
}

// DefaultConfig returns the configuration with every default of Options
// filled in (Limits.MaxConns stays 0: it is derived from the open-files
// limit at start).
func DefaultConfig() Config {
	var c Config
	option.Apply(&c, Options)
	return c
}

// Validate reports whether New would accept c: the same checks, without
// building an engine (for sseloop --print-config).
func (c Config) Validate() error {
	if err := c.fillDefaults(); err != nil {
		return err
	}
	if _, err := newAuthenticator(c.Auth); err != nil {
		return err
	}
	_, err := newCORSPolicy(c.CORS)
	return err
}

// fillDefaults replaces zero values with defaults and checks the rest.
func (c *Config) fillDefaults() error {
	// Copy the sources: checkSources fills in their defaults.
	c.Sources = append([]Source(nil), c.Sources...)
	if err := checkSources(c.Sources); err != nil {
		return err
	}
	if err := option.CheckNotNegative(c, Options); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	option.FillZero(c, Options)
	if c.Presence.NodeTTL <= c.Presence.Interval {
		return fmt.Errorf("engine: presence.node_ttl (%v) must exceed presence.interval (%v)", c.Presence.NodeTTL, c.Presence.Interval)
	}
	if c.Presence.Off && len(c.Presence.Keys) > 0 {
		return errors.New("engine: presence.keys needs presence on (presence.off is set)")
	}
	for i, p := range c.Presence.Keys {
		if p == "" {
			return fmt.Errorf("engine: presence.keys[%d] is empty", i)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
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
