package engine

import (
	"strconv"
)

// response is one HTTP/1.1 response. Every answer the engine sends, from
// every route, is rendered by appendTo: the status line, the fixed headers,
// the extra lines (CORS, Allow, WWW-Authenticate) and the body.
type response struct {
	status int
	ctype  string // "" = no Content-Type (204)
	extra  string // header lines, each ending in CRLF
	body   []byte
	// keepAlive and http10 decide the Connection header: close unless
	// keepAlive; an HTTP/1.0 client needs keep-alive said explicitly.
	keepAlive, http10 bool
	// omitBody answers HEAD: the headers of the full response, no body.
	omitBody bool
	// stream starts an event stream: no Content-Length, the body is the
	// first bytes of the stream.
	stream bool
	// mercure: a stream with the Mercure hub's cache headers.
	mercure bool
}

// appendTo appends the rendered response to dst.
func (r *response) appendTo(dst []byte) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(r.status), 10)
	dst = append(dst, ' ')
	dst = append(dst, statusText(r.status)...)
	dst = append(dst, "\r\n"...)
	if r.ctype != "" {
		dst = append(dst, "Content-Type: "...)
		dst = append(dst, r.ctype...)
		dst = append(dst, "\r\n"...)
	}
	switch {
	case r.stream && r.mercure:
		dst = append(dst, "Cache-Control: private, no-cache, no-store, must-revalidate, max-age=0\r\n"+
			"Pragma: no-cache\r\nExpire: 0\r\nConnection: keep-alive\r\nX-Accel-Buffering: no\r\n"...)
	case r.stream:
		// X-Accel-Buffering: nginx passes the stream through unbuffered.
		dst = append(dst, "Cache-Control: no-cache\r\nConnection: keep-alive\r\nX-Accel-Buffering: no\r\n"...)
	default:
		if r.status != 204 {
			dst = append(dst, "Content-Length: "...)
			dst = strconv.AppendInt(dst, int64(len(r.body)), 10)
			dst = append(dst, "\r\n"...)
		}
		switch {
		case !r.keepAlive:
			dst = append(dst, "Connection: close\r\n"...)
		case r.http10:
			dst = append(dst, "Connection: keep-alive\r\n"...)
		}
		dst = append(dst, "Cache-Control: no-store\r\n"...)
	}
	dst = append(dst, r.extra...)
	dst = append(dst, "\r\n"...)
	if r.omitBody {
		return dst
	}
	return append(dst, r.body...)
}

const textPlain = "text/plain; charset=utf-8"

// appendResponse appends a complete response with a body.
func appendResponse(dst []byte, status int, ctype string, body []byte, keepAlive, http10 bool) []byte {
	r := response{status: status, ctype: ctype, body: body, keepAlive: keepAlive, http10: http10}
	return r.appendTo(dst)
}

// appendError appends the close-delimited plain-text error response for
// status with extra header lines and a fixed message (never client input).
func appendError(dst []byte, status int, extra, msg string) []byte {
	r := response{status: status, ctype: textPlain, extra: extra, body: []byte(msg)}
	return r.appendTo(dst)
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
		m[code] = appendError(nil, code, "", body)
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

// badRequest answers an error with a specific short reason (which never
// contains client input, e.g. "invalid key") and closes c.
func (l *loop) badRequest(c *conn, status int, msg string) (keep bool) {
	l.e.m.httpError(status)
	l.out = appendError(l.out[:0], status, "", msg+"\n")
	l.write(c, l.out)
	c.phase = phaseClosing
	c.closeReason = reasonBadRequest
	return false
}

var (
	resp100Continue = []byte("HTTP/1.1 100 Continue\r\n\r\n")
	respTimeout     = errorResponse(408)
	respOverLimit   = errorResponse(503)
)
