package engine

import (
	"bytes"
	"context"
	"strconv"

	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/store"
)

// MaxKeyBytes is the longest subscription key accepted.
const MaxKeyBytes = 256

// route serves one complete request and reports whether c stays open. Any
// part of req or body it keeps must be copied: both alias the read buffer.
func (l *loop) route(c *conn, req *httpparse.Request, body []byte) (keep bool) {
	path := req.Path
	get := string(req.Method) == "GET"
	switch {
	case string(path) == "/events" || hasPrefix(path, "/events/"):
		if !get {
			return l.methodNotAllowed(c, "GET")
		}
		return l.subscribe(c, req)
	case string(path) == "/trigger" || hasPrefix(path, "/trigger/"):
		if string(req.Method) != "POST" {
			return l.methodNotAllowed(c, "POST")
		}
		return l.trigger(c, req, body)
	case string(path) == "/":
		if !get {
			return l.methodNotAllowed(c, "GET")
		}
		if req.KeepAlive && req.ProtoMinor == 1 {
			l.write(c, demoResponses[1])
			return true
		}
		l.write(c, demoResponses[0])
		return false
	case string(path) == "/healthz":
		if !get && string(req.Method) != "HEAD" {
			return l.methodNotAllowed(c, "GET, HEAD")
		}
		resp := appendResponse(l.out[:0], 200, "text/plain; charset=utf-8", []byte("ok\n"), req.KeepAlive, req.ProtoMinor == 0)
		if string(req.Method) == "HEAD" {
			resp = resp[:len(resp)-len("ok\n")]
		}
		l.out = resp
		l.write(c, resp)
		return req.KeepAlive
	case string(path) == "/readyz":
		if !get {
			return l.methodNotAllowed(c, "GET")
		}
		return l.async(c, req, func(ctx context.Context) ([]byte, bool) {
			if err := l.e.st.Ping(ctx); err != nil {
				l.e.log.Warn("readyz: store not reachable", "err", err)
				return appendResponse(nil, 503, "text/plain; charset=utf-8", []byte("store unavailable\n"), c.keepAlive, c.http10), true
			}
			return appendResponse(nil, 200, "text/plain; charset=utf-8", []byte("ready\n"), c.keepAlive, c.http10), true
		})
	case string(path) == "/metrics":
		if !get {
			return l.methodNotAllowed(c, "GET")
		}
		return l.async(c, req, func(context.Context) ([]byte, bool) {
			var b bytes.Buffer
			l.e.m.write(&b)
			return appendResponse(nil, 200, "text/plain; version=0.0.4; charset=utf-8", b.Bytes(), c.keepAlive, c.http10), true
		})
	}
	l.e.m.httpError(404)
	l.write(c, errorResponse(404))
	c.phase, c.closeReason = phaseClosing, reasonBadRequest
	return false
}

func (l *loop) methodNotAllowed(c *conn, allow string) bool {
	l.e.m.httpError(405)
	l.out = append(l.out[:0], "HTTP/1.1 405 Method Not Allowed\r\nAllow: "...)
	l.out = append(l.out, allow...)
	l.out = append(l.out, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nConnection: close\r\n\r\nmethod not allowed\n"...)
	l.write(c, l.out)
	c.phase, c.closeReason = phaseClosing, reasonBadRequest
	return false
}

// async runs fn on a store worker and writes the response it returns on the
// loop. While it runs, c is busy: pipelined requests wait their turn.
func (l *loop) async(c *conn, req *httpparse.Request, fn func(context.Context) ([]byte, bool)) bool {
	c.keepAlive, c.http10 = req.KeepAlive, req.ProtoMinor == 0
	job := func(ctx context.Context) {
		resp, keep := fn(ctx)
		l.execute(func() { l.finish(c, resp, keep) })
	}
	select {
	case l.e.workQ <- job:
		c.phase = phaseBusy
		return true
	default:
		return l.badRequest(c, 503, "server busy")
	}
}

// validKey reports whether k is a usable subscription key: 1 to MaxKeyBytes
// bytes without control characters.
func validKey(k []byte) bool {
	if len(k) == 0 || len(k) > MaxKeyBytes {
		return false
	}
	for _, b := range k {
		if b < 0x20 || b == 0x7f {
			return false
		}
	}
	return true
}

// validEventName reports whether n can be written in an "event:" field.
func validEventName(n []byte) bool {
	return len(n) <= MaxKeyBytes && validKeyOrEmpty(n)
}

func validKeyOrEmpty(n []byte) bool { return len(n) == 0 || validKey(n) }

// appendKey decodes one raw key into l.keys, dropping duplicates. It reports
// false for a key that is invalid.
func (l *loop) appendKey(raw []byte, plus bool) bool {
	n := len(l.keys)
	var dst []byte
	if n < cap(l.keys) {
		dst = l.keys[:n+1][n][:0]
	}
	k, err := httpparse.AppendUnescape(dst, raw, plus)
	if err != nil || !validKey(k) {
		return false
	}
	for _, o := range l.keys {
		if bytes.Equal(o, k) {
			return true
		}
	}
	l.keys = append(l.keys, k)
	return true
}

// subscribe turns c into an event stream of the requested keys.
func (l *loop) subscribe(c *conn, req *httpparse.Request) bool {
	l.keys = l.keys[:0]
	var lastID uint64
	var haveLast bool
	if rest := req.Path[len("/events"):]; len(rest) > 1 {
		if !l.appendKey(rest[1:], false) {
			return l.badRequest(c, 400, "invalid key")
		}
	}
	for q := req.Query; len(q) > 0; {
		var name, value []byte
		name, value, q = httpparse.NextQuery(q)
		switch string(name) {
		case "key":
			if len(l.keys) >= l.e.cfg.Limits.MaxKeys {
				return l.badRequest(c, 400, "too many keys")
			}
			if !l.appendKey(value, true) {
				return l.badRequest(c, 400, "invalid key")
			}
		case "lastEventId":
			id, ok := parseID(value)
			if !ok {
				return l.badRequest(c, 400, "invalid lastEventId")
			}
			lastID, haveLast = id, true
		}
	}
	if h := req.Header("Last-Event-ID"); h != nil {
		// What the browser sends on reconnect wins over the query, which
		// only holds the page's starting point.
		id, ok := parseID(h)
		if !ok {
			return l.badRequest(c, 400, "invalid Last-Event-ID")
		}
		lastID, haveLast = id, true
	}
	if len(l.keys) == 0 {
		return l.badRequest(c, 400, "missing key")
	}
	if len(l.keys) > l.e.cfg.Limits.MaxKeys {
		return l.badRequest(c, 400, "too many keys")
	}

	// Join before the head is written: a client that sees the head may
	// trigger at once, and that event must find this stream.
	c.phase = phaseStream
	c.lastID = lastID
	l.join(c, l.keys)
	l.wheel.Schedule(&c.timer, l.e.cfg.Heartbeat, c.fire)
	l.out = append(l.out[:0], streamHead...)
	l.out = strconv.AppendInt(l.out, l.e.cfg.Retry.Milliseconds(), 10)
	l.out = append(l.out, "\n\n"...)
	l.write(c, l.out)
	if haveLast {
		// "0" is a real position: the client has seen nothing yet and wants
		// the whole retained history.
		keys := make([]string, len(l.keys))
		for i, k := range l.keys {
			keys[i] = string(k)
		}
		l.startReplay(c, keys, lastID)
	}
	return true
}

// parseID parses a decimal event id. An empty value means "from the start".
func parseID(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, true
	}
	id, err := strconv.ParseUint(string(b), 10, 64)
	return id, err == nil
}

var streamHead = []byte("HTTP/1.1 200 OK\r\n" +
	"Content-Type: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\n" +
	"Connection: keep-alive\r\n" +
	"X-Accel-Buffering: no\r\n" +
	"\r\n" +
	"retry: ")

// trigger publishes the event(s) of a POST /trigger request.
func (l *loop) trigger(c *conn, req *httpparse.Request, body []byte) bool {
	job := &appendJob{l: l, c: c}
	if rest := req.Path[len("/trigger"):]; len(rest) > 1 {
		key, err := httpparse.AppendUnescape(nil, rest[1:], false)
		if err != nil || !validKey(key) {
			return l.badRequest(c, 400, "invalid key")
		}
		ev := store.Event{Key: string(key), Data: bytes.Clone(body)}
		for q := req.Query; len(q) > 0; {
			var name, value []byte
			name, value, q = httpparse.NextQuery(q)
			if string(name) == "event" {
				n, err := httpparse.AppendUnescape(nil, value, true)
				if err != nil || !validEventName(n) {
					return l.badRequest(c, 400, "invalid event name")
				}
				ev.Name = string(n)
			}
		}
		job.evs = []store.Event{ev}
	} else {
		if len(body) == 0 {
			return l.badRequest(c, 400, "missing body")
		}
		job.raw = bytes.Clone(body)
	}
	c.keepAlive, c.http10 = req.KeepAlive, req.ProtoMinor == 0
	select {
	case l.e.appendQ <- job:
		c.phase = phaseBusy
		return true
	default:
		return l.badRequest(c, 503, "server busy")
	}
}
