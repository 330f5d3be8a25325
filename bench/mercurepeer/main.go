// Command mercurepeer serves the Mercure hub library (github.com/dunglas/mercure)
// for `ssebench compare --servers ...,mercure`: the server users would pick
// instead of sseloop, measured by the same load generator in the same run.
//
// It is its own module so that sseloop's go.mod never depends on Mercure;
// ssebench builds it with `go build` at compare time.
//
//	mercurepeer --listen 127.0.0.1:8091 --jwt-key SECRET [--transport local|bolt] [--bolt FILE]
//
// It serves /.well-known/mercure (anonymous subscribers; publishers need an
// HS256 JWT signed with --jwt-key whose mercure.publish claim covers the
// topic) and /healthz. Heartbeat and dispatch timeout are the library's
// defaults; the write timeout (which closes every stream after 600 s by
// default) is off, so long benchmark runs do not see planned disconnects.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dunglas/mercure"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mercurepeer:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mercurepeer", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8091", "TCP address to serve on")
	key := fs.String("jwt-key", os.Getenv("MERCUREPEER_JWT_KEY"), "HS256 key for publisher JWTs (default $MERCUREPEER_JWT_KEY)")
	transport := fs.String("transport", "local", "local (in memory, no history) or bolt (history in a bbolt file)")
	boltPath := fs.String("bolt", "", "bbolt file for --transport bolt")
	heartbeat := fs.Duration("heartbeat", mercure.DefaultHeartbeat, "heartbeat interval, 0 = none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *key == "" {
		return errors.New("--jwt-key (or MERCUREPEER_JWT_KEY) is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := []mercure.Option{
		mercure.WithLogger(logger),
		mercure.WithPublisherJWT([]byte(*key), "HS256"),
		mercure.WithAnonymous(),
		mercure.WithHeartbeat(*heartbeat),
		mercure.WithWriteTimeout(0),
	}
	switch *transport {
	case "local":
		opts = append(opts, mercure.WithTransport(mercure.NewLocalTransport(mercure.NewSubscriberList(mercure.DefaultSubscriberListCacheSize))))
	case "bolt":
		if *boltPath == "" {
			return errors.New("--transport bolt needs --bolt FILE")
		}
		t, err := mercure.NewBoltTransport(mercure.NewSubscriberList(mercure.DefaultSubscriberListCacheSize), logger, *boltPath, "updates", 0, mercure.BoltDefaultCleanupFrequency)
		if err != nil {
			return fmt.Errorf("bolt transport: %w", err)
		}
		opts = append(opts, mercure.WithTransport(t))
	default:
		return fmt.Errorf("unknown --transport %q (want local or bolt)", *transport)
	}
	hub, err := mercure.NewHub(ctx, opts...)
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/.well-known/mercure", hub)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Streams never end by themselves: close them instead of waiting for
	// Shutdown. The transport closes last: closed first, every stream
	// still open logs that it could not unsubscribe.
	err = srv.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(err, hub.Stop(sctx))
}
