package engine

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

// mint signs claims with method and key.
func mint(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// subClaims is a subscriber token's claims valid for an hour.
func subClaims(patterns ...string) jwt.MapClaims {
	return jwt.MapClaims{
		"exp":     time.Now().Add(time.Hour).Unix(),
		"sseloop": map[string]any{"subscribe": patterns},
	}
}

func pubClaims(patterns ...string) jwt.MapClaims {
	return jwt.MapClaims{
		"exp":     time.Now().Add(time.Hour).Unix(),
		"sseloop": map[string]any{"publish": patterns},
	}
}

// writePEM writes a public key as a PEM file and returns its path.
func writePEM(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// exchange sends one request head and returns the response head and body
// (a stream's body is not read).
func exchange(t *testing.T, addr, method, target string, headers ...string) (*http.Response, string) {
	t.Helper()
	sse := openSSEMethod(t, addr, method, target, headers...)
	if sse.resp.Header.Get("Content-Type") == "text/event-stream" {
		return sse.resp, ""
	}
	b, _ := io.ReadAll(sse.resp.Body)
	return sse.resp, string(b)
}

// TestSubscriberTokenDecidesWhoReadsAKey checks every way a subscriber
// token is presented, accepted and refused. Why: a stream must never be
// readable by a client whose token does not cover its key; every refusal is
// 401 (no or bad token) or 403 (good token, wrong key), counted, and says
// nothing about the token.
func TestSubscriberTokenDecidesWhoReadsAKey(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Auth.JWTSecret = testSecret
		c.Auth.PublicKeys = []string{"public:*"}
	})
	hs := func(claims jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, []byte(testSecret), claims) }
	good := hs(subClaims("user:42", "room:*"))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tests := []struct {
		name    string
		target  string
		headers []string
		status  int
	}{
		{"public_key_needs_no_token", "/events?key=public:news", nil, 200},
		{"missing_token", "/events?key=user:42", nil, 401},
		{"public_and_private_needs_token", "/events?key=public:news&key=user:42", nil, 401},
		{"bearer_header", "/events?key=user:42", []string{"Authorization: Bearer " + good}, 200},
		{"bearer_scheme_any_case", "/events?key=user:42", []string{"Authorization: bearer " + good}, 200},
		{"query_param", "/events?key=user:42&token=" + good, nil, 200},
		{"cookie", "/events?key=user:42", []string{"Cookie: a=b; sseloop_token=" + good + "; c=d"}, 200},
		{"wildcard_pattern", "/events/room:lobby", []string{"Authorization: Bearer " + good}, 200},
		{"public_plus_covered", "/events?key=public:x&key=room:1", []string{"Authorization: Bearer " + good}, 200},
		{"key_not_covered", "/events?key=user:43", []string{"Authorization: Bearer " + good}, 403},
		{"one_key_not_covered", "/events?key=user:42&key=admin", []string{"Authorization: Bearer " + good}, 403},
		{"prefix_is_not_a_match", "/events?key=user:420", []string{"Authorization: Bearer " + good}, 403},
		{"header_wins_over_query", "/events?key=user:42&token=" + good, []string{"Authorization: Bearer x.y.z"}, 401},
		{"expired", "/events?key=user:42", []string{"Authorization: Bearer " + hs(jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix(), "sseloop": map[string]any{"subscribe": []string{"*"}}})}, 401},
		{"not_yet_valid", "/events?key=user:42", []string{"Authorization: Bearer " + hs(jwt.MapClaims{"nbf": time.Now().Add(time.Hour).Unix(), "sseloop": map[string]any{"subscribe": []string{"*"}}})}, 401},
		{"bad_signature", "/events?key=user:42", []string{"Authorization: Bearer " + mint(t, jwt.SigningMethodHS256, []byte("another secret another secret!!!"), subClaims("*"))}, 401},
		{"tampered_payload", "/events?key=user:42", []string{"Authorization: Bearer " + tamper(good)}, 401},
		{"malformed", "/events?key=user:42", []string{"Authorization: Bearer not-a-jwt"}, 401},
		{"not_bearer", "/events?key=user:42", []string{"Authorization: Basic dXNlcjpwdw=="}, 401},
		{"empty_bearer", "/events?key=user:42", []string{"Authorization: Bearer "}, 401},
		{"alg_none", "/events?key=user:42", []string{"Authorization: Bearer " + mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, subClaims("*"))}, 401},
		{"wrong_alg_hs384", "/events?key=user:42", []string{"Authorization: Bearer " + mint(t, jwt.SigningMethodHS384, []byte(testSecret), subClaims("*"))}, 401},
		{"wrong_alg_rs256", "/events?key=user:42", []string{"Authorization: Bearer " + mint(t, jwt.SigningMethodRS256, rsaKey, subClaims("*"))}, 401},
		{"publish_claim_does_not_subscribe", "/events?key=user:42", []string{"Authorization: Bearer " + hs(pubClaims("*"))}, 403},
		{"flat_claim_name", "/events?key=user:42", []string{"Authorization: Bearer " + hs(jwt.MapClaims{"sseloop.subscribe": []string{"user:*"}})}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.e.m.authFail.Get()
			resp, body := exchange(t, s.addr, "GET", tt.target, tt.headers...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if tt.status == 200 {
				return
			}
			if got := s.e.m.authFail.Get() - before; got != 1 {
				t.Errorf("sseloop_auth_failures_total grew by %d, want 1", got)
			}
			if !resp.Close {
				t.Error("no Connection: close")
			}
			want := map[int]string{401: "unauthorized\n", 403: "forbidden\n"}[tt.status]
			if body != want {
				t.Errorf("body %q, want %q", body, want)
			}
			if wa := resp.Header.Get("WWW-Authenticate"); (tt.status == 401) != strings.HasPrefix(wa, "Bearer ") {
				t.Errorf("WWW-Authenticate %q on %d", wa, tt.status)
			}
		})
	}
}

// tamper flips the subscribe claim of a token without re-signing it.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sseloop":{"subscribe":["*"]}}`))
	return strings.Join(parts, ".")
}

// TestPublicKeyTokensRS256AndES256 checks tokens signed with a private key
// and verified (off the loop) with the configured public key. Why: the
// classic algorithm-confusion attack signs an HS256 token with the public
// key as its secret; it must be refused like any wrong algorithm.
func TestPublicKeyTokensRS256AndES256(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name    string
		pemPath string
		good    string
		bad     []string
	}{
		{
			name:    "RS256",
			pemPath: writePEM(t, &rsaKey.PublicKey),
			good:    mint(t, jwt.SigningMethodRS256, rsaKey, subClaims("k")),
			bad: []string{
				mint(t, jwt.SigningMethodES256, ecKey, subClaims("k")),
				mint(t, jwt.SigningMethodRS512, rsaKey, subClaims("k")),
			},
		},
		{
			name:    "ES256",
			pemPath: writePEM(t, &ecKey.PublicKey),
			good:    mint(t, jwt.SigningMethodES256, ecKey, subClaims("k")),
			bad: []string{
				mint(t, jwt.SigningMethodES256, otherEC, subClaims("k")),
				mint(t, jwt.SigningMethodRS256, rsaKey, subClaims("k")),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, func(c *Config) {
				c.Auth.JWTPublicKey = tc.pemPath
				c.Auth.PublishKeys = []string{"test-publisher"}
			})
			pemBytes, _ := os.ReadFile(tc.pemPath)
			confused := mint(t, jwt.SigningMethodHS256, pemBytes, subClaims("k"))
			if resp, _ := exchange(t, s.addr, "GET", "/events?key=k", "Authorization: Bearer "+tc.good); resp.StatusCode != 200 {
				t.Fatalf("good token: status %d", resp.StatusCode)
			}
			if resp, _ := exchange(t, s.addr, "GET", "/events?key=other", "Authorization: Bearer "+tc.good); resp.StatusCode != 403 {
				t.Fatalf("uncovered key: status %d, want 403", resp.StatusCode)
			}
			for i, tok := range append(tc.bad, confused) {
				if resp, _ := exchange(t, s.addr, "GET", "/events?key=k", "Authorization: Bearer "+tok); resp.StatusCode != 401 {
					t.Fatalf("bad token %d: status %d, want 401", i, resp.StatusCode)
				}
			}
			// The connection that waited for a worker still streams events.
			sse := openSSE(t, s.addr, "/events?key=k&token="+tc.good)
			s.trigger(t, "k", "", "via worker")
			if ev := sse.nextEvent(); ev.Data != "via worker" {
				t.Fatalf("got %+v", ev)
			}
		})
	}
}

// TestStreamClosesWhenTokenExpires checks that a stream does not outlive
// its token. Why: revoking access is done by issuing short-lived tokens; a
// stream held open forever would make that useless.
func TestStreamClosesWhenTokenExpires(t *testing.T) {
	t.Parallel() // waits ~2s for the token to expire
	s := startServer(t, func(c *Config) {
		c.Auth.JWTSecret = testSecret
		c.Heartbeat = time.Hour // only the expiry can end the stream
	})
	exp := time.Now().Add(2 * time.Second)
	tok := mint(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{
		"exp": exp.Unix(), "sseloop": map[string]any{"subscribe": []string{"k"}},
	})
	sse := openSSE(t, s.addr, "/events?key=k", "Authorization: Bearer "+tok)
	if sse.Status != 200 {
		t.Fatalf("status %d", sse.Status)
	}
	for {
		_, err := sse.read(15 * time.Second)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("stream did not close at token expiry: %v", err)
		}
	}
	if time.Now().Before(exp.Truncate(time.Second)) {
		t.Fatalf("stream closed before the token expired")
	}
	waitFor(t, "closed{reason=token_expired}", func() bool {
		return metricValue(t, s, `sseloop_connections_closed_total{reason="token_expired"}`) == 1
	})
}

// TestPublisherAuth checks static publish keys and publish tokens. Why: a
// trigger reaches every subscriber of a key; only the app may send one.
func TestPublisherAuth(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Auth.JWTSecret = testSecret
		c.Auth.PublishKeys = []string{"pk-0123456789", "pk-second"}
	})
	hs := func(claims jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, []byte(testSecret), claims) }
	orders := hs(pubClaims("orders:*"))
	batch := func(keys ...string) string {
		var evs []string
		for _, k := range keys {
			evs = append(evs, `{"key":"`+k+`","data":"x"}`)
		}
		return `{"events":[` + strings.Join(evs, ",") + `]}`
	}
	tests := []struct {
		name   string
		target string
		auth   string
		body   string
		status int
	}{
		{"no_credentials_even_from_loopback", "/trigger/a", "", "x", 401},
		{"static_key", "/trigger/a", "Bearer pk-0123456789", "x", 200},
		{"second_static_key", "/trigger/a", "Bearer pk-second", "x", 200},
		{"static_key_prefix", "/trigger/a", "Bearer pk-012345678", "x", 401},
		{"static_key_longer", "/trigger/a", "Bearer pk-01234567890", "x", 401},
		{"not_bearer", "/trigger/a", "Basic cGs6MDEyMzQ1Njc4OQ==", "x", 401},
		{"jwt_covers_key", "/trigger/orders:1", "Bearer " + orders, "x", 200},
		{"jwt_does_not_cover_key", "/trigger/users:1", "Bearer " + orders, "x", 403},
		{"jwt_batch_covered", "/trigger", "Bearer " + orders, batch("orders:1", "orders:2"), 200},
		{"jwt_batch_one_uncovered", "/trigger", "Bearer " + orders, batch("orders:1", "users:1"), 403},
		{"subscribe_token_cannot_publish", "/trigger/orders:1", "Bearer " + hs(subClaims("*")), "x", 403},
		{"expired_publish_token", "/trigger/orders:1", "Bearer " + hs(jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix(), "sseloop": map[string]any{"publish": []string{"*"}}}), "x", 401},
		{"static_key_batch", "/trigger", "Bearer pk-second", batch("users:1"), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			last, _ := s.st.LastID(t.Context())
			req, _ := http.NewRequest("POST", s.url(tt.target), strings.NewReader(tt.body))
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%q)", resp.StatusCode, tt.status, b)
			}
			now, _ := s.st.LastID(t.Context())
			if stored := now != last; stored != (tt.status == 200) {
				t.Fatalf("status %d but stored=%v", resp.StatusCode, stored)
			}
		})
	}
}

// TestNoPublisherAuthMeansLoopbackOnlyAndAWarning checks the default. Why:
// a server started without any publisher credentials must not let the
// internet publish; it says so at start-up.
func TestNoPublisherAuthMeansLoopbackOnlyAndAWarning(t *testing.T) {
	var logs strings.Builder
	s := startServer(t, func(c *Config) { c.Logger = slogTo(&logs) })
	s.trigger(t, "a", "", "from loopback") // 127.0.0.1 may publish
	if !strings.Contains(logs.String(), "no publisher auth configured") {
		t.Errorf("no start-up warning in %q", logs.String())
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:1", true}, {"[::1]:1", true}, {"127.8.9.10:1", true},
		{"10.0.0.1:1", false}, {"[2001:db8::1]:1", false}, {"[::ffff:192.0.2.1]:1", false},
	} {
		a, err := netResolve(tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := isLoopback(a); got != tc.want {
			t.Errorf("isLoopback(%s) = %v", tc.addr, got)
		}
	}
}

func TestMatchPattern(t *testing.T) {
	tests := []struct {
		pattern, key string
		want         bool
	}{
		{"a", "a", true}, {"a", "ab", false}, {"ab", "a", false},
		{"*", "", true}, {"*", "anything", true},
		{"user:*", "user:", true}, {"user:*", "user:42", true}, {"user:*", "users:42", false},
		{"*:42", "user:42", true}, {"*:42", "user:421", false},
		{"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false}, {"a*b*c", "abcabc", true},
		{"**", "x", true}, {"a**", "a", true},
		{"", "", true}, {"", "a", false},
		{strings.Repeat("*a", 100) + "b", strings.Repeat("a", 256), false}, // no exponential blow-up
	}
	for _, tt := range tests {
		if got := match(tt.pattern, tt.key); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.key, got, tt.want)
		}
		if got := match(tt.pattern, []byte(tt.key)); got != tt.want {
			t.Errorf("match(%q, []byte %q) = %v", tt.pattern, tt.key, got)
		}
	}
}

// TestConnStaysSmall guards the memory per idle connection: conn sits in
// the 128-byte size class; one more field would move it to 144.
func TestConnStaysSmall(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 128 {
		t.Fatalf("conn is %d bytes; keep it within 128 (memory per idle connection)", n)
	}
}

func TestBadAuthConfigIsRefused(t *testing.T) {
	st := newMemStore(t)
	bad := writePEMBytes(t, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, mutate := range map[string]func(*Config){
		"missing_pem":        func(c *Config) { c.Auth.JWTPublicKey = filepath.Join(t.TempDir(), "none.pem") },
		"garbage_pem":        func(c *Config) { c.Auth.JWTPublicKey = bad },
		"p384_key":           func(c *Config) { c.Auth.JWTPublicKey = writePEM(t, &p384.PublicKey) },
		"empty_publish_key":  func(c *Config) { c.Auth.PublishKeys = []string{""} },
		"origin_with_crlf":   func(c *Config) { c.CORS.AllowedOrigins = []string{"https://a\r\nX: y"} },
		"origin_not_a_url":   func(c *Config) { c.CORS.AllowedOrigins = []string{"example.com"} },
		"empty_public_match": func(c *Config) { c.Auth.PublicKeys = []string{""} },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			mutate(&cfg)
			if _, err := New(cfg, st); err == nil {
				t.Fatal("New accepted a bad auth config")
			}
		})
	}
}

// BenchmarkVerify measures one token verification per algorithm, the cost
// that decides where verification runs (see authenticator).
func BenchmarkVerify(b *testing.B) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, bc := range []struct {
		name   string
		auth   Auth
		method jwt.SigningMethod
		key    any
	}{
		{"HS256", Auth{JWTSecret: testSecret}, jwt.SigningMethodHS256, []byte(testSecret)},
		{"RS256", Auth{JWTPublicKey: writePEM(b, &rsaKey.PublicKey)}, jwt.SigningMethodRS256, rsaKey},
		{"ES256", Auth{JWTPublicKey: writePEM(b, &ecKey.PublicKey)}, jwt.SigningMethodES256, ecKey},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a, err := newAuthenticator(bc.auth)
			if err != nil {
				b.Fatal(err)
			}
			tok := mint(b, bc.method, bc.key, subClaims("user:42", "room:*"))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
