package engine

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/hub"
	"github.com/sseloop/sseloop/store"
)

// The subscriptions API and subscription events (mercure.subscriptions),
// as the Mercure hub v0.24 writes them: a private update on the topic
// /.well-known/mercure/subscriptions/{topic}/{subscriber} when a
// subscription starts (active) and ends, and GET
// /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]] listing the
// active ones as JSON-LD with an ETag. Events go through the store, so
// every node's subscribers see every node's events; with a shared store
// the list covers every node too (mercure_cluster.go).

const (
	jsonldContext     = "https://mercure.rocks/"
	subscriptionsPath = mercurePath + "/subscriptions"
)

// subscription is one subscription as the hub renders it.
type subscription struct {
	Context     string          `json:"@context,omitempty"`
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Subscriber  string          `json:"subscriber"`
	Topic       string          `json:"topic"`
	Active      bool            `json:"active"`
	LastEventID string          `json:"lastEventID,omitempty"`
	Payload     json.RawMessage `json:"payload,omitempty"`
}

type subscriptionCollection struct {
	Context       string         `json:"@context"`
	ID            string         `json:"id"`
	Type          string         `json:"type"`
	LastEventID   string         `json:"lastEventID"`
	Subscriptions []subscription `json:"subscriptions"`
}

func subscriptionID(topic, subscriber string) string {
	return subscriptionsPath + "/" + url.QueryEscape(topic) + "/" + url.QueryEscape(subscriber)
}

// subscriptionsOf returns the subscriptions of one stream, those of topic
// only when topic is not "".
func subscriptionsOf(ms *hub.MercureSub, topic, context string, active bool) []subscription {
	var out []subscription
	for _, t := range ms.Topics {
		if topic != "" && t != topic {
			continue
		}
		out = append(out, subscription{Context: context, ID: subscriptionID(t, ms.ID), Type: "Subscription",
			Subscriber: ms.ID, Topic: t, Active: active, Payload: ms.Payload})
	}
	return out
}

// prepareSubscriptionEvents gives a new Mercure stream its subscriber id
// and payload, publishes its "active" events, and arranges the inactive
// ones for when it leaves. Loop goroutine.
func (l *loop) prepareSubscriptionEvents(ms *hub.MercureSub, cl *mercureClaims) {
	u, err := uuid.NewV7()
	if err != nil {
		return
	}
	ms.ID = "urn:uuid:" + u.String()
	if cl != nil && cl.Mercure.Payload != nil {
		ms.Payload, _ = json.Marshal(cl.Mercure.Payload)
	}
	l.e.publishSubscriptionEvents(ms, true)
	reg := l.e.subsReg
	if reg != nil {
		reg.set(ms.ID, recordOf(ms))
	}
	ms.Left = func() {
		l.e.publishSubscriptionEvents(ms, false)
		if reg != nil {
			reg.set(ms.ID, nil)
		}
	}
}

// publishSubscriptionEvents publishes one private update per topic of ms.
// The store key is the subscription's id, or, when that is too long for a
// key, the subscriptions collection with the id as the alternate topic.
func (e *Engine) publishSubscriptionEvents(ms *hub.MercureSub, active bool) {
	subs := subscriptionsOf(ms, "", jsonldContext, active)
	evs := make([]store.Event, 0, len(subs))
	for i := range subs {
		data, err := json.MarshalIndent(&subs[i], "", "  ")
		if err != nil {
			continue
		}
		u, err := uuid.NewV7()
		if err != nil {
			continue
		}
		ev := store.Event{Key: subs[i].ID, Private: true, Data: data, PubID: "urn:uuid:" + u.String()}
		if !validKey([]byte(ev.Key)) {
			ev.Key, ev.Topics = subscriptionsPath, []string{subs[i].ID}
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return
	}
	if !e.hub.Publish(&hub.Publication{Events: evs}) {
		e.log.Warn("mercure: publish queue full; subscription events dropped", "subscriber", ms.ID)
	}
}

// mercureSubscriptions serves the subscriptions API.
func (l *loop) mercureSubscriptions(c *conn, req *httpparse.Request) bool {
	if string(req.Method) != "GET" {
		return l.methodNotAllowed(c, "GET")
	}
	rest := strings.TrimPrefix(string(req.Path), subscriptionsPath)
	var topic, subscriber string
	if rest != "" {
		parts := strings.Split(rest[1:], "/")
		if rest[0] != '/' || len(parts) > 2 || parts[0] == "" {
			return l.badRequest(c, 404, "not found")
		}
		var err error
		if topic, err = url.QueryUnescape(parts[0]); err != nil {
			return l.badRequest(c, 400, "invalid topic")
		}
		if len(parts) == 2 {
			if subscriber, err = url.QueryUnescape(parts[1]); err != nil || subscriber == "" {
				return l.badRequest(c, 400, "invalid subscriber")
			}
		}
	}
	current := string(req.Path)
	if len(req.Query) > 0 {
		current += "?" + string(req.Query)
	}
	cors := l.e.mcors.headers(req.Header("Origin"))
	a := l.e.merc
	var tok string
	if a.sub != nil {
		var err error
		if tok, err = a.token(req, false); err != nil || tok == "" {
			return l.authError(c, 401, err != nil, cors, "subscriptions API needs a subscriber token")
		}
	}
	inm := string(req.Header("If-None-Match"))
	ka, h10 := req.KeepAlive, req.ProtoMinor == 0
	return l.async(c, func(ctx context.Context) ([]byte, bool) {
		if a.sub != nil {
			cl, err := a.sub.verify(tok)
			if err != nil || cl.Mercure.Subscribe == nil || !anyMatch(cl.Mercure.Subscribe, current) {
				l.e.m.authFail.Inc()
				l.e.m.httpError(401)
				return appendError(nil, 401, cors, errorBodies[401]), false
			}
		}
		last, err := l.e.lastEventID(ctx)
		if err != nil {
			l.e.m.httpError(503)
			return appendError(nil, 503, cors, "store unavailable\n"), false
		}
		if inm == last {
			r := response{status: 304, extra: cors + "ETag: " + last + "\r\n", keepAlive: ka, http10: h10}
			return r.appendTo(nil), ka
		}
		var mu sync.Mutex
		var subs []subscription
		err = l.e.hub.MercureStreams(ctx, func(ms *hub.MercureSub) {
			if subscriber != "" && ms.ID != subscriber {
				return
			}
			mu.Lock()
			subs = append(subs, subscriptionsOf(ms, topic, "", true)...)
			mu.Unlock()
		})
		if err != nil {
			l.e.m.httpError(503)
			return appendError(nil, 503, cors, "service unavailable\n"), false
		}
		mu.Lock()
		defer mu.Unlock()
		if reg := l.e.subsReg; reg != nil {
			others, err := reg.remote(ctx)
			if err != nil {
				l.e.m.httpError(503)
				return appendError(nil, 503, cors, "store unavailable\n"), false
			}
			for _, ms := range others {
				if subscriber == "" || ms.ID == subscriber {
					subs = append(subs, subscriptionsOf(ms, topic, "", true)...)
				}
			}
		}
		var body []byte
		if subscriber != "" {
			if len(subs) == 0 {
				l.e.m.httpError(404)
				return appendError(nil, 404, cors, errorBodies[404]), false
			}
			s := subs[0]
			s.Context, s.LastEventID = jsonldContext, last
			body, _ = json.MarshalIndent(&s, "", "  ")
		} else {
			if subs == nil {
				subs = []subscription{}
			}
			body, _ = json.MarshalIndent(&subscriptionCollection{Context: jsonldContext, ID: current, Type: "Subscriptions",
				LastEventID: last, Subscriptions: subs}, "", "  ")
		}
		r := response{status: 200, ctype: "application/ld+json", extra: cors + "ETag: " + last + "\r\n", body: body, keepAlive: ka, http10: h10}
		return r.appendTo(nil), ka
	})
}

// anyMatch reports whether one of sels matches topic (Mercure's canReceive).
func anyMatch(sels []string, topic string) bool {
	for _, s := range sels {
		if hub.MatchSelector(s, topic) {
			return true
		}
	}
	return false
}

// lastEventID is the id of the newest event as Mercure streams see it:
// its publisher's id, its decimal id, or "earliest" when there is none.
// Store worker.
func (e *Engine) lastEventID(ctx context.Context) (string, error) {
	last, err := e.st.LastID(ctx)
	if err != nil || last == 0 {
		return "earliest", err
	}
	evs, err := e.st.After(ctx, last-1, 1)
	if err != nil {
		return "", err
	}
	if len(evs) == 1 && evs[0].ID == last && evs[0].PubID != "" {
		return evs[0].PubID, nil
	}
	return strconv.FormatUint(last, 10), nil
}
