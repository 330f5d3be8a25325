package engine

import (
	"net/http"
	"strings"
	"testing"
)

// TestCORSPreflightAndHeaders checks preflight answers and the CORS headers
// on streams and triggers. Why: a page of an allowed origin must be able to
// read streams (with cookies) and trigger; any other origin must get no
// Access-Control-Allow-Origin, and the value sent is never the client's own
// Origin string unless it is configured.
func TestCORSPreflightAndHeaders(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.CORS.AllowedOrigins = []string{"https://app.example"}
	})
	tests := []struct {
		name, method, target, origin string
		status                       int
		allow                        string // expected Access-Control-Allow-Origin
	}{
		{"preflight_trigger_allowed", "OPTIONS", "/trigger/a", "https://app.example", 204, "https://app.example"},
		{"preflight_batch_allowed", "OPTIONS", "/trigger", "https://app.example", 204, "https://app.example"},
		{"preflight_events_allowed", "OPTIONS", "/events?key=a", "https://app.example", 204, "https://app.example"},
		{"preflight_other_origin", "OPTIONS", "/trigger/a", "https://evil.example", 204, ""},
		{"preflight_origin_prefix", "OPTIONS", "/trigger/a", "https://app.example.evil", 204, ""},
		{"preflight_no_origin", "OPTIONS", "/trigger/a", "", 204, ""},
		{"stream_allowed", "GET", "/events?key=a", "https://app.example", 200, "https://app.example"},
		{"stream_other_origin", "GET", "/events?key=a", "https://evil.example", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h []string
			if tt.origin != "" {
				h = append(h, "Origin: "+tt.origin, "Access-Control-Request-Method: POST")
			}
			resp, _ := exchange(t, s.addr, tt.method, tt.target, h...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.allow {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tt.allow)
			}
			if tt.allow == "" {
				return
			}
			if resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
				t.Error("listed origin without Access-Control-Allow-Credentials: true")
			}
			if tt.method == "OPTIONS" {
				if m := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") && !strings.Contains(m, "GET") {
					t.Errorf("Access-Control-Allow-Methods %q", m)
				}
				if ah := resp.Header.Get("Access-Control-Allow-Headers"); !strings.Contains(ah, "Authorization") {
					t.Errorf("Access-Control-Allow-Headers %q lacks Authorization", ah)
				}
				if resp.Header.Get("Access-Control-Max-Age") != "600" {
					t.Errorf("Access-Control-Max-Age %q", resp.Header.Get("Access-Control-Max-Age"))
				}
			}
		})
	}

	// A trigger's answer carries the headers too, so the page can read it.
	req, _ := http.NewRequest("POST", s.url("/trigger/a"), strings.NewReader("x"))
	req.Header.Set("Origin", "https://app.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("trigger answer: %d, ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

func TestCORSAnyOriginHasNoCredentials(t *testing.T) {
	// Why: "*" with credentials would let every site read a user's
	// cookie-authenticated streams; browsers refuse it and so do we.
	s := startServer(t, func(c *Config) { c.CORS.AllowedOrigins = []string{"*"} })
	resp, _ := exchange(t, s.addr, "GET", "/events?key=a", "Origin: https://anyone.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("headers %v", resp.Header)
	}
}
