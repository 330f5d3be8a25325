package hub

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sseloop/sseloop/store"
)

// fakeShared is an in-memory store.Presence shared by "nodes": what the
// Redis store keeps, without expiry (a test removes a node with leave).
type fakeShared struct {
	store.Store
	mu    sync.Mutex
	nodes map[string]map[string]store.PresenceCount
	feed  [][]string // one entry per change, as the Redis change feed
	reads int        // PresenceOf calls
}

func newFakeShared(st store.Store) *fakeShared {
	return &fakeShared{Store: st, nodes: map[string]map[string]store.PresenceCount{}}
}

func (f *fakeShared) PublishPresence(_ context.Context, node string, _ time.Duration, counts []store.PresenceCount) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.nodes[node]
	if !ok {
		m = map[string]store.PresenceCount{}
		f.nodes[node] = m
	}
	var keys []string
	for _, c := range counts {
		keys = append(keys, c.Key)
		if c.Connections == 0 {
			delete(m, c.Key)
		} else {
			m[c.Key] = c
		}
	}
	if len(keys) > 0 {
		f.feed = append(f.feed, keys)
	}
	return !ok, nil
}

func (f *fakeShared) PresenceOf(_ context.Context, node string, keys []string) ([]store.PresenceCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	out := make([]store.PresenceCount, len(keys))
	for i, k := range keys {
		out[i].Key = k
		users := map[string]struct{}{}
		for n, m := range f.nodes {
			if n == node {
				continue
			}
			out[i].Connections += m[k].Connections
			for _, u := range m[k].Users {
				users[u] = struct{}{}
			}
		}
		out[i].Users = sortedUsers(users)
	}
	return out, nil
}

func (f *fakeShared) PresenceChanges(_ context.Context, cursor string) ([]string, string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := strconv.Itoa(len(f.feed))
	if cursor == "" {
		return nil, end, false, nil
	}
	from, _ := strconv.Atoi(cursor)
	var keys []string
	for _, e := range f.feed[from:] {
		keys = append(keys, e...)
	}
	return keys, end, false, nil
}

func (f *fakeShared) LeavePresence(_ context.Context, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.nodes[node] {
		keys = append(keys, k)
	}
	delete(f.nodes, node)
	if len(keys) > 0 {
		f.feed = append(f.feed, keys)
	}
	return nil
}

// TestPresenceAcrossNodesInHub: with a shared store, the hub publishes its
// own counts, and its subscribers get one event when another node's
// streams of their key join or leave (learned from the change feed), with
// the counts summed over nodes. A round reads other nodes' counts only for
// keys that changed, not for every live key.
func TestPresenceAcrossNodesInHub(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		shared := newFakeShared(bubbleStore(t))
		th := newTestHub(t, shared, 1, func(c *Config) {
			c.Poll = time.Hour
			c.Presence = PresenceConfig{Interval: interval, Live: func(string) bool { return true }}
		})
		s := th.open(0, Subscription{Keys: keys("room"), User: "a"}, true)
		_ = th.open(0, Subscription{Keys: keys("quiet"), User: "a"}, true)
		time.Sleep(interval + interval/10)
		synctest.Wait()
		shared.mu.Lock()
		own := shared.nodes[th.h.NodeID()]["room"]
		shared.mu.Unlock()
		if own.Connections != 1 || !slices.Equal(own.Users, []string{"a"}) {
			t.Fatalf("published %+v, want 1 connection of a", own)
		}
		if evs := presenceEvents(t, s); len(evs) != 1 || evs[0].Connections != 1 {
			t.Fatalf("first event: %+v", evs)
		}

		// Another node's streams join: one event with the sum.
		_, _ = shared.PublishPresence(context.Background(), "other", time.Minute,
			[]store.PresenceCount{{Key: "room", Connections: 2, Users: []string{"a", "b"}}})
		time.Sleep(interval)
		synctest.Wait()
		want := presenceData{Key: "room", Connections: 3, Users: 2, Joined: []string{"b"}, Left: []string{}}
		if evs := presenceEvents(t, s); len(evs) != 2 || !equalPresence(evs[1], want) {
			t.Fatalf("after the other node joined: %+v, want a second event %+v", evs, want)
		}
		// Nothing changes: no event and no read of the other nodes' counts.
		shared.mu.Lock()
		readsBefore := shared.reads
		shared.mu.Unlock()
		time.Sleep(2 * interval)
		synctest.Wait()
		shared.mu.Lock()
		reads := shared.reads - readsBefore
		shared.mu.Unlock()
		if n := len(presenceEvents(t, s)); n != 2 || reads != 0 {
			t.Fatalf("with nothing changed: %d events, %d reads of other nodes' counts", n, reads)
		}

		// The other node goes away (its keys reach the change feed).
		_ = shared.LeavePresence(context.Background(), "other")
		time.Sleep(interval)
		synctest.Wait()
		want = presenceData{Key: "room", Connections: 1, Users: 1, Joined: []string{}, Left: []string{"b"}}
		if evs := presenceEvents(t, s); len(evs) != 3 || !equalPresence(evs[2], want) {
			t.Fatalf("after the other node left: %+v, want a third event %+v", evs, want)
		}
	})
}

// TestPresenceSharedStoreWithoutUsersKeepsNothingPerStream: with a shared
// store but no users and no presence.keys, joins only mark their keys
// changed (cleared every round): no presence record stays per key or
// stream, and the node's counts still reach the store.
func TestPresenceSharedStoreWithoutUsersKeepsNothingPerStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		shared := newFakeShared(bubbleStore(t))
		th := newTestHub(t, shared, 1, func(c *Config) {
			c.Poll = time.Hour
			c.Presence.Interval = time.Second
		})
		for i := range 3 {
			th.open(0, Subscription{Keys: keys(fmt.Sprint("user:", i))}, true)
		}
		time.Sleep(time.Second + time.Second/10)
		synctest.Wait()
		fl := th.loops[0]
		fl.do(func() {
			if len(fl.hl.pres) != 0 || len(fl.hl.users) != 0 || len(fl.hl.presDirty) != 0 {
				t.Errorf("kept %d presence records, %d users, %d dirty keys", len(fl.hl.pres), len(fl.hl.users), len(fl.hl.presDirty))
			}
		})
		shared.mu.Lock()
		defer shared.mu.Unlock()
		if got := shared.nodes[th.h.NodeID()]; len(got) != 3 || got["user:1"].Connections != 1 {
			t.Fatalf("published %+v, want three keys of one connection", got)
		}
	})
}

// TestPresenceOffPublishesNothing: with presence off, a shared store gets
// no node counts and streams with users record nothing, so a million
// streams on Redis pay nothing for a feature nobody uses.
func TestPresenceOffPublishesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		shared := newFakeShared(bubbleStore(t))
		th := newTestHub(t, shared, 1, func(c *Config) {
			c.Poll = time.Hour
			c.Presence.Interval = time.Second
			c.Presence.Off = true
			c.Presence.Live = func(string) bool { return true }
		})
		for i := range 3 {
			th.open(0, Subscription{Keys: keys(fmt.Sprint("user:", i)), User: fmt.Sprint(i)}, true)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		fl := th.loops[0]
		fl.do(func() {
			if len(fl.hl.pres) != 0 || len(fl.hl.users) != 0 || len(fl.hl.presDirty) != 0 {
				t.Errorf("presence off kept %d presence records, %d users, %d dirty keys", len(fl.hl.pres), len(fl.hl.users), len(fl.hl.presDirty))
			}
		})
		shared.mu.Lock()
		defer shared.mu.Unlock()
		if len(shared.nodes) != 0 {
			t.Fatalf("presence off published %+v", shared.nodes)
		}
	})
}
