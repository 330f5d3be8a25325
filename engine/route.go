package engine

import (
	"bytes"
	"context"
	"strconv"

	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/hub"
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
		if string(req.Method) == "OPTIONS" {
			return l.preflight(c, req, "GET")
		}
		if !get {
			return l.methodNotAllowed(c, "GET, OPTIONS")
		}
		return l.subscribe(c, req)
	case string(path) == "/trigger" || hasPrefix(path, "/trigger/"):
		if string(req.Method) == "OPTIONS" {
			return l.preflight(c, req, "POST")
		}
		if string(req.Method) != "POST" {
			return l.methodNotAllowed(c, "POST, OPTIONS")
		}
		return l.trigger(c, req, body)
	case l.e.merc != nil && hasPrefix(path, mercurePath) &&
		(len(path) == len(mercurePath) || path[len(mercurePath)] == '/'):
		return l.mercureRoute(c, req, body)
	case (string(path) == "/presence" || hasPrefix(path, "/presence/")) && !l.e.cfg.Presence.Off:
		if string(req.Method) == "OPTIONS" {
			return l.preflight(c, req, "GET")
		}
		if !get {
			return l.methodNotAllowed(c, "GET, OPTIONS")
		}
		return l.presence(c, req)
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
		r := response{status: 200, ctype: textPlain, body: []byte("ok\n"), keepAlive: req.KeepAlive,
			http10: req.ProtoMinor == 0, omitBody: string(req.Method) == "HEAD"}
		l.out = r.appendTo(l.out[:0])
		l.write(c, l.out)
		return req.KeepAlive
	case string(path) == "/readyz":
		if !get {
			return l.methodNotAllowed(c, "GET")
		}
		ka, h10 := req.KeepAlive, req.ProtoMinor == 0
		return l.async(c, func(ctx context.Context) ([]byte, bool) {
			if err := l.e.st.Ping(ctx); err != nil {
				l.e.log.Warn("readyz: store not reachable", "err", err)
				return appendResponse(nil, 503, textPlain, []byte("store unavailable\n"), ka, h10), ka
			}
			return appendResponse(nil, 200, textPlain, []byte("ready\n"), ka, h10), ka
		})
	case string(path) == "/metrics" && !l.e.cfg.NoPublicMetrics:
		head := string(req.Method) == "HEAD"
		if !get && !head {
			return l.methodNotAllowed(c, "GET, HEAD")
		}
		ka, h10 := req.KeepAlive, req.ProtoMinor == 0
		return l.async(c, func(context.Context) ([]byte, bool) {
			var b bytes.Buffer
			l.e.m.write(&b)
			r := response{status: 200, ctype: metricsContentType, body: b.Bytes(), keepAlive: ka, http10: h10, omitBody: head}
			return r.appendTo(nil), ka
		})
	}
	l.e.m.httpError(404)
	l.write(c, errorResponse(404))
	c.phase, c.closeReason = phaseClosing, reasonBadRequest
	return false
}

func (l *loop) methodNotAllowed(c *conn, allow string) bool {
	l.e.m.httpError(405)
	l.out = appendError(l.out[:0], 405, "Allow: "+allow+"\r\n", errorBodies[405])
	l.write(c, l.out)
	c.phase, c.closeReason = phaseClosing, reasonBadRequest
	return false
}

// preflight answers OPTIONS for a route that allows methods.
func (l *loop) preflight(c *conn, req *httpparse.Request, methods string) bool {
	l.out = l.e.cors.preflight(l.out[:0], req.Header("Origin"), methods, req.KeepAlive, req.ProtoMinor == 0)
	l.write(c, l.out)
	return req.KeepAlive
}

// authError answers 401 (with WWW-Authenticate, RFC 6750) or 403 and closes
// c. The body is fixed; which check failed goes to the debug log only.
func (l *loop) authError(c *conn, status int, tokenSent bool, cors string, why string) bool {
	l.e.m.authFail.Inc()
	l.e.m.httpError(status)
	l.e.log.Debug("auth failed", "remote", c.gc().RemoteAddr(), "status", status, "why", why)
	h := cors
	if status == 401 {
		if tokenSent {
			h = `WWW-Authenticate: Bearer realm="sseloop", error="invalid_token"` + "\r\n" + cors
		} else {
			h = `WWW-Authenticate: Bearer realm="sseloop"` + "\r\n" + cors
		}
	}
	l.out = appendError(l.out[:0], status, h, errorBodies[status])
	l.write(c, l.out)
	c.phase, c.closeReason = phaseClosing, reasonUnauthorized
	return false
}

// verifyThen verifies tok and calls then with the result on the loop.
// HS256 is checked right here; with a public key configured the check runs
// on a store worker (see authenticator) and c is busy meanwhile, so then
// must not touch the request or the loop's scratch buffers, which are
// reused by then. verifyThen returns what serve should do with c.
func (l *loop) verifyThen(c *conn, tok []byte, then func(*tokenClaims, error) (keep bool)) bool {
	a := l.e.auth
	if !a.offLoop() {
		return then(a.verify(string(tok)))
	}
	ts := string(tok)
	job := func(context.Context) {
		cl, err := a.verify(ts)
		l.Execute(func() {
			if c.phase != phaseBusy {
				return // closed meanwhile
			}
			c.phase = phaseRequest
			keep := then(cl, err)
			l.resume(c, keep)
		})
	}
	return l.submit(c, l.e.hub.Go(job))
}

// async runs fn on a store worker and writes the response it returns on the
// loop; fn's bool says whether c stays open. While it runs, c is busy:
// pipelined requests wait their turn. fn must not read c.
func (l *loop) async(c *conn, fn func(context.Context) ([]byte, bool)) bool {
	job := func(ctx context.Context) {
		resp, keep := fn(ctx)
		l.Execute(func() { l.finish(c, resp, keep) })
	}
	return l.submit(c, l.e.hub.Go(job))
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
// An empty name is the default "message"; otherwise the key rules apply.
func validEventName(n []byte) bool { return len(n) == 0 || validKey(n) }

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
				l.e.m.limit("max_keys")
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
		l.e.m.limit("max_keys")
		return l.badRequest(c, 400, "too many keys")
	}
	cors := l.e.cors.headers(req.Header("Origin"))
	a := l.e.auth
	if !a.needToken(l.keys) {
		return l.openStream(c, l.keys, lastID, haveLast, 0, "", cors)
	}
	var tok []byte
	tok, l.tok = a.subscriberToken(req, l.tok)
	if len(tok) == 0 {
		return l.authError(c, 401, tok != nil, cors, "no token")
	}
	keys := l.keys
	if a.offLoop() {
		keys = make([][]byte, len(l.keys))
		for i, k := range l.keys {
			keys[i] = bytes.Clone(k)
		}
	}
	return l.verifyThen(c, tok, func(cl *tokenClaims, err error) bool {
		exp, status := a.authorizeSubscribe(keys, cl, err)
		if status != 0 {
			why := "token does not cover a key"
			if err != nil {
				why = err.Error()
			}
			return l.authError(c, status, true, cors, why)
		}
		return l.openStream(c, keys, lastID, haveLast, exp, cl.Subject, cors)
	})
}

// openStream turns c into an event stream of keys (distinct and valid) that
// closes at exp (unix seconds, 0 = never), with cors header lines. user is
// the token's subject, for presence ("" without a token).
func (l *loop) openStream(c *conn, keys [][]byte, lastID uint64, haveLast bool, exp uint32, user, cors string) bool {
	c.phase = phaseStream
	r := response{status: 200, ctype: "text/event-stream", extra: cors, stream: true}
	l.out = r.appendTo(l.out[:0])
	l.out = append(l.out, "retry: "...)
	l.out = strconv.AppendInt(l.out, l.e.cfg.Retry.Milliseconds(), 10)
	l.out = append(l.out, "\n\n"...)
	// With haveLast, "0" is a real position: the client has seen nothing
	// yet and wants the whole retained history.
	l.hl.Open(&c.Stream, hub.Subscription{Keys: keys, Head: l.out, Resume: haveLast, LastID: lastID, Expires: exp,
		User: user})
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

// submit marks c busy until the answer of the job just queued comes back,
// or, when the queue was full (queued is false), answers 503: the loop
// never blocks on a queue.
func (l *loop) submit(c *conn, queued bool) bool {
	if !queued {
		return l.badRequest(c, 503, "server busy")
	}
	c.phase = phaseBusy
	return true
}
