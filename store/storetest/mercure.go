package storetest

import (
	"testing"
	"time"

	"github.com/sseloop/sseloop/store"
)

// testMercureFields: alternate topics, the private flag, retry and the
// publisher's id survive a round trip through After and Replay, next to
// plain events (which read back without them) in the same batch.
func (s suite) testMercureFields(t *testing.T) {
	st, _ := s.newStore(t, store.Options{})
	evs := []store.Event{
		{Key: "https://example.com/books/1", Name: "update", Data: []byte("a\nb"),
			Topics: []string{"https://example.com/users/7/books", "", "ü"}, Private: true, Retry: 1500, PubID: "urn:uuid:1"},
		{Key: "plain", Data: []byte("x")},
		{Key: "https://example.com/books/1", PubID: "custom-id"},
		{Key: "t", Topics: []string{"u"}},
		{Key: "t", Name: "n", Private: true},
	}
	if err := st.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "After", after(t, st, 0, 100), evs)
	wantEvents(t, "Replay", replay(t, st, []string{"https://example.com/books/1", "plain", "t"}, 0, 100), evs)
}

// testResolveID: a PubID resolves to its event while the event is retained,
// to the newest event when reused, and not at all once trimmed or expired.
func (s suite) testResolveID(t *testing.T) {
	st, clock := s.newStore(t, store.Options{MaxEvents: 2, TTL: time.Minute})
	res, ok := st.(store.IDResolver)
	if !ok {
		t.Skip("store does not implement IDResolver")
	}
	resolve := func(pub string) (uint64, bool) {
		t.Helper()
		id, found, err := res.ResolveID(ctx, pub)
		if err != nil {
			t.Fatalf("ResolveID(%q): %v", pub, err)
		}
		return id, found
	}
	add := func(key, pub string) store.Event {
		t.Helper()
		evs := []store.Event{{Key: key, PubID: pub}}
		if err := st.Append(ctx, evs); err != nil {
			t.Fatal(err)
		}
		return evs[0]
	}
	a1 := add("a", "first")
	if id, ok := resolve("first"); !ok || id != a1.ID {
		t.Errorf("ResolveID(first) = %d, %v; want %d, true", id, ok, a1.ID)
	}
	if _, ok := resolve("never"); ok {
		t.Error("ResolveID(never) found an event")
	}
	if _, ok := resolve(""); ok {
		t.Error(`ResolveID("") found an event`)
	}
	again := add("b", "dup")
	dup := add("b", "dup")
	if id, ok := resolve("dup"); !ok || id != dup.ID {
		t.Errorf("ResolveID(dup) = %d, %v; want the newer %d (not %d)", id, ok, dup.ID, again.ID)
	}
	// MaxEvents 2: two more events of a trim the first.
	add("a", "")
	add("a", "")
	if id, ok := resolve("first"); ok {
		t.Errorf("ResolveID(first) = %d after its event was trimmed", id)
	}
	clock.Advance(time.Minute + time.Millisecond)
	if id, ok := resolve("dup"); ok {
		t.Errorf("ResolveID(dup) = %d after its event expired", id)
	}
	sweep(t, st)
	late := add("c", "dup")
	if id, ok := resolve("dup"); !ok || id != late.ID {
		t.Errorf("ResolveID(dup) = %d, %v after reuse; want %d", id, ok, late.ID)
	}
}
