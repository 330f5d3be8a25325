package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// sourceFor returns the first source whose pattern matches key, or nil.
func (e *Engine) sourceFor(key string) *Source {
	for i := range e.cfg.Sources {
		if match(e.cfg.Sources[i].Pattern, key) {
			return &e.cfg.Sources[i]
		}
	}
	return nil
}

// needsFetch reports whether a job must pass through the fetchers first:
// it has a poke of a key with a source, or it is a batch (unknown until
// parsed).
func (e *Engine) needsFetch(j *appendJob) bool {
	if len(e.cfg.Sources) == 0 {
		return false
	}
	if j.raw != nil {
		return true
	}
	for i := range j.evs {
		if len(j.evs[i].Data) == 0 && e.sourceFor(j.evs[i].Key) != nil {
			return true
		}
	}
	return false
}

// runFetcher fills the pokes of queued jobs with their sources' data, then
// hands the jobs to the appender.
func (e *Engine) runFetcher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-e.fetchQ:
			e.fill(ctx, j)
			select {
			case e.appendQ <- j:
			case <-ctx.Done():
				return
			}
		}
	}
}

// fill fetches the data of every poke in j whose key has a source. A batch
// is parsed first; a parse error is left for the appender to answer.
func (e *Engine) fill(ctx context.Context, j *appendJob) {
	if j.raw != nil {
		evs, err := e.parseBatch(j.raw)
		if err != nil {
			return
		}
		j.evs, j.raw, j.batch = evs, nil, true
	}
	for i := range j.evs {
		ev := &j.evs[i]
		if len(ev.Data) != 0 {
			continue
		}
		src := e.sourceFor(ev.Key)
		if src == nil {
			continue
		}
		data, err := e.fetch(ctx, src, ev.Key)
		if err != nil {
			e.m.sourceErr.Inc()
			e.log.Warn("data source failed; sending the plain poke", "key", ev.Key, "err", err)
			continue
		}
		e.m.sourceFetch.Inc()
		ev.Data = data
	}
}

// fetch GETs the source's URL for key and returns the body.
func (e *Engine) fetch(ctx context.Context, src *Source, key string) ([]byte, error) {
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
	resp, err := e.httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	max := e.cfg.Limits.MaxBodyBytes
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > max {
		return nil, errors.New("response larger than limits.max_body_bytes")
	}
	return data, nil
}

// publishInternal appends events that no client waits for (direct pokes),
// through the fetchers when a source applies.
func (e *Engine) publishInternal(ctx context.Context, evs []store.Event) {
	j := &appendJob{evs: evs}
	q := e.appendQ
	if e.needsFetch(j) {
		q = e.fetchQ
	}
	select {
	case q <- j:
	case <-ctx.Done():
	}
}
