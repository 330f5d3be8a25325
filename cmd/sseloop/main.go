// Command sseloop runs the sseloop Server-Sent Events server.
//
//	sseloop [--config FILE] [--print-config] [--dotted.key VALUE ...]
//	sseloop --help | --version
//	sseloop healthcheck [--config FILE] [--dotted.key VALUE ...]
//	sseloop repair FILE
//
// healthcheck asks the server configured the same way for GET /healthz and
// exits 0 when it answers 200 (the container HEALTHCHECK: no curl needed).
//
// repair opens the buntdb file FILE (the server must be stopped) with
// store.repair, so its damaged records are dropped (the original is kept as
// FILE.damaged-<unix seconds>), and exits 0 when the file is sound again.
//
// Configuration is merged from defaults, the YAML file, SSELOOP_* environment
// variables and flags, in that order; see configs/sseloop.yaml.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/redis/go-redis/v9"

	"github.com/sseloop/sseloop/engine"
	"github.com/sseloop/sseloop/store"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "repair" {
		return repairFile(args[1:], stderr)
	}
	healthcheck := len(args) > 0 && args[0] == "healthcheck"
	if healthcheck {
		args = args[1:]
	}
	cfg, fo, err := loadConfig(args, environ, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sseloop:", err)
		return 2
	}
	if fo.version {
		fmt.Fprintln(stdout, versionLine())
		return 0
	}
	if healthcheck {
		return checkHealth(cfg.Engine.Listen, stderr)
	}
	if fo.printConfig {
		// Secrets are not printed: the output ends up in tickets and logs.
		b, err := yaml.Parser().Marshal(printable(cfg))
		if err != nil {
			fmt.Fprintln(stderr, "sseloop:", err)
			return 1
		}
		_, _ = stdout.Write(b)
		return 0
	}
	log := newLogger(cfg.Log, stderr)
	if len(fo.ignoredEnv) > 0 {
		log.Debug("ignored Kubernetes service-link variables", "names", fo.ignoredEnv)
	}
	cfg.Engine.Logger = log
	cfg.Engine.NoPublicMetrics = cfg.Metrics.Listen != "" && !cfg.Metrics.Public
	if cfg.Store.Driver == "redis" {
		cfg.Engine.DirectPoll = cfg.Store.Redis.directPoll()
		redis.SetLogger(redisLogger{log})
		cfg.Engine.StartupAttrs = []any{"store", "redis", "addr", cfg.Store.Redis.Addr, "db", cfg.Store.Redis.DB,
			"prefix", cfg.Store.Redis.Prefix}
	} else {
		cfg.Engine.StartupAttrs = []any{"store", cfg.Store.Driver, "path", cfg.Store.Path, "sync", cfg.Store.Sync}
	}
	cfg.Engine.StartupAttrs = append(cfg.Engine.StartupAttrs,
		"history_max_events", cfg.History.MaxEvents, "history_ttl", cfg.History.TTL)

	sync, err := store.ParseSync(cfg.Store.Sync)
	if err != nil {
		fmt.Fprintln(stderr, "sseloop: config: store.sync:", err)
		return 2
	}
	st, err := store.Open(store.Config{
		Driver: cfg.Store.Driver,
		Path:   cfg.Store.Path,
		Redis: store.RedisConfig{
			Addr:     cfg.Store.Redis.Addr,
			Password: cfg.Store.Redis.Password,
			DB:       cfg.Store.Redis.DB,
			Prefix:   cfg.Store.Redis.Prefix,
			FeedLen:  cfg.Store.Redis.FeedLen,

			WatchPrefix:    cfg.Store.Redis.WatchPrefix,
			SentinelMaster: cfg.Store.Redis.Sentinel.Master,
			SentinelAddrs:  cfg.Store.Redis.Sentinel.Addrs,
			WaitReplicas:   cfg.Store.Redis.WaitReplicas,
		},
		Options: store.Options{
			MaxEvents: cfg.History.MaxEvents,
			TTL:       cfg.History.TTL,
			Sync:      sync,
			Repair:    cfg.Store.Repair,
			Logger:    log,
		},
	})
	if err != nil {
		log.Error("open store", "err", err)
		return 1
	}
	if rs, ok := st.(*store.Redis); ok {
		// Never ignore store.sync silently: say what Redis really does.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if w := rs.DurabilityWarning(ctx); w != "" {
			log.Warn("store.sync and Redis persistence differ", "detail", w)
		}
		cancel()
	}
	eng, err := engine.New(cfg.Engine, st)
	if err != nil {
		_ = st.Close()
		fmt.Fprintln(stderr, "sseloop:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cfg.Metrics.Listen != "" {
		ms, err := serveMetrics(cfg.Metrics.Listen, eng, log)
		if err != nil {
			_ = st.Close()
			log.Error("metrics listener", "err", err)
			return 1
		}
		defer ms.Close()
	}
	runErr := eng.Run(ctx)
	if err := st.Close(); err != nil {
		log.Error("close store", "err", err)
		if runErr == nil {
			return 1
		}
	}
	if runErr != nil {
		log.Error("serve", "err", runErr)
		return 1
	}
	log.Info("sseloop stopped")
	return 0
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	hopts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts))
	}
	return slog.New(slog.NewTextHandler(w, hopts))
}

// repairFile is `sseloop repair FILE`.
func repairFile(args []string, stderr io.Writer) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: sseloop repair FILE (the buntdb file of a stopped server)")
		return 2
	}
	path := args[0]
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintln(stderr, "sseloop repair:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	// No sweep: repair changes nothing but the damage.
	st, err := store.OpenBunt(path, store.Options{Repair: true, Logger: log, SweepInterval: -1})
	if err != nil {
		log.Error("repair", "err", err)
		return 1
	}
	if err := st.Close(); err != nil {
		log.Error("repair", "err", err)
		return 1
	}
	log.Info("sseloop repair: the file is sound", "path", path, "records_failing_checksum", st.CorruptRecords())
	return 0
}

// checkHealth asks the local server for /healthz.
func checkHealth(listen string, stderr io.Writer) int {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		fmt.Fprintln(stderr, "sseloop healthcheck: listen:", err)
		return 2
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		fmt.Fprintln(stderr, "sseloop healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "sseloop healthcheck: status", resp.StatusCode)
		return 1
	}
	return 0
}

// serveMetrics serves GET /metrics on its own listener (metrics.listen).
func serveMetrics(addr string, eng *engine.Engine, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		eng.WriteMetrics(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("metrics listening", "addr", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("metrics listener", "err", err)
		}
	}()
	return srv, nil
}

// redisLogger sends go-redis's own messages (e.g. "failed to dial" on every
// call while Redis is down) to the debug log: the engine already reports
// store failures once, with backoff, and counts them.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.l.Debug("redis: " + fmt.Sprintf(format, v...))
}

// versionLine describes this binary from its build info: module version,
// VCS commit (and whether the tree was modified) and Go version.
func versionLine() string {
	version, commit, goVersion := "(devel)", "unknown", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		goVersion = bi.GoVersion
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty {
			commit += "-dirty"
		}
	}
	return fmt.Sprintf("sseloop %s commit %s %s", version, commit, goVersion)
}
