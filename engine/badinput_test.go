package engine

import (
	"net/http"
	"strings"
	"testing"
)

// TestBadInputGetsClearErrorAndClose sends malformed requests as raw bytes.
// Why: every bad input must get the right status, a short fixed body that
// never echoes the input, and Connection: close, and must not disturb other
// clients.
func TestBadInputGetsClearErrorAndClose(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Limits.MaxBodyBytes = 1024
		c.Limits.MaxURIBytes = 512
		c.Limits.MaxHeadBytes = 2048
		c.Limits.MaxKeys = 3
	})
	before, _ := s.st.LastID(t.Context()) // ids start at the clock, not at 1
	bystander := openSSE(t, s.addr, "/events?key=by")
	long := strings.Repeat("k", 257)
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"garbage_request_line", "HELLO\r\n\r\n", 400},
		{"bad_version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"missing_host", "GET /healthz HTTP/1.1\r\n\r\n", 400},
		{"obs_fold", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n continued\r\n\r\n", 400},
		{"nul_in_header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400},
		{"space_before_colon", "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400},
		{"smuggle_two_contentlen", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
		{"smuggle_cl_and_te", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"bad_content_length", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
		{"unknown_te", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"unknown_route", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"wrong_method_events", "POST /events?key=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405},
		{"wrong_method_trigger", "GET /trigger/a HTTP/1.1\r\nHost: x\r\n\r\n", 405},
		{"body_too_large", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", 413},
		{"chunked_body_too_large", "POST /trigger/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n" + strings.Repeat("x", 1025) + "\r\n0\r\n\r\n", 413},
		{"uri_too_long", "GET /events?key=" + strings.Repeat("a", 600) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
		{"head_too_large", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 3000) + "\r\n\r\n", 431},
		{"empty_key", "GET /events?key= HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"missing_key", "GET /events HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"key_too_long", "GET /events?key=" + long + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"control_char_key", "GET /events?key=a%0Ab HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"bad_escape_key", "GET /events?key=%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"too_many_keys", "GET /events?key=a&key=b&key=c&key=d HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"bad_last_event_id", "GET /events?key=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: <script>\r\n\r\n", 400},
		{"trigger_bad_key", "POST /trigger/%01 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400},
		{"trigger_bad_event_name", "POST /trigger/a?event=x%0Dy HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := rawExchange(t, s.addr, tt.raw)
			resp, err := http.ReadResponse(bufioReader(out), nil)
			if err != nil {
				t.Fatalf("unparsable answer %q: %v", out, err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (answer %q)", resp.StatusCode, tt.status, out)
			}
			if !resp.Close {
				t.Errorf("no Connection: close in %q", out)
			}
			body := out[strings.Index(out, "\r\n\r\n")+4:]
			if len(body) > 64 || strings.Contains(body, "script") || strings.Contains(body, "kkkk") || strings.Contains(body, "aaaa") {
				t.Errorf("body %q is not a short fixed message", body)
			}
		})
	}
	// The bystander stream still works.
	s.trigger(t, "by", "", "still here")
	if ev := bystander.nextEvent(); ev.Data != "still here" {
		t.Fatalf("bystander got %+v", ev)
	}
	if last, _ := s.st.LastID(t.Context()); last != before+1 {
		t.Fatalf("bad triggers stored events: last id %d, want %d", last, before+1)
	}
}

// TestParserRecoversAfterBadRequest checks that one client's garbage leaves
// the loop's shared parser state clean for the next request.
func TestParserRecoversAfterBadRequest(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Loops = 1 })
	_ = rawExchange(t, s.addr, "GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
	out := rawExchange(t, s.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.HasSuffix(out, "ok\n") {
		t.Fatalf("got %q", out)
	}
}

func TestHeaderTimeoutClosesSlowloris(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.HeaderTimeout = 200 * 1e6 })
	out := rawExchange(t, s.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 408 ") {
		t.Fatalf("got %q", out)
	}
}
