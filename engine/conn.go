package engine

import (
	"errors"
	"strconv"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/timerwheel"
)

// conn is the engine's state of one connection, owned by its loop. It is kept
// small: one exists per open stream, and memory per connection is the number
// this server is judged by.
type conn struct {
	gc      gnet.Conn
	l       *loop
	timer   timerwheel.Timer // header/idle timeout, then heartbeat
	fire    func()           // c.onTimer, bound once so Schedule never allocates
	subs    []sub            // one per subscribed key, fixed once streaming
	pending *replayState     // non-nil while a replay is being read

	lastID    uint64 // id of the newest event written to this stream
	lastWrite int64  // loop clock at the last write, for heartbeats

	phase       phase
	closeReason closeReason
	started     bool // a request head has begun arriving: header timeout armed
	continued   bool // "100 Continue" sent for the current request
	// expires is when the stream's token expires, in unix seconds (0 =
	// never). It fills the padding after the four bytes above, so the
	// struct stays in the 128-byte size class (TestConnStaysSmall); the
	// stream's one timer fires at min(next heartbeat, expiry).
	expires uint32
}

type phase uint8

const (
	phaseRequest phase = iota // reading requests (keep-alive, pipelining)
	phaseBusy                 // a store worker is serving the current request
	phaseStream               // an event stream
	phaseClosing              // Close requested; OnClose follows
	phaseClosed               // OnClose ran
)

type closeReason uint8

const (
	reasonNone closeReason = iota
	reasonBadRequest
	reasonHeaderTimeout
	reasonIdleTimeout
	reasonSlowConsumer
	reasonStoreError
	reasonShutdown
	reasonDone
	reasonUnauthorized
	reasonTokenExpired
)

func (r closeReason) String() string {
	switch r {
	case reasonBadRequest:
		return "bad_request"
	case reasonHeaderTimeout:
		return "header_timeout"
	case reasonIdleTimeout:
		return "idle_timeout"
	case reasonSlowConsumer:
		return "slow_consumer"
	case reasonStoreError:
		return "store_error"
	case reasonShutdown:
		return "shutdown"
	case reasonDone:
		return "done"
	case reasonUnauthorized:
		return "unauthorized"
	case reasonTokenExpired:
		return "token_expired"
	}
	return ""
}

// serve parses and serves the requests buffered on c, as many as are
// complete (pipelining), and reports whether c must be closed.
func (l *loop) serve(c *conn) (closeConn bool) {
	for c.phase == phaseRequest {
		buf, _ := c.gc.Peek(-1)
		if len(buf) == 0 {
			return false
		}
		if !c.started {
			c.started = true
			l.wheel.Schedule(&c.timer, l.e.cfg.Limits.HeaderTimeout, c.fire)
		}
		req := &l.req
		n, err := req.Parse(buf, &l.e.lim)
		if errors.Is(err, httpparse.ErrNeedMore) {
			return false
		}
		if err != nil {
			l.e.log.Debug("bad request head", "remote", c.gc.RemoteAddr(), "err", err, "head", quoteHead(buf))
			l.countLimit(err)
			return l.fail(c, statusOf(err), reasonBadRequest)
		}
		var body []byte
		total := n
		max := l.e.cfg.Limits.MaxBodyBytes
		switch {
		case req.Chunked:
			out, m, err := httpparse.DecodeChunked(l.body[:0], buf[n:], max)
			if errors.Is(err, httpparse.ErrNeedMore) {
				l.maybeContinue(c, req)
				return false
			}
			if err != nil {
				l.countLimit(err)
				return l.fail(c, statusOf(err), reasonBadRequest)
			}
			l.body, body, total = out[:0], out, n+m
		case req.ContentLength > int64(max):
			l.e.m.limit("max_body_bytes")
			return l.fail(c, 413, reasonBadRequest)
		case req.ContentLength > 0:
			cl := int(req.ContentLength)
			if len(buf)-n < cl {
				l.maybeContinue(c, req)
				return false
			}
			body, total = buf[n:n+cl], n+cl
		}
		c.started, c.continued = false, false
		keep := l.route(c, req, body)
		_, _ = c.gc.Discard(total)
		if !keep {
			return true
		}
		if c.phase == phaseRequest {
			l.armIdle(c)
		}
	}
	switch c.phase {
	case phaseStream:
		// A stream's client has nothing more to say; what it sends is dropped
		// so that it can never grow the inbound buffer.
		_, _ = c.gc.Discard(-1)
	case phaseBusy:
		// Pipelined requests wait for the current answer, but only so many.
		if c.gc.InboundBuffered() > l.e.cfg.Limits.MaxHeadBytes+l.e.cfg.Limits.MaxBodyBytes {
			l.e.m.limit("pipeline")
			return l.fail(c, 431, reasonBadRequest)
		}
	}
	return false
}

// maybeContinue answers "Expect: 100-continue" once per request, so that
// curl and PHP send a body over 1 KiB at once instead of after a second.
func (l *loop) maybeContinue(c *conn, req *httpparse.Request) {
	if req.ExpectContinue && !c.continued {
		c.continued = true
		l.write(c, resp100Continue)
	}
}

// armIdle arms the keep-alive idle timeout while c waits for a request.
func (l *loop) armIdle(c *conn) {
	c.started = false
	l.wheel.Schedule(&c.timer, l.e.cfg.Limits.IdleTimeout, c.fire)
}

// onTimer runs on the loop when c's timer fires.
func (c *conn) onTimer() {
	l := c.l
	switch c.phase {
	case phaseRequest:
		if c.started {
			l.e.m.httpError(408)
			l.e.m.limit("header_timeout")
			l.write(c, respTimeout)
			l.close(c, reasonHeaderTimeout)
			return
		}
		l.close(c, reasonIdleTimeout)
	case phaseBusy:
		l.wheel.Schedule(&c.timer, l.e.cfg.Limits.IdleTimeout, c.fire)
	case phaseStream:
		if c.expires != 0 && nowUnix(l.now) >= int64(c.expires) {
			l.close(c, reasonTokenExpired)
			return
		}
		hb := l.e.cfg.Heartbeat
		if quiet := time.Duration(l.now - c.lastWrite); quiet < hb {
			l.armStream(c, hb-quiet)
			return
		}
		l.write(c, heartbeatComment)
		l.heartbeats++
		l.checkOutbound(c)
		if c.phase == phaseStream {
			l.armStream(c, hb)
		}
	}
}

// armStream arms a stream's timer for the next heartbeat in d, or for its
// token's expiry if that comes first: one timer serves both.
func (l *loop) armStream(c *conn, d time.Duration) {
	if c.expires != 0 {
		left := time.Duration(int64(c.expires)*int64(time.Second) - l.now)
		d = max(min(d, left), 0)
	}
	l.wheel.Schedule(&c.timer, d, c.fire)
}

// countLimit counts a parser error that a configured limit caused.
func (l *loop) countLimit(err error) {
	switch {
	case errors.Is(err, httpparse.ErrTooManyHeaders):
		l.e.m.limit("max_headers")
	case errors.Is(err, httpparse.ErrHeadTooLarge):
		l.e.m.limit("max_head_bytes")
	case errors.Is(err, httpparse.ErrURITooLong):
		l.e.m.limit("max_uri_bytes")
	case errors.Is(err, httpparse.ErrBodyTooLarge):
		l.e.m.limit("max_body_bytes")
	}
}

// finish completes an asynchronous request on the loop: it writes the
// response and, if keep, serves what the client pipelined meanwhile.
func (l *loop) finish(c *conn, resp []byte, keep bool) {
	if c.phase != phaseBusy {
		return // closed while the store worked
	}
	c.phase = phaseRequest
	l.write(c, resp)
	l.resume(c, keep)
}

// resume continues c on the loop after an asynchronous step: it closes c
// (after its pending output) unless keep, and otherwise serves what the
// client pipelined meanwhile if c is back to reading requests.
func (l *loop) resume(c *conn, keep bool) {
	if !keep {
		l.close(c, reasonDone)
		return
	}
	if c.phase != phaseRequest {
		return // now a stream, or busy with the next step
	}
	l.armIdle(c)
	if l.serve(c) {
		l.close(c, reasonBadRequest)
	}
}

// fail writes the error response for status and asks for c to be closed.
func (l *loop) fail(c *conn, status int, reason closeReason) (closeConn bool) {
	l.e.m.httpError(status)
	l.write(c, errorResponse(status))
	c.phase = phaseClosing
	c.closeReason = reason
	return true
}

// statusOf maps a parser error to its status code (net/http's mapping).
func statusOf(err error) int {
	switch {
	case errors.Is(err, httpparse.ErrHeadTooLarge), errors.Is(err, httpparse.ErrTooManyHeaders):
		return 431
	case errors.Is(err, httpparse.ErrURITooLong):
		return 414
	case errors.Is(err, httpparse.ErrUnsupportedTE):
		return 501
	case errors.Is(err, httpparse.ErrVersion):
		return 505
	case errors.Is(err, httpparse.ErrBodyTooLarge):
		return 413
	}
	return 400
}

// headQuoteLimit is how much of a bad request the debug log quotes.
const headQuoteLimit = 80

func quoteHead(b []byte) string {
	if len(b) > headQuoteLimit {
		b = b[:headQuoteLimit]
	}
	return strconv.Quote(string(b))
}

// appendResponse appends a complete response with a body.
func appendResponse(dst []byte, status int, ctype string, body []byte, keepAlive, http10 bool) []byte {
	return appendResponseH(dst, status, ctype, "", body, keepAlive, http10)
}

// appendResponseH is appendResponse with extra header lines (each ending in
// CRLF), such as CORS headers.
func appendResponseH(dst []byte, status int, ctype, extra string, body []byte, keepAlive, http10 bool) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, statusText(status)...)
	dst = append(dst, "\r\nContent-Type: "...)
	dst = append(dst, ctype...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	switch {
	case !keepAlive:
		dst = append(dst, "\r\nConnection: close"...)
	case http10:
		dst = append(dst, "\r\nConnection: keep-alive"...)
	}
	dst = append(dst, "\r\nCache-Control: no-store\r\n"...)
	dst = append(dst, extra...)
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 204:
		return "No Content"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 413:
		return "Content Too Large"
	case 414:
		return "URI Too Long"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 503:
		return "Service Unavailable"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

// errorBodies are fixed: an error body never echoes the request.
var errorBodies = map[int]string{
	400: "bad request\n",
	401: "unauthorized\n",
	403: "forbidden\n",
	404: "not found\n",
	405: "method not allowed\n",
	408: "request timeout\n",
	413: "request body too large\n",
	414: "request URI too long\n",
	431: "request header fields too large\n",
	501: "transfer-encoding not implemented\n",
	503: "service unavailable\n",
	505: "HTTP version not supported\n",
}

var errorResponses = func() map[int][]byte {
	m := make(map[int][]byte, len(errorBodies))
	for code, body := range errorBodies {
		m[code] = appendResponse(nil, code, "text/plain; charset=utf-8", []byte(body), false, false)
	}
	return m
}()

// errorResponse returns the complete close-delimited response for status.
func errorResponse(status int) []byte {
	if r, ok := errorResponses[status]; ok {
		return r
	}
	return errorResponses[400]
}

// badRequest is an error response with a specific short reason (which never
// contains client input), e.g. "invalid key".
func (l *loop) badRequest(c *conn, status int, msg string) (keep bool) {
	l.e.m.httpError(status)
	l.out = appendResponse(l.out[:0], status, "text/plain; charset=utf-8", append([]byte(msg), '\n'), false, false)
	l.write(c, l.out)
	c.phase = phaseClosing
	c.closeReason = reasonBadRequest
	return false
}

var (
	resp100Continue  = []byte("HTTP/1.1 100 Continue\r\n\r\n")
	respTimeout      = errorResponse(408)
	respOverLimit    = errorResponse(503)
	heartbeatComment = []byte(":\n\n")
)

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }
