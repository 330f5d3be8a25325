package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sseloop/sseloop/httpparse"
)

// mercureAuth authenticates the Mercure routes the way the Mercure hub
// does: a JWT from the Authorization header, else the "authorization" query
// parameter, else the cookie (for a POST, only from an Origin or Referer in
// publish_origins: cookies ride along with cross-site requests), with
// separate publisher and subscriber keys and algorithms. Built once by New,
// read-only afterwards: any goroutine may use it.
type mercureAuth struct {
	pub, sub  *jwtVerifier // nil: not configured
	cookie    string
	origins   []string // publish_origins; "*" or patterns with one "*"
	anonymous bool
}

// jwtVerifier checks tokens of one key and algorithm.
type jwtVerifier struct {
	key    any
	parser *jwt.Parser
}

// maxClaimSelectors bounds mercure.publish and mercure.subscribe, as the hub
// does, so that a token cannot make one request match for minutes.
const maxClaimSelectors = 1000

func newJWTVerifier(what string, k MercureJWT) (*jwtVerifier, error) {
	if k.Key == "" {
		return nil, nil
	}
	alg := k.Alg
	if alg == "" {
		alg = "HS256"
	}
	m := jwt.GetSigningMethod(alg)
	if m == nil || alg == "none" {
		return nil, fmt.Errorf("engine: mercure.%s.alg: unknown algorithm (want HS256/384/512, RS*, PS*, ES*, EdDSA)", what)
	}
	v := &jwtVerifier{parser: jwt.NewParser(jwt.WithValidMethods([]string{alg}))}
	var err error
	switch m.(type) {
	case *jwt.SigningMethodHMAC:
		v.key = []byte(k.Key)
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		v.key, err = jwt.ParseRSAPublicKeyFromPEM([]byte(k.Key))
	case *jwt.SigningMethodECDSA:
		v.key, err = jwt.ParseECPublicKeyFromPEM([]byte(k.Key))
	case *jwt.SigningMethodEd25519:
		v.key, err = jwt.ParseEdPublicKeyFromPEM([]byte(k.Key))
	default:
		return nil, fmt.Errorf("engine: mercure.%s.alg: unsupported algorithm", what)
	}
	if err != nil {
		return nil, fmt.Errorf("engine: mercure.%s.key: not a PEM public key for %s", what, alg)
	}
	return v, nil
}

// mercureClaims is the part of a Mercure token sseloop reads. The claim may
// also sit under "https://mercure.rocks/", as older hubs allowed.
type mercureClaims struct {
	jwt.RegisteredClaims
	Mercure    mercureClaim  `json:"mercure"`
	Namespaced *mercureClaim `json:"https://mercure.rocks/"`
}

type mercureClaim struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
	Payload   any      `json:"payload"`
}

var (
	errMercureBadHeader = errors.New("engine: invalid Authorization header")
	errMercureBadQuery  = errors.New("engine: invalid authorization query parameter")
	errMercureNoOrigin  = errors.New("engine: cookie authorization without Origin or Referer")
	errMercureOrigin    = errors.New("engine: origin not in mercure.publish_origins")
	errMercureSelectors = errors.New("engine: too many selectors in the mercure claim")
	errMercureNoKey     = errors.New("engine: no key configured for this role")
)

func (v *jwtVerifier) verify(tok string) (*mercureClaims, error) {
	if v == nil {
		return nil, errMercureNoKey
	}
	cl := new(mercureClaims)
	if _, err := v.parser.ParseWithClaims(tok, cl, func(*jwt.Token) (any, error) { return v.key, nil }); err != nil {
		return nil, err
	}
	if cl.Namespaced != nil {
		cl.Mercure = *cl.Namespaced
	}
	if len(cl.Mercure.Publish) > maxClaimSelectors || len(cl.Mercure.Subscribe) > maxClaimSelectors {
		return nil, errMercureSelectors
	}
	return cl, nil
}

// token finds the token of a Mercure request, as the hub does. It returns
// "" and no error for an anonymous request. Loop goroutine (it reads req);
// the result is a copy.
func (a *mercureAuth) token(req *httpparse.Request, post bool) (string, error) {
	if h := req.Header("Authorization"); h != nil {
		if len(h) < 48 || string(h[:7]) != "Bearer " {
			return "", errMercureBadHeader
		}
		return string(h[7:]), nil
	}
	for q := req.Query; len(q) > 0; {
		var name, value []byte
		name, value, q = httpparse.NextQuery(q)
		if string(name) == "authorization" {
			v, err := httpparse.AppendUnescape(nil, value, true)
			if err != nil || len(v) < 41 {
				return "", errMercureBadQuery
			}
			return string(v), nil
		}
	}
	c, ok := cookieValue(req, a.cookie)
	if !ok {
		return "", nil
	}
	if post {
		origin := string(req.Header("Origin"))
		if origin == "" {
			ref := req.Header("Referer")
			if ref == nil {
				return "", errMercureNoOrigin
			}
			u, err := url.Parse(string(ref))
			if err != nil {
				return "", errMercureNoOrigin
			}
			origin = u.Scheme + "://" + u.Host
		}
		if !slices.Contains(a.origins, "*") && !matchAny(a.origins, origin) {
			return "", errMercureOrigin
		}
	}
	return string(c), nil
}

// cookieValue returns the value of the cookie called name.
func cookieValue(req *httpparse.Request, name string) ([]byte, bool) {
	for i := range req.Headers {
		h := &req.Headers[i]
		if !bytes.EqualFold(h.Name, []byte("Cookie")) {
			continue
		}
		for v := h.Value; len(v) > 0; {
			var pair []byte
			pair, v, _ = bytes.Cut(v, []byte(";"))
			n, val, _ := bytes.Cut(bytes.TrimSpace(pair), []byte("="))
			if string(n) == name {
				return bytes.Trim(val, `"`), true
			}
		}
	}
	return nil, false
}

// canPublish reports whether the publish selectors cover every topic, as
// the hub's canDispatch: "*" covers everything, else each topic needs a
// selector that matches it.
func canPublish(sels, topics []string, match func(sel, topic string) bool) bool {
	if slices.Contains(sels, "*") {
		return true
	}
	for _, t := range topics {
		if !slices.ContainsFunc(sels, func(s string) bool { return match(s, t) }) {
			return false
		}
	}
	return true
}

// reservedTopic: topics the hub itself publishes on (subscription events);
// publishers may not forge them.
func reservedTopic(t string) bool { return strings.Contains(t, "/.well-known/mercure") }

// initMercure builds the Mercure authenticator and CORS policy.
func (e *Engine) initMercure() error {
	m := e.cfg.Mercure
	a := &mercureAuth{cookie: m.CookieName, origins: m.PublishOrigins, anonymous: m.Anonymous}
	var err error
	if a.pub, err = newJWTVerifier("publisher_jwt", m.PublisherJWT); err != nil {
		return err
	}
	if a.sub, err = newJWTVerifier("subscriber_jwt", m.SubscriberJWT); err != nil {
		return err
	}
	if e.mcors, err = newCORSPolicy(CORS{AllowedOrigins: m.CORSOrigins, MaxAge: e.cfg.CORS.MaxAge}); err != nil {
		return fmt.Errorf("engine: mercure.cors_origins: %w", err)
	}
	e.merc = a
	return nil
}
