package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sseloop/sseloop/store"
)

// Source is the classic recipe's "data callback", run once per change
// instead of once per subscriber: when a key matching Pattern is poked
// (a trigger with an empty body, or an app write of its watched Redis key),
// sseloop fetches URL once and the response body becomes the event's data
// for every subscriber. If the fetch fails, subscribers get the plain poke
// and sseloop_source_errors_total counts it.
type Source struct {
	// Pattern selects keys; "*" matches any run of characters ("user:*").
	Pattern string `koanf:"pattern"`
	// URL is fetched with GET; "{key}" is replaced by the path-escaped key.
	URL string `koanf:"url"`
	// Headers are sent with the request (e.g. an Authorization for the app).
	Headers map[string]string `koanf:"headers"`
	// Timeout bounds the whole fetch. Default 2s.
	Timeout time.Duration `koanf:"timeout"`
}

// sourceWorkers bounds concurrent fetches: a burst of pokes must not open a
// connection per poke against the app.
const sourceWorkers = 16

// checkSources validates the configured sources and fills in defaults.
func checkSources(srcs []Source) error {
	for i := range srcs {
		s := &srcs[i]
		if s.Pattern == "" {
			return fmt.Errorf("engine: sources[%d].pattern is empty", i)
		}
		u, err := url.Parse(strings.ReplaceAll(s.URL, "{key}", "k"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("engine: sources[%d].url must be an http(s) URL", i)
		}
		if s.Timeout < 0 {
			return fmt.Errorf("engine: sources[%d].timeout must be positive", i)
		}
		if s.Timeout == 0 {
			s.Timeout = 2 * time.Second
		}
	}
	return nil
}

// sources fetches the data of pokes (hub.Filler).
type sources struct {
	list    []Source
	maxBody int
	client  *http.Client
	m       *engineMetrics
	log     *slog.Logger
}

func newSources(list []Source, maxBody int, m *engineMetrics, log *slog.Logger) *sources {
	return &sources{list: list, maxBody: maxBody, m: m, log: log,
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: sourceWorkers,
			IdleConnTimeout:     90 * time.Second,
		}}}
}

// sourceFor returns the first source whose pattern matches key, or nil.
func (s *sources) sourceFor(key string) *Source {
	for i := range s.list {
		if match(s.list[i].Pattern, key) {
			return &s.list[i]
		}
	}
	return nil
}

// Wants reports whether a poke of key has a source.
func (s *sources) Wants(key string) bool { return s.sourceFor(key) != nil }

// Fill fetches the data of poke ev from its source. On failure the plain
// poke goes out and sseloop_source_errors_total counts it.
func (s *sources) Fill(ctx context.Context, ev *store.Event) error {
	src := s.sourceFor(ev.Key)
	if src == nil {
		return nil
	}
	data, err := s.fetch(ctx, src, ev.Key)
	if err != nil {
		s.m.sourceErr.Inc()
		s.log.Warn("data source failed; sending the plain poke", "key", ev.Key, "err", err)
		return err
	}
	s.m.sourceFetch.Inc()
	ev.Data = data
	return nil
}

// fetch GETs the source's URL for key and returns the body.
func (s *sources) fetch(ctx context.Context, src *Source, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, src.Timeout)
	defer cancel()
	u := strings.ReplaceAll(src.URL, "{key}", url.PathEscape(key))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range src.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Sseloop-Key", key)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(s.maxBody)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > s.maxBody {
		return nil, errors.New("response larger than limits.max_body_bytes")
	}
	return data, nil
}
