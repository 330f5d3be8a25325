package engine

import (
	"errors"
	"strconv"

	"github.com/panjf2000/gnet/v2"
	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/hub"
)

// conn is the engine's state of one connection, owned by its loop. It is kept
// small: one exists per open stream, and memory per connection is the number
// this server is judged by. The hub's part (the connection itself, its loop,
// its one timer, its subscriptions) is embedded, and the engine adds four
// bytes: the struct fills the 128-byte size class (TestConnStaysSmall).
type conn struct {
	hub.Stream

	phase       phase
	closeReason closeReason
	started     bool // a request head has begun arriving: header timeout armed
	continued   bool // "100 Continue" sent for the current request
}

// gc returns c's gnet connection: the hub.Conn given to Init. The hub holds
// it, so the engine does not keep a second copy of the interface.
func (c *conn) gc() gnet.Conn { return c.Conn().(gnet.Conn) }

// l returns the engine loop of c: the executor its hub loop was made with.
func (c *conn) l() *loop { return c.Loop().Executor().(*loop) }

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
	reasonShutdown
	reasonDone
	reasonUnauthorized
)

func (r closeReason) String() string {
	switch r {
	case reasonBadRequest:
		return "bad_request"
	case reasonHeaderTimeout:
		return "header_timeout"
	case reasonIdleTimeout:
		return "idle_timeout"
	case reasonShutdown:
		return "shutdown"
	case reasonDone:
		return "done"
	case reasonUnauthorized:
		return "unauthorized"
	}
	return ""
}

// serve parses and serves the requests buffered on c, as many as are
// complete (pipelining), and reports whether c must be closed.
func (l *loop) serve(c *conn) (closeConn bool) {
	for c.phase == phaseRequest {
		buf, _ := c.gc().Peek(-1)
		if len(buf) == 0 {
			return false
		}
		if !c.started {
			c.started = true
			c.Arm(l.e.cfg.Limits.HeaderTimeout)
		}
		req := &l.req
		n, err := req.Parse(buf, &l.e.lim)
		if errors.Is(err, httpparse.ErrNeedMore) {
			return false
		}
		if err != nil {
			l.e.log.Debug("bad request head", "remote", c.gc().RemoteAddr(), "err", err, "head", quoteHead(buf))
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
		_, _ = c.gc().Discard(total)
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
		_, _ = c.gc().Discard(-1)
	case phaseBusy:
		// Pipelined requests wait for the current answer, but only so many.
		if c.gc().InboundBuffered() > l.e.cfg.Limits.MaxHeadBytes+l.e.cfg.Limits.MaxBodyBytes {
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
	c.Arm(l.e.cfg.Limits.IdleTimeout)
}

// onTimer runs on the loop when c's timer fires: a request timeout, or the
// hub's heartbeat and expiry timer once c is a stream.
func (c *conn) onTimer() {
	l := c.l()
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
		c.Arm(l.e.cfg.Limits.IdleTimeout)
	case phaseStream:
		c.Loop().Fire(&c.Stream)
	}
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

// write writes b to c (a response; stream bytes go through the hub).
func (l *loop) write(c *conn, b []byte) {
	_, _ = c.gc().Write(b)
}

// close closes c after its pending output, from any point on the loop.
// A conn already closing (an error response was written and serve asked
// gnet to close it) keeps its first reason but is still closed: gnet's
// Close is idempotent, and a close requested by a return value of serve is
// lost when serve ran from a task rather than from OnTraffic.
func (l *loop) close(c *conn, reason closeReason) {
	if c.phase == phaseClosed {
		return
	}
	if c.phase != phaseClosing {
		c.phase = phaseClosing
		c.closeReason = reason
	}
	_ = c.gc().Close()
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

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }
