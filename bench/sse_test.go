package bench

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	// Compare re-executes this binary as workers and baseline servers.
	if code, ok := Child(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

type gotEvent struct {
	ID    string
	HasID bool
	Type  string
	Data  string
}

var sseTests = []struct {
	name     string
	in       string
	want     []gotEvent
	comments int64
	retry    int64 // -1: none
}{
	{"single", "id: 1\ndata: hello\n\n", []gotEvent{{"1", true, "", "hello"}}, 0, -1},
	{"crlf", "id: 2\r\nevent: e\r\ndata: a\r\n\r\n", []gotEvent{{"2", true, "e", "a"}}, 0, -1},
	{"cr_only", "id: 3\rdata: a\r\r", []gotEvent{{"3", true, "", "a"}}, 0, -1},
	{"mixed_endings", "data: a\r\ndata: b\rdata: c\n\r\n", []gotEvent{{"", false, "", "a\nb\nc"}}, 0, -1},
	{"multi_line", "id: 4\ndata: first\ndata: second\ndata:\ndata: fourth\n\n", []gotEvent{{"4", true, "", "first\nsecond\n\nfourth"}}, 0, -1},
	{"comments", ":\n\n: heartbeat\n\nretry: 3000\n\n:x\ndata: d\n\n", []gotEvent{{"", false, "", "d"}}, 3, 3000},
	{"no_space", "data:x\nid:7\n\n", []gotEvent{{"7", true, "", "x"}}, 0, -1},
	{"two_spaces", "data:  x\n\n", []gotEvent{{"", false, "", " x"}}, 0, -1},
	{"field_without_colon", "data\n\n", []gotEvent{{"", false, "", ""}}, 0, -1},
	{"no_data_no_dispatch", "id: 9\nevent: e\n\ndata: z\n\n", []gotEvent{{"9", false, "", "z"}}, 0, -1},
	{"id_persists", "id: 1\ndata: a\n\ndata: b\n\n", []gotEvent{{"1", true, "", "a"}, {"1", false, "", "b"}}, 0, -1},
	{"id_with_nul_ignored", "id: 5\ndata: a\n\nid: 6\x00\ndata: b\n\n", []gotEvent{{"5", true, "", "a"}, {"5", false, "", "b"}}, 0, -1},
	{"bad_retry_ignored", "retry: 12a\nretry: 40\nretry: x\ndata: a\n\n", []gotEvent{{"", false, "", "a"}}, 0, 40},
	{"unknown_field", "foo: bar\ndata: a\n\n", []gotEvent{{"", false, "", "a"}}, 0, -1},
	{"bom", "\xEF\xBB\xBFdata: a\n\n", []gotEvent{{"", false, "", "a"}}, 0, -1},
	{"colon_in_value", "data: a: b\n\n", []gotEvent{{"", false, "", "a: b"}}, 0, -1},
	{"incomplete_event_not_dispatched", "data: a\n\ndata: b\n", []gotEvent{{"", false, "", "a"}}, 0, -1},
	{"event_type_reset", "event: x\ndata: a\n\ndata: b\n\n", []gotEvent{{"", false, "x", "a"}, {"", false, "", "b"}}, 0, -1},
	{"sseloop_stream", "retry: 3000\n\nid: 1\nevent: created\ndata: first line\ndata: second line\n\n:\n\nid: 2\ndata: {\"key\":\"k\",\"id\":\"2\",\"ts\":1}\n\n",
		[]gotEvent{{"1", true, "created", "first line\nsecond line"}, {"2", true, "", `{"key":"k","id":"2","ts":1}`}}, 1, 3000},
}

// feedAll parses chunks in order.
func feedAll(t *testing.T, chunks ...string) ([]gotEvent, *Parser) {
	t.Helper()
	p := &Parser{}
	var got []gotEvent
	emit := func(e *Event) {
		got = append(got, gotEvent{string(e.ID), e.HasID, string(e.Type), string(e.Data)})
	}
	for _, c := range chunks {
		if err := p.Feed([]byte(c), emit); err != nil {
			t.Fatalf("Feed: %v", err)
		}
	}
	return got, p
}

func checkParse(t *testing.T, got []gotEvent, p *Parser, want []gotEvent, comments, retry int64) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %+v\nwant %+v", got, want)
	}
	if p.Comments != comments {
		t.Fatalf("comments %d, want %d", p.Comments, comments)
	}
	gotRetry := int64(-1)
	if p.HasRetry {
		gotRetry = p.Retry
	}
	if gotRetry != retry {
		t.Fatalf("retry %d, want %d", gotRetry, retry)
	}
}

func TestParser(t *testing.T) {
	for _, tt := range sseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, p := feedAll(t, tt.in)
			checkParse(t, got, p, tt.want, tt.comments, tt.retry)
		})
	}
}

func TestParserSplitEverywhere(t *testing.T) {
	for _, tt := range sseTests {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i <= len(tt.in); i++ {
				got, p := feedAll(t, tt.in[:i], tt.in[i:])
				checkParse(t, got, p, tt.want, tt.comments, tt.retry)
				for j := i; j <= len(tt.in); j++ {
					got, p := feedAll(t, tt.in[:i], tt.in[i:j], tt.in[j:])
					checkParse(t, got, p, tt.want, tt.comments, tt.retry)
				}
			}
			bytewise := make([]string, len(tt.in))
			for i := 0; i < len(tt.in); i++ { // bytes, not runes
				bytewise[i] = tt.in[i : i+1]
			}
			got, p := feedAll(t, bytewise...)
			checkParse(t, got, p, tt.want, tt.comments, tt.retry)
		})
	}
}

func TestParserLineTooLong(t *testing.T) {
	p := &Parser{}
	chunk := []byte(strings.Repeat("x", 64<<10))
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		err = p.Feed(chunk, func(*Event) {})
	}
	if !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("err %v, want ErrLineTooLong", err)
	}
}

func TestChunkDecoder(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
		done bool
		err  bool
	}{
		{"simple", "5\r\nhello\r\n0\r\n\r\n", "hello", true, false},
		{"two_chunks", "3\r\nabc\r\na\r\n0123456789\r\n", "abc0123456789", false, false},
		{"extension", "3;name=v\r\nabc\r\n0\r\n\r\n", "abc", true, false},
		{"trailer", "1\r\nx\r\n0\r\nX-T: 1\r\n\r\n", "x", true, false},
		{"upper_hex", "A\r\n0123456789\r\n", "0123456789", false, false},
		{"bare_lf", "2\nab\n0\n\n", "ab", true, false},
		{"bad_size", "zz\r\n", "", false, true},
		{"bad_data_end", "1\r\nxy\r\n", "x", false, true},
		{"no_digits", "\r\n", "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i <= len(tt.in); i++ {
				var d chunkDecoder
				var out strings.Builder
				var done bool
				var err error
				for _, part := range []string{tt.in[:i], tt.in[i:]} {
					if err != nil || done {
						break
					}
					done, err = d.feed([]byte(part), func(b []byte) { out.Write(b) })
				}
				if (err != nil) != tt.err {
					t.Fatalf("split %d: err %v, want error %v", i, err, tt.err)
				}
				if tt.err {
					continue
				}
				if out.String() != tt.want || done != tt.done {
					t.Fatalf("split %d: got %q done=%v, want %q done=%v", i, out.String(), done, tt.want, tt.done)
				}
			}
		})
	}
}

func TestParseRespHead(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		status  int
		chunked bool
		err     bool
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\nrest", 200, true, false},
		{"plain", "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n", 200, false, false},
		{"no_reason", "HTTP/1.1 503\r\n\r\n", 503, false, false},
		{"partial", "HTTP/1.1 200 OK\r\nContent-", 0, false, false},
		{"bad_status", "HTTP/1.1 2x0 OK\r\n\r\n", 0, false, true},
		{"not_http", "SSH-2.0-OpenSSH\r\n\r\n", 0, false, true},
		{"bad_header", "HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := parseRespHead([]byte(tt.in))
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if tt.err {
				return
			}
			wantN := 0
			if i := strings.Index(tt.in, "\r\n\r\n"); i >= 0 {
				wantN = i + 4
			}
			if h.status != tt.status || h.chunked != tt.chunked || n != wantN {
				t.Fatalf("got status %d chunked %v n %d, want %d %v %d", h.status, h.chunked, n, tt.status, tt.chunked, wantN)
			}
		})
	}
}

func TestAppendFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name, event, data, want string
	}{
		{"plain", "", "x", "x"},
		{"event", "created", "a", "a"},
		{"lf", "", "a\nb", "a\nb"},
		{"crlf", "", "a\r\nb", "a\nb"},
		{"cr", "", "a\rb", "a\nb"},
		{"empty", "", "", ""},
		{"trailing_lf", "", "a\n", "a\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := AppendFrame(nil, 42, tt.event, []byte(tt.data))
			got, _ := feedAll(t, string(frame))
			want := []gotEvent{{"42", true, tt.event, tt.want}}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("frame %q parsed as %+v, want %+v", frame, got, want)
			}
		})
	}
}

func TestHist(t *testing.T) {
	var h Hist
	for v := int64(1); v <= 10000; v++ {
		h.Record(v)
	}
	for _, q := range []struct {
		q    float64
		want int64
	}{{0.5, 5000}, {0.9, 9000}, {0.99, 9900}} {
		got := h.Quantile(q.q)
		if got < q.want || float64(got) > float64(q.want)*1.02 {
			t.Errorf("q%.2f = %d, want %d (+2%%)", q.q, got, q.want)
		}
	}
	if h.Max != 10000 || h.Quantile(1) != 10000 {
		t.Errorf("max %d q1 %d", h.Max, h.Quantile(1))
	}
	var m Hist
	m.Merge(&h)
	m.Merge(&h)
	if m.N != 20000 || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Errorf("merge: n %d p50 %d", m.N, m.Quantile(0.5))
	}
	for v := int64(0); v < 1<<40; v = v*3 + 1 {
		if b := histBucket(v); histValue(b) < v || (b > 0 && histValue(b-1) >= v) {
			t.Fatalf("value %d in bucket %d [%d]", v, b, histValue(b))
		}
	}
}
