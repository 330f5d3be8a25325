package engine

import (
	"errors"
	"strconv"
	"strings"
)

// corsPolicy holds the CORS header lines for each allowed origin, built once
// by New, so that a response never echoes the Origin a client sent: it
// repeats a configured string that happens to be equal.
type corsPolicy struct {
	any     bool              // "*": every origin, no credentials
	origins map[string]string // origin -> header lines for responses
	maxAge  string            // Access-Control-Max-Age value, seconds
}

const corsAny = "Access-Control-Allow-Origin: *\r\n"

func newCORSPolicy(c CORS) (*corsPolicy, error) {
	p := &corsPolicy{origins: map[string]string{}, maxAge: strconv.Itoa(int(c.MaxAge.Seconds()))}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			p.any = true
			continue
		}
		if o == "" || strings.ContainsAny(o, "\r\n\x00 ,") || !strings.Contains(o, "://") {
			return nil, errors.New("engine: cors.allowed_origins: an origin is scheme://host[:port], or *")
		}
		// Listed origins are trusted with cookies: EventSource's
		// withCredentials and fetch's credentials: "include" need this.
		p.origins[strings.TrimSuffix(o, "/")] = "Access-Control-Allow-Origin: " + strings.TrimSuffix(o, "/") +
			"\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
	}
	return p, nil
}

// headers returns the header lines (each ending in CRLF) for a response to a
// request from origin, or "" when that origin is not allowed. A listed
// origin wins over "*" so that it keeps its credentials.
func (p *corsPolicy) headers(origin []byte) string {
	if origin == nil {
		return ""
	}
	if h, ok := p.origins[string(origin)]; ok {
		return h
	}
	if p.any {
		return corsAny
	}
	return ""
}

// preflight appends the answer to an OPTIONS request: 204 with Allow, plus
// the Access-Control-* lines when origin is allowed.
func (p *corsPolicy) preflight(dst []byte, origin []byte, methods string, keepAlive, http10 bool) []byte {
	extra := "Allow: " + methods + ", OPTIONS\r\n"
	if h := p.headers(origin); h != "" {
		extra += h + "Access-Control-Allow-Methods: " + methods +
			", OPTIONS\r\nAccess-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID, Cache-Control\r\nAccess-Control-Max-Age: " +
			p.maxAge + "\r\n"
	}
	r := response{status: 204, extra: extra, keepAlive: keepAlive, http10: http10}
	return r.appendTo(dst)
}
