package engine

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/hub"
	"github.com/sseloop/sseloop/store"
)

// The Mercure routes (mercure.enabled): GET /.well-known/mercure subscribes,
// POST publishes, as the Mercure hub v0.24 does, on the same store, ids and
// hub as the native routes. A Mercure publish on topic t is an event of key
// t (its other topics ride along as alternates), so native subscribers of
// t get it unless it is private; a native trigger on key k reaches Mercure
// subscribers of topic k, with the decimal sseloop id as its SSE id.
//
// Ids: a publish's id (the form's id, else urn:uuid:<UUIDv7>) is stored with
// the event (store.Event.PubID) and indexed (store.IDResolver), so a
// Last-Event-ID finds its position on any node sharing the store.

const (
	mercurePath      = "/.well-known/mercure"
	maxMercureTopics = 1000 // per subscription and per publish, as the hub
)

// mercureRoute serves a request under /.well-known/mercure.
func (l *loop) mercureRoute(c *conn, req *httpparse.Request, body []byte) bool {
	if l.e.cfg.Mercure.Subscriptions && (string(req.Path) == subscriptionsPath || hasPrefix(req.Path, subscriptionsPath+"/")) {
		return l.mercureSubscriptions(c, req)
	}
	if string(req.Path) != mercurePath {
		l.e.m.httpError(404)
		l.write(c, errorResponse(404))
		c.phase, c.closeReason = phaseClosing, reasonBadRequest
		return false
	}
	switch string(req.Method) {
	case "GET":
		return l.mercureSubscribe(c, req)
	case "POST":
		return l.mercurePublish(c, req, body)
	case "OPTIONS":
		l.out = l.e.mcors.preflight(l.out[:0], req.Header("Origin"), "GET, POST", req.KeepAlive, req.ProtoMinor == 0)
		l.write(c, l.out)
		return req.KeepAlive
	}
	return l.methodNotAllowed(c, "GET, POST, OPTIONS")
}

// mercurePos is where a Mercure stream starts.
type mercurePos struct {
	resume  bool
	id      uint64
	header  string // the Last-Event-ID response header value; "" = none
	unknown bool   // the client's id is not retained: say so with a gap event
}

// mercureSubscribe opens a Mercure stream: topics, token, Last-Event-ID.
func (l *loop) mercureSubscribe(c *conn, req *httpparse.Request) bool {
	var topics []string
	var seen map[string]bool
	var lastID string
	for q := req.Query; len(q) > 0; {
		var name, value []byte
		name, value, q = httpparse.NextQuery(q)
		switch string(name) {
		case "topic":
			t, err := httpparse.AppendUnescape(nil, value, true)
			if err != nil {
				return l.badRequest(c, 400, "invalid topic")
			}
			if seen == nil {
				seen = make(map[string]bool)
			}
			if seen[string(t)] {
				continue
			}
			if len(topics) >= maxMercureTopics {
				l.e.m.limit("max_mercure_topics")
				return l.badRequest(c, 400, "too many topics")
			}
			seen[string(t)] = true
			topics = append(topics, string(t))
		case "lastEventID":
			v, err := httpparse.AppendUnescape(nil, value, true)
			if err != nil {
				return l.badRequest(c, 400, "invalid lastEventID")
			}
			if lastID == "" {
				lastID = string(v)
			}
		}
	}
	if h := req.Header("Last-Event-ID"); len(h) > 0 {
		lastID = string(h) // what the browser sends on reconnect wins
	}
	if len(topics) == 0 {
		return l.badRequest(c, 400, "missing topic")
	}
	if strings.ContainsAny(lastID, "\x00\r\n") {
		return l.badRequest(c, 400, "invalid Last-Event-ID") // it is echoed in a header
	}
	cors := l.e.mcors.headers(req.Header("Origin"))
	a := l.e.merc
	var tok string
	if a.sub != nil {
		var err error
		if tok, err = a.token(req, false); err != nil {
			return l.authError(c, 401, true, cors, err.Error())
		}
		if tok == "" && !a.anonymous {
			return l.authError(c, 401, false, cors, "no token and mercure.anonymous is off")
		}
	}
	if tok == "" && lastID == "" {
		return l.openMercure(c, topics, nil, mercurePos{}, cors)
	}
	// Token checks (RS/ES/EdDSA are slow) and id lookups (the store) run
	// on a store worker; c is busy meanwhile.
	job := func(ctx context.Context) {
		var cl *mercureClaims
		var err error
		if tok != "" {
			cl, err = a.sub.verify(tok)
		}
		var pos mercurePos
		var storeErr error
		if err == nil && lastID != "" {
			pos, storeErr = l.e.resolveMercureID(ctx, lastID)
		}
		l.Execute(func() {
			if c.phase != phaseBusy {
				return // closed meanwhile
			}
			c.phase = phaseRequest
			var keep bool
			switch {
			case err != nil:
				keep = l.authError(c, 401, true, cors, err.Error())
			case storeErr != nil:
				l.e.log.Warn("mercure: Last-Event-ID lookup failed", "err", storeErr)
				keep = l.badRequest(c, 503, "store unavailable")
			default:
				keep = l.openMercure(c, topics, cl, pos, cors)
			}
			l.resume(c, keep)
		})
	}
	return l.submit(c, l.e.hub.Go(job))
}

// resolveMercureID finds the position of a Mercure Last-Event-ID: "earliest",
// a publisher's id (the store's index), or the decimal id of a native event.
// Store worker.
func (e *Engine) resolveMercureID(ctx context.Context, id string) (mercurePos, error) {
	if id == "earliest" {
		return mercurePos{resume: true, header: id}, nil
	}
	if r, ok := e.st.(store.IDResolver); ok {
		n, found, err := r.ResolveID(ctx, id)
		if err != nil {
			return mercurePos{}, err
		}
		if found {
			return mercurePos{resume: true, id: n, header: id}, nil
		}
	}
	if n, err := strconv.ParseUint(id, 10, 64); err == nil && n > 0 {
		last, err := e.st.LastID(ctx)
		if err != nil {
			return mercurePos{}, err
		}
		if n <= last {
			return mercurePos{resume: true, id: n, header: id}, nil
		}
	}
	return mercurePos{unknown: true}, nil
}

// openMercure turns c into a Mercure stream.
func (l *loop) openMercure(c *conn, topics []string, cl *mercureClaims, pos mercurePos, cors string) bool {
	c.phase = phaseStream
	extra := cors
	if pos.header != "" {
		extra += "Last-Event-ID: " + pos.header + "\r\n"
	}
	r := response{status: 200, ctype: "text/event-stream", extra: extra, stream: true, mercure: true}
	l.out = r.appendTo(l.out[:0])
	l.out = append(l.out, ":\n"...)
	if pos.unknown {
		// The id is not retained (expired, trimmed, another store): the
		// stream starts live, and says so instead of silently skipping.
		l.out = hub.AppendGap(l.out, nil, 0)
	}
	ms := &hub.MercureSub{Topics: topics, Heartbeat: l.e.cfg.Mercure.Heartbeat}
	var exp uint32
	if cl != nil {
		ms.Auth = cl.Mercure.Subscribe
		if cl.ExpiresAt != nil {
			exp = uint32(min(max(cl.ExpiresAt.Unix(), 1), math.MaxUint32))
		}
	}
	if l.e.cfg.Mercure.Subscriptions {
		l.prepareSubscriptionEvents(ms, cl)
	}
	l.hl.Open(&c.Stream, hub.Subscription{Head: l.out, Resume: pos.resume, LastID: pos.id, Expires: exp, Mercure: ms})
	return true
}

// mercureError is a publish refused with a status and a fixed message.
type mercureError struct {
	status int
	msg    string
}

func (e *mercureError) Error() string { return e.msg }

var (
	errMercureUnauthorized = &mercureError{401, "unauthorized\n"}
	errMercureForbidden    = &mercureError{403, "forbidden\n"}
)

// mercurePublish publishes the update of a form POST.
func (l *loop) mercurePublish(c *conn, req *httpparse.Request, body []byte) bool {
	ans := mercureAnswer{keepAlive: req.KeepAlive, http10: req.ProtoMinor == 0, cors: l.e.mcors.headers(req.Header("Origin"))}
	a := l.e.merc
	var tok string
	if a.pub == nil {
		if !isLoopback(c.gc().RemoteAddr()) {
			return l.authError(c, 403, false, ans.cors, "no mercure.publisher_jwt configured and client is not loopback")
		}
	} else {
		var err error
		if tok, err = a.token(req, true); err != nil || tok == "" {
			why := "no token"
			if err != nil {
				why = err.Error()
			}
			return l.authError(c, 401, err != nil, ans.cors, why)
		}
	}
	raw := bytes.Clone(body)
	p := &hub.Publication{Prepare: func(p *hub.Publication) error {
		// Off the loop: the token check may be slow (RS/ES/EdDSA).
		var cl *mercureClaims
		if a.pub != nil {
			var err error
			if cl, err = a.pub.verify(tok); err != nil || cl.Mercure.Publish == nil {
				return errMercureUnauthorized
			}
		}
		ev, err := parseMercureForm(raw)
		if err != nil {
			return err
		}
		if cl != nil && !canPublish(cl.Mercure.Publish, append([]string{ev.Key}, ev.Topics...), hub.MatchSelector) {
			return errMercureForbidden
		}
		if ev.PubID == "" {
			u, err := uuid.NewV7()
			if err != nil {
				return err
			}
			ev.PubID = "urn:uuid:" + u.String()
		}
		p.Events = []store.Event{ev}
		return nil
	}}
	p.Done = func(evs []store.Event, err error) {
		resp, keep := ans.render(l.e, evs, err)
		l.Execute(func() { l.finish(c, resp, keep) })
	}
	return l.submit(c, l.e.hub.Publish(p))
}

// parseMercureForm reads the update of a publish form: topic (repeated, the
// first is the canonical topic, the store key), data, private, id, type,
// retry. Errors are *mercureError with a message that never quotes input.
func parseMercureForm(raw []byte) (store.Event, error) {
	var ev store.Event
	var topics []string
	var haveData, haveID, haveType bool
	for q := raw; len(q) > 0; {
		var name, value []byte
		name, value, q = httpparse.NextQuery(q)
		v, err := httpparse.AppendUnescape(nil, value, true)
		if err != nil {
			return ev, &mercureError{400, "invalid form\n"}
		}
		n, err := httpparse.AppendUnescape(nil, name, true)
		if err != nil {
			return ev, &mercureError{400, "invalid form\n"}
		}
		switch string(n) {
		case "topic":
			if len(topics) >= maxMercureTopics {
				return ev, &mercureError{400, "too many topics\n"}
			}
			topics = append(topics, string(v))
		case "data":
			if !haveData {
				ev.Data, haveData = v, true
			}
		case "private":
			ev.Private = true
		case "id":
			if !haveID {
				ev.PubID, haveID = string(v), true
			}
		case "type":
			if !haveType {
				ev.Name, haveType = string(v), true
			}
		case "retry":
			if len(v) == 0 {
				continue
			}
			r, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return ev, &mercureError{400, "invalid retry\n"}
			}
			ev.Retry = int64(min(r, math.MaxInt64>>1))
		}
	}
	if len(topics) == 0 {
		return ev, &mercureError{400, "missing topic\n"}
	}
	for _, t := range topics {
		if reservedTopic(t) {
			return ev, &mercureError{403, "reserved topic\n"}
		}
	}
	// The canonical topic is a store key: the native key rules apply.
	if !validKey([]byte(topics[0])) || strings.HasPrefix(topics[0], "{sseloop}") {
		return ev, &mercureError{400, "invalid topic\n"}
	}
	if strings.ContainsAny(ev.PubID, "\x00\r\n") {
		return ev, &mercureError{400, "invalid id\n"}
	}
	if strings.ContainsAny(ev.Name, "\x00\r\n") {
		return ev, &mercureError{400, "invalid type\n"}
	}
	ev.Key, ev.Topics = topics[0], topics[1:]
	if len(ev.Topics) == 0 {
		ev.Topics = nil
	}
	return ev, nil
}

// mercureAnswer is what the answer to a publish needs from its request.
type mercureAnswer struct {
	keepAlive, http10 bool
	cors              string
}

// render answers a publish: 200 text/plain with the id, the status of a
// refused update, 503 when the store failed.
func (a mercureAnswer) render(e *Engine, evs []store.Event, err error) ([]byte, bool) {
	var me *mercureError
	switch {
	case errors.As(err, &me):
		e.m.httpError(me.status)
		if me.status == 401 || me.status == 403 {
			e.m.authFail.Inc()
		}
		return appendError(nil, me.status, a.cors, me.msg), false
	case err != nil:
		e.m.httpError(503)
		return appendError(nil, 503, a.cors, "store unavailable\n"), false
	}
	r := response{status: 200, ctype: textPlain, extra: a.cors, body: []byte(evs[0].PubID), keepAlive: a.keepAlive, http10: a.http10}
	return r.appendTo(nil), a.keepAlive
}
