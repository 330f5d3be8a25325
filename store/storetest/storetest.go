// Package storetest is the contract suite that every store.Store
// implementation runs: call Run from the implementation's tests, and
// RunIncarnations with a way to wipe the store's state (ids never go
// backwards, Head, ErrCursorAhead).
//
// The suite drives time through a fake clock (Options.Now) and disables the
// background sweeper (Options.SweepInterval < 0); when the store implements
// store.Sweeper the suite calls Sweep itself. No assertion depends on timing.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sseloop/sseloop/store"
)

// Clock is a fake clock for Options.Now, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d (which may be negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Epoch is where the suite's clocks start.
var Epoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// Run runs the contract suite. open must return a new, empty store built with
// opts; Run closes it when the subtest ends (a second Close returning
// store.ErrClosed is fine).
func Run(t *testing.T, open func(t *testing.T, opts store.Options) store.Store) {
	s := suite{open: open}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"empty", s.testEmpty},
		{"ids_increase_across_keys_and_calls", s.testIDsIncrease},
		{"append_batch_atomic", s.testAppendAtomic},
		{"after", s.testAfter},
		{"replay_merges_keys", s.testReplay},
		{"key_isolation", s.testKeyIsolation},
		{"max_events", s.testMaxEvents},
		{"max_events_within_batch", s.testMaxEventsBatch},
		{"ttl", s.testTTL},
		{"ttl_forever", s.testTTLForever},
		{"ttl_limit", s.testTTLLimit},
		{"time_never_decreases", s.testTimeMonotonic},
		{"close", s.testClose},
		{"canceled_context", s.testCanceled},
		{"concurrent_append", s.testConcurrentAppend},
		{"data_roundtrip", s.testRoundTrip},
		{"returned_data_is_a_copy", s.testCopies},
		{"mercure_fields_roundtrip", s.testMercureFields},
		{"resolve_pub_id", s.testResolveID},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.fn)
	}
}

type suite struct {
	open func(t *testing.T, opts store.Options) store.Store
}

// newStore opens a store with a fake clock and no background sweeper.
func (s suite) newStore(t *testing.T, opts store.Options) (store.Store, *Clock) {
	t.Helper()
	clock := NewClock(Epoch)
	opts.Now = clock.Now
	opts.SweepInterval = -1
	st := s.open(t, opts)
	t.Cleanup(func() {
		if err := st.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return st, clock
}

var ctx = context.Background()

// appendOne appends one event and returns it with its id and time.
func appendOne(t *testing.T, st store.Store, key, data string) store.Event {
	t.Helper()
	evs := []store.Event{{Key: key, Data: []byte(data)}}
	if err := st.Append(ctx, evs); err != nil {
		t.Fatalf("Append(%q): %v", key, err)
	}
	return evs[0]
}

func appendBatch(t *testing.T, st store.Store, keys ...string) []store.Event {
	t.Helper()
	evs := make([]store.Event, len(keys))
	for i, k := range keys {
		evs[i] = store.Event{Key: k, Data: fmt.Appendf(nil, "%s#%d", k, i)}
	}
	if err := st.Append(ctx, evs); err != nil {
		t.Fatalf("Append(%q): %v", keys, err)
	}
	return evs
}

func after(t *testing.T, st store.Store, id uint64, limit int) []store.Event {
	t.Helper()
	evs, err := st.After(ctx, id, limit)
	if err != nil {
		t.Fatalf("After(%d, %d): %v", id, limit, err)
	}
	return evs
}

func replay(t *testing.T, st store.Store, keys []string, id uint64, limit int) []store.Event {
	t.Helper()
	evs, err := st.Replay(ctx, keys, id, limit)
	if err != nil {
		t.Fatalf("Replay(%q, %d, %d): %v", keys, id, limit, err)
	}
	return evs
}

func retention(t *testing.T, st store.Store, keys ...string) []store.Retention {
	t.Helper()
	r, err := st.Retention(ctx, keys)
	if err != nil {
		t.Fatalf("Retention(%q): %v", keys, err)
	}
	if len(r) != len(keys) {
		t.Fatalf("Retention(%q) returned %d entries", keys, len(r))
	}
	return r
}

func lastID(t *testing.T, st store.Store) uint64 {
	t.Helper()
	id, err := st.LastID(ctx)
	if err != nil {
		t.Fatalf("LastID: %v", err)
	}
	return id
}

func sweep(t *testing.T, st store.Store) (int, bool) {
	t.Helper()
	sw, ok := st.(store.Sweeper)
	if !ok {
		return 0, false
	}
	n, err := sw.Sweep(ctx)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	return n, true
}

func ids(evs []store.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// wantEvents compares ids, keys, names and data.
func wantEvents(t *testing.T, what string, got, want []store.Event) {
	t.Helper()
	if !slices.Equal(ids(got), ids(want)) {
		t.Fatalf("%s: ids %v, want %v", what, ids(got), ids(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Key != w.Key || g.Name != w.Name || !bytes.Equal(g.Data, w.Data) || g.Time != w.Time ||
			!slices.Equal(g.Topics, w.Topics) || g.Private != w.Private || g.Retry != w.Retry || g.PubID != w.PubID {
			t.Fatalf("%s: event %d = %+v, want %+v", what, g.ID, g, w)
		}
	}
}

func filterKeys(evs []store.Event, keys ...string) []store.Event {
	var out []store.Event
	for _, e := range evs {
		if slices.Contains(keys, e.Key) {
			out = append(out, e)
		}
	}
	return out
}

// emptyLastID is the LastID of a store that handed out no id: the one before
// its epoch (0 when it has none yet, as a fresh Redis).
func emptyLastID(t *testing.T, st store.Store) uint64 {
	t.Helper()
	hr, ok := st.(store.HeadReader)
	if !ok {
		return 0
	}
	h, err := hr.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return max(h.Epoch, 1) - 1
}

func (s suite) testEmpty(t *testing.T) {
	st, _ := s.newStore(t, store.Options{})
	empty := emptyLastID(t, st)
	if id := lastID(t, st); id != empty {
		t.Errorf("LastID = %d, want %d", id, empty)
	}
	if evs := after(t, st, 0, 10); len(evs) != 0 {
		t.Errorf("After = %v, want none", evs)
	}
	if evs := replay(t, st, []string{"a"}, 0, 10); len(evs) != 0 {
		t.Errorf("Replay = %v, want none", evs)
	}
	if r := retention(t, st, "a", "b"); r[0] != (store.Retention{}) || r[1] != (store.Retention{}) {
		t.Errorf("Retention = %+v, want zero", r)
	}
	if err := st.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if err := st.Append(ctx, nil); err != nil {
		t.Errorf("Append(nil): %v", err)
	}
	if id := lastID(t, st); id != empty {
		t.Errorf("LastID after empty Append = %d, want %d", id, empty)
	}
	if evs, err := st.After(ctx, empty+1, 10); !errors.Is(err, store.ErrCursorAhead) || len(evs) != 0 {
		t.Errorf("After(LastID+1) = %v, %v; want ErrCursorAhead", evs, err)
	}
	if e := appendOne(t, st, "a", "x"); e.ID != empty+1 && empty != 0 {
		t.Errorf("first id %d, want LastID+1 = %d", e.ID, empty+1)
	}
}

func (s suite) testIDsIncrease(t *testing.T) {
	st, clock := s.newStore(t, store.Options{})
	var all []store.Event
	all = append(all, appendOne(t, st, "a", "1"))
	all = append(all, appendOne(t, st, "b", "2"))
	clock.Advance(time.Second)
	all = append(all, appendOne(t, st, "a", "3"))
	all = append(all, appendBatch(t, st, "c", "a", "b")...)
	for i, e := range all {
		if e.ID == 0 {
			t.Fatalf("event %d got id 0", i)
		}
		if i > 0 && e.ID <= all[i-1].ID {
			t.Fatalf("ids not strictly increasing: %v", ids(all))
		}
	}
	if all[0].Time != Epoch.UnixMilli() || all[2].Time != Epoch.Add(time.Second).UnixMilli() {
		t.Errorf("times %d, %d; want the clock's %d, %d",
			all[0].Time, all[2].Time, Epoch.UnixMilli(), Epoch.Add(time.Second).UnixMilli())
	}
	if got := lastID(t, st); got != all[len(all)-1].ID {
		t.Errorf("LastID = %d, want %d", got, all[len(all)-1].ID)
	}
	wantEvents(t, "After(0)", after(t, st, 0, 100), all)
}

func (s suite) testAppendAtomic(t *testing.T) {
	st, _ := s.newStore(t, store.Options{MaxEvents: 10000})

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := st.Append(canceled, []store.Event{{Key: "a"}, {Key: "b"}}); err == nil {
		t.Fatal("Append with a canceled context succeeded")
	}
	if evs := after(t, st, 0, 10); len(evs) != 0 {
		t.Fatalf("a failed Append left events: %v", ids(evs))
	}

	// A reader never sees part of a batch.
	const batches, size = 40, 5
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range batches {
			keys := make([]string, size)
			for j := range keys {
				keys[j] = fmt.Sprintf("k%d", (i+j)%7)
			}
			evs := make([]store.Event, size)
			for j := range evs {
				evs[j] = store.Event{Key: keys[j], Data: []byte{byte(i)}}
			}
			if err := st.Append(ctx, evs); err != nil {
				t.Errorf("Append: %v", err)
				return
			}
		}
	}()
	for seen := 0; seen < batches*size; {
		evs, err := st.After(ctx, 0, batches*size+1)
		if err != nil {
			t.Fatalf("After: %v", err)
		}
		if len(evs)%size != 0 {
			t.Fatalf("After saw %d events: part of a batch", len(evs))
		}
		for i := 0; i < len(evs); i += size {
			for j := 1; j < size; j++ {
				if evs[i+j].Data[0] != evs[i].Data[0] {
					t.Fatalf("After mixed batches: %v", ids(evs))
				}
			}
		}
		seen = len(evs)
		select {
		case <-done:
			if t.Failed() {
				return
			}
		default:
		}
	}
	<-done
}

func (s suite) testAfter(t *testing.T) {
	st, _ := s.newStore(t, store.Options{})
	var all []store.Event
	for i := range 10 {
		all = append(all, appendOne(t, st, fmt.Sprintf("k%d", i%3), fmt.Sprint(i)))
	}
	last := all[len(all)-1].ID
	tests := []struct {
		name    string
		afterID uint64
		limit   int
		want    []store.Event
	}{
		{"from_start", 0, 100, all},
		{"limit", 0, 3, all[:3]},
		{"next_page", all[2].ID, 3, all[3:6]},
		{"middle", all[4].ID, 100, all[5:]},
		{"caught_up", last, 100, nil},
		{"limit_zero", 0, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantEvents(t, "After", after(t, st, tt.afterID, tt.limit), tt.want)
		})
	}
	// An afterID above LastID is a cursor from a store state that is gone.
	if evs, err := st.After(ctx, last+100, 100); !errors.Is(err, store.ErrCursorAhead) || len(evs) != 0 {
		t.Errorf("After(LastID+100) = %v, %v; want ErrCursorAhead", evs, err)
	}
	// Paging through with a small limit yields everything exactly once.
	var paged []store.Event
	for id := uint64(0); ; {
		evs := after(t, st, id, 4)
		if len(evs) == 0 {
			break
		}
		paged = append(paged, evs...)
		id = evs[len(evs)-1].ID
	}
	wantEvents(t, "paged After", paged, all)
}

func (s suite) testReplay(t *testing.T) {
	st, _ := s.newStore(t, store.Options{})
	var all []store.Event
	for i := range 12 {
		all = append(all, appendOne(t, st, []string{"a", "b", "c"}[i%3], fmt.Sprint(i)))
	}
	ac := filterKeys(all, "a", "c")
	tests := []struct {
		name    string
		keys    []string
		afterID uint64
		limit   int
		want    []store.Event
	}{
		{"one_key", []string{"b"}, 0, 100, filterKeys(all, "b")},
		{"two_keys_merged", []string{"c", "a"}, 0, 100, ac},
		{"after_id", []string{"a", "c"}, all[4].ID, 100, filterKeys(all[5:], "a", "c")},
		{"limit", []string{"a", "c"}, 0, 3, ac[:3]},
		{"limit_after_id", []string{"a", "c"}, all[4].ID, 2, filterKeys(all[5:], "a", "c")[:2]},
		{"duplicate_keys", []string{"a", "a", "c", "a"}, 0, 100, ac},
		{"unknown_key", []string{"zzz"}, 0, 100, nil},
		{"known_and_unknown", []string{"zzz", "b"}, 0, 100, filterKeys(all, "b")},
		{"caught_up", []string{"a"}, all[len(all)-1].ID, 100, nil},
		{"limit_zero", []string{"a"}, 0, 0, nil},
		{"no_keys", nil, 0, 100, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantEvents(t, "Replay", replay(t, st, tt.keys, tt.afterID, tt.limit), tt.want)
		})
	}
}

// Keys that are prefixes of each other, or contain separator or pattern
// characters, must not see each other's events: a store that builds range
// scans or patterns from keys could leak "a:b" into "a".
func (s suite) testKeyIsolation(t *testing.T) {
	keys := []string{"a", "a:b", "a:", "a*", "a?", "ab", "b", "a:b:c", "A", "a\\", "a[b]", "ключ"}
	st, _ := s.newStore(t, store.Options{MaxEvents: 3})
	var all []store.Event
	for round := range 5 {
		for i, k := range keys {
			if round <= i { // key i gets min(i+1, 5) events
				all = append(all, appendOne(t, st, k, fmt.Sprintf("%s/%d", k, round)))
			}
		}
	}
	rets := retention(t, st, keys...)
	for i, k := range keys {
		mine := filterKeys(all, k)
		want := mine[max(0, len(mine)-3):]
		wantEvents(t, fmt.Sprintf("Replay(%q)", k), replay(t, st, []string{k}, 0, 100), want)
		wantRet := store.Retention{Oldest: want[0].ID}
		if len(mine) > 3 {
			wantRet.Dropped = mine[len(mine)-4].ID
		}
		if rets[i] != wantRet {
			t.Errorf("Retention(%q) = %+v, want %+v", k, rets[i], wantRet)
		}
	}
}

func (s suite) testMaxEvents(t *testing.T) {
	st, _ := s.newStore(t, store.Options{MaxEvents: 3})
	var a, b []store.Event
	for i := range 5 {
		a = append(a, appendOne(t, st, "a", fmt.Sprint("a", i)))
		if i < 2 {
			b = append(b, appendOne(t, st, "b", fmt.Sprint("b", i)))
		}
	}
	wantEvents(t, "Replay(a)", replay(t, st, []string{"a"}, 0, 100), a[2:])
	wantEvents(t, "Replay(b)", replay(t, st, []string{"b"}, 0, 100), b)
	r := retention(t, st, "a", "b", "never")
	if want := (store.Retention{Oldest: a[2].ID, Dropped: a[1].ID}); r[0] != want {
		t.Errorf("Retention(a) = %+v, want %+v", r[0], want)
	}
	if want := (store.Retention{Oldest: b[0].ID}); r[1] != want {
		t.Errorf("Retention(b) = %+v, want %+v", r[1], want)
	}
	if r[2].Oldest != 0 {
		t.Errorf("Retention(never).Oldest = %d, want 0", r[2].Oldest)
	}
	// The change feed no longer has the trimmed events either.
	var retained []store.Event
	for _, e := range after(t, st, 0, 100) {
		if e.ID == a[0].ID || e.ID == a[1].ID {
			t.Errorf("After returned trimmed event %d", e.ID)
		}
		retained = append(retained, e)
	}
	if len(retained) != 5 {
		t.Errorf("After returned %d events, want 5", len(retained))
	}
}

func (s suite) testMaxEventsBatch(t *testing.T) {
	st, _ := s.newStore(t, store.Options{MaxEvents: 3})
	old := appendOne(t, st, "c", "old")
	evs := appendBatch(t, st, "c", "d", "c", "c", "c", "c")
	for i := 1; i < len(evs); i++ {
		if evs[i].ID <= evs[i-1].ID || evs[0].ID <= old.ID {
			t.Fatalf("batch ids not increasing: %v", ids(evs))
		}
	}
	c := filterKeys(evs, "c")
	wantEvents(t, "Replay(c)", replay(t, st, []string{"c"}, 0, 100), c[2:])
	wantEvents(t, "Replay(d)", replay(t, st, []string{"d"}, 0, 100), filterKeys(evs, "d"))
	r := retention(t, st, "c", "d")
	if want := (store.Retention{Oldest: c[2].ID, Dropped: c[1].ID}); r[0] != want {
		t.Errorf("Retention(c) = %+v, want %+v", r[0], want)
	}
	if want := (store.Retention{Oldest: evs[1].ID}); r[1] != want {
		t.Errorf("Retention(d) = %+v, want %+v", r[1], want)
	}
	wantEvents(t, "After", after(t, st, 0, 100), []store.Event{evs[1], c[2], c[3], c[4]})
}

func (s suite) testTTL(t *testing.T) {
	st, clock := s.newStore(t, store.Options{TTL: time.Minute})
	e1 := appendOne(t, st, "a", "1")
	clock.Advance(30 * time.Second)
	e2 := appendOne(t, st, "a", "2")
	e3 := appendOne(t, st, "b", "3")

	check := func(stage string, wantAfter []store.Event, wantA, wantB store.Retention) {
		t.Helper()
		wantEvents(t, stage+": After", after(t, st, 0, 100), wantAfter)
		wantEvents(t, stage+": Replay", replay(t, st, []string{"a", "b"}, 0, 100), wantAfter)
		r := retention(t, st, "a", "b")
		if r[0] != wantA || r[1] != wantB {
			t.Errorf("%s: Retention(a, b) = %+v, want [%+v %+v]", stage, r, wantA, wantB)
		}
	}
	check("young", []store.Event{e1, e2, e3},
		store.Retention{Oldest: e1.ID}, store.Retention{Oldest: e3.ID})

	clock.Advance(30*time.Second + time.Millisecond) // e1 is older than the TTL
	check("e1 expired, not swept", []store.Event{e2, e3},
		store.Retention{Oldest: e2.ID, Dropped: e1.ID}, store.Retention{Oldest: e3.ID})
	if n, ok := sweep(t, st); ok && n != 1 {
		t.Errorf("Sweep removed %d, want 1", n)
	}
	check("e1 swept", []store.Event{e2, e3},
		store.Retention{Oldest: e2.ID, Dropped: e1.ID}, store.Retention{Oldest: e3.ID})

	clock.Advance(time.Minute)
	check("all expired, not swept", nil,
		store.Retention{Dropped: e2.ID}, store.Retention{Dropped: e3.ID})
	if n, ok := sweep(t, st); ok && n != 2 {
		t.Errorf("Sweep removed %d, want 2", n)
	}
	// Dropped may now be higher than the key's own last id (the store may
	// forget a key's history and report a false gap), never lower.
	r := retention(t, st, "a", "b")
	if r[0].Oldest != 0 || r[0].Dropped < e2.ID || r[1].Oldest != 0 || r[1].Dropped < e3.ID {
		t.Errorf("all swept: Retention(a, b) = %+v, want Oldest 0, Dropped >= %d, %d", r, e2.ID, e3.ID)
	}
	if n, ok := sweep(t, st); ok && n != 0 {
		t.Errorf("second Sweep removed %d, want 0", n)
	}
	if got := lastID(t, st); got != e3.ID {
		t.Errorf("LastID after expiry = %d, want %d", got, e3.ID)
	}
	e4 := appendOne(t, st, "a", "4")
	if e4.ID <= e3.ID {
		t.Errorf("id after expiry = %d, want > %d", e4.ID, e3.ID)
	}
	wantEvents(t, "after new event", replay(t, st, []string{"a"}, 0, 100), []store.Event{e4})
	if r := retention(t, st, "a"); r[0].Oldest != e4.ID || r[0].Dropped < e2.ID {
		t.Errorf("Retention(a) = %+v, want Oldest %d, Dropped >= %d", r[0], e4.ID, e2.ID)
	}
}

// Expired events that are not swept yet take no room under the limit: After
// and Replay still return up to limit live events.
func (s suite) testTTLLimit(t *testing.T) {
	st, clock := s.newStore(t, store.Options{TTL: time.Minute})
	for i := range 5 {
		appendOne(t, st, "a", fmt.Sprint("old", i))
	}
	clock.Advance(30 * time.Second)
	var live []store.Event
	for i := range 4 {
		live = append(live, appendOne(t, st, "a", fmt.Sprint("new", i)))
	}
	clock.Advance(30*time.Second + time.Millisecond) // the first five expired
	wantEvents(t, "After", after(t, st, 0, 3), live[:3])
	wantEvents(t, "Replay", replay(t, st, []string{"a", "b"}, 0, 3), live[:3])
	if r := retention(t, st, "a"); r[0].Oldest != live[0].ID || r[0].Dropped != live[0].ID-1 {
		t.Errorf("Retention = %+v, want Oldest %d, Dropped %d", r[0], live[0].ID, live[0].ID-1)
	}
}

func (s suite) testTTLForever(t *testing.T) {
	st, clock := s.newStore(t, store.Options{TTL: -1})
	e := appendOne(t, st, "a", "1")
	clock.Advance(100 * 365 * 24 * time.Hour)
	if n, ok := sweep(t, st); ok && n != 0 {
		t.Errorf("Sweep removed %d, want 0", n)
	}
	wantEvents(t, "After", after(t, st, 0, 10), []store.Event{e})
	if r := retention(t, st, "a"); r[0] != (store.Retention{Oldest: e.ID}) {
		t.Errorf("Retention = %+v", r[0])
	}
}

func (s suite) testTimeMonotonic(t *testing.T) {
	st, clock := s.newStore(t, store.Options{})
	e1 := appendOne(t, st, "a", "1")
	clock.Advance(-time.Hour) // the wall clock stepped back
	e2 := appendOne(t, st, "a", "2")
	if e2.Time < e1.Time {
		t.Errorf("time went backwards with the clock: %d then %d", e1.Time, e2.Time)
	}
}

func (s suite) testClose(t *testing.T) {
	st, _ := s.newStore(t, store.Options{})
	appendOne(t, st, "a", "1")
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checks := []struct {
		name string
		fn   func() error
	}{
		{"Append", func() error { return st.Append(ctx, []store.Event{{Key: "a"}}) }},
		{"After", func() error { _, err := st.After(ctx, 0, 10); return err }},
		{"Replay", func() error { _, err := st.Replay(ctx, []string{"a"}, 0, 10); return err }},
		{"Retention", func() error { _, err := st.Retention(ctx, []string{"a"}); return err }},
		{"LastID", func() error { _, err := st.LastID(ctx); return err }},
		{"Ping", func() error { return st.Ping(ctx) }},
		{"Close", st.Close},
	}
	if sw, ok := st.(store.Sweeper); ok {
		checks = append(checks, struct {
			name string
			fn   func() error
		}{"Sweep", func() error { _, err := sw.Sweep(ctx); return err }})
	}
	for _, c := range checks {
		if err := c.fn(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", c.name, err)
		}
	}
}

func (s suite) testCanceled(t *testing.T) {
	st, _ := s.newStore(t, store.Options{})
	appendOne(t, st, "a", "1")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := st.Append(canceled, []store.Event{{Key: "a"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append: %v, want context.Canceled", err)
	}
	if _, err := st.Replay(canceled, []string{"a"}, 0, 10); !errors.Is(err, context.Canceled) {
		t.Errorf("Replay: %v, want context.Canceled", err)
	}
	if _, err := st.Retention(canceled, []string{"a"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Retention: %v, want context.Canceled", err)
	}
	// The store still works.
	if evs := after(t, st, 0, 10); len(evs) != 1 {
		t.Errorf("After = %d events, want 1", len(evs))
	}
}

// Many goroutines append while a reader follows the change feed: every id is
// unique, and the feed delivers every event once, in id order, never skipping
// one that commits late.
func (s suite) testConcurrentAppend(t *testing.T) {
	st, _ := s.newStore(t, store.Options{MaxEvents: 100000})
	const writers, appends = 8, 60
	keys := []string{"a", "b", "c", "d", "e"}
	var (
		mu    sync.Mutex
		added []store.Event
		wg    sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range appends {
				evs := make([]store.Event, 1+r.IntN(3))
				for j := range evs {
					evs[j] = store.Event{Key: keys[r.IntN(len(keys))], Data: fmt.Appendf(nil, "%d/%d/%d", w, i, j)}
				}
				if err := st.Append(ctx, evs); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				added = append(added, evs...)
				mu.Unlock()
			}
		})
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	var fed []store.Event
	var pos uint64
	for done := false; ; {
		select {
		case <-writersDone:
			done = true
		default:
		}
		evs, err := st.After(ctx, pos, 7)
		if err != nil {
			t.Fatalf("After: %v", err)
		}
		if len(evs) > 0 {
			fed = append(fed, evs...)
			pos = evs[len(evs)-1].ID
		} else if done {
			break
		}
	}
	if t.Failed() {
		return
	}
	slices.SortFunc(added, func(a, b store.Event) int { return cmpID(a.ID, b.ID) })
	for i := 1; i < len(added); i++ {
		if added[i].ID == added[i-1].ID {
			t.Fatalf("id %d assigned twice", added[i].ID)
		}
	}
	wantEvents(t, "followed feed", fed, added)
	wantEvents(t, "After(0)", after(t, st, 0, len(added)+1), added)
	for _, k := range keys {
		wantEvents(t, "Replay("+k+")", replay(t, st, []string{k}, 0, len(added)), filterKeys(added, k))
	}
	if got := lastID(t, st); got != added[len(added)-1].ID {
		t.Errorf("LastID = %d, want %d", got, added[len(added)-1].ID)
	}
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s suite) testRoundTrip(t *testing.T) {
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	tests := []struct {
		name string
		ev   store.Event
	}{
		{"poke_nil", store.Event{Key: "k"}},
		{"poke_empty", store.Event{Key: "k", Data: []byte{}}},
		{"text", store.Event{Key: "k", Data: []byte("hello")}},
		{"named", store.Event{Key: "k", Name: "update", Data: []byte(`{"a":1}`)}},
		{"named_poke", store.Event{Key: "k", Name: "ping"}},
		{"nul_bytes", store.Event{Key: "k", Data: []byte{0, 1, 0, 0xff}}},
		{"crlf_lines", store.Event{Key: "k", Data: []byte("data: x\r\n\r\nid: 9\n\n*3\r\n$3\r\nset\r\n")}},
		{"invalid_utf8", store.Event{Key: "k", Data: []byte{0xff, 0xfe, 0xc3}}},
		{"big", store.Event{Key: "k", Data: big}},
		{"unicode_key", store.Event{Key: "ключ/🔑", Data: []byte("x")}},
		{"long_key", store.Event{Key: string(bytes.Repeat([]byte("k"), 256)), Data: []byte("x")}},
	}
	st, _ := s.newStore(t, store.Options{})
	var all []store.Event
	for _, tt := range tests {
		ev := tt.ev
		in := []store.Event{ev}
		if err := st.Append(ctx, in); err != nil {
			t.Fatalf("%s: Append: %v", tt.name, err)
		}
		all = append(all, in[0])
	}
	got := after(t, st, 0, 100)
	if len(got) != len(all) {
		t.Fatalf("After returned %d events, want %d", len(got), len(all))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := got[i]
			if g.ID != all[i].ID || g.Key != tt.ev.Key || g.Name != tt.ev.Name || !bytes.Equal(g.Data, tt.ev.Data) {
				t.Errorf("After: {%d %q %q %q}, want {%d %q %q %q}",
					g.ID, g.Key, g.Name, g.Data, all[i].ID, tt.ev.Key, tt.ev.Name, tt.ev.Data)
			}
			r := replay(t, st, []string{tt.ev.Key}, all[i].ID-1, 1)
			if len(r) != 1 || r[0].ID != all[i].ID || !bytes.Equal(r[0].Data, tt.ev.Data) || r[0].Name != tt.ev.Name {
				t.Errorf("Replay: %+v", r)
			}
		})
	}
}

// The store copies data in and out: the caller may reuse its buffers, and
// whoever modifies a returned event does not modify the store's.
func (s suite) testCopies(t *testing.T) {
	st, _ := s.newStore(t, store.Options{})
	buf := []byte("original")
	evs := []store.Event{{Key: "a", Data: buf}, {Key: "a", Data: []byte("second")}}
	if err := st.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXXXXX")
	got := after(t, st, 0, 10)
	if string(got[0].Data) != "original" {
		t.Fatalf("stored data changed with the caller's buffer: %q", got[0].Data)
	}
	got[0].Data[0] = 'Y'
	got[0].Data = append(got[0].Data, "-appended"...)
	if again := after(t, st, 0, 10); string(again[0].Data) != "original" || string(again[1].Data) != "second" {
		t.Fatalf("modifying a returned event changed the store: %q, %q", again[0].Data, again[1].Data)
	}
	if string(got[1].Data) != "second" {
		t.Fatalf("appending to one returned Data overwrote the next: %q", got[1].Data)
	}
}

// Wipe destroys a store's state the way a crash or an operator does (restart
// a memory store, delete a file, FLUSHALL a Redis) and returns the store to
// use after it: a new one opened with opts, or st itself when the store
// outlives its state (a Redis store of a running node).
type Wipe func(t *testing.T, st store.Store, opts store.Options) store.Store

// RunIncarnations runs the tests of ids across incarnations (see the store
// package doc). open is as for Run; the stores must implement
// store.HeadReader.
func RunIncarnations(t *testing.T, open func(t *testing.T, opts store.Options) store.Store, wipe Wipe) {
	s := suite{open: open}
	t.Run("ids_never_go_backwards_after_wipe", func(t *testing.T) { s.testWipe(t, wipe) })
	t.Run("epoch_stable_within_incarnation", s.testEpochStable)
	t.Run("ids_follow_the_wall_clock_below_2^53", s.testRealClock)
}

func head(t *testing.T, st store.Store) store.Head {
	t.Helper()
	hr, ok := st.(store.HeadReader)
	if !ok {
		t.Fatalf("%T does not implement store.HeadReader", st)
	}
	h, err := hr.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return h
}

// contiguous fails unless evs have ids first, first+1, ...
func contiguous(t *testing.T, what string, evs []store.Event) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		if evs[i].ID != evs[i-1].ID+1 {
			t.Fatalf("%s: ids %v not contiguous", what, ids(evs))
		}
	}
}

// A wiped store's caller can tell (a new Epoch, or ErrCursorAhead for its
// cursor), and new ids are above every id handed out before, contiguous, and
// below 2^53, with no old event served as new.
func (s suite) testWipe(t *testing.T, wipe Wipe) {
	opts := store.Options{}
	st, clock := s.newStore(t, opts)
	old := appendBatch(t, st, "a", "b", "a")
	old = append(old, appendBatch(t, st, "b", "c")...)
	contiguous(t, "before the wipe", old)
	h1 := head(t, st)
	cursor := old[len(old)-1].ID
	if h1.Epoch == 0 || h1.Epoch > old[0].ID || h1.LastID != cursor {
		t.Fatalf("Head = %+v before the wipe, want Epoch in (0, %d] and LastID %d", h1, old[0].ID, cursor)
	}

	// A restart takes at least a millisecond; a Redis node remembers the ids
	// it saw anyway.
	clock.Advance(time.Millisecond)
	opts.Now, opts.SweepInterval = clock.Now, -1
	st2 := wipe(t, st, opts)
	if st2 != st {
		t.Cleanup(func() { _ = st2.Close() })
	}
	h2 := head(t, st2)
	if h2.Epoch == h1.Epoch {
		t.Errorf("Head after the wipe = %+v: same epoch as before (%+v)", h2, h1)
	}
	// The follower's cursor: either no event and ErrCursorAhead, or no event
	// (the store starts above it).
	evs, err := st2.After(ctx, cursor, 10)
	if len(evs) != 0 || (err != nil && !errors.Is(err, store.ErrCursorAhead)) {
		t.Errorf("After(old cursor) on the wiped store = %v, %v; want nothing (or ErrCursorAhead)", ids(evs), err)
	}
	if err == nil && h2.LastID < cursor {
		t.Errorf("After(%d) returned no error though LastID %d is below it", cursor, h2.LastID)
	}
	if errors.Is(err, store.ErrCursorAhead) && h2.LastID >= cursor {
		t.Errorf("After(%d) = ErrCursorAhead though LastID is %d", cursor, h2.LastID)
	}

	nu := appendBatch(t, st2, "a", "b")
	nu = append(nu, appendOne(t, st2, "a", "x"))
	contiguous(t, "after the wipe", nu)
	if nu[0].ID <= cursor {
		t.Fatalf("first id after the wipe %d, not above the last before it %d", nu[0].ID, cursor)
	}
	if nu[len(nu)-1].ID > store.MaxID {
		t.Errorf("id %d above 2^53-1", nu[len(nu)-1].ID)
	}
	h3 := head(t, st2)
	if h3.Epoch == h1.Epoch || h3.Epoch > nu[0].ID || h3.Epoch <= cursor || h3.LastID != nu[len(nu)-1].ID {
		t.Errorf("Head after new events = %+v, want an epoch in (%d, %d] and LastID %d", h3, cursor, nu[0].ID, nu[len(nu)-1].ID)
	}
	// Nothing from before the wipe is served, from the old cursor or from 0.
	wantEvents(t, "Replay from the old cursor", replay(t, st2, []string{"a", "b", "c"}, cursor, 100), nu)
	wantEvents(t, "Replay from 0", replay(t, st2, []string{"a", "b", "c"}, 0, 100), nu)
	if h2.LastID <= cursor {
		// A follower restarting from Epoch-1 reads exactly the new events.
		wantEvents(t, "After(Epoch-1)", after(t, st2, h3.Epoch-1, 100), nu)
	} else {
		wantEvents(t, "After(old cursor)", after(t, st2, cursor, 100), nu)
	}
}

// Head's epoch stays while events are appended, swept and trimmed; LastID
// moves with them.
func (s suite) testEpochStable(t *testing.T) {
	st, clock := s.newStore(t, store.Options{MaxEvents: 2, TTL: time.Minute})
	h0 := head(t, st)
	evs := appendBatch(t, st, "a", "a", "a", "b")
	h1 := head(t, st)
	if h1.Epoch == 0 || (h0.Epoch != 0 && h0.Epoch != h1.Epoch) || h1.LastID != evs[3].ID {
		t.Fatalf("Head = %+v then %+v, want one epoch and LastID %d", h0, h1, evs[3].ID)
	}
	if h0.Epoch != 0 && (evs[0].ID != h0.Epoch || h0.LastID != h0.Epoch-1) {
		t.Errorf("first id %d, Head before it %+v: want the epoch, and LastID the id before", evs[0].ID, h0)
	}
	clock.Advance(2 * time.Minute)
	sweep(t, st)
	more := appendBatch(t, st, "c")
	if h := head(t, st); h.Epoch != h1.Epoch || h.LastID != more[0].ID || more[0].ID != evs[3].ID+1 {
		t.Errorf("Head after a sweep and an Append = %+v (id %d), want epoch %d and contiguous ids", h, more[0].ID, h1.Epoch)
	}
}

// With the real clock the first id is about unix_ms*1000, below 2^53.
func (s suite) testRealClock(t *testing.T) {
	before := uint64(time.Now().UnixMilli()) * 1000
	st := s.open(t, store.Options{SweepInterval: -1})
	t.Cleanup(func() { _ = st.Close() })
	e := appendOne(t, st, "a", "x")
	after := uint64(time.Now().UnixMilli()+1) * 1000
	if e.ID < before || e.ID > after || e.ID > store.MaxID {
		t.Errorf("first id %d with the real clock, want in [%d, %d] and below %d", e.ID, before, after, uint64(store.MaxID))
	}
}
