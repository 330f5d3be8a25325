package engine

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net"
	"os"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sseloop/sseloop/httpparse"
)

// authenticator decides who may subscribe to and publish which keys. It is
// built once by New and read-only afterwards, so any goroutine may use it.
//
// Where tokens are verified (BenchmarkVerify on the 2-core dev machine):
// HS256, one HMAC-SHA256 plus a small JSON decode, costs ~9 µs and runs on
// the event loop. RS256 costs ~50 µs and ES256 ~130 µs: a reconnect storm
// of 10,000 clients on one loop would stall every other stream of that loop
// (heartbeats, fan-out) for 0.5–1.3 s, so with a public key configured
// every token is checked on the store workers (l.verifyThen) and the
// connection waits as it does for a replay. Nothing is cached: a verified
// token leaves behind only its expiry (conn.expires).
type authenticator struct {
	secret []byte              // HS256; nil = refused
	pub    any                 // *rsa.PublicKey (RS256) or *ecdsa.PublicKey (ES256); nil = none
	parser *jwt.Parser         // accepts only the algorithms configured
	cookie string              // cookie holding a subscriber token
	public []string            // key patterns open to everyone
	pubs   [][sha256.Size]byte // SHA-256 of each static publish key
}

// tokenClaims is the part of a token sseloop reads. The patterns may sit in
// an object ({"sseloop":{"subscribe":[…]}}, as Mercure does) or in flat
// claims named "sseloop.subscribe" / "sseloop.publish".
type tokenClaims struct {
	jwt.RegisteredClaims
	Sseloop struct {
		Subscribe []string `json:"subscribe"`
		Publish   []string `json:"publish"`
	} `json:"sseloop"`
	FlatSubscribe []string `json:"sseloop.subscribe"`
	FlatPublish   []string `json:"sseloop.publish"`
}

func (c *tokenClaims) subscribe() []string { return append(c.Sseloop.Subscribe, c.FlatSubscribe...) }
func (c *tokenClaims) publish() []string   { return append(c.Sseloop.Publish, c.FlatPublish...) }

func newAuthenticator(a Auth) (*authenticator, error) {
	au := &authenticator{cookie: a.CookieName, public: a.PublicKeys}
	var methods []string
	if a.JWTSecret != "" {
		au.secret = []byte(a.JWTSecret)
		methods = append(methods, "HS256")
	}
	if a.JWTPublicKey != "" {
		pemBytes, err := os.ReadFile(a.JWTPublicKey)
		if err != nil {
			return nil, fmt.Errorf("engine: auth.jwt_public_key: %w", err)
		}
		if k, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes); err == nil {
			au.pub = k
			methods = append(methods, "RS256")
		} else if k, err := jwt.ParseECPublicKeyFromPEM(pemBytes); err == nil {
			if k.Curve != elliptic.P256() {
				return nil, errors.New("engine: auth.jwt_public_key: ECDSA key is not P-256 (ES256)")
			}
			au.pub = k
			methods = append(methods, "ES256")
		} else {
			return nil, errors.New("engine: auth.jwt_public_key: not a PEM RSA or ECDSA public key")
		}
	}
	for i, k := range a.PublishKeys {
		if k == "" {
			return nil, fmt.Errorf("engine: auth.publish_keys[%d] is empty", i)
		}
		au.pubs = append(au.pubs, sha256.Sum256([]byte(k)))
	}
	for i, p := range a.PublicKeys {
		if p == "" {
			return nil, fmt.Errorf("engine: auth.public_keys[%d] is empty", i)
		}
	}
	if len(methods) > 0 {
		// WithValidMethods is what refuses alg=none and algorithm
		// confusion (an HS256 token "signed" with the RSA public key).
		au.parser = jwt.NewParser(jwt.WithValidMethods(methods))
	}
	return au, nil
}

// jwtEnabled reports whether tokens can be verified at all.
func (a *authenticator) jwtEnabled() bool { return a.parser != nil }

// publishAuthConfigured reports whether triggers need credentials; without
// it they are accepted from loopback clients only.
func (a *authenticator) publishAuthConfigured() bool { return a.jwtEnabled() || len(a.pubs) > 0 }

// offLoop reports whether tokens are verified on the store workers.
func (a *authenticator) offLoop() bool { return a.pub != nil }

func (a *authenticator) keyFunc(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if a.secret != nil {
			return a.secret, nil
		}
	case *jwt.SigningMethodRSA:
		if k, ok := a.pub.(*rsa.PublicKey); ok {
			return k, nil
		}
	case *jwt.SigningMethodECDSA:
		if k, ok := a.pub.(*ecdsa.PublicKey); ok {
			return k, nil
		}
	}
	return nil, errWrongAlg
}

var errWrongAlg = errors.New("engine: token algorithm not configured")

// verify checks tok's signature, algorithm, exp and nbf. Any goroutine.
func (a *authenticator) verify(tok string) (*tokenClaims, error) {
	cl := new(tokenClaims)
	if _, err := a.parser.ParseWithClaims(tok, cl, a.keyFunc); err != nil {
		return nil, err
	}
	return cl, nil
}

// expiry turns the token's exp into conn.expires: unix seconds, rounded
// down so that a stream never outlives its token; 0 = no exp claim.
func expiry(cl *tokenClaims) uint32 {
	if cl.ExpiresAt == nil {
		return 0
	}
	s := cl.ExpiresAt.Unix()
	if s <= 0 {
		return 1
	}
	return uint32(min(s, math.MaxUint32))
}

// isPublic reports whether everyone may subscribe to key.
func (a *authenticator) isPublic(key []byte) bool {
	if !a.jwtEnabled() {
		return true
	}
	return matchAny(a.public, key)
}

// needToken reports whether subscribing to keys needs a token.
func (a *authenticator) needToken(keys [][]byte) bool {
	for _, k := range keys {
		if !a.isPublic(k) {
			return true
		}
	}
	return false
}

// authorizeSubscribe decides a subscription that needs a token: status 0
// (allowed, with the token's expiry), 401 or 403. Any goroutine.
func (a *authenticator) authorizeSubscribe(keys [][]byte, cl *tokenClaims, err error) (exp uint32, status int) {
	if err != nil {
		return 0, 401
	}
	pats := cl.subscribe()
	for _, k := range keys {
		if !a.isPublic(k) && !matchAny(pats, k) {
			return 0, 403
		}
	}
	return expiry(cl), 0
}

// staticPublisher reports whether tok is one of the static publish keys,
// comparing SHA-256 sums in constant time so that neither the content nor
// the length of a key leaks through timing.
func (a *authenticator) staticPublisher(tok []byte) bool {
	if len(a.pubs) == 0 || len(tok) == 0 {
		return false
	}
	h := sha256.Sum256(tok)
	ok := 0
	for i := range a.pubs {
		ok |= subtle.ConstantTimeCompare(h[:], a.pubs[i][:])
	}
	return ok == 1
}

// bearer returns the token of an "Authorization: Bearer" header; present
// reports whether the header exists at all (a malformed one is a 401).
func bearer(req *httpparse.Request) (tok []byte, present bool) {
	h := req.Header("Authorization")
	if h == nil {
		return nil, false
	}
	const scheme = "bearer "
	if len(h) <= len(scheme) || !bytes.EqualFold(h[:len(scheme)], []byte(scheme)) {
		return nil, true
	}
	return bytes.TrimLeft(h[len(scheme):], " "), true
}

// subscriberToken finds the token of a subscription: the Authorization
// header, else the "token" query parameter (EventSource cannot set headers),
// else the cookie. A query value is unescaped into scratch. The result
// aliases req or scratch.
func (a *authenticator) subscriberToken(req *httpparse.Request, scratch []byte) (tok, scratchOut []byte) {
	if tok, present := bearer(req); present {
		return tok, scratch
	}
	for q := req.Query; len(q) > 0; {
		var name, value []byte
		name, value, q = httpparse.NextQuery(q)
		if string(name) == "token" {
			out, err := httpparse.AppendUnescape(scratch[:0], value, true)
			if err != nil {
				return nil, scratch
			}
			return out, out
		}
	}
	for i := range req.Headers {
		h := &req.Headers[i]
		if !bytes.EqualFold(h.Name, []byte("Cookie")) {
			continue
		}
		for v := h.Value; len(v) > 0; {
			var pair []byte
			pair, v, _ = bytes.Cut(v, []byte(";"))
			name, value, _ := bytes.Cut(bytes.TrimSpace(pair), []byte("="))
			if string(name) == a.cookie {
				return bytes.Trim(value, `"`), scratch
			}
		}
	}
	return nil, scratch
}

// matchAny reports whether some pattern matches key.
func matchAny[K ~string | ~[]byte](patterns []string, key K) bool {
	for _, p := range patterns {
		if match(p, key) {
			return true
		}
	}
	return false
}

// match reports whether key matches pattern, where "*" matches any run of
// characters (also none) and every other byte matches itself. It backtracks
// to the last star only, so a hostile pattern costs at most
// O(len(pattern)·len(key)), not exponential time.
func match[K ~string | ~[]byte](pattern string, key K) bool {
	px, kx := 0, 0
	nextPx, nextKx := 0, 0
	for px < len(pattern) || kx < len(key) {
		if px < len(pattern) {
			c := pattern[px]
			if c == '*' {
				nextPx, nextKx = px, kx+1
				px++
				continue
			}
			if kx < len(key) && key[kx] == c {
				px++
				kx++
				continue
			}
		}
		if 0 < nextKx && nextKx <= len(key) {
			px, kx = nextPx, nextKx
			continue
		}
		return false
	}
	return true
}

// isLoopback reports whether a connection comes from this machine.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
