package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sseloop/sseloop/internal/redistest"
	"github.com/sseloop/sseloop/store"
)

// TestRedisPresence: nodes publish only their changed counts; a reader sums
// the other live nodes (connections added, users united); a node that
// stops publishing drops out after its ttl, one that says goodbye at once;
// a node whose entry was lost is told to publish everything again.
func TestRedisPresence(t *testing.T) {
	srv := redistest.Start(t)
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: newPrefix()}, store.Options{})
	ctx := context.Background()
	const long, short = time.Minute, time.Second
	pub := func(node string, ttl time.Duration, counts ...store.PresenceCount) bool {
		t.Helper()
		fresh, err := r.PublishPresence(ctx, node, ttl, counts)
		if err != nil {
			t.Fatal(err)
		}
		return fresh
	}
	of := func(node string, keys ...string) []store.PresenceCount {
		t.Helper()
		got, err := r.PresenceOf(ctx, node, keys)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	changes := func(cursor string) ([]string, string) {
		t.Helper()
		keys, next, lost, err := r.PresenceChanges(ctx, cursor)
		if err != nil || lost {
			t.Fatalf("PresenceChanges(%q): lost %v, %v", cursor, lost, err)
		}
		slices.Sort(keys)
		return keys, next
	}
	keys, cursor := changes("")
	if len(keys) != 0 {
		t.Fatalf("changes from the end: %v", keys)
	}
	if !pub("a", long, store.PresenceCount{Key: "room", Connections: 2, Users: []string{"u1", "u2"}}) {
		t.Error("first publish of a node is not fresh")
	}
	pub("b", long, store.PresenceCount{Key: "room", Connections: 3, Users: []string{"u2", "u3"}},
		store.PresenceCount{Key: "solo", Connections: 1})
	if pub("a", long) {
		t.Error("a heartbeat of a live node says fresh")
	}
	// Every change is in the feed once per key; a heartbeat adds nothing.
	if keys, cursor = changes(cursor); !slices.Equal(keys, []string{"room", "solo"}) {
		t.Fatalf("changes: %v, want room and solo", keys)
	}
	if keys, cursor = changes(cursor); len(keys) != 0 {
		t.Fatalf("changes after a heartbeat: %v", keys)
	}
	got := of("c", "room", "solo", "none")
	want := []store.PresenceCount{
		{Key: "room", Connections: 5, Users: []string{"u1", "u2", "u3"}},
		{Key: "solo", Connections: 1},
		{Key: "none"},
	}
	if !equalCounts(got, want) {
		t.Fatalf("from c: %+v, want %+v", got, want)
	}
	// A node does not count itself.
	if got := of("a", "room"); !equalCounts(got, []store.PresenceCount{{Key: "room", Connections: 3, Users: []string{"u2", "u3"}}}) {
		t.Fatalf("from a: %+v", got)
	}
	// A change: b's room drops to zero.
	pub("b", long, store.PresenceCount{Key: "room"})
	if got := of("c", "room"); !equalCounts(got, []store.PresenceCount{{Key: "room", Connections: 2, Users: []string{"u1", "u2"}}}) {
		t.Fatalf("after b left room: %+v", got)
	}
	if keys, cursor = changes(cursor); !slices.Equal(keys, []string{"room"}) {
		t.Fatalf("changes: %v, want room", keys)
	}
	// Goodbye.
	if err := r.LeavePresence(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got := of("c", "solo"); got[0].Connections != 0 {
		t.Fatalf("after b's goodbye: %+v", got)
	}
	if keys, cursor = changes(cursor); !slices.Equal(keys, []string{"solo"}) {
		t.Fatalf("changes after b's goodbye: %v, want solo (b's keys)", keys)
	}
	// A node that stops publishing drops out after its ttl (its hash
	// itself lives twice as long: readers must not wait for that).
	published := time.Now()
	pub("d", short, store.PresenceCount{Key: "room", Connections: 4, Users: []string{"u9"}})
	if got := of("c", "room"); got[0].Connections != 6 {
		t.Fatalf("with d: %+v", got)
	}
	_, cursor = changes(cursor)
	time.Sleep(time.Until(published.Add(short + 50*time.Millisecond)))
	if got := of("c", "room"); got[0].Connections != 2 {
		t.Fatalf("%v after d's last heartbeat (ttl %v): %+v, want d dropped", time.Since(published), short, got)
	}
	// The reader that removed d put d's keys in the change feed, so that
	// every node learns which keys d's death changed.
	if keys, cursor = changes(cursor); !slices.Equal(keys, []string{"room"}) {
		t.Fatalf("changes after d dropped out: %v, want room (d's keys)", keys)
	}
	if keys, _ = changes(cursor); len(keys) != 0 {
		t.Fatalf("nothing changed, got %v", keys)
	}
	// Its entry was removed: when it comes back it must publish everything.
	if !pub("d", short) {
		t.Error("a node that was dropped is not told it is fresh")
	}
}

func equalCounts(a, b []store.PresenceCount) bool {
	return slices.EqualFunc(a, b, func(x, y store.PresenceCount) bool {
		return x.Key == y.Key && x.Connections == y.Connections && slices.Equal(x.Users, y.Users)
	})
}
