package hub

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pageCache shares native replay pages between streams that ask for the
// same one. In a reconnect storm the clients of a key resume from the same
// Last-Event-ID, and each would read the same page from the store: with
// 1,000 clients per key, 1,000 identical reads. A page is a consistent
// read of the store as of its upTo, so a stream served a page read a
// moment ago is served correctly. A shared page is used only if its upTo
// covers what the asking stream's loop had fanned out when it asked
// (pageReq.seen): otherwise the seam check (writePage) would find it short
// and ask for the next page, which could be the same stale one. Entries
// live for pageCacheTTL and belong to one store incarnation (the key holds
// the epoch the feed reader saw). Mercure pages are filtered per stream
// and not shared.
type pageCache struct {
	mu    sync.Mutex
	m     map[string]*pageEntry
	bytes int // frames held by finished entries
}

type pageEntry struct {
	done chan struct{} // closed when p is set
	p    *page
	at   time.Time
}

const (
	pageCacheTTL = time.Second
	pageCacheMax = 4096 // entries; beyond it (after dropping the expired) reads are not shared
	// A page is kept for others only while the kept frames stay within
	// pageCacheBytes, and only if it is small: the pages of a reconnect
	// storm are (a few missed events each), while a big replay's pages are
	// read once per stream and belong to its outbound budget
	// (MaxOutboundBytes), not to a cache that outlives the stream's need.
	pageCacheBytes   = 4 << 20
	pageCacheMaxPage = 64 << 10
)

// sharedPage returns req's page: another stream's read of the same page
// if one is under way or at most pageCacheTTL old, else its own read.
// Each caller gets its own copy of the page (the loop writes p.pos and
// p.gap); the frames are shared, read-only. Store worker.
func (h *Hub) sharedPage(ctx context.Context, req pageReq) *page {
	if req.merc != nil {
		return h.readPage(ctx, req)
	}
	c := &h.pages
	var sb strings.Builder
	for _, k := range req.keys {
		sb.WriteString(k)
		sb.WriteByte(0)
	}
	for _, n := range []uint64{req.after, req.gapMark, uint64(req.limit), h.epoch.Load()} {
		sb.WriteString(strconv.FormatUint(n, 36))
		sb.WriteByte(' ')
	}
	if req.first {
		sb.WriteByte('f')
	}
	key := sb.String()
	now := h.cfg.Now()
	c.mu.Lock()
	if e, ok := c.m[key]; ok && (e.p == nil || now.Sub(e.at) < pageCacheTTL && e.p.upTo >= req.seen) {
		c.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return &page{err: ctx.Err()}
		}
		if e.p.err == nil && e.p.upTo >= req.seen {
			h.m.replayShared.Inc()
			cp := *e.p
			return &cp
		}
		return h.readPage(ctx, req) // the shared read failed or is too old: our own
	}
	if c.m == nil {
		c.m = map[string]*pageEntry{}
	}
	if len(c.m) >= pageCacheMax {
		c.sweep(now)
	}
	if len(c.m) >= pageCacheMax {
		c.mu.Unlock()
		return h.readPage(ctx, req)
	}
	if old, ok := c.m[key]; ok && old.p != nil {
		c.bytes -= len(old.p.buf) // replaced: too old for this stream
	}
	e := &pageEntry{done: make(chan struct{})}
	c.m[key] = e
	c.mu.Unlock()

	p := h.readPage(ctx, req)
	c.mu.Lock()
	now = h.cfg.Now()
	e.p, e.at = p, now
	n := len(p.buf)
	if p.err == nil && n <= pageCacheMaxPage && c.bytes+n > pageCacheBytes {
		c.sweep(now)
	}
	if p.err != nil || n > pageCacheMaxPage || c.bytes+n > pageCacheBytes {
		// Those waiting for it get it; nobody later. (A later entry for
		// the key may have replaced e: then it is not ours to delete.)
		if c.m[key] == e {
			delete(c.m, key)
		}
	} else if c.m[key] == e {
		c.bytes += n
	}
	c.mu.Unlock()
	close(e.done)
	cp := *p
	return &cp
}

// sweep drops the expired entries. c.mu is held.
func (c *pageCache) sweep(now time.Time) {
	for k, e := range c.m {
		if e.p != nil && now.Sub(e.at) >= pageCacheTTL {
			c.bytes -= len(e.p.buf)
			delete(c.m, k)
		}
	}
}
