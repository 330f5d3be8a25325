package main

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/sseloop/sseloop/engine"
)

// Config is everything sseloop reads from defaults < file < environment <
// flags. configs/sseloop.yaml documents every key.
type Config struct {
	Engine  engine.Config `koanf:",squash"`
	Store   StoreConfig   `koanf:"store"`
	History HistoryConfig `koanf:"history"`
	Log     LogConfig     `koanf:"log"`
	Metrics MetricsConfig `koanf:"metrics"`
}

// MetricsConfig configures the optional separate metrics listener.
type MetricsConfig struct {
	// Listen, when set (e.g. "127.0.0.1:9090"), also serves GET /metrics on
	// this address with net/http, so Prometheus can scrape an internal port.
	Listen string `koanf:"listen"`
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
	Prefix   string `koanf:"prefix"`   // key prefix, shared with the app's cache for direct pokes
	FeedLen  int    `koanf:"feed_len"` // approximate length bound of the change feed stream
	// DirectPoll is how often the markers <prefix><key> of watched keys are
	// read to notice writes by other programs; 0 turns direct pokes off.
	DirectPoll time.Duration `koanf:"direct_poll"`
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

func defaultConfig() Config {
	return Config{
		Engine: engine.DefaultConfig(),
		Store: StoreConfig{Driver: "buntdb", Path: ":memory:", Sync: "everysecond",
			Redis: RedisConfig{Addr: "127.0.0.1:6379", Prefix: "sseloop:", FeedLen: 100000, DirectPoll: time.Second}},
		History: HistoryConfig{MaxEvents: 1000, TTL: 24 * time.Hour},
		Log:     LogConfig{Level: "info", Format: "text"},
	}
}

// envPrefix starts every environment variable sseloop reads; "__" nests:
// SSELOOP_STORE__PATH is store.path.
const envPrefix = "SSELOOP_"

// options are the command line's own flags, which are not config keys.
type options struct {
	configFile  string
	printConfig bool
}

// loadConfig merges defaults, the --config file, the environment and flags.
// An invalid value stops start-up with an error that names its key.
func loadConfig(args []string, environ []string) (Config, options, *koanf.Koanf, error) {
	var opts options
	defaults := map[string]any{}
	flattenDefaults(defaults)

	fs := pflag.NewFlagSet("sseloop", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&opts.configFile, "config", "", "YAML config file")
	fs.BoolVar(&opts.printConfig, "print-config", false, "print the merged configuration as YAML and exit")
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := defaults[k].(type) {
		case time.Duration:
			fs.Duration(k, v, "")
		case int:
			fs.Int(k, v, "")
		case bool:
			fs.Bool(k, v, "")
		case string:
			fs.String(k, v, "")
		case []string:
			fs.StringSlice(k, v, "")
		case []engine.Source:
			// A list of structs: configured in the file only.
		default:
			panic(fmt.Sprintf("config key %s: unsupported type %T", k, v))
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, opts, nil, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, opts, nil, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}

	k := koanf.New(".")
	for _, key := range keys {
		if err := k.Set(key, defaults[key]); err != nil {
			return Config{}, opts, nil, err
		}
	}
	if opts.configFile != "" {
		if err := k.Load(file.Provider(opts.configFile), yaml.Parser()); err != nil {
			return Config{}, opts, nil, fmt.Errorf("config: %s: %w", opts.configFile, err)
		}
	}
	err := k.Load(env.Provider(".", env.Opt{
		Prefix:      envPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(key, v string) (string, any) {
			key = strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(key, envPrefix)), "__", ".")
			if _, list := defaults[key].([]string); list {
				// Lists are comma-separated, as in flags:
				// SSELOOP_AUTH__PUBLIC_KEYS=news:*,status
				if v == "" {
					return key, []string{}
				}
				return key, strings.Split(v, ",")
			}
			return key, v
		},
	}), nil)
	if err != nil {
		return Config{}, opts, nil, fmt.Errorf("config: environment: %w", err)
	}
	flags := posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		if _, ok := defaults[f.Name]; !ok {
			return "", nil // --config, --print-config: options, not keys
		}
		return f.Name, posflag.FlagVal(fs, f)
	})
	if err := k.Load(flags, nil); err != nil {
		return Config{}, opts, nil, fmt.Errorf("config: flags: %w", err)
	}
	for _, key := range k.Keys() {
		if _, ok := defaults[key]; !ok {
			return Config{}, opts, nil, fmt.Errorf("config: unknown key %q", key)
		}
	}

	var cfg Config
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf", FlatPaths: false}); err != nil {
		return Config{}, opts, nil, fmt.Errorf("config: %w", err)
	}
	if err := cfg.check(); err != nil {
		return Config{}, opts, nil, err
	}
	return cfg, opts, k, nil
}

// check rejects values that parse but cannot be meant. A bare YAML number
// for a duration means nanoseconds, so "heartbeat: 30" is caught here.
func (c *Config) check() error {
	for key, d := range map[string]time.Duration{
		"tick": c.Engine.Tick, "poll": c.Engine.Poll, "heartbeat": c.Engine.Heartbeat,
		"retry": c.Engine.Retry, "limits.header_timeout": c.Engine.Limits.HeaderTimeout,
		"limits.idle_timeout": c.Engine.Limits.IdleTimeout, "cors.max_age": c.Engine.CORS.MaxAge,
	} {
		if d < time.Millisecond {
			return fmt.Errorf("config: %s: %v is below 1ms (a bare number means nanoseconds; write e.g. 30s)", key, d)
		}
	}
	if c.History.TTL != 0 && c.History.TTL < time.Second && c.History.TTL > 0 {
		return fmt.Errorf("config: history.ttl: %v is below 1s (a bare number means nanoseconds; write e.g. 24h)", c.History.TTL)
	}
	if c.History.MaxEvents < 1 {
		return errors.New("config: history.max_events: must be at least 1")
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
	return nil
}

// flattenDefaults records every key's default in out.
func flattenDefaults(out map[string]any) { flatten(reflect.ValueOf(defaultConfig()), "", out) }

// flatten walks a config struct and records each leaf under its dotted
// koanf key, so that flags and defaults always cover every key.
func flatten(v reflect.Value, prefix string, out map[string]any) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("koanf")
		if tag == "-" || !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		if tag == ",squash" {
			flatten(fv, prefix, out)
			continue
		}
		key := prefix + tag
		if fv.Kind() == reflect.Struct {
			flatten(fv, key+".", out)
			continue
		}
		out[key] = fv.Interface()
	}
}
