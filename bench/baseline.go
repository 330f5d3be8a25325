package bench

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Baseline limits and timings, the same as sseloop's defaults so that the
// comparison measures the architecture, not the configuration.
const (
	baselineHeartbeat   = 30 * time.Second
	baselineRetryMS     = 3000
	baselineMaxKeyBytes = 256
	baselineMaxKeys     = 32
	baselineMaxBody     = 1 << 20
	// baselineQueue is each stream's channel capacity. A publisher never
	// blocks: a stream whose channel is full is dropped as a slow consumer
	// (Mercure's policy), like sseloop closes a stream over its outbound cap.
	baselineQueue = 1024
)

// Baseline is the comparison server: the idiomatic goroutine-per-connection
// net/http SSE server with sseloop's HTTP API (see README.md). Each stream
// is one handler goroutine with a buffered channel; a hub maps each key to
// its streams under one mutex; ids come from one global counter. Frames are
// encoded once per publish and shared by every subscriber, as in sseloop.
//
// Its methods are safe for concurrent use.
type Baseline struct {
	mu     sync.Mutex
	nextID uint64 // guarded by mu: ids must reach each stream in order
	subs   map[string]map[*stream]struct{}
}

type stream struct {
	ch      chan []byte
	dropped chan struct{} // closed when the hub drops a slow stream
	dead    bool          // dropped already; guarded by Baseline.mu
}

// NewBaseline returns an empty Baseline server.
func NewBaseline() *Baseline {
	return &Baseline{subs: make(map[string]map[*stream]struct{})}
}

// Handler returns the server's routes.
func (b *Baseline) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", b.serveEvents)
	mux.HandleFunc("GET /events/{key}", b.serveEvents)
	mux.HandleFunc("POST /trigger/{key}", b.serveTrigger)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// ServeBaseline serves a Baseline on addr until ctx is done.
func ServeBaseline(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ServeBaselineListener(ctx, ln)
}

// ServeBaselineListener serves a Baseline on ln until ctx is done.
func ServeBaselineListener(ctx context.Context, ln net.Listener) error {
	b := NewBaseline()
	srv := &http.Server{
		Handler:           b.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Streams never finish on their own: Shutdown would wait for them, so
	// close everything at once, like sseloop's engine stop.
	err := srv.Close()
	<-errc
	return err
}

func validKey(k string) bool {
	if k == "" || len(k) > baselineMaxKeyBytes {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Connection", "close")
	http.Error(w, msg, code)
}

func (b *Baseline) serveEvents(w http.ResponseWriter, r *http.Request) {
	var keys []string
	if k := r.PathValue("key"); k != "" {
		keys = []string{k}
	} else {
		keys = r.URL.Query()["key"]
	}
	if len(keys) == 0 || len(keys) > baselineMaxKeys {
		httpError(w, http.StatusBadRequest, "bad keys")
		return
	}
	for _, k := range keys {
		if !validKey(k) {
			httpError(w, http.StatusBadRequest, "bad key")
			return
		}
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	s := &stream{ch: make(chan []byte, baselineQueue), dropped: make(chan struct{})}
	b.subscribe(s, keys)
	defer b.unsubscribe(s, keys)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, "retry: "+strconv.Itoa(baselineRetryMS)+"\n\n"); err != nil {
		return
	}
	fl.Flush()

	heartbeat := time.NewTimer(baselineHeartbeat)
	defer heartbeat.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dropped:
			return
		case <-heartbeat.C:
			if _, err := io.WriteString(w, ":\n\n"); err != nil {
				return
			}
			fl.Flush()
		case frame := <-s.ch:
			if _, err := w.Write(frame); err != nil {
				return
			}
			// Write whatever else is queued, then flush once.
			for n := len(s.ch); n > 0; n-- {
				if _, err := w.Write(<-s.ch); err != nil {
					return
				}
			}
			fl.Flush()
		}
		// Go 1.23+ timers: Reset alone discards a stale expiry.
		heartbeat.Reset(baselineHeartbeat)
	}
}

func (b *Baseline) subscribe(s *stream, keys []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		set := b.subs[k]
		if set == nil {
			set = make(map[*stream]struct{})
			b.subs[k] = set
		}
		set[s] = struct{}{}
	}
}

func (b *Baseline) unsubscribe(s *stream, keys []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		if set := b.subs[k]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(b.subs, k)
			}
		}
	}
}

// publish assigns the next id and queues the frame on every stream of key.
func (b *Baseline) publish(key, event string, data []byte, poke bool) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	id := b.nextID
	if poke {
		data, _ = json.Marshal(struct {
			Key string `json:"key"`
			ID  string `json:"id"`
			TS  int64  `json:"ts"`
		}{key, strconv.FormatUint(id, 10), time.Now().UnixMilli()})
	}
	frame := AppendFrame(nil, id, event, data)
	for s := range b.subs[key] {
		if s.dead {
			continue
		}
		select {
		case s.ch <- frame:
		default:
			// Slow consumer: drop it; it reconnects. Its handler
			// unsubscribes it from all its keys on the way out.
			s.dead = true
			close(s.dropped)
		}
	}
	return id
}

func (b *Baseline) serveTrigger(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !validKey(key) {
		httpError(w, http.StatusBadRequest, "bad key")
		return
	}
	event := r.URL.Query().Get("event")
	for i := 0; i < len(event); i++ {
		if c := event[i]; c == '\r' || c == '\n' {
			httpError(w, http.StatusBadRequest, "bad event name")
			return
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, baselineMaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			httpError(w, http.StatusRequestEntityTooLarge, "body too large")
			return
		}
		httpError(w, http.StatusBadRequest, "bad body")
		return
	}
	id := b.publish(key, event, data, len(data) == 0)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"id":"`+strconv.FormatUint(id, 10)+`"}`)
}

// AppendFrame appends one SSE frame: the id, the event name if any, one data
// line per line of data (CR, LF and CRLF all end a line) and a blank line.
func AppendFrame(dst []byte, id uint64, event string, data []byte) []byte {
	dst = append(dst, "id: "...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '\n')
	if event != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, event...)
		dst = append(dst, '\n')
	}
	for {
		i := indexEOL(data)
		if i < 0 {
			break
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}
