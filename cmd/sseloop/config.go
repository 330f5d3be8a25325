package main

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/sseloop/sseloop/engine"
	"github.com/sseloop/sseloop/internal/option"
	"github.com/sseloop/sseloop/store"
)

// Config is everything sseloop reads from defaults < file < environment <
// flags. Each key's default, unit and help are in options (engine.Options
// plus cmdOptions); configs/sseloop.yaml documents every key, and
// TestExampleConfigMatchesOptions keeps the two in step.
type Config struct {
	Engine  engine.Config `koanf:",squash"`
	Store   StoreConfig   `koanf:"store"`
	History HistoryConfig `koanf:"history"`
	Log     LogConfig     `koanf:"log"`
	Metrics MetricsConfig `koanf:"metrics"`
}

// MetricsConfig configures the optional separate metrics listener.
type MetricsConfig struct {
	// Listen, when set (e.g. "127.0.0.1:9090"), serves GET /metrics on this
	// address with net/http, so Prometheus can scrape an internal port; the
	// public listener then stops serving /metrics unless Public is set.
	Listen string `koanf:"listen"`
	// Public keeps /metrics on the public listener when Listen is set.
	Public bool `koanf:"public"`
}

// StoreConfig selects and configures the event store.
type StoreConfig struct {
	Driver string `koanf:"driver"` // buntdb | redis
	Path   string `koanf:"path"`   // buntdb: ":memory:" or a file
	Sync   string `koanf:"sync"`   // buntdb: always | everysecond | never
	// Repair (buntdb): drop the damaged records of the file instead of
	// refusing to start; see store.Options.Repair.
	Repair bool        `koanf:"repair"`
	Redis  RedisConfig `koanf:"redis"`
}

// RedisConfig configures store.driver=redis.
type RedisConfig struct {
	Addr     string `koanf:"addr"`     // host:port
	Password string `koanf:"password"` // AUTH password; "" for none
	DB       int    `koanf:"db"`       // database number
	Prefix   string `koanf:"prefix"`   // prefix of sseloop's own keys (never the app cache's)
	FeedLen  int    `koanf:"feed_len"` // approximate length bound of the change feed stream
	// WatchPrefix: the app keys <watch_prefix><key> are read (never written)
	// for direct pokes; "" turns direct pokes off.
	WatchPrefix string `koanf:"watch_prefix"`
	// DirectPoll is how often the watched keys are read to notice writes by
	// other programs; 0 turns direct pokes off.
	DirectPoll   time.Duration  `koanf:"direct_poll"`
	Sentinel     SentinelConfig `koanf:"sentinel"`
	WaitReplicas int            `koanf:"wait_replicas"` // replicas WAITed for per trigger; 0 = none
}

// directPoll is the direct-poke interval the engine gets: 0 without a watch
// prefix. Why: with nothing to read, the poller still copied every key with
// a subscriber into a new map once per interval, O(keys) work per second on
// an idle node (0.6 % of a core instead of 0.2 % at 15,000 per-user keys).
func (r RedisConfig) directPoll() time.Duration {
	if r.WatchPrefix == "" {
		return 0
	}
	return r.DirectPoll
}

// SentinelConfig finds the Redis primary through Redis Sentinel.
type SentinelConfig struct {
	Master string   `koanf:"master"` // master name; "" = no Sentinel (use addr)
	Addrs  []string `koanf:"addrs"`  // sentinels, host:port each
}

// HistoryConfig bounds the retained history of each key.
type HistoryConfig struct {
	MaxEvents int           `koanf:"max_events"`
	TTL       time.Duration `koanf:"ttl"`
}

// LogConfig configures log/slog.
type LogConfig struct {
	Level  string `koanf:"level"`  // debug | info | warn | error
	Format string `koanf:"format"` // text | json
}

// cmdOptions are the keys sseloop adds to engine.Options.
var cmdOptions = []option.Option{
	{Key: "store.driver", Default: "buntdb", Help: "event store: buntdb (embedded, one process) or redis (shared by many)"},
	{Key: "store.path", Default: ":memory:", Help: `buntdb: ":memory:" or a file that keeps history across restarts`},
	{Key: "store.sync", Default: "everysecond", Help: "buntdb file: always (fsync every trigger), everysecond or never"},
	{Key: "store.repair", Default: false, Help: "buntdb file: drop damaged records (after copying the file) instead of refusing to start"},
	{Key: "store.redis.addr", Default: "127.0.0.1:6379", Help: "redis: host:port of the server"},
	{Key: "store.redis.password", Default: "", ZeroAllowed: true, Help: `redis: AUTH password (secret); "" = none`},
	{Key: "store.redis.db", Default: 0, ZeroAllowed: true, Help: "redis: database number (SELECT)"},
	{Key: "store.redis.prefix", Default: "sseloop:", Help: "redis: prefix of every key sseloop uses"},
	{Key: "store.redis.feed_len", Default: 100000, Unit: "entries", Help: "redis: approximate bound of the shared change feed"},
	{Key: "store.redis.watch_prefix", Default: "", ZeroAllowed: true, Help: `redis: app keys <watch_prefix><key> are read, never written, for direct pokes (e.g. "cake_"); "" = off`},
	{Key: "store.redis.direct_poll", Default: time.Second, ZeroAllowed: true, Help: "redis: how often the watched app keys are read (direct pokes); 0 = off"},
	{Key: "store.redis.sentinel.master", Default: "", ZeroAllowed: true, Help: `redis: Sentinel master name; "" = no Sentinel (use addr)`},
	{Key: "store.redis.sentinel.addrs", Default: []string{}, ZeroAllowed: true, Help: "redis: the sentinels, host:port each"},
	{Key: "store.redis.wait_replicas", Default: 0, ZeroAllowed: true, Unit: "replicas", Help: "redis: answer a trigger only after WAIT confirms this many replicas; 0 = no WAIT"},
	{Key: "history.max_events", Default: 1000, Unit: "events", Help: "events retained per key for Last-Event-ID replay"},
	{Key: "history.ttl", Default: 24 * time.Hour, Help: "how long an event is retained; negative = forever (still bounded by max_events)"},
	{Key: "log.level", Default: "info", Help: "debug, info, warn or error"},
	{Key: "log.format", Default: "text", Help: "text or json"},
	{Key: "metrics.listen", Default: "", ZeroAllowed: true, Help: `serve GET /metrics on this separate address instead of on listen; "" = on listen only`},
	{Key: "metrics.public", Default: false, Help: "with metrics.listen set, keep serving /metrics on listen too"},
}

// secretKeys are the keys --print-config never shows. Besides these, every
// sources[].headers value is redacted.
var secretKeys = map[string]bool{
	"auth.jwt_secret": true, "auth.publish_keys": true, "store.redis.password": true,
	"mercure.publisher_jwt.key": true, "mercure.subscriber_jwt.key": true,
}

// options returns every key sseloop reads, engine keys at the top level.
func options() []option.Option { return append(slices.Clone(engine.Options), cmdOptions...) }

func defaultConfig() Config {
	var c Config
	option.Apply(&c, options())
	return c
}

// envPrefix starts every environment variable sseloop reads; "__" nests:
// SSELOOP_STORE__PATH is store.path.
const envPrefix = "SSELOOP_"

// flagsOnly are the command line's own flags, which are not config keys.
type flagsOnly struct {
	configFile  string
	printConfig bool
	version     bool
	// ignoredEnv lists the Kubernetes service-link variables that were
	// skipped, for a debug log line once logging is set up.
	ignoredEnv []string
}

// errHelp is returned by loadConfig after it printed --help.
var errHelp = errors.New("help requested")

// usageHead is printed before the flags by --help.
const usageHead = `sseloop: a Server-Sent Events server.

Usage:
  sseloop [flags]              serve (see configs/sseloop.yaml for every key)
  sseloop healthcheck [flags]  GET /healthz from the server configured the same
                               way; exit 0 when it answers 200 (for containers)
  sseloop repair FILE          drop the damaged records of a stopped server's
                               buntdb file (keeps a copy; see store.repair)

Every config key is a flag, an SSELOOP_ variable (upper case, "__" for each
dot: SSELOOP_STORE__PATH) and a YAML key. Precedence: defaults < --config
file < environment < flags. Lists are comma-separated in flags and the
environment, YAML lists or comma-separated strings in the file.

Flags:
`

// loadConfig merges defaults, the --config file, the environment and flags.
// An invalid value stops start-up with an error that names its key (or its
// environment variable). With --help it prints usage to out and returns
// errHelp.
func loadConfig(args []string, environ []string, out io.Writer) (Config, flagsOnly, error) {
	var fo flagsOnly
	opts := options()
	byKey := make(map[string]option.Option, len(opts))
	for _, o := range opts {
		byKey[o.Key] = o
	}

	fs := pflag.NewFlagSet("sseloop", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(io.Discard)
	fs.StringVar(&fo.configFile, "config", "", "YAML config `file` (keys as in configs/sseloop.yaml)")
	fs.BoolVar(&fo.printConfig, "print-config", false, "check the merged configuration, print it as YAML (secrets redacted) and exit")
	fs.BoolVar(&fo.version, "version", false, "print the version, commit and Go version and exit")
	help := fs.BoolP("help", "h", false, "print this help and exit")
	for _, o := range opts {
		usage := o.Help
		if o.Unit != "" {
			usage += ", in `" + o.Unit + "`"
		}
		switch v := o.Default.(type) {
		case time.Duration:
			fs.Duration(o.Key, v, usage)
		case int:
			fs.Int(o.Key, v, usage)
		case bool:
			fs.Bool(o.Key, v, usage)
		case string:
			fs.String(o.Key, v, usage)
		case []string:
			fs.StringSlice(o.Key, v, usage)
		case []engine.Source:
			// A list of structs: configured in the file only.
		default:
			panic(fmt.Sprintf("config key %s: unsupported type %T", o.Key, v))
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, fo, fmt.Errorf("config: %w (see --help)", err)
	}
	if *help {
		fmt.Fprint(out, usageHead)
		fmt.Fprint(out, fs.FlagUsagesWrapped(100))
		return Config{}, fo, errHelp
	}
	if fs.NArg() > 0 {
		return Config{}, fo, fmt.Errorf("config: unexpected argument %q (see --help)", fs.Arg(0))
	}
	if fo.version {
		return Config{}, fo, nil
	}

	k := koanf.New(".")
	for _, o := range opts {
		if err := k.Set(o.Key, o.Default); err != nil {
			return Config{}, fo, err
		}
	}
	if fo.configFile != "" {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(fo.configFile), yaml.Parser()); err != nil {
			return Config{}, fo, fmt.Errorf("config: %s: %w", fo.configFile, err)
		}
		for _, key := range fk.Keys() {
			if _, ok := byKey[key]; !ok {
				return Config{}, fo, fmt.Errorf("config: %s: unknown key %q", fo.configFile, key)
			}
			v := fk.Get(key)
			if _, list := byKey[key].Default.([]string); list {
				// A string where a list is expected is split on commas, as
				// in flags and the environment: publish_keys: "k1,k2" is
				// two keys wherever it is written.
				if s, ok := v.(string); ok {
					v = splitList(s)
				}
			}
			if err := k.Set(key, v); err != nil {
				return Config{}, fo, err
			}
		}
	}
	ignored, err := loadEnv(k, byKey, environ)
	if err != nil {
		return Config{}, fo, err
	}
	fo.ignoredEnv = ignored
	flags := posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		if _, ok := byKey[f.Name]; !ok {
			return "", nil // --config, --print-config...: options, not keys
		}
		return f.Name, posflag.FlagVal(fs, f)
	})
	if err := k.Load(flags, nil); err != nil {
		return Config{}, fo, fmt.Errorf("config: flags: %w", err)
	}

	var cfg Config
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf", FlatPaths: false}); err != nil {
		return Config{}, fo, fmt.Errorf("config: %w", err)
	}
	if err := cfg.check(); err != nil {
		return Config{}, fo, err
	}
	return cfg, fo, nil
}

// splitList splits a comma-separated list; "" is the empty list. Items are
// trimmed of spaces, so list items can hold neither commas nor edge spaces.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return []string{}
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items
}

// k8sServiceLink matches, after SSELOOP_, the variables Kubernetes injects
// into every pod for a Service named "sseloop" (docker links use the same
// names): SSELOOP_SERVICE_HOST, SSELOOP_SERVICE_PORT[_<NAME>], SSELOOP_PORT,
// SSELOOP_PORT_8080_TCP[_PROTO|_PORT|_ADDR]; and the same for a Service
// whose name starts with "sseloop-" (SSELOOP_REDIS_SERVICE_HOST for
// "sseloop-redis"). Config keys nest with "__", which Kubernetes never
// writes, so a variable with "__" is never taken for a service link.
var k8sServiceLink = regexp.MustCompile(`^([A-Z0-9]+(_[A-Z0-9]+)*_)?(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$`)

// isServiceLink reports whether the variable SSELOOP_<rest>=v is one that
// Kubernetes injects. The bare <NAME>_PORT form must also have the value
// Kubernetes gives it (tcp://10.96.0.12:8080), so that a typo such as
// SSELOOP_LISTEN_PORT=8080 is still an error.
func isServiceLink(rest, v string) bool {
	if strings.Contains(rest, "__") || !k8sServiceLink.MatchString(rest) {
		return false
	}
	bare := rest == "PORT" || strings.HasSuffix(rest, "_PORT") &&
		!strings.HasSuffix(rest, "SERVICE_PORT") && !strings.HasSuffix(rest, "TCP_PORT") &&
		!strings.HasSuffix(rest, "UDP_PORT") && !strings.HasSuffix(rest, "SCTP_PORT")
	if bare {
		return strings.HasPrefix(v, "tcp://") || strings.HasPrefix(v, "udp://") || strings.HasPrefix(v, "sctp://")
	}
	return true
}

// loadEnv sets every SSELOOP_ variable of environ in k, converted to its
// key's type. A variable naming no key is an error that names it, unless it
// is a Kubernetes service link: those are returned, not loaded.
func loadEnv(k *koanf.Koanf, byKey map[string]option.Option, environ []string) (ignored []string, err error) {
	for _, kv := range environ {
		name, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) {
			continue
		}
		rest := strings.TrimPrefix(name, envPrefix)
		key := strings.ReplaceAll(strings.ToLower(rest), "__", ".")
		o, known := byKey[key]
		if !known {
			if isServiceLink(rest, v) {
				ignored = append(ignored, name)
				continue
			}
			return nil, fmt.Errorf("config: environment: %s: unknown key %q", name, key)
		}
		var val any
		switch o.Default.(type) {
		case time.Duration:
			val, err = time.ParseDuration(v)
		case int:
			val, err = strconv.Atoi(v)
		case bool:
			val, err = strconv.ParseBool(v)
		case string:
			val = v
		case []string:
			val = splitList(v)
		default:
			return nil, fmt.Errorf("config: environment: %s: %s is set in the config file only", name, key)
		}
		if err != nil {
			return nil, fmt.Errorf("config: environment: %s: invalid %s value for %s (e.g. %v)", name, typeName(o.Default), key, exampleValue(o.Default))
		}
		if err := k.Set(key, val); err != nil {
			return nil, err
		}
	}
	return ignored, nil
}

func typeName(v any) string {
	switch v.(type) {
	case time.Duration:
		return "duration"
	case int:
		return "integer"
	case bool:
		return "boolean"
	}
	return fmt.Sprintf("%T", v)
}

func exampleValue(v any) any {
	if d, ok := v.(time.Duration); ok && d == 0 {
		return "1s"
	}
	return v
}

// check rejects values that parse but cannot be meant, and runs every check
// start-up runs, so that --print-config fails where start-up would. A bare
// YAML number for a duration means nanoseconds, so "heartbeat: 30" is
// caught here.
func (c *Config) check() error {
	v := reflect.ValueOf(c).Elem()
	for _, o := range options() {
		if _, ok := o.Default.(time.Duration); !ok || o.Key == "history.ttl" {
			continue
		}
		d := time.Duration(option.Field(v, o.Key).Int())
		if o.ZeroAllowed && d == 0 {
			continue
		}
		if d < time.Millisecond {
			return fmt.Errorf("config: %s: %v is below 1ms (a bare number means nanoseconds; write e.g. 30s)", o.Key, d)
		}
	}
	if c.History.TTL != 0 && c.History.TTL < time.Second && c.History.TTL > 0 {
		return fmt.Errorf("config: history.ttl: %v is below 1s (a bare number means nanoseconds; write e.g. 24h)", c.History.TTL)
	}
	if c.History.MaxEvents < 1 {
		return errors.New("config: history.max_events: must be at least 1")
	}
	switch c.Store.Driver {
	case "buntdb", "redis":
	default:
		return errors.New("config: store.driver: must be buntdb or redis")
	}
	if _, err := store.ParseSync(c.Store.Sync); err != nil {
		return errors.New("config: store.sync: must be always, everysecond or never")
	}
	if c.Store.Redis.FeedLen < 0 {
		return errors.New("config: store.redis.feed_len: must not be negative")
	}
	if c.Store.Redis.DB < 0 {
		return errors.New("config: store.redis.db: must not be negative")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log.level: must be debug, info, warn or error")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("config: log.format: must be text or json")
	}
	if err := c.Engine.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// printable returns cfg as nested maps of normalised values for
// --print-config: durations as "30s", lists as lists, whatever the source
// wrote; secrets and every sources[].headers value redacted.
func printable(cfg Config) map[string]any {
	out := map[string]any{}
	v := reflect.ValueOf(cfg)
	for _, o := range options() {
		f := option.Field(v, o.Key)
		var val any
		switch x := f.Interface().(type) {
		case time.Duration:
			val = shortDuration(x)
		case []engine.Source:
			list := make([]any, 0, len(x))
			for _, s := range x {
				m := map[string]any{"pattern": s.Pattern, "url": s.URL}
				if s.Timeout != 0 {
					m["timeout"] = shortDuration(s.Timeout)
				}
				if len(s.Headers) > 0 {
					h := map[string]any{}
					for name := range s.Headers {
						h[name] = redacted
					}
					m["headers"] = h
				}
				list = append(list, m)
			}
			val = list
		default:
			val = x
		}
		if secretKeys[o.Key] && !f.IsZero() && f.Len() > 0 {
			val = redacted
		}
		setPath(out, o.Key, val)
	}
	return out
}

const redacted = "(redacted)"

func setPath(m map[string]any, key string, v any) {
	for {
		head, rest, nested := strings.Cut(key, ".")
		if !nested {
			m[head] = v
			return
		}
		sub, ok := m[head].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[head] = sub
		}
		m, key = sub, rest
	}
}

// shortDuration formats d as people write it: 24h, 10m, 1m30s, 100ms
// (time.Duration.String writes 24h0m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
