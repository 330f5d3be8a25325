package httpparse

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

// checkAllocs is set by alloc_test.go, which the race detector excludes:
// its instrumentation allocates.
var checkAllocs bool

// want is the expected result of a successful Parse. n is the head length;
// 0 means the whole input.
type want struct {
	n              int
	method, uri    string
	path, query    string
	queryNil       bool
	minor          int
	headers        int
	contentLength  int64
	chunked        bool
	keepAlive      bool
	expectContinue bool
	host           string
	hostNil        bool
}

var goodRequests = []struct {
	name string
	in   string
	want want
}{
	{
		name: "get_query",
		in:   "GET /events?key=a&key=b%20c HTTP/1.1\r\nHost: example.com\r\nAccept: text/event-stream\r\nLast-Event-ID: 42\r\n\r\n",
		want: want{method: "GET", uri: "/events?key=a&key=b%20c", path: "/events", query: "key=a&key=b%20c",
			minor: 1, headers: 3, contentLength: -1, keepAlive: true, host: "example.com"},
	},
	{
		name: "post_content_length",
		in:   "POST /trigger/k1?event=up HTTP/1.1\r\nHost: h:8080\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		want: want{n: 97, method: "POST", uri: "/trigger/k1?event=up", path: "/trigger/k1", query: "event=up",
			minor: 1, headers: 3, contentLength: 5, keepAlive: true, host: "h:8080"},
	},
	{
		name: "post_chunked",
		in:   "POST /trigger HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		want: want{n: 63, method: "POST", uri: "/trigger", path: "/trigger", queryNil: true,
			minor: 1, headers: 2, contentLength: -1, chunked: true, keepAlive: true, host: "h"},
	},
	{
		name: "http10_keep_alive",
		in:   "GET /events/k HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
		want: want{method: "GET", uri: "/events/k", path: "/events/k", queryNil: true,
			minor: 0, headers: 1, contentLength: -1, keepAlive: true, hostNil: true},
	},
	{
		name: "http10_default_close",
		in:   "GET / HTTP/1.0\r\n\r\n",
		want: want{method: "GET", uri: "/", path: "/", queryNil: true, contentLength: -1, hostNil: true},
	},
	{
		name: "http10_keep_alive_and_close",
		in:   "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
		want: want{method: "GET", uri: "/", path: "/", queryNil: true, headers: 2, contentLength: -1, hostNil: true},
	},
	{
		// Found by FuzzParse while testing its oracle with a deliberate
		// prefix-matching bug: "close0" is
		// not "close".
		name: "http10_connection_token_is_whole",
		in:   "GET / HTTP/1.0\nConnection: keep-Alive\nConnection: Close0\n\n",
		want: want{method: "GET", uri: "/", path: "/", queryNil: true, headers: 2, contentLength: -1,
			keepAlive: true, hostNil: true},
	},
	{
		name: "http11_connection_close_in_list",
		in:   "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive ,\tCLOSE , upgrade\r\n\r\n",
		want: want{method: "GET", uri: "/", path: "/", queryNil: true, minor: 1, headers: 2, contentLength: -1, host: "h"},
	},
	{
		name: "expect_continue",
		in:   "POST /trigger/k HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
		want: want{method: "POST", uri: "/trigger/k", path: "/trigger/k", queryNil: true, minor: 1, headers: 3,
			contentLength: 3, keepAlive: true, expectContinue: true, host: "h"},
	},
	{
		name: "expect_continue_ignored_in_http10",
		in:   "POST /trigger/k HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
		want: want{method: "POST", uri: "/trigger/k", path: "/trigger/k", queryNil: true, headers: 2,
			contentLength: 3, hostNil: true},
	},
	{
		name: "absolute_form",
		in:   "GET http://Example.com:8080/events?key=a HTTP/1.1\r\nHost: ignored.example\r\n\r\n",
		want: want{method: "GET", uri: "http://Example.com:8080/events?key=a", path: "/events", query: "key=a",
			minor: 1, headers: 1, contentLength: -1, keepAlive: true, host: "Example.com:8080"},
	},
	{
		name: "absolute_form_empty_path",
		in:   "GET HTTPS://example.com?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
		want: want{method: "GET", uri: "HTTPS://example.com?x=1", path: "/", query: "x=1",
			minor: 1, headers: 1, contentLength: -1, keepAlive: true, host: "example.com"},
	},
	{
		name: "lf_only",
		in:   "GET /a HTTP/1.1\nHost: h\nX-A: b\n\n",
		want: want{method: "GET", uri: "/a", path: "/a", queryNil: true, minor: 1, headers: 2,
			contentLength: -1, keepAlive: true, host: "h"},
	},
	{
		name: "mixed_line_endings",
		in:   "GET /a HTTP/1.1\r\nHost: h\nX-A: b\r\n\n",
		want: want{method: "GET", uri: "/a", path: "/a", queryNil: true, minor: 1, headers: 2,
			contentLength: -1, keepAlive: true, host: "h"},
	},
	{
		name: "leading_empty_lines_skipped",
		in:   "\r\n\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		want: want{method: "GET", uri: "/", path: "/", queryNil: true, minor: 1, headers: 1,
			contentLength: -1, keepAlive: true, host: "h"},
	},
	{
		name: "options_star",
		in:   "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		want: want{method: "OPTIONS", uri: "*", path: "*", queryNil: true, minor: 1, headers: 1,
			contentLength: -1, keepAlive: true, host: "h"},
	},
	{
		name: "ows_trimmed_and_empty_values",
		in:   "GET / HTTP/1.1\r\nHost:\t h \t\r\nX-Empty:\r\nX-Spaces:   \r\n\r\n",
		want: want{method: "GET", uri: "/", path: "/", queryNil: true, minor: 1, headers: 3,
			contentLength: -1, keepAlive: true, host: "h"},
	},
	{
		name: "empty_host_http11",
		in:   "GET / HTTP/1.1\r\nHost:\r\n\r\n",
		want: want{method: "GET", uri: "/", path: "/", queryNil: true, minor: 1, headers: 1,
			contentLength: -1, keepAlive: true, host: ""},
	},
	{
		name: "obs_text_value_and_empty_query",
		in:   "GET /a%2Fb? HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\n\r\n",
		want: want{method: "GET", uri: "/a%2Fb?", path: "/a%2Fb", query: "", minor: 1, headers: 2,
			contentLength: -1, keepAlive: true, host: "h"},
	},
	{
		name: "query_bad_escape_left_for_later",
		in:   "GET /a?x=%zz HTTP/1.1\r\nHost: h\r\n\r\n",
		want: want{method: "GET", uri: "/a?x=%zz", path: "/a", query: "x=%zz", minor: 1, headers: 1,
			contentLength: -1, keepAlive: true, host: "h"},
	},
	{
		name: "content_length_leading_zeros",
		in:   "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n",
		want: want{method: "POST", uri: "/", path: "/", queryNil: true, minor: 1, headers: 2,
			contentLength: 7, keepAlive: true, host: "h"},
	},
	{
		name: "content_length_max_int64",
		in:   "POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 9223372036854775807\r\n\r\n",
		want: want{method: "POST", uri: "/", path: "/", queryNil: true, minor: 1, headers: 2,
			contentLength: 1<<63 - 1, keepAlive: true, host: "h"},
	},
	{
		name: "trailer_field_not_inspected",
		in:   "POST / HTTP/1.1\r\nHost: h\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n",
		want: want{method: "POST", uri: "/", path: "/", queryNil: true, minor: 1, headers: 3,
			contentLength: -1, chunked: true, keepAlive: true, host: "h"},
	},
	{
		name: "absolute_form_empty_port",
		in:   "GET http://h:/a HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
		want: want{method: "GET", uri: "http://h:/a", path: "/a", queryNil: true, minor: 1, headers: 2,
			contentLength: -1, keepAlive: true, host: "h:"},
	},
	{
		name: "extension_method",
		in:   "M-SEARCH /x HTTP/1.1\r\nHost: h\r\n\r\n",
		want: want{method: "M-SEARCH", uri: "/x", path: "/x", queryNil: true, minor: 1, headers: 1,
			contentLength: -1, keepAlive: true, host: "h"},
	},
}

const okHead = "GET / HTTP/1.1\r\nHost: h\r\n"

var badRequests = []struct {
	name string
	in   string
	err  error
}{
	// Request smuggling: the framing must be unambiguous.
	{"smuggle_two_contentlen", okHead + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", ErrBadContentLength},
	{"smuggle_two_contentlen_differ", okHead + "Content-Length: 5\r\ncontent-length: 6\r\n\r\n", ErrBadContentLength},
	{"smuggle_contentlen_list", okHead + "Content-Length: 5, 5\r\n\r\n", ErrBadContentLength},
	{"smuggle_contentlen_and_chunked", okHead + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ErrContentLengthWithTE},
	{"smuggle_chunked_and_contentlen", okHead + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", ErrContentLengthWithTE},
	{"smuggle_two_te", okHead + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ErrUnsupportedTE},
	{"smuggle_te_list", okHead + "Transfer-Encoding: gzip, chunked\r\n\r\n", ErrUnsupportedTE},
	{"smuggle_te_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ErrUnsupportedTE},
	{"smuggle_te_http10_with_contentlen", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", ErrContentLengthWithTE},
	{"smuggle_obs_fold_contentlen", okHead + "Content-Length: 3\r\n 4\r\n\r\n", ErrMalformed},
	{"smuggle_obs_fold_empty_contentlen", okHead + "Content-Length:\r\n 0\r\n\r\n", ErrBadContentLength},
	{"smuggle_obs_fold", okHead + "X-A: a\r\n b\r\n\r\n", ErrMalformed},
	{"smuggle_obs_fold_tab", okHead + "X-A: a\r\n\tb\r\n\r\n", ErrMalformed},
	{"smuggle_space_before_colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", ErrMalformed},
	{"smuggle_bare_cr_line_end", okHead + "X-A: a\rX-B: b\r\n\r\n", ErrMalformed},
	{"smuggle_bare_cr_request_line", "GET / HTTP/1.1\rHost: h\r\n\r\n", ErrMalformed},
	{"smuggle_bare_cr_end_of_head", okHead + "\r\r\n", ErrMalformed},

	{"contentlen_plus", okHead + "Content-Length: +5\r\n\r\n", ErrBadContentLength},
	{"contentlen_negative", okHead + "Content-Length: -1\r\n\r\n", ErrBadContentLength},
	{"contentlen_empty", okHead + "Content-Length: \r\n\r\n", ErrBadContentLength},
	{"contentlen_hex", okHead + "Content-Length: 0x5\r\n\r\n", ErrBadContentLength},
	{"contentlen_inner_space", okHead + "Content-Length: 1 2\r\n\r\n", ErrBadContentLength},
	{"contentlen_overflow", okHead + "Content-Length: 9223372036854775808\r\n\r\n", ErrBadContentLength},
	{"te_gzip", okHead + "Transfer-Encoding: gzip\r\n\r\n", ErrUnsupportedTE},
	{"te_identity", okHead + "Transfer-Encoding: identity\r\n\r\n", ErrUnsupportedTE},
	{"te_empty", okHead + "Transfer-Encoding:\r\n\r\n", ErrUnsupportedTE},

	{"version_http2", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", ErrVersion},
	{"version_http12", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", ErrVersion},
	{"version_http09", "GET / HTTP/0.9\r\n\r\n", ErrVersion},
	{"version_no_minor", "GET / HTTP/1\r\n\r\n", ErrVersion},
	{"version_h2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ErrVersion},
	{"version_lower_case", "GET / http/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"version_trailing_junk", "GET / HTTP/1.1x\r\nHost: h\r\n\r\n", ErrMalformed},
	{"version_missing", "GET /\r\nHost: h\r\n\r\n", ErrMalformed},
	{"request_line_trailing_space", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", ErrMalformed},
	{"request_line_two_spaces", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"request_line_tab", "GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"method_empty", " / HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"method_not_token", "GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"leading_bare_cr", "\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},

	{"target_ctl", "GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_del", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_nul", "GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_relative", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_star_not_options", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_connect_authority", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", ErrMalformed},
	{"target_ftp_scheme", "GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_userinfo", "GET http://u:p@h/x HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_empty_host", "GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_ip_literal", "GET http://[::1]/x HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_bad_port", "GET http://h:x/ HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_no_authority", "GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_host_sub_delims", "GET http://a!b/x HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_bad_escape", "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_short_escape", "GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},
	{"target_trailing_percent", "GET /a%?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", ErrMalformed},

	{"host_missing_http11", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", ErrMalformed},
	{"host_twice", okHead + "host: h\r\n\r\n", ErrMalformed},
	{"host_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ErrMalformed},
	{"host_slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", ErrMalformed},
	{"field_leading_space", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", ErrMalformed},
	{"field_missing_colon", okHead + "X-A b\r\n\r\n", ErrMalformed},
	{"field_empty_name", okHead + ": b\r\n\r\n", ErrMalformed},
	{"field_name_inner_space", okHead + "X A: b\r\n\r\n", ErrMalformed},
	{"field_name_not_token", okHead + "X(A): b\r\n\r\n", ErrMalformed},
	{"field_name_high_byte", okHead + "X-\xc3\xa9: b\r\n\r\n", ErrMalformed},
	{"field_value_nul", okHead + "X-A: a\x00b\r\n\r\n", ErrMalformed},
	{"field_value_ctl", okHead + "X-A: a\x1bb\r\n\r\n", ErrMalformed},
	{"field_value_del", okHead + "X-A: a\x7fb\r\n\r\n", ErrMalformed},
}

// parse runs Parse with the given limits and fails the test on an error.
func parse(t *testing.T, in string, lim *Limits) (*Request, int) {
	t.Helper()
	var r Request
	n, err := r.Parse([]byte(in), lim)
	if err != nil {
		t.Fatalf("Parse(%q) error: %v", in, err)
	}
	return &r, n
}

func checkRequest(t *testing.T, r *Request, n int, in string, w want) {
	t.Helper()
	if w.n == 0 {
		w.n = len(in)
	}
	if n != w.n {
		t.Errorf("n = %d, want %d", n, w.n)
	}
	str := func(field string, got []byte, want string) {
		if string(got) != want {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}
	str("Method", r.Method, w.method)
	str("URI", r.URI, w.uri)
	str("Path", r.Path, w.path)
	str("Query", r.Query, w.query)
	if (r.Query == nil) != w.queryNil {
		t.Errorf("Query == nil is %v, want %v", r.Query == nil, w.queryNil)
	}
	str("Host", r.Host, w.host)
	if (r.Host == nil) != w.hostNil {
		t.Errorf("Host == nil is %v, want %v", r.Host == nil, w.hostNil)
	}
	if r.ProtoMinor != w.minor {
		t.Errorf("ProtoMinor = %d, want %d", r.ProtoMinor, w.minor)
	}
	if len(r.Headers) != w.headers {
		t.Errorf("len(Headers) = %d, want %d", len(r.Headers), w.headers)
	}
	if r.ContentLength != w.contentLength {
		t.Errorf("ContentLength = %d, want %d", r.ContentLength, w.contentLength)
	}
	if r.Chunked != w.chunked {
		t.Errorf("Chunked = %v, want %v", r.Chunked, w.chunked)
	}
	if r.KeepAlive != w.keepAlive {
		t.Errorf("KeepAlive = %v, want %v", r.KeepAlive, w.keepAlive)
	}
	if r.ExpectContinue != w.expectContinue {
		t.Errorf("ExpectContinue = %v, want %v", r.ExpectContinue, w.expectContinue)
	}
}

// dump renders every field of r, to compare two results.
func dump(r *Request) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%q %q %q %q(nil=%v) 1.%d cl=%d chunked=%v ka=%v expect=%v host=%q(nil=%v)",
		r.Method, r.URI, r.Path, r.Query, r.Query == nil, r.ProtoMinor, r.ContentLength,
		r.Chunked, r.KeepAlive, r.ExpectContinue, r.Host, r.Host == nil)
	for _, h := range r.Headers {
		fmt.Fprintf(&sb, " [%q: %q]", h.Name, h.Value)
	}
	return sb.String()
}

func TestParseGood(t *testing.T) {
	for _, tt := range goodRequests {
		t.Run(tt.name, func(t *testing.T) {
			r, n := parse(t, tt.in, nil)
			checkRequest(t, r, n, tt.in, tt.want)
		})
	}
}

func TestParseBad(t *testing.T) {
	for _, tt := range badRequests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			n, err := r.Parse([]byte(tt.in), nil)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse(%q) = %d, %v; want %v", tt.in, n, err, tt.err)
			}
			if n != 0 {
				t.Errorf("n = %d on error, want 0", n)
			}
		})
	}
}

// TestParseIncremental feeds every good request one byte at a time, the
// way a slow client (or a slowloris) delivers it.
func TestParseIncremental(t *testing.T) {
	for _, tt := range goodRequests {
		t.Run(tt.name, func(t *testing.T) {
			full, n := parse(t, tt.in, nil)
			in := []byte(tt.in)
			var r Request
			for k := range n {
				if _, err := r.Parse(in[:k], nil); !errors.Is(err, ErrNeedMore) {
					t.Fatalf("Parse(%q) = %v, want ErrNeedMore", in[:k], err)
				}
			}
			m, err := r.Parse(in[:n], nil)
			if err != nil || m != n {
				t.Fatalf("Parse(complete head) = %d, %v; want %d, nil", m, err, n)
			}
			if got, want := dump(&r), dump(full); got != want {
				t.Errorf("incremental result\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestParseAfterError shows that a Request reused after any error parses
// the next request exactly as a fresh one does.
func TestParseAfterError(t *testing.T) {
	good := goodRequests[0].in
	fresh, _ := parse(t, good, nil)
	for _, tt := range badRequests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			if _, err := r.Parse([]byte(tt.in), nil); err == nil {
				t.Fatal("bad request parsed")
			}
			if _, err := r.Parse([]byte(good), nil); err != nil {
				t.Fatalf("good request after error: %v", err)
			}
			if got, want := dump(&r), dump(fresh); got != want {
				t.Errorf("after error\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestParsePipelined(t *testing.T) {
	in := []byte("POST /trigger/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" +
		"GET /events?key=a HTTP/1.1\r\nHost: h\r\n\r\n" +
		"GET /healthz HTTP/1.1\r\nHo")
	var r Request
	n, err := r.Parse(in, nil)
	if err != nil || string(r.Path) != "/trigger/a" || r.ContentLength != 3 {
		t.Fatalf("first: %d, %v, %s", n, err, dump(&r))
	}
	if body := in[n : n+3]; string(body) != "abc" {
		t.Fatalf("body = %q", body)
	}
	in = in[n+3:]
	n, err = r.Parse(in, nil)
	if err != nil || string(r.Path) != "/events" || string(r.Query) != "key=a" {
		t.Fatalf("second: %d, %v, %s", n, err, dump(&r))
	}
	in = in[n:]
	if _, err = r.Parse(in, nil); !errors.Is(err, ErrNeedMore) {
		t.Fatalf("third: %v, want ErrNeedMore", err)
	}
}

func TestParseLimits(t *testing.T) {
	head := "GET /events HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\n\r\n" // 51 bytes
	tests := []struct {
		name string
		in   string
		lim  Limits
		err  error // nil: must parse
	}{
		{"head_at_limit", head, Limits{MaxHeadBytes: len(head)}, nil},
		{"head_over_limit", head, Limits{MaxHeadBytes: len(head) - 1}, ErrHeadTooLarge},
		{"head_incomplete_at_limit", head[:30], Limits{MaxHeadBytes: 30}, ErrHeadTooLarge},
		{"head_incomplete_under_limit", head[:29], Limits{MaxHeadBytes: 30}, ErrNeedMore},
		{"head_cut_in_final_crlf", head[:len(head)-1], Limits{MaxHeadBytes: len(head) - 1}, ErrHeadTooLarge},
		{"head_limit_ignores_body", head + strings.Repeat("x", 100), Limits{MaxHeadBytes: len(head)}, nil},
		{"leading_empty_lines_count", "\r\n" + head, Limits{MaxHeadBytes: len(head) + 1}, ErrHeadTooLarge},
		{"headers_at_limit", head, Limits{MaxHeaders: 3}, nil},
		{"headers_over_limit", head, Limits{MaxHeaders: 2}, ErrTooManyHeaders},
		{"uri_at_limit", head, Limits{MaxURIBytes: len("/events")}, nil},
		{"uri_over_limit", head, Limits{MaxURIBytes: len("/events") - 1}, ErrURITooLong},
		// 414 before the request-line (let alone the head) is complete.
		{"uri_over_limit_early", "GET /0123456789", Limits{MaxURIBytes: 10}, ErrURITooLong},
		{"uri_at_limit_incomplete", "GET /012345678", Limits{MaxURIBytes: 10}, ErrNeedMore},
		// The request-target is reported before the head limit it also breaks.
		{"uri_before_head_limit", "GET /" + strings.Repeat("a", 200), Limits{MaxHeadBytes: 100, MaxURIBytes: 50}, ErrURITooLong},
		{"default_head_limit", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", DefaultMaxHeadBytes), Limits{}, ErrHeadTooLarge},
		{"default_uri_limit", "GET /" + strings.Repeat("a", DefaultMaxURIBytes), Limits{}, ErrURITooLong},
		{"negative_means_default", head, Limits{MaxHeadBytes: -1, MaxHeaders: -1, MaxURIBytes: -1}, nil},
		{"max_int_limits", head, Limits{MaxHeadBytes: math.MaxInt, MaxHeaders: math.MaxInt, MaxURIBytes: math.MaxInt}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			_, err := r.Parse([]byte(tt.in), &tt.lim)
			if tt.err == nil && err != nil || !errors.Is(err, tt.err) {
				t.Fatalf("Parse = %v, want %v", err, tt.err)
			}
		})
	}

	t.Run("default_max_headers", func(t *testing.T) {
		in := okHead + strings.Repeat("X: y\r\n", DefaultMaxHeaders-1) + "\r\n"
		if _, err := new(Request).Parse([]byte(in), nil); err != nil {
			t.Fatalf("%d headers: %v", DefaultMaxHeaders, err)
		}
		in = okHead + strings.Repeat("X: y\r\n", DefaultMaxHeaders) + "\r\n"
		if _, err := new(Request).Parse([]byte(in), nil); !errors.Is(err, ErrTooManyHeaders) {
			t.Fatalf("%d headers: %v, want ErrTooManyHeaders", DefaultMaxHeaders+1, err)
		}
	})
}

func TestHeader(t *testing.T) {
	r, _ := parse(t, "GET / HTTP/1.1\r\nHost: h\r\nX-Dup: 1\r\nx-dup: 2\r\nLast-Event-ID:  7 \r\nX-Empty:\r\n\r\n", nil)
	tests := []struct {
		name, key string
		want      string
		wantNil   bool
	}{
		{"exact", "Host", "h", false},
		{"folded", "LAST-event-id", "7", false},
		{"first_of_duplicates", "X-DUP", "1", false},
		{"empty_value_not_nil", "x-empty", "", false},
		{"missing", "Cookie", "", true},
		{"prefix_is_not_a_match", "X-Du", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Header(tt.key)
			if string(got) != tt.want || (got == nil) != tt.wantNil {
				t.Errorf("Header(%q) = %q (nil=%v), want %q (nil=%v)", tt.key, got, got == nil, tt.want, tt.wantNil)
			}
		})
	}
}

// TestParseAliasesBuffer checks the package's one rule: results point into
// the caller's buffer, so they change when it does.
func TestParseAliasesBuffer(t *testing.T) {
	in := []byte("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
	var r Request
	if _, err := r.Parse(in, nil); err != nil {
		t.Fatal(err)
	}
	copy(in[bytes.IndexByte(in, 'a'):], "z")
	if string(r.Path) != "/z" {
		t.Errorf("Path = %q after changing the buffer, want it to alias: /z", r.Path)
	}
}

func TestResetKeepsHeaders(t *testing.T) {
	r, _ := parse(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", nil)
	capBefore := cap(r.Headers)
	r.Reset()
	if len(r.Headers) != 0 || cap(r.Headers) != capBefore || r.ContentLength != -1 || r.Method != nil {
		t.Errorf("after Reset: len %d cap %d (want 0, %d), %s", len(r.Headers), cap(r.Headers), capBefore, dump(r))
	}
}

// TestValidValue checks the eight-bytes-at-a-time check against the table,
// for every byte value at every position of a word and of the tail.
func TestValidValue(t *testing.T) {
	for c := range 256 {
		want := class[c]&cValue != 0
		for pos := range 19 {
			for _, fill := range []byte{'a', 0x80, 0xff, ' ', '\t'} {
				v := bytes.Repeat([]byte{fill}, 19)
				v[pos] = byte(c)
				if got := validValue(v); got != want {
					t.Fatalf("validValue(%q) = %v, want %v", v, got, want)
				}
			}
		}
	}
}
