package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/hub"
	"github.com/sseloop/sseloop/store"
)

// trigger publishes the event(s) of a POST /trigger request: it checks the
// publisher, builds a hub.Publication and answers from its Done.
func (l *loop) trigger(c *conn, req *httpparse.Request, body []byte) bool {
	a := trigAnswer{keepAlive: req.KeepAlive, http10: req.ProtoMinor == 0, cors: l.e.cors.headers(req.Header("Origin"))}
	p := &hub.Publication{}
	if rest := req.Path[len("/trigger"):]; len(rest) > 1 {
		key, err := httpparse.AppendUnescape(nil, rest[1:], false)
		if err != nil || !validKey(key) {
			return l.badRequest(c, 400, "invalid key")
		}
		ev := store.Event{Key: string(key), Data: bytes.Clone(body)}
		for q := req.Query; len(q) > 0; {
			var name, value []byte
			name, value, q = httpparse.NextQuery(q)
			if string(name) == "event" {
				n, err := httpparse.AppendUnescape(nil, value, true)
				if err != nil || !validEventName(n) {
					return l.badRequest(c, 400, "invalid event name")
				}
				ev.Name = string(n)
			}
		}
		p.Events = []store.Event{ev}
	} else {
		if len(body) == 0 {
			return l.badRequest(c, 400, "missing body")
		}
		// Parsed off the loop, by the hub's publishers.
		raw, maxEvents := bytes.Clone(body), l.e.cfg.Limits.MaxBatchEvents
		a.batch = true
		p.Prepare = func(p *hub.Publication) error {
			evs, err := parseBatch(raw, maxEvents)
			if errors.Is(err, errTooManyEvents) {
				l.e.m.limit("max_batch_events")
			}
			p.Events = evs
			return err
		}
	}

	// Publisher auth: a static key allows every key; a JWT allows the keys
	// its sseloop.publish patterns cover (a batch is checked once parsed);
	// with neither configured only loopback may publish.
	au := l.e.auth
	tok, present := bearer(req)
	switch {
	case !au.publishAuthConfigured():
		if !isLoopback(c.gc().RemoteAddr()) {
			return l.authError(c, 403, false, a.cors, "no publisher auth configured and client is not loopback")
		}
		return l.publish(c, p, a)
	case len(tok) == 0:
		return l.authError(c, 401, present, a.cors, "no publisher credentials")
	case au.staticPublisher(tok):
		return l.publish(c, p, a)
	case !au.jwtEnabled():
		return l.authError(c, 401, true, a.cors, "unknown publish key")
	}
	return l.verifyThen(c, tok, func(cl *tokenClaims, err error) bool {
		if err != nil {
			return l.authError(c, 401, true, a.cors, err.Error())
		}
		allowed := cl.publish()
		if p.Prepare == nil {
			if !matchAny(allowed, p.Events[0].Key) {
				return l.authError(c, 403, true, a.cors, "token does not cover the key")
			}
			return l.publish(c, p, a)
		}
		parse := p.Prepare
		p.Prepare = func(p *hub.Publication) error {
			if err := parse(p); err != nil {
				return err
			}
			for i := range p.Events {
				if !matchAny(allowed, p.Events[i].Key) {
					l.e.m.authFail.Inc()
					return errForbidden
				}
			}
			return nil
		}
		return l.publish(c, p, a)
	})
}

// trigAnswer is what the answer to a trigger needs from its request.
type trigAnswer struct {
	keepAlive, http10 bool
	batch             bool   // POST /trigger: answer {"ids":[…]}
	cors              string // CORS header lines
}

// publish hands p to the hub; c is busy until Done answers on the loop.
func (l *loop) publish(c *conn, p *hub.Publication, a trigAnswer) bool {
	p.Done = func(evs []store.Event, err error) {
		resp, keep := a.render(l.e, evs, err)
		l.Execute(func() { l.finish(c, resp, keep) })
	}
	return l.submit(c, l.e.hub.Publish(p))
}

// errForbidden: a batch names a key the publisher's token does not cover.
var errForbidden = errors.New("forbidden")

// badBatchError is a batch that cannot be published, with a message that
// never quotes the input.
type badBatchError struct{ msg string }

func (e *badBatchError) Error() string { return e.msg }

var errTooManyEvents = &badBatchError{"too many events in batch"}

// render answers a publication: 200 with the ids, 400 for a bad batch, 403
// for a key the token does not cover, 503 when the store failed.
func (a trigAnswer) render(e *Engine, evs []store.Event, err error) (resp []byte, keep bool) {
	var bad *badBatchError
	switch {
	case errors.As(err, &bad):
		e.m.httpError(400)
		return appendError(nil, 400, a.cors, bad.msg+"\n"), false
	case errors.Is(err, errForbidden):
		e.m.httpError(403)
		return appendError(nil, 403, a.cors, errorBodies[403]), false
	case err != nil:
		e.m.httpError(503)
		return appendError(nil, 503, a.cors, "store unavailable\n"), false
	}
	var body []byte
	if a.batch {
		body = append(body, `{"ids":[`...)
		for i := range evs {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(body, '"')
			body = strconv.AppendUint(body, evs[i].ID, 10)
			body = append(body, '"')
		}
		body = append(body, "]}\n"...)
	} else {
		body = append(body, `{"id":"`...)
		body = strconv.AppendUint(body, evs[0].ID, 10)
		body = append(body, "\"}\n"...)
	}
	r := response{status: 200, ctype: "application/json", extra: a.cors, body: body, keepAlive: a.keepAlive, http10: a.http10}
	return r.appendTo(nil), a.keepAlive
}

// batchRequest is the body of POST /trigger.
type batchRequest struct {
	Events []struct {
		Key   string          `json:"key"`
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	} `json:"events"`
}

// parseBatch decodes and checks a POST /trigger body. data may be a JSON
// string (sent as is), any other JSON value (sent as its JSON text), or
// absent/null (a poke). Errors are *badBatchError.
func parseBatch(raw []byte, maxEvents int) ([]store.Event, error) {
	var br batchRequest
	if err := json.Unmarshal(raw, &br); err != nil {
		return nil, &badBatchError{"invalid JSON batch"}
	}
	if len(br.Events) == 0 {
		return nil, &badBatchError{"empty batch"}
	}
	if len(br.Events) > maxEvents {
		return nil, errTooManyEvents
	}
	evs := make([]store.Event, len(br.Events))
	for i, in := range br.Events {
		at := "events[" + strconv.Itoa(i) + "]"
		if !validKey([]byte(in.Key)) {
			return nil, &badBatchError{"invalid key at " + at}
		}
		if !validEventName([]byte(in.Event)) {
			return nil, &badBatchError{"invalid event name at " + at}
		}
		evs[i] = store.Event{Key: in.Key, Name: in.Event}
		switch d := in.Data; {
		case len(d) == 0 || string(d) == "null":
		case d[0] == '"':
			var s string
			if err := json.Unmarshal(d, &s); err != nil {
				return nil, &badBatchError{"invalid data at " + at}
			}
			evs[i].Data = []byte(s)
		default:
			evs[i].Data = append([]byte(nil), d...)
		}
	}
	return evs, nil
}
