// Package httpparse parses HTTP/1.1 request heads in place and without
// allocating, for servers that own their read buffers (gnet event loops).
//
// The one rule: every []byte that [Request.Parse] stores in a [Request], and
// every slice returned by [Request.Header] and [NextQuery], points into the
// caller's buffer. It is valid until that buffer is modified or reused, or
// Parse is called again on the same Request. Copy what must live longer.
//
// Parse keeps no state between calls. When the head is incomplete it returns
// [ErrNeedMore]: read more bytes, append them and call Parse again with the
// whole buffer. Heads are capped by [Limits] (8 KiB by default), so scanning
// again from the start is cheaper and simpler than a resumable state machine.
//
// Errors are sentinels for errors.Is. Each maps to one response status:
// [ErrMalformed], [ErrBadContentLength] and [ErrContentLengthWithTE] 400,
// [ErrBodyTooLarge] 413, [ErrURITooLong] 414, [ErrHeadTooLarge] and
// [ErrTooManyHeaders] 431, [ErrUnsupportedTE] 501, [ErrVersion] 505.
//
// Deliberate differences from net/http.ReadRequest (the fuzz tests check
// each one). Stricter, because a request two parsers read differently is a
// smuggling risk and sseloop is an origin server, not a proxy:
//   - duplicate Content-Length fields are rejected even when equal;
//   - Content-Length together with Transfer-Encoding is rejected (net/http
//     drops Content-Length), and so is any Transfer-Encoding in HTTP/1.0
//     (net/http ignores it);
//   - obs-fold (a field line starting with SP or HTAB) is rejected, not joined;
//   - HTTP/1.1 without Host, an invalid Host value, and field names containing
//     spaces are rejected here; net/http's server rejects them after ReadRequest;
//   - only HTTP/1.0 and HTTP/1.1 are accepted; HTTP/1.2 to 1.9 get [ErrVersion];
//   - the request-target is origin-form ("/path?query"), absolute-form with
//     an http or https scheme and a host of letters, digits, "-._~" and an
//     optional numeric port (no userinfo, no IP literal), or "*" for OPTIONS
//     only; CONNECT's authority-form is rejected.
//
// More lenient:
//   - empty lines before the request-line are skipped (RFC 9112 section 2.2);
//     net/http's server skips them only after a POST;
//   - the Trailer field is not inspected: net/http rejects a chunked request
//     whose Trailer names Content-Length, Transfer-Encoding or Trailer, but
//     [DecodeChunked] discards trailer fields, so they cannot change framing.
package httpparse

import (
	"bytes"
	"encoding/binary"
	"errors"
)

var (
	// ErrNeedMore means the input ends before the head (or chunked body) does:
	// read more and call again with the whole buffer.
	ErrNeedMore = errors.New("httpparse: need more data")

	// ErrMalformed means the input breaks HTTP/1.1 syntax: a bad request-line,
	// field name or value, obs-fold, a bad percent-escape in the path, a
	// missing or repeated Host, or bad chunked framing. Answer 400.
	ErrMalformed = errors.New("httpparse: malformed request")

	// ErrHeadTooLarge means the head is longer than Limits.MaxHeadBytes.
	// Answer 431.
	ErrHeadTooLarge = errors.New("httpparse: request head too large")

	// ErrTooManyHeaders means the head has more than Limits.MaxHeaders field
	// lines. Answer 431.
	ErrTooManyHeaders = errors.New("httpparse: too many header fields")

	// ErrURITooLong means the request-target is longer than
	// Limits.MaxURIBytes. Answer 414.
	ErrURITooLong = errors.New("httpparse: request-target too long")

	// ErrBadContentLength means a Content-Length value is not a plain decimal
	// number that fits in an int64, or the field appears more than once.
	// Answer 400.
	ErrBadContentLength = errors.New("httpparse: bad Content-Length")

	// ErrContentLengthWithTE means the request has both Content-Length and
	// Transfer-Encoding, the classic request-smuggling shape. Answer 400.
	ErrContentLengthWithTE = errors.New("httpparse: both Content-Length and Transfer-Encoding")

	// ErrUnsupportedTE means Transfer-Encoding is something other than a single
	// "chunked", or appears in an HTTP/1.0 request. Answer 501.
	ErrUnsupportedTE = errors.New("httpparse: unsupported Transfer-Encoding")

	// ErrVersion means the HTTP version is well formed but not 1.0 or 1.1.
	// Answer 505.
	ErrVersion = errors.New("httpparse: unsupported HTTP version")

	// ErrBodyTooLarge means a chunked body decodes to more than the caller's
	// maximum. Answer 413.
	ErrBodyTooLarge = errors.New("httpparse: body too large")
)

// Defaults used for zero (or negative) [Limits] fields.
const (
	DefaultMaxHeadBytes = 8192
	DefaultMaxHeaders   = 64
	DefaultMaxURIBytes  = 4096
)

// Limits bounds what Parse accepts. A nil *Limits means all defaults.
type Limits struct {
	// MaxHeadBytes is the most bytes of request-line, field lines and final
	// blank line (and any empty lines before the request-line) that Parse
	// reads. Default 8192 (DefaultMaxHeadBytes) when 0.
	MaxHeadBytes int
	// MaxHeaders is the most header field lines. Default 64 when 0.
	MaxHeaders int
	// MaxURIBytes is the longest request-target in bytes. Default 4096 when 0.
	MaxURIBytes int
}

func (l *Limits) resolve() (head, headers, uri int) {
	head, headers, uri = DefaultMaxHeadBytes, DefaultMaxHeaders, DefaultMaxURIBytes
	if l == nil {
		return
	}
	if l.MaxHeadBytes > 0 {
		head = l.MaxHeadBytes
	}
	if l.MaxHeaders > 0 {
		headers = l.MaxHeaders
	}
	if l.MaxURIBytes > 0 {
		uri = l.MaxURIBytes
	}
	return
}

// Header is one field line. Both slices point into the parsed buffer.
type Header struct {
	Name  []byte // as sent; compare with ASCII case folding
	Value []byte // leading and trailing SP/HTAB removed
}

// Request is a parsed request head. Every slice points into the buffer given
// to Parse (see the package doc), except Path in the one case noted below.
// A Request is not safe for concurrent use; reuse one per connection.
type Request struct {
	Method []byte
	URI    []byte // request-target exactly as sent
	// Path is URI up to '?', still percent-encoded (escapes are validated).
	// For absolute-form it is the path part; "http://h" and "http://h?q"
	// have an empty path, which means "/" (RFC 9110 section 4.2.3), and Path
	// is then a shared read-only "/" that does not point into the buffer.
	// For "OPTIONS *" it is "*".
	Path []byte
	// Query is the part after '?' (without it), still percent-encoded;
	// nil if the target has no '?', empty if it ends with '?'. Split it
	// with NextQuery.
	Query      []byte
	ProtoMinor int      // 0 or 1 (HTTP/1.0 or HTTP/1.1)
	Headers    []Header // in order; the backing array is reused across Parse calls
	// ContentLength is the Content-Length value, or -1 when absent.
	ContentLength int64
	Chunked       bool // Transfer-Encoding: chunked (decode the body with DecodeChunked)
	// KeepAlive reports whether the connection may carry another request:
	// HTTP/1.1 unless Connection has the token "close"; HTTP/1.0 only with
	// "keep-alive" and without "close".
	KeepAlive bool
	// ExpectContinue reports "Expect: 100-continue" in an HTTP/1.1 request.
	// It is ignored in HTTP/1.0, as RFC 9110 section 10.1.1 requires.
	ExpectContinue bool
	// Host is the Host field value, or the authority of an absolute-form
	// target, which takes precedence (RFC 9112 section 3.2.2). nil when
	// neither is present (HTTP/1.0 only).
	Host []byte
}

// Reset clears r for reuse, keeping the Headers backing array.
func (r *Request) Reset() {
	// Clearing the old entries keeps them from pinning the previous buffer
	// in memory; it costs a few nanoseconds for a typical head.
	clear(r.Headers)
	*r = Request{Headers: r.Headers[:0], ContentLength: -1}
}

// Header returns the value of the first field named name (ASCII
// case-insensitive), or nil. It does not allocate.
func (r *Request) Header(name string) []byte {
	for i := range r.Headers {
		if equalFoldString(r.Headers[i].Name, name) {
			return r.Headers[i].Value
		}
	}
	return nil
}

// slash is Path for an absolute-form target with an empty path. The full
// slice expression leaves no capacity, so an append copies instead of
// writing into it.
var slash = []byte("/")[:1:1]

// Parse parses one request head from the start of buf. On success it returns
// the number of bytes of the head, through the blank line that ends it (any
// empty lines before the request-line included); the body, or the next
// pipelined request, starts at buf[n]. Lines may end in CRLF or a bare LF,
// as net/http allows; a CR anywhere else is malformed.
//
// Parse calls Reset first. A nil lim means the defaults. It returns
// ErrNeedMore while the head is incomplete, ErrHeadTooLarge as soon as
// len(buf) reaches lim.MaxHeadBytes without a complete head, and
// ErrURITooLong or ErrMalformed as soon as the bytes already in buf show it.
// After an error r holds partial results; only the error is meaningful.
//
// Parse does not allocate once r.Headers has room for the head's fields; the
// first call on a new Request allocates room for 16.
func (r *Request) Parse(buf []byte, lim *Limits) (n int, err error) {
	r.Reset()
	if cap(r.Headers) == 0 {
		r.Headers = make([]Header, 0, 16)
	}
	maxHead, maxHeaders, maxURI := lim.resolve()
	b := buf
	if len(b) > maxHead {
		b = b[:maxHead]
	}
	i := 0

	// RFC 9112 section 2.2: a server SHOULD ignore at least one empty line
	// received before the request-line. They count toward MaxHeadBytes.
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		if b[i] == '\n' {
			i++
			continue
		}
		if i+1 == len(b) {
			return 0, needMore(buf, maxHead)
		}
		if b[i+1] != '\n' {
			return 0, ErrMalformed
		}
		i += 2
	}

	// method SP
	start := i
	for i < len(b) && class[b[i]]&cToken != 0 {
		i++
	}
	if i == len(b) {
		return 0, needMore(buf, maxHead)
	}
	if i == start || b[i] != ' ' {
		return 0, ErrMalformed
	}
	r.Method = b[start:i]
	i++

	// request-target SP. The scan stops one byte past the limit so a long
	// target is reported before the rest of it (or of the head) arrives.
	start = i
	end := len(b)
	if maxURI < end-start { // not start+maxURI+1 < end: that can overflow
		end = start + maxURI + 1
	}
	for i < end && class[b[i]]&cTarget != 0 {
		i++
	}
	if i-start > maxURI {
		return 0, ErrURITooLong
	}
	if i == len(b) {
		return 0, needMore(buf, maxHead)
	}
	if i == start || b[i] != ' ' {
		return 0, ErrMalformed
	}
	r.URI = b[start:i]
	i++

	// HTTP-version CRLF
	start = i
	for i < len(b) && b[i] != '\r' && b[i] != '\n' {
		i++
	}
	if i == len(b) {
		return 0, needMore(buf, maxHead)
	}
	version := b[start:i]
	if i, err = skipEOL(b, i); err != nil {
		return 0, fixShort(err, buf, maxHead)
	}
	switch string(version) { // no allocation: the compiler compares in place
	case "HTTP/1.1":
		r.ProtoMinor = 1
	case "HTTP/1.0":
		r.ProtoMinor = 0
	default:
		if looksLikeVersion(version) {
			return 0, ErrVersion
		}
		return 0, ErrMalformed
	}
	absolute, err := r.splitTarget()
	if err != nil {
		return 0, err
	}

	// field-lines CRLF
	var (
		haveHost, expect, connClose, connKeepAlive bool
		teCount                                    int
		te                                         []byte
	)
	for {
		if i == len(b) {
			return 0, needMore(buf, maxHead)
		}
		switch b[i] {
		case '\r', '\n':
			if i, err = skipEOL(b, i); err != nil {
				return 0, fixShort(err, buf, maxHead)
			}
			return r.finish(i, haveHost, expect, connClose, connKeepAlive, teCount, te)
		case ' ', '\t':
			// obs-fold, or whitespace before the first field name. RFC 9112
			// section 5.2 lets a server reject it; joining lines is how
			// proxies and servers come to disagree about a field's value.
			return 0, ErrMalformed
		}

		start = i
		for i < len(b) && class[b[i]]&cToken != 0 {
			i++
		}
		if i == len(b) {
			return 0, needMore(buf, maxHead)
		}
		// No whitespace between name and colon (RFC 9112 section 5.1).
		if i == start || b[i] != ':' {
			return 0, ErrMalformed
		}
		name := b[start:i]
		i++

		// bytes.IndexByte is vectorised; the validation loop below then
		// touches only the value's bytes.
		lf := bytes.IndexByte(b[i:], '\n')
		if lf < 0 {
			return 0, needMore(buf, maxHead)
		}
		next := i + lf + 1
		value := b[i : next-1]
		if len(value) > 0 && value[len(value)-1] == '\r' {
			value = value[:len(value)-1]
		}
		if !validValue(value) {
			return 0, ErrMalformed // CTL other than HTAB, including NUL and bare CR
		}
		value = trimOWS(value)
		i = next

		if len(r.Headers) == maxHeaders {
			return 0, ErrTooManyHeaders
		}
		r.Headers = append(r.Headers, Header{Name: name, Value: value})

		// Dispatch on length first: most fields are none of these, and a
		// length mismatch rules them out without looking at the bytes.
		switch len(name) {
		case 4:
			if equalFold(name, "host") {
				if haveHost || !validHost(value) {
					return 0, ErrMalformed
				}
				haveHost = true
				if !absolute {
					r.Host = value
				}
			}
		case 6:
			if equalFold(name, "expect") && equalFold(value, "100-continue") {
				expect = true
			}
		case 10:
			if equalFold(name, "connection") {
				c, k := connectionTokens(value)
				connClose = connClose || c
				connKeepAlive = connKeepAlive || k
			}
		case 14:
			if equalFold(name, "content-length") {
				// Even equal duplicates are refused (RFC 9112 section 6.3
				// allows either); one rule is easier to keep smuggling-proof.
				if r.ContentLength >= 0 {
					return 0, ErrBadContentLength
				}
				cl, ok := parseContentLength(value)
				if !ok {
					return 0, ErrBadContentLength
				}
				r.ContentLength = cl
			}
		case 17:
			if equalFold(name, "transfer-encoding") {
				teCount++
				te = value
			}
		}
	}
}

// finish applies the checks that need the whole head.
func (r *Request) finish(n int, haveHost, expect, connClose, connKeepAlive bool, teCount int, te []byte) (int, error) {
	// RFC 9112 section 3.2: 400 for any HTTP/1.1 request without Host.
	if r.ProtoMinor == 1 && !haveHost {
		return 0, ErrMalformed
	}
	if teCount > 0 {
		if r.ContentLength >= 0 {
			return 0, ErrContentLengthWithTE
		}
		// Like nginx and net/http: one field, exactly "chunked". HTTP/1.0
		// has no chunked coding (RFC 9112 section 6.1).
		if r.ProtoMinor == 0 || teCount > 1 || !equalFold(te, "chunked") {
			return 0, ErrUnsupportedTE
		}
		r.Chunked = true
	}
	r.ExpectContinue = expect && r.ProtoMinor == 1
	if r.ProtoMinor == 1 {
		r.KeepAlive = !connClose
	} else {
		r.KeepAlive = connKeepAlive && !connClose
	}
	return n, nil
}

// splitTarget sets Path, Query and (for absolute-form) Host from URI.
func (r *Request) splitTarget() (absolute bool, err error) {
	u := r.URI
	if u[0] == '/' {
		return false, r.splitPath(u)
	}
	if len(u) == 1 && u[0] == '*' {
		if string(r.Method) != "OPTIONS" {
			return false, ErrMalformed
		}
		r.Path = u
		return false, nil
	}
	var rest []byte
	switch {
	case hasPrefixFold(u, "http://"):
		rest = u[len("http://"):]
	case hasPrefixFold(u, "https://"):
		rest = u[len("https://"):]
	default:
		return false, ErrMalformed
	}
	j := 0
	for j < len(rest) && rest[j] != '/' && rest[j] != '?' {
		j++
	}
	if !validAuthority(rest[:j]) {
		return false, ErrMalformed
	}
	r.Host = rest[:j]
	if err := r.splitPath(rest[j:]); err != nil {
		return false, err
	}
	if len(r.Path) == 0 {
		r.Path = slash
	}
	return true, nil
}

// splitPath splits p at the first '?' and validates the path's escapes,
// as net/url does; the query's are checked only when decoded.
func (r *Request) splitPath(p []byte) error {
	if q := bytes.IndexByte(p, '?'); q >= 0 {
		r.Query = p[q+1:]
		p = p[:q]
	}
	r.Path = p
	for k := bytes.IndexByte(p, '%'); k >= 0; k = bytes.IndexByte(p, '%') {
		if k+2 >= len(p) || unhex(p[k+1])|unhex(p[k+2]) > 15 {
			return ErrMalformed
		}
		p = p[k+3:]
	}
	return nil
}

// needMore reports an incomplete head: ErrHeadTooLarge once the buffer holds
// MaxHeadBytes without the end of the head, else ErrNeedMore.
func needMore(buf []byte, maxHead int) error {
	if len(buf) >= maxHead {
		return ErrHeadTooLarge
	}
	return ErrNeedMore
}

// fixShort turns skipEOL's ErrNeedMore into needMore's answer.
func fixShort(err error, buf []byte, maxHead int) error {
	if errors.Is(err, ErrNeedMore) {
		return needMore(buf, maxHead)
	}
	return err
}

// skipEOL skips the CRLF or bare LF at b[i], which is '\r' or '\n'.
func skipEOL(b []byte, i int) (int, error) {
	if b[i] == '\n' {
		return i + 1, nil
	}
	if i+1 == len(b) {
		return 0, ErrNeedMore
	}
	if b[i+1] != '\n' {
		return 0, ErrMalformed // bare CR
	}
	return i + 2, nil
}

// looksLikeVersion reports "HTTP/" followed by digits and dots, such as
// HTTP/2.0 or HTTP/1.2: a version we don't speak (505), not garbage (400).
func looksLikeVersion(v []byte) bool {
	if len(v) <= len("HTTP/") || string(v[:5]) != "HTTP/" {
		return false
	}
	for _, c := range v[5:] {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}

// parseContentLength accepts 1*DIGIT that fits in an int64, like net/http's
// strconv.ParseUint(v, 10, 63): no sign, no spaces, no list.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// connectionTokens reports whether the comma-separated list v has the
// tokens "close" and "keep-alive" (case-insensitive, OWS around items).
func connectionTokens(v []byte) (hasClose, hasKeepAlive bool) {
	for len(v) > 0 {
		tok := v
		v = nil
		if j := bytes.IndexByte(tok, ','); j >= 0 {
			tok, v = tok[:j], tok[j+1:]
		}
		tok = trimOWS(tok)
		switch {
		case equalFold(tok, "close"):
			hasClose = true
		case equalFold(tok, "keep-alive"):
			hasKeepAlive = true
		}
	}
	return
}

// validValue reports whether v holds only field-value bytes: no CTL but
// HTAB, no DEL. Values (cookies, tokens, user agents) are most of a head's
// bytes, and a byte-at-a-time table loop was 60% of Parse's time on
// BenchmarkParse/large_head, so this tests eight bytes per step with SWAR
// arithmetic and looks at single bytes only in a word that may hold a bad
// one (in practice, one with an HTAB).
func validValue(v []byte) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	for len(v) >= 8 {
		x := binary.LittleEndian.Uint64(v)
		y := x ^ 0x7f*ones
		// (x - n*ones) &^ x & highs is non-zero iff a byte of x is below n
		// (n <= 0x80; Hacker's Delight "hasless"): here a byte < 0x20 in x,
		// or a zero byte in y, which is a 0x7f in x. Bytes >= 0x80 have
		// their high bit set in x, so &^ x never flags them.
		if ((x-0x20*ones)&^x|(y-ones)&^y)&highs != 0 {
			for _, c := range v[:8] {
				if class[c]&cValue == 0 {
					return false
				}
			}
		}
		v = v[8:]
	}
	for _, c := range v {
		if class[c]&cValue == 0 {
			return false
		}
	}
	return true
}

func validHost(v []byte) bool {
	for _, c := range v {
		if class[c]&cHost == 0 {
			return false
		}
	}
	return true
}

// validAuthority accepts reg-name or IPv4 with an optional numeric port:
// 1*(ALPHA / DIGIT / "-" / "." / "_" / "~") [ ":" *DIGIT ]. A subset of what
// net/url accepts, so the two never disagree on where the host ends.
func validAuthority(a []byte) bool {
	k := 0
	for k < len(a) && class[a[k]]&cRegName != 0 {
		k++
	}
	if k == 0 {
		return false
	}
	if k == len(a) {
		return true
	}
	if a[k] != ':' {
		return false
	}
	for _, c := range a[k+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// equalFold reports whether b equals lower, which must be lower-case ASCII,
// ignoring ASCII case in b. It is bytes.EqualFold without the Unicode path
// and without converting lower to []byte.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		if toLower(b[i]) != lower[i] {
			return false
		}
	}
	return true
}

// equalFoldString is equalFold with case folding on both sides.
func equalFoldString(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if toLower(b[i]) != toLower(s[i]) {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, lower string) bool {
	return len(b) >= len(lower) && equalFold(b[:len(lower)], lower)
}

func toLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// unhex returns the value of hex digit c, or 255 if c is not one, so that
// unhex(a)|unhex(b) > 15 tests two digits with one branch.
func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}

// Character classes. One 256-entry table answers every class with a load
// and a mask: the per-byte loops above have no range comparisons, the same
// idea as textproto's validHeaderFieldByte bitmask.
const (
	cToken   = 1 << iota // tchar (RFC 9110 section 5.6.2): methods, field names
	cValue               // field-value byte: VCHAR, SP, HTAB, obs-text
	cTarget              // request-target byte: anything but CTLs, SP and DEL
	cHost                // Host value byte, as httpguts.ValidHostHeader (net/http's server)
	cRegName             // absolute-form host byte: ALPHA DIGIT - . _ ~
)

var class = func() (t [256]uint8) {
	for c := range 256 {
		b := byte(c)
		alnum := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		if alnum || bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), b) >= 0 {
			t[c] |= cToken
		}
		if b == '\t' || b >= 0x20 && b != 0x7f {
			t[c] |= cValue
		}
		if b > 0x20 && b != 0x7f {
			t[c] |= cTarget
		}
		if alnum || bytes.IndexByte([]byte("!$%&'()*+,-.:;=[]_~"), b) >= 0 {
			t[c] |= cHost
		}
		if alnum || bytes.IndexByte([]byte("-._~"), b) >= 0 {
			t[c] |= cRegName
		}
	}
	return t
}()
