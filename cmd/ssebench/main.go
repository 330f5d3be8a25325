// Command ssebench benchmarks sseloop against a goroutine-per-connection
// baseline and the Mercure hub. The work is done by package bench; this
// file parses arguments.
//
//	ssebench baseline --listen ADDR
//	ssebench run --target URL --scenario idle|fanout|throughput|churn|hold|storm --conns N [--server-cmd "CMD ARGS"] [--proto mercure --jwt-key K] [flags]
//	ssebench compare --conns N [--servers sseloop,baseline,mercure] [--scenarios idle,fanout,...,storm] [--json FILE] [--chart FILE.svg]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/sseloop/sseloop/bench"
)

func main() {
	if code, ok := bench.Child(); ok {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  ssebench baseline --listen ADDR
  ssebench run --target URL --scenario idle|fanout|throughput|churn|hold|storm --conns N [--server-cmd "CMD ARGS"] [--proto mercure --jwt-key K] [flags]
  ssebench compare --conns N [--servers sseloop,baseline,mercure,mercure-bolt] [--scenarios idle,fanout,throughput,churn,storm] [--json FILE] [--chart FILE.svg]
Run "ssebench COMMAND -h" for the flags of a command.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "baseline":
		fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
		fs.SetOutput(stderr)
		listen := fs.String("listen", "127.0.0.1:8090", "TCP address to serve on")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		err = bench.ServeBaseline(ctx, *listen)
		if errors.Is(err, context.Canceled) {
			err = nil
		}
	case "run":
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(stderr)
		var cfg bench.RunConfig
		runFlags(fs, &cfg)
		fs.StringVar(&cfg.Target, "target", "http://127.0.0.1:8080", "server base URL")
		fs.StringVar(&cfg.Scenario, "scenario", "idle", "idle, fanout, throughput, churn, hold or storm (storm needs --server-cmd)")
		serverCmd := fs.String("server-cmd", "", "storm: the server command (no shell; it must serve --target and answer /healthz): ssebench starts it, kills it with SIGKILL and restarts it")
		serverNodes := fs.Int("server-nodes", 1, "storm: run --server-cmd this many times on --target (they must share the port: SO_REUSEPORT, a shared store); all are killed and restarted together")
		fs.StringVar(&cfg.Server, "name", "", "server label in the result (default host:port)")
		fs.StringVar(&cfg.Proto, "proto", bench.ProtoSseloop, "server API: sseloop (also the baseline's) or mercure")
		fs.StringVar(&cfg.JWTKey, "jwt-key", "", "mercure: HS256 key to sign the publisher JWT with")
		fs.Func("pid", "server PID(s), comma-separated: RSS and CPU from /proc, summed", func(v string) error {
			for i, f := range strings.Split(v, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n <= 0 {
					return fmt.Errorf("bad pid %q", f)
				}
				if i == 0 {
					cfg.PID = n
				} else {
					cfg.MorePIDs = append(cfg.MorePIDs, n)
				}
			}
			return nil
		})
		jsonFile := fs.String("json", "", "write the result as JSON to this file")
		progress := progressFlag(fs)
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		cfg.Progress, cfg.Stderr = progressWriter(*progress, stderr), stderr
		if *serverCmd != "" {
			u, perr := url.Parse(cfg.Target)
			if perr != nil || u.Host == "" {
				fmt.Fprintln(stderr, "ssebench: --target must be http://host:port with --server-cmd")
				return 2
			}
			sc, serr := bench.StartServerCommand(ctx, strings.Fields(*serverCmd), u.Host, *serverNodes)
			if serr != nil {
				fmt.Fprintln(stderr, "ssebench:", serr)
				return 1
			}
			defer sc.Stop()
			pids := sc.PIDs()
			cfg.PID, cfg.MorePIDs, cfg.Restarter = pids[0], pids[1:], sc.Restarter()
		}
		var res *bench.Result
		res, err = bench.Run(ctx, cfg)
		if err == nil {
			bench.WriteResult(stdout, res)
			if *jsonFile != "" {
				err = bench.WriteJSON(*jsonFile, []*bench.Result{res})
			}
		}
	case "compare":
		fs := flag.NewFlagSet("compare", flag.ContinueOnError)
		fs.SetOutput(stderr)
		var cfg bench.CompareConfig
		runFlags(fs, &cfg.Run)
		scen := fs.String("scenarios", strings.Join(bench.Scenarios, ","), "comma-separated scenarios; storm (kill -9, restart, reconnect storm) runs only when listed")
		servers := fs.String("servers", strings.Join(bench.DefaultServers, ","), "comma-separated servers: "+strings.Join(bench.Servers, ", "))
		fs.StringVar(&cfg.MercureBin, "mercure", "", "bench/mercurepeer binary (default: go build it)")
		fs.StringVar(&cfg.JSON, "json", "", "write the results as JSON to this file")
		fs.StringVar(&cfg.Chart, "chart", "", "write an SVG chart to this file")
		fs.StringVar(&cfg.SseloopBin, "sseloop", "", "sseloop binary (default: go build ./cmd/sseloop)")
		fs.StringVar(&cfg.SseloopRefBin, "sseloop-ref", "", "binary of the sseloop-ref server: a second sseloop (e.g. a build of main) to compare with in the same run")
		progress := progressFlag(fs)
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		cfg.Scenarios = strings.Split(*scen, ",")
		cfg.Servers = strings.Split(*servers, ",")
		cfg.Out, cfg.Run.Progress, cfg.Run.Stderr = stdout, progressWriter(*progress, stderr), stderr
		_, err = bench.Compare(ctx, cfg)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "ssebench:", err)
		return 1
	}
	return 0
}

// runFlags registers the load flags shared by run and compare.
func runFlags(fs *flag.FlagSet, c *bench.RunConfig) {
	fs.IntVar(&c.Conns, "conns", 1000, "stable connections")
	fs.IntVar(&c.Keys, "keys", 0, "keys (default: idle conns, fanout 1, throughput 100, churn 10)")
	fs.IntVar(&c.Events, "events", 0, "fanout: events to publish (default 20); storm: per phase (default 2 per key); hold: broadcasts to the shared key (default 1)")
	fs.IntVar(&c.Sample, "sample", 0, "hold: per-user keys that get one event each after the broadcast (default 1000)")
	fs.Float64Var(&c.Rate, "rate", 0, "throughput/churn: events per second (default: throughput 2000, churn 20)")
	fs.DurationVar(&c.Duration, "duration", 0, "throughput/churn: publishing time (default 10s)")
	fs.Float64Var(&c.ChurnRate, "churn-rate", 0, "churn: connections opened and closed per second (default 100)")
	fs.DurationVar(&c.ChurnHold, "churn-hold", 0, "churn: how long each churn connection stays open (default 1s)")
	fs.DurationVar(&c.Settle, "settle", 0, "pause after connecting before reading memory (default 2s)")
	fs.DurationVar(&c.Quiet, "quiet", 0, "idle: CPU measurement window (default 5s)")
	fs.DurationVar(&c.StormLimit, "storm-limit", 0, "storm: longest wait for every client to be re-admitted, and for the catch-up (default 1m)")
	fs.IntVar(&c.Procs, "procs", 0, "worker processes (0 = automatic: one per 18,000 connections, in process below)")
	fs.IntVar(&c.Inflight, "inflight", 0, "connection attempts in flight per worker (default 256)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 0, "one connection attempt, to a complete response head (default 10s)")
	fs.IntVar(&c.Senders, "senders", 0, "concurrent trigger senders (default 16; 256 with --open-loop)")
	fs.BoolVar(&c.OpenLoop, "open-loop", false, "throughput/churn: send every event at its time in the --rate schedule and measure latency from that time, whether or not the server answered the earlier ones (the same offered load for every server); default: a closed loop of --senders, each waiting for the answer")
}

// progressFlag registers -progress. Without it, progress bars are drawn only
// when stderr is a terminal, so that logs and CI output do not fill with
// carriage-return redraws.
func progressFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("progress", false, "draw progress bars even when stderr is not a terminal")
}

// progressWriter returns where progress bars go: stderr when forced or a
// terminal, else nil (none).
func progressWriter(force bool, stderr io.Writer) io.Writer {
	if force || isTerminal(stderr) {
		return stderr
	}
	return nil
}

// isTerminal reports whether w is a character device such as a tty (not a
// file, pipe or socket).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
