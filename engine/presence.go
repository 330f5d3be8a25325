package engine

import (
	"context"
	"strconv"

	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/hub"
)

// presence answers GET /presence/{key} with one JSON object and
// GET /presence?key=A&key=B with an array of them:
//
//	{"key":"room:7","connections":5,"users":4,"user_ids":["17","42",…],"truncated":false}
//
// Who may ask: publisher credentials (a static publish key, or a JWT whose
// sseloop.publish covers the keys), or a subscriber token whose
// sseloop.subscribe covers them; anonymously only for auth.public_keys
// keys or with auth off, exactly as for streams, with the same 401/403.
// With auth off nobody has a user id, so user_ids is left out. The counts
// are read off the loop (hub.Presence waits for every loop and, with
// Redis, for the other nodes' counts).
func (l *loop) presence(c *conn, req *httpparse.Request) bool {
	l.keys = l.keys[:0]
	single := false
	if rest := req.Path[len("/presence"):]; len(rest) > 1 {
		if !l.appendKey(rest[1:], false) {
			return l.badRequest(c, 400, "invalid key")
		}
		single = true
	}
	for q := req.Query; len(q) > 0; {
		var name, value []byte
		name, value, q = httpparse.NextQuery(q)
		if string(name) != "key" {
			continue
		}
		if single {
			return l.badRequest(c, 400, "key in both path and query")
		}
		if len(l.keys) >= l.e.cfg.Limits.MaxKeys {
			l.e.m.limit("max_keys")
			return l.badRequest(c, 400, "too many keys")
		}
		if !l.appendKey(value, true) {
			return l.badRequest(c, 400, "invalid key")
		}
	}
	if len(l.keys) == 0 {
		return l.badRequest(c, 400, "missing key")
	}
	keys := make([]string, len(l.keys))
	for i, k := range l.keys {
		keys[i] = string(k)
	}
	a := l.e.auth
	ans := presenceAnswer{keys: keys, single: single, withIDs: a.jwtEnabled(), maxIDs: l.e.cfg.Presence.MaxUserIDs,
		keepAlive: req.KeepAlive, http10: req.ProtoMinor == 0, cors: l.e.cors.headers(req.Header("Origin"))}
	if !a.needToken(l.keys) {
		return l.answerPresence(c, ans)
	}
	var tok []byte
	tok, l.tok = a.subscriberToken(req, l.tok)
	switch {
	case len(tok) == 0:
		return l.authError(c, 401, tok != nil, ans.cors, "no token")
	case a.staticPublisher(tok):
		return l.answerPresence(c, ans)
	}
	return l.verifyThen(c, tok, func(cl *tokenClaims, err error) bool {
		if err != nil {
			return l.authError(c, 401, true, ans.cors, err.Error())
		}
		sub, pub := cl.subscribe(), cl.publish()
		for _, k := range keys {
			if !a.isPublic([]byte(k)) && !matchAny(sub, k) && !matchAny(pub, k) {
				return l.authError(c, 403, true, ans.cors, "token does not cover a key")
			}
		}
		return l.answerPresence(c, ans)
	})
}

// presenceAnswer is what the answer to a presence query needs.
type presenceAnswer struct {
	keys              []string
	single            bool // GET /presence/{key}: an object, not an array
	withIDs           bool // auth is on: list user_ids
	maxIDs            int
	keepAlive, http10 bool
	cors              string
}

// answerPresence reads the presence on a store worker and answers.
func (l *loop) answerPresence(c *conn, a presenceAnswer) bool {
	h := l.e.hub
	return l.async(c, func(ctx context.Context) ([]byte, bool) {
		infos, err := h.Presence(ctx, a.keys)
		if err != nil {
			l.e.log.Warn("presence query failed", "err", err)
			l.e.m.httpError(503)
			return appendError(nil, 503, a.cors, "store unavailable\n"), false
		}
		r := response{status: 200, ctype: "application/json", extra: a.cors, body: a.render(infos),
			keepAlive: a.keepAlive, http10: a.http10}
		return r.appendTo(nil), a.keepAlive
	})
}

// render renders infos as the answer's JSON body.
func (a *presenceAnswer) render(infos []hub.PresenceInfo) []byte {
	var b []byte
	if !a.single {
		b = append(b, '[')
	}
	for i, p := range infos {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key":`...)
		b = hub.AppendJSONString(b, p.Key)
		b = append(b, `,"connections":`...)
		b = strconv.AppendInt(b, int64(p.Connections), 10)
		b = append(b, `,"users":`...)
		b = strconv.AppendInt(b, int64(len(p.Users)), 10)
		ids := p.Users
		if a.withIDs {
			ids = ids[:min(len(ids), a.maxIDs)]
			b = append(b, `,"user_ids":`...)
			b = hub.AppendJSONStrings(b, ids)
		}
		b = append(b, `,"truncated":`...)
		b = strconv.AppendBool(b, a.withIDs && len(ids) < len(p.Users))
		b = append(b, '}')
	}
	if !a.single {
		b = append(b, ']')
	}
	return append(b, '\n')
}
