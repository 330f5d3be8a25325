package hub

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sseloop/sseloop/store"
)

// presenceData is the JSON of a presence event.
type presenceData struct {
	Key         string   `json:"key"`
	Connections int      `json:"connections"`
	Users       int      `json:"users"`
	Joined      []string `json:"joined"`
	Left        []string `json:"left"`
	Truncated   bool     `json:"truncated"`
}

// presenceEvents returns the presence events s's client has read.
func presenceEvents(t *testing.T, s *testStream) []presenceData {
	t.Helper()
	var out []presenceData
	for _, ev := range s.c.received() {
		if ev.name != "presence" {
			continue
		}
		if ev.hasID {
			t.Fatalf("presence event with an id: %+v", ev)
		}
		var d presenceData
		if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
			t.Fatalf("presence data %q: %v", ev.data, err)
		}
		out = append(out, d)
	}
	return out
}

func queryOne(t *testing.T, h *Hub, key string) PresenceInfo {
	t.Helper()
	infos, err := h.Presence(context.Background(), []string{key})
	if err != nil {
		t.Fatal(err)
	}
	return infos[0]
}

// TestPresenceCountsAndCoalescedEvents: five subscribers of one key with
// four distinct users (two share one) are connections 5, users 4; closing
// two changes the answer within one interval; every subscriber gets one
// presence event per interval that saw changes, however many joins and
// leaves it coalesces, and none while nothing changes.
func TestPresenceCountsAndCoalescedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		th := newTestHub(t, bubbleStore(t), 2, func(c *Config) {
			c.Poll = time.Hour
			c.Presence = PresenceConfig{Interval: interval, Live: func(k string) bool { return k == "room:7" }}
		})
		start := time.Now()
		users := []string{"a", "b", "c", "d", "d"}
		var streams []*testStream
		for i, u := range users {
			streams = append(streams, th.open(i%2, Subscription{Keys: keys("room:7"), User: u}, true))
			time.Sleep(interval / 10) // five joins spread over half an interval
		}
		// A key without live presence is counted but gets no events.
		quiet := th.open(0, Subscription{Keys: keys("other"), User: "a"}, true)

		time.Sleep(interval - time.Since(start) + interval/10)
		synctest.Wait()
		if got := queryOne(t, th.h, "room:7"); got.Connections != 5 || !slices.Equal(got.Users, []string{"a", "b", "c", "d"}) {
			t.Fatalf("after the joins: %+v, want 5 connections of a, b, c, d", got)
		}
		want := presenceData{Key: "room:7", Connections: 5, Users: 4, Joined: []string{"a", "b", "c", "d"}, Left: []string{}}
		for i, s := range streams {
			evs := presenceEvents(t, s)
			if len(evs) != 1 {
				t.Fatalf("stream %d got %d presence events in the first interval, want 1 (coalesced): %+v", i, len(evs), evs)
			}
			if !equalPresence(evs[0], want) {
				t.Fatalf("stream %d: %+v, want %+v", i, evs[0], want)
			}
		}

		// Nothing changes for two intervals: no event.
		time.Sleep(2 * interval)
		synctest.Wait()
		for i, s := range streams {
			if n := len(presenceEvents(t, s)); n != 1 {
				t.Fatalf("stream %d: %d presence events with nothing changed", i, n)
			}
		}

		// Close a (its only stream) and one of d's two.
		closedAt := time.Now()
		for _, i := range []int{0, 3} {
			s := streams[i]
			th.loops[i%2].do(func() { _ = s.c.Close() })
		}
		waitPresence := func() {
			for time.Since(closedAt) <= interval {
				time.Sleep(interval / 10)
				synctest.Wait()
				if got := queryOne(t, th.h, "room:7"); got.Connections == 3 {
					return
				}
			}
			t.Fatalf("connections still not 3 one interval after two closed")
		}
		waitPresence()
		if got := queryOne(t, th.h, "room:7"); !slices.Equal(got.Users, []string{"b", "c", "d"}) {
			t.Fatalf("after two closed: %+v, want users b, c, d", got)
		}
		time.Sleep(interval)
		synctest.Wait()
		want = presenceData{Key: "room:7", Connections: 3, Users: 3, Joined: []string{}, Left: []string{"a"}}
		for _, i := range []int{1, 2, 4} {
			evs := presenceEvents(t, streams[i])
			if len(evs) != 2 || !equalPresence(evs[1], want) {
				t.Fatalf("stream %d after two closed: %+v, want a second event %+v", i, evs, want)
			}
		}
		if evs := presenceEvents(t, quiet); len(evs) != 0 {
			t.Fatalf("a key without live presence got %+v", evs)
		}
		if got := queryOne(t, th.h, "other"); got.Connections != 1 || !slices.Equal(got.Users, []string{"a"}) {
			t.Fatalf("key without live presence: %+v", got)
		}
	})
}

func equalPresence(a, b presenceData) bool {
	norm := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return a.Key == b.Key && a.Connections == b.Connections && a.Users == b.Users &&
		slices.Equal(norm(a.Joined), norm(b.Joined)) && slices.Equal(norm(a.Left), norm(b.Left)) && a.Truncated == b.Truncated
}

// TestPresenceStateAfterReplay: a stream that replays gets the key's
// current presence right after its replayed events; a stream that joins a
// key whose presence is known gets it at once.
func TestPresenceStateAfterReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		th := newTestHub(t, bubbleStore(t), 1, func(c *Config) {
			c.Poll = time.Hour
			c.Presence = PresenceConfig{Interval: interval, Live: func(string) bool { return true }}
		})
		th.publish(store.Event{Key: "k", Data: []byte("one")}, store.Event{Key: "k", Data: []byte("two")})
		th.open(0, Subscription{Keys: keys("k"), User: "x"}, true)
		time.Sleep(interval + interval/10)
		synctest.Wait()

		late := th.open(0, Subscription{Keys: keys("k"), User: "y"}, true)
		synctest.Wait()
		if evs := presenceEvents(t, late); len(evs) != 1 || evs[0].Connections != 1 || !slices.Equal(evs[0].Joined, []string{"x"}) {
			t.Fatalf("a stream joining a known key got %+v at once, want the state (x alone)", evs)
		}

		r := th.open(0, Subscription{Keys: keys("k"), User: "z", Resume: true}, true)
		time.Sleep(interval / 10)
		synctest.Wait()
		got := r.c.received()
		var names []string
		for _, ev := range got {
			if !ev.comment {
				names = append(names, ev.name+":"+ev.data[:min(3, len(ev.data))])
			}
		}
		if len(names) != 3 || names[0] != ":one" || names[1] != ":two" || names[2][:9] != "presence:" {
			t.Fatalf("replaying stream got %v, want the two events, then presence", names)
		}
	})
}

// TestPresenceOffRecordsNothing: with no live keys and a store that is not
// shared, joins and leaves record nothing beyond the subscriber sets (no
// presence goroutine, no dirty keys), and queries still answer.
func TestPresenceOffRecordsNothing(t *testing.T) {
	th := newTestHub(t, nil, 1, nil)
	s := th.open(0, Subscription{Keys: keys("k")}, true)
	_ = th.open(0, Subscription{Keys: keys("k")}, true)
	fl := th.loops[0]
	fl.do(func() {
		if fl.hl.presDirty != nil || fl.hl.users != nil || fl.hl.pres != nil {
			t.Errorf("presence off, auth off: a join recorded presence state")
		}
	})
	if got := queryOne(t, th.h, "k"); got.Connections != 2 || got.Users != nil {
		t.Fatalf("query: %+v, want 2 connections, no users", got)
	}
	fl.do(func() { _ = s.c.Close() })
	if got := queryOne(t, th.h, "k"); got.Connections != 1 {
		t.Fatalf("after a close: %+v", got)
	}
	if evs := presenceEvents(t, s); len(evs) != 0 {
		t.Fatalf("presence off: got events %+v", evs)
	}
}

// TestKeySetUsers checks the inline-first-user bookkeeping against a plain
// map over random joins and leaves: a user is counted once, in one place.
func TestKeySetUsers(t *testing.T) {
	var ks keyPresence
	ref := map[string]int{}
	names := []string{"a", "b", "c"}
	seq := []int{0, 1, 0, -1, 2, -1, 1, -3, 0, -1, 1, 2, -2, -2, -1, 0, 0, -1, -3, -1}
	for i, op := range seq {
		if op >= 0 {
			ks.joinUser(names[op])
			ref[names[op]]++
		} else {
			u := names[-op-1]
			if ref[u] == 0 {
				continue
			}
			ks.leaveUser(u)
			if ref[u]--; ref[u] == 0 {
				delete(ref, u)
			}
		}
		got := ks.appendUsers(nil)
		slices.Sort(got)
		want := slices.Sorted(maps.Keys(ref))
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: users %v, want %v", i, got, want)
		}
		if ks.nUser > 0 && ks.users[ks.user] > 0 {
			t.Fatalf("step %d: %q both inline and in the map", i, ks.user)
		}
	}
}

// TestPresenceEventFrame checks the frame of a presence event: no id,
// sorted lists cut at MaxUserIDs with truncated, and user ids escaped as
// JSON (a token's sub may hold any character).
func TestPresenceEventFrame(t *testing.T) {
	h := &Hub{}
	h.pres.cfg.MaxUserIDs = 2
	set := func(us ...string) map[string]struct{} {
		m := map[string]struct{}{}
		for _, u := range us {
			m[u] = struct{}{}
		}
		return m
	}
	tests := []struct {
		name        string
		now, before map[string]struct{}
		want        string
	}{
		{"state", set("b", "a"), nil,
			`{"key":"k\"1","connections":3,"users":2,"joined":["a","b"],"left":[]}`},
		{"delta", set("a", "c"), set("a", "b"),
			`{"key":"k\"1","connections":3,"users":2,"joined":["c"],"left":["b"]}`},
		{"cut", set("d", "c", "b", "a"), nil,
			`{"key":"k\"1","connections":3,"users":4,"joined":["a","b"],"left":[],"truncated":true}`},
		{"escaped", set("x\ny", `q"`), nil,
			`{"key":"k\"1","connections":3,"users":2,"joined":["q\"","x\u000ay"],"left":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(h.appendPresenceEvent(nil, `k"1`, 3, tt.now, tt.before))
			if want := "event: presence\ndata: " + tt.want + "\n\n"; got != want {
				t.Fatalf("got  %q\nwant %q", got, want)
			}
		})
	}
}
