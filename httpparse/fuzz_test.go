package httpparse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// fuzzMaxInput caps fuzz inputs: past that the fuzzer only explores the
// limits, which TestParseLimits covers.
const fuzzMaxInput = 64 << 10

// maxSeed leaves long table cases out of the seed corpus: the fuzzer spends
// minutes minimizing every interesting mutation of a 4 KiB seed, time better
// spent fuzzing. The tables themselves still run them.
const maxSeed = 1 << 10

// fuzzLimits are high enough that only syntax decides, as in net/http.
var fuzzLimits = Limits{MaxHeadBytes: 1 << 20, MaxHeaders: 1 << 20, MaxURIBytes: 1 << 20}

// stricterThanNetHTTP lists the heads net/http.ReadRequest accepts and Parse
// rejects on purpose (see the package doc), each with the error Parse must
// return. A rejection that matches none of them is a bug.
var stricterThanNetHTTP = []struct {
	name    string
	err     error
	applies func(req *http.Request, lines []string) bool
}{
	{"version_not_1.0_or_1.1", ErrVersion, func(req *http.Request, _ []string) bool {
		return req.ProtoMajor != 1 || req.ProtoMinor > 1
	}},
	{"target_not_origin_absolute_http_or_options_star", ErrMalformed, func(req *http.Request, _ []string) bool {
		u := req.RequestURI
		return !strings.HasPrefix(u, "/") && !(u == "*" && req.Method == "OPTIONS") && !strictAbsolute.MatchString(u)
	}},
	// net/http's server rejects the next three after ReadRequest returns
	// (ReadRequest drops Host from req.Header, hence the raw lines).
	{"missing_host_in_http11", ErrMalformed, func(req *http.Request, lines []string) bool {
		return req.ProtoAtLeast(1, 1) && countFields(lines, "Host") == 0
	}},
	{"invalid_host_value", ErrMalformed, func(_ *http.Request, lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool {
			k, v, _ := strings.Cut(l, ":")
			return strings.EqualFold(k, "Host") && !validHostHeader(strings.Trim(v, " \t"))
		})
	}},
	{"space_in_field_name", ErrMalformed, func(req *http.Request, _ []string) bool {
		for k := range req.Header {
			if strings.ContainsRune(k, ' ') {
				return true
			}
		}
		return false
	}},
	{"obs_fold", ErrMalformed, func(_ *http.Request, lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return l[0] == ' ' || l[0] == '\t' })
	}},
	// Parse checks Content-Length when its line ends, before it sees the
	// fold that net/http would join to it ("Content-Length:\n 0").
	{"obs_fold_after_content_length", ErrBadContentLength, func(_ *http.Request, lines []string) bool {
		for i := 1; i < len(lines); i++ {
			if (lines[i][0] == ' ' || lines[i][0] == '\t') && countFields(lines[i-1:i], "Content-Length") > 0 {
				return true
			}
		}
		return false
	}},
	{"duplicate_content_length", ErrBadContentLength, func(_ *http.Request, lines []string) bool {
		return countFields(lines, "Content-Length") > 1
	}},
	{"content_length_with_transfer_encoding", ErrContentLengthWithTE, func(_ *http.Request, lines []string) bool {
		return countFields(lines, "Content-Length") > 0 && countFields(lines, "Transfer-Encoding") > 0
	}},
	{"transfer_encoding_in_http10", ErrUnsupportedTE, func(req *http.Request, lines []string) bool {
		return !req.ProtoAtLeast(1, 1) && countFields(lines, "Transfer-Encoding") > 0
	}},
}

// laxerThanNetHTTP lists what Parse accepts and net/http.ReadRequest rejects
// on purpose (leading empty lines are handled by stripping them first).
var laxerThanNetHTTP = []struct {
	name    string
	applies func(r *Request) bool
}{
	// DecodeChunked discards trailer fields, so a Trailer field that names
	// framing fields cannot change how the body is read.
	{"trailer_names_framing_field", func(r *Request) bool {
		for _, h := range r.Headers {
			if equalFoldString(h.Name, "Trailer") {
				v := strings.ToLower(string(h.Value))
				if strings.Contains(v, "content-length") || strings.Contains(v, "transfer-encoding") || strings.Contains(v, "trailer") {
					return true
				}
			}
		}
		return false
	}},
}

var strictAbsolute = regexp.MustCompile(`^(?i:https?)://[A-Za-z0-9._~-]+(:[0-9]*)?([/?]|$)`)

// validHostHeader is httpguts.ValidHostHeader, which net/http's server
// applies to Host after ReadRequest (it is vendored, so not importable).
func validHostHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// headLines returns the lines of a head net/http accepted, after the
// request-line and before the blank line. It shares no code with Parse.
func headLines(in []byte) []string {
	var lines []string
	s := string(in)
	for first := true; ; first = false {
		line, rest, ok := strings.Cut(s, "\n")
		if !ok {
			return lines
		}
		s = rest
		line = strings.TrimSuffix(line, "\r")
		if first {
			continue
		}
		if line == "" {
			return lines
		}
		lines = append(lines, line)
	}
}

func countFields(lines []string, name string) int {
	n := 0
	for _, l := range lines {
		if k, _, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			n++
		}
	}
	return n
}

// skipEmptyLines returns how many bytes of leading CRLF or LF Parse skips.
func skipEmptyLines(in []byte) int {
	n := 0
	for {
		switch {
		case bytes.HasPrefix(in[n:], []byte("\r\n")):
			n += 2
		case bytes.HasPrefix(in[n:], []byte("\n")):
			n++
		default:
			return n
		}
	}
}

func FuzzParse(f *testing.F) {
	var seeds []string
	for _, tt := range goodRequests {
		seeds = append(seeds, tt.in)
	}
	for _, tt := range badRequests {
		seeds = append(seeds, tt.in)
	}
	for _, tt := range benchRequests {
		seeds = append(seeds, tt.in)
	}
	for _, s := range seeds {
		if len(s) <= maxSeed {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > fuzzMaxInput {
			return
		}
		var r Request
		n, err := r.Parse(in, &fuzzLimits)
		if err == nil {
			if n <= 0 || n > len(in) {
				t.Fatalf("n = %d for %d bytes", n, len(in))
			}
			// Every prefix of an accepted head is incomplete, never an error.
			for _, k := range []int{0, n / 2, n - 1} {
				if _, err := new(Request).Parse(in[:k], &fuzzLimits); !errors.Is(err, ErrNeedMore) {
					t.Fatalf("prefix %d of accepted head %q: %v, want ErrNeedMore", k, in[:n], err)
				}
			}
			if checkAllocs {
				if a := testing.AllocsPerRun(1, func() { _, _ = r.Parse(in, &fuzzLimits) }); a != 0 {
					t.Fatalf("Parse(%q) allocates %v times", in, a)
				}
			}
		}

		skip := skipEmptyLines(in)
		rd := bytes.NewReader(in[skip:])
		br := bufio.NewReader(rd)
		req, herr := http.ReadRequest(br)

		switch {
		case err == nil && herr == nil:
			consumed := len(in) - rd.Len() - br.Buffered()
			compareWithNetHTTP(t, in, &r, n, req, consumed)
		case err == nil:
			for _, d := range laxerThanNetHTTP {
				if d.applies(&r) {
					return
				}
			}
			t.Fatalf("Parse accepts what net/http rejects (%v): %q\n%s", herr, in, dump(&r))
		case herr == nil:
			if errors.Is(err, ErrNeedMore) {
				t.Fatalf("Parse needs more but net/http accepts: %q", in)
			}
			lines := headLines(in[skip:])
			for _, d := range stricterThanNetHTTP {
				if d.applies(req, lines) && errors.Is(err, d.err) {
					return
				}
			}
			t.Fatalf("Parse rejects (%v) what net/http accepts: %q", err, in)
		}
	})
}

func compareWithNetHTTP(t *testing.T, in []byte, r *Request, n int, req *http.Request, consumed int) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("input %q:\n%s\n"+format, append([]any{in, dump(r)}, args...)...)
	}
	if n != consumed {
		fail("n = %d, net/http read %d", n, consumed)
	}
	if string(r.Method) != req.Method || string(r.URI) != req.RequestURI {
		fail("method/URI differ: net/http %q %q", req.Method, req.RequestURI)
	}
	if req.ProtoMajor != 1 || r.ProtoMinor != req.ProtoMinor {
		fail("version differs: net/http %d.%d", req.ProtoMajor, req.ProtoMinor)
	}
	if string(r.Host) != req.Host {
		fail("Host differs: net/http %q", req.Host)
	}
	path, err := AppendUnescape(nil, r.Path, false)
	if err != nil {
		fail("Path %q does not unescape: %v", r.Path, err)
	}
	if wantPath := req.URL.Path; string(path) != wantPath && !(wantPath == "" && string(path) == "/") {
		fail("Path differs: net/http %q", wantPath)
	}
	if string(r.Query) != req.URL.RawQuery {
		fail("Query differs: net/http %q", req.URL.RawQuery)
	}
	switch {
	case r.Chunked:
		if req.ContentLength != -1 || !slices.Equal(req.TransferEncoding, []string{"chunked"}) {
			fail("chunked: net/http ContentLength %d, TransferEncoding %q", req.ContentLength, req.TransferEncoding)
		}
	case r.ContentLength == -1:
		if req.ContentLength != 0 || req.TransferEncoding != nil {
			fail("no body: net/http ContentLength %d, TransferEncoding %q", req.ContentLength, req.TransferEncoding)
		}
	case r.ContentLength != req.ContentLength:
		fail("ContentLength: net/http %d", req.ContentLength)
	}
	if r.KeepAlive == req.Close {
		fail("KeepAlive = %v, net/http Close = %v", r.KeepAlive, req.Close)
	}
	expect := false
	for _, v := range req.Header["Expect"] {
		expect = expect || strings.EqualFold(v, "100-continue")
	}
	if r.ExpectContinue != (expect && req.ProtoMinor == 1) {
		fail("ExpectContinue = %v, net/http Expect %q", r.ExpectContinue, req.Header["Expect"])
	}

	// Field values, in order, except those net/http consumes or adds:
	// Host (compared above), framing fields, and the Cache-Control it
	// derives from Pragma.
	skip := func(k string) bool {
		return k == "Host" || k == "Content-Length" || k == "Transfer-Encoding" || k == "Trailer" ||
			k == "Cache-Control" && r.Header("Cache-Control") == nil
	}
	ours := map[string][]string{}
	for _, h := range r.Headers {
		k := textproto.CanonicalMIMEHeaderKey(string(h.Name))
		if !skip(k) {
			ours[k] = append(ours[k], string(h.Value))
		}
	}
	theirs := map[string][]string{}
	for k, v := range req.Header {
		if !skip(k) {
			theirs[k] = v
		}
	}
	if len(ours) != len(theirs) {
		fail("%d field names, net/http %d: %q", len(ours), len(theirs), theirs)
	}
	for k, v := range ours {
		if !slices.Equal(v, theirs[k]) {
			fail("field %q = %q, net/http %q", k, v, theirs[k])
		}
		if got := r.Header(k); string(got) != v[0] {
			fail("Header(%q) = %q, want %q", k, got, v[0])
		}
	}
}

func FuzzDecodeChunked(f *testing.F) {
	for _, tt := range goodChunked {
		f.Add([]byte(tt.in), uint16(len(tt.want)))
	}
	for _, tt := range badChunked {
		if len(tt.in) <= maxSeed {
			f.Add([]byte(tt.in), uint16(100))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, limit uint16) {
		if len(in) > fuzzMaxInput {
			return
		}
		out, n, err := DecodeChunked(nil, in, -1)

		// Reference: net/http's chunked reader stops after the last-chunk
		// line; its body.readTrailer then reads the trailer section with
		// textproto.
		rd := bytes.NewReader(in)
		br := bufio.NewReader(rd)
		data, chunkErr := io.ReadAll(httputil.NewChunkedReader(br))
		afterChunks := len(in) - rd.Len() - br.Buffered()
		herr := chunkErr
		if herr == nil {
			_, herr = textproto.NewReader(br).ReadMIMEHeader()
		}
		consumed := len(in) - rd.Len() - br.Buffered()

		switch {
		case err == nil && herr == nil:
			if !bytes.Equal(out, data) || n != consumed {
				t.Fatalf("%q: got %q, %d; net/http %q, %d", in, out, n, data, consumed)
			}
		case err == nil:
			// net/http limits chunk overhead per body; we leave the
			// caller to bound the buffer.
			if !strings.Contains(herr.Error(), "too much non-data") {
				t.Fatalf("%q: we accept %q, net/http rejects: %v", in, out, herr)
			}
		case errors.Is(err, ErrNeedMore):
			if herr == nil {
				t.Fatalf("%q: we need more, net/http accepts", in)
			}
			// The chunked reader may only run out of input too: an error
			// it found in the bytes we have is one we missed. (Not so for
			// textproto, which takes EOF for the end of a trailer line.)
			if chunkErr != nil && !errors.Is(chunkErr, io.ErrUnexpectedEOF) &&
				!strings.Contains(chunkErr.Error(), "too much non-data") {
				t.Fatalf("%q: we need more, net/http says %v", in, chunkErr)
			}
		case herr == nil:
			// textproto is laxer than our trailer check, which wants
			// CRLF and no obs-fold or spaces in names.
			if !errors.Is(err, ErrMalformed) || !laxTrailer(in[afterChunks:consumed]) {
				t.Fatalf("%q: we reject (%v), net/http accepts %q", in, err, data)
			}
		}

		if err == nil {
			for _, k := range []int{0, n / 2, n - 1} {
				if _, _, err := DecodeChunked(nil, in[:k], -1); !errors.Is(err, ErrNeedMore) {
					t.Fatalf("prefix %d of %q: %v, want ErrNeedMore", k, in[:n], err)
				}
			}
			if checkAllocs {
				dst := make([]byte, 0, len(out))
				if a := testing.AllocsPerRun(1, func() { _, _, _ = DecodeChunked(dst, in, -1) }); a != 0 {
					t.Fatalf("DecodeChunked(%q) allocates %v times", in, a)
				}
			}
		}

		// A limit changes only whether the result is too large.
		maxBody := int(limit)
		out2, n2, err2 := DecodeChunked(nil, in, maxBody)
		switch {
		case err == nil && len(out) <= maxBody:
			if err2 != nil || n2 != n || !bytes.Equal(out2, out) {
				t.Fatalf("%q with maxBody %d: %v, want the unlimited result", in, maxBody, err2)
			}
		case err == nil:
			if !errors.Is(err2, ErrBodyTooLarge) {
				t.Fatalf("%q decodes to %d bytes, maxBody %d: %v, want ErrBodyTooLarge", in, len(out), maxBody, err2)
			}
		default:
			if !errors.Is(err2, err) && !errors.Is(err2, ErrBodyTooLarge) {
				t.Fatalf("%q with maxBody %d: %v, unlimited %v", in, maxBody, err2, err)
			}
		}
	})
}

// laxTrailer reports a trailer section textproto accepts and we do not:
// a bare LF, obs-fold, or a space in a field name.
func laxTrailer(tr []byte) bool {
	for i, c := range tr {
		if c == '\n' && (i == 0 || tr[i-1] != '\r') {
			return true
		}
	}
	for line := range strings.SplitSeq(string(tr), "\r\n") {
		if line == "" {
			continue
		}
		name, _, _ := strings.Cut(line, ":")
		if line[0] == ' ' || line[0] == '\t' || strings.ContainsRune(name, ' ') {
			return true
		}
	}
	return false
}
