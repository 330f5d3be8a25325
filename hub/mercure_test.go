package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sseloop/sseloop/store"
)

func mercureSub(topics []string, auth ...string) Subscription {
	return Subscription{Mercure: &MercureSub{Topics: topics, Auth: auth}}
}

// TestMercureDelivery: which Mercure (and native) streams get which events,
// live: exact topics, URI templates matched as the Mercure hub matches them
// ({id} stops at "/", {+path} does not), "*", alternate topics, private
// events (the alternate-topic trick), and each event at most once per
// stream however many of its selectors match.
func TestMercureDelivery(t *testing.T) {
	th := newTestHub(t, nil, 2, nil)
	const book = "https://example.com/books/1"
	streams := map[string]*testStream{
		"exact":        th.open(0, mercureSub([]string{book}), true),
		"template_id":  th.open(1, mercureSub([]string{"https://example.com/books/{id}"}), true),
		"template_all": th.open(0, mercureSub([]string{"https://example.com/{+path}"}), true),
		"star":         th.open(1, mercureSub([]string{"*"}), true),
		"twice":        th.open(0, mercureSub([]string{book, "https://example.com/books/{id}", "*"}), true),
		"private_auth": th.open(1, mercureSub([]string{book}, "https://example.com/users/7/{x}"), true),
		"private_star": th.open(0, mercureSub([]string{"https://example.com/books/{id}"}, "*"), true),
		"alt_only":     th.open(1, mercureSub([]string{"urn:alt"}), true),
		"native":       th.open(0, Subscription{Keys: keys(book)}, true),
	}
	id := th.publish(
		store.Event{Key: book, Data: []byte("public")},
		store.Event{Key: "https://example.com/books/a/b", Data: []byte("deep")},
		store.Event{Key: book, Topics: []string{"https://example.com/users/7/books"}, Private: true, Data: []byte("private")},
		store.Event{Key: "other", Topics: []string{"urn:alt", book}, Data: []byte("alt")},
		store.Event{Key: book}, // a native poke
	)
	want := map[string][]uint64{
		"exact":        {id[0], id[3], id[4]},
		"template_id":  {id[0], id[3], id[4]},
		"template_all": {id[0], id[1], id[3], id[4]},
		"star":         {id[0], id[1], id[3], id[4]},
		"twice":        {id[0], id[1], id[3], id[4]},
		"private_auth": {id[0], id[2], id[3], id[4]},
		"private_star": {id[0], id[2], id[3], id[4]},
		"alt_only":     {id[3]},
		"native":       {id[0], id[4]}, // never a private event; alternates are Mercure's
	}
	for name, s := range streams {
		w := want[name]
		waitUntil(t, name+" gets its events", func() bool {
			got := ids(s.c.received())
			return len(got) >= len(w) && (len(w) == 0 || slices.Contains(got, w[len(w)-1]))
		})
		if got := ids(s.c.received()); !slices.Equal(got, w) {
			t.Errorf("%s got %v, want %v", name, got, w)
		}
	}
	// Frames are Mercure's: id after event/retry, data lines; the poke
	// carries its JSON.
	c := streams["exact"].c
	c.mu.Lock()
	got := c.got.String()
	c.mu.Unlock()
	if !strings.Contains(got, fmt.Sprintf("id: %d\ndata: public\n\n", id[0])) ||
		!strings.Contains(got, fmt.Sprintf(`id: %d`+"\n"+`data: {"key":"%s","id":"%d"`, id[4], book, id[4])) {
		t.Errorf("exact stream wrote %q", got)
	}
}

// TestMercureRegistryReleased: templates are compiled once per distinct
// selector and forgotten with their last stream.
func TestMercureRegistryReleased(t *testing.T) {
	th := newTestHub(t, nil, 1, nil)
	a := th.open(0, mercureSub([]string{"/t/{id}", "/exact"}, "/p/{x}"), true)
	b := th.open(0, mercureSub([]string{"/t/{id}"}), true)
	if n := len(th.h.tmpls.snapshot()); n != 2 {
		t.Fatalf("registry holds %d templates, want 2 (one per distinct template)", n)
	}
	th.loops[0].do(func() { a.c.Close(); b.c.Close() })
	if n := len(th.h.tmpls.snapshot()); n != 0 || th.h.mercN.Load() != 0 {
		t.Fatalf("after close: %d templates, %d Mercure streams; want none", n, th.h.mercN.Load())
	}
	if ml := th.loops[0].hl.merc; len(ml.exact)+len(ml.tmpl)+ml.all.n+len(ml.streams) != 0 || ml.all.head != nil {
		t.Fatalf("loop still holds Mercure sets: %+v", ml)
	}
}

// TestMercureReplay: a resuming Mercure stream gets exactly the retained
// events its selectors match after its id, then live ones, with no
// duplicate at the seam; "earliest" is a resume from 0.
func TestMercureReplay(t *testing.T) {
	th := newTestHub(t, nil, 1, func(c *Config) { c.MaxOutboundBytes = 2 << 10 })
	var evs []store.Event
	for i := range 400 {
		k := fmt.Sprintf("/t/%d", i%4)
		evs = append(evs, store.Event{Key: k, Data: []byte(strings.Repeat("x", 40)), Private: i%8 == 1})
	}
	id := th.publish(evs...)
	s := th.open(0, Subscription{Resume: true, LastID: id[99], Mercure: &MercureSub{Topics: []string{"/t/{n}"}}}, false)
	from0 := th.open(0, Subscription{Resume: true, Mercure: &MercureSub{Topics: []string{"/t/1"}, Auth: []string{"/t/1"}}}, true)
	live := th.publish(store.Event{Key: "/t/1", Data: []byte("live")})[0]
	var want []uint64
	var want0 []uint64
	for i := range evs {
		if i > 99 && !evs[i].Private {
			want = append(want, id[i])
		}
		if i%4 == 1 {
			want0 = append(want0, id[i])
		}
	}
	want, want0 = append(want, live), append(want0, live)
	waitUntil(t, "replay and live event", func() bool {
		s.c.drain(-1)
		got := ids(s.c.received())
		return len(got) > 0 && got[len(got)-1] == live
	})
	if got := ids(s.c.received()); !slices.Equal(got, want) {
		t.Errorf("resumed stream got %d events %v..., want %d", len(got), got[:min(5, len(got))], len(want))
	}
	waitUntil(t, "replay from 0", func() bool {
		got := ids(from0.c.received())
		return len(got) > 0 && got[len(got)-1] == live
	})
	if got := ids(from0.c.received()); !slices.Equal(got, want0) {
		t.Errorf("earliest stream got %v, want %v", got, want0)
	}
}

func TestAppendMercureFrame(t *testing.T) {
	tests := []struct {
		name string
		ev   store.Event
		want string
	}{
		{"all_fields", store.Event{ID: 9, Key: "k", Name: "t", Retry: 1500, PubID: "urn:uuid:x", Data: []byte("a\r\nb\rc\nd")},
			"event: t\nretry: 1500\nid: urn:uuid:x\ndata: a\ndata: b\ndata: c\ndata: d\n\n"},
		{"empty_data_one_line", store.Event{ID: 9, Key: "k", PubID: "p"}, "id: p\ndata: \n\n"},
		{"native_poke", store.Event{ID: 9, Key: "k", Time: 5}, "id: 9\ndata: {\"key\":\"k\",\"id\":\"9\",\"ts\":5}\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var scratch []byte
			if got := string(AppendMercureFrame(nil, &tt.ev, &scratch)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestMercureUnknownIDGetsGapThenLive: a Mercure stream resuming from an
// id newer than the store's (a wiped store) gets a gap, then live events.
func TestMercureUnknownIDGetsGapThenLive(t *testing.T) {
	th := newTestHub(t, nil, 1, nil)
	last := th.publish(store.Event{Key: "k", Data: []byte("1")})[0]
	s := th.open(0, Subscription{Resume: true, LastID: last + 1000, Mercure: &MercureSub{Topics: []string{"k"}}}, true)
	waitUntil(t, "the gap", func() bool { return len(s.c.received()) >= 1 })
	if ev := s.c.received()[0]; ev.name != "gap" || ev.hasID {
		t.Fatalf("first event %+v, want a gap without id", ev)
	}
	live := th.publish(store.Event{Key: "k", Data: []byte("2")})
	waitUntil(t, "the live event", func() bool { return len(ids(s.c.received())) >= 1 })
	if g := ids(s.c.received()); !slices.Equal(g, live) {
		t.Fatalf("got %v, want %v", g, live)
	}
}

// TestMercureReplayAnnouncesRemovedEvents: events removed from the store
// after a stream's cursor (here max_events) are announced with a gap where
// the ids jump, at the start of a replay or in its middle; a cursor at the
// last removed id, and a replay from "earliest", get no gap.
func TestMercureReplayAnnouncesRemovedEvents(t *testing.T) {
	st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1, MaxEvents: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	th := newTestHub(t, st, 1, nil)
	ev := func(k string) store.Event { return store.Event{Key: k, Data: []byte(k)} }
	id := th.publish(ev("/b"), ev("/a"), ev("/c"), ev("/c"), ev("/c"), ev("/c"), ev("/a"))
	b1, a1, c1, c2, c3, c4, a2 := id[0], id[1], id[2], id[3], id[4], id[5], id[6]
	// /c keeps its last 3: c1 is gone.
	render := func(evs []sseEvent) []string {
		var out []string
		for _, e := range evs {
			switch {
			case e.name == "gap":
				out = append(out, "gap")
			case e.hasID:
				out = append(out, fmt.Sprint(e.id))
			}
		}
		return out
	}
	str := func(ids ...uint64) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = fmt.Sprint(id)
		}
		return out
	}
	tests := []struct {
		name   string
		after  uint64
		topics []string
		want   []string
	}{
		{"hole_in_the_middle", b1, []string{"*"}, append(append(str(a1), "gap"), str(c2, c3, c4, a2)...)},
		{"hole_at_the_start", a1, []string{"/c"}, append([]string{"gap"}, str(c2, c3, c4)...)},
		{"cursor_at_the_removed_id", c1, []string{"*"}, str(c2, c3, c4, a2)},
		{"nothing_removed_after_the_cursor", c2, []string{"/a"}, str(a2)},
		{"earliest", 0, []string{"*"}, str(b1, a1, c2, c3, c4, a2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := th.open(0, Subscription{Resume: true, LastID: tt.after, Mercure: &MercureSub{Topics: tt.topics}}, true)
			last := tt.want[len(tt.want)-1]
			waitUntil(t, "the replay", func() bool {
				got := render(s.c.received())
				return len(got) > 0 && got[len(got)-1] == last
			})
			if got := render(s.c.received()); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// sourceFiller fills every poke with "from the source".
type sourceFiller struct{ calls atomic.Int64 }

func (f *sourceFiller) Wants(string) bool { return true }
func (f *sourceFiller) Fill(_ context.Context, ev *store.Event) error {
	f.calls.Add(1)
	ev.Data = []byte("from the source")
	return nil
}

// TestMercureEmptyUpdateNotFilled: a Mercure update with empty data is
// that update (one empty data line), never a poke for a data source to
// fill; a native poke of the same key is filled.
func TestMercureEmptyUpdateNotFilled(t *testing.T) {
	f := &sourceFiller{}
	th := newTestHub(t, nil, 1, func(c *Config) { c.Fill = f })
	s := th.open(0, Subscription{Mercure: &MercureSub{Topics: []string{"k"}}}, true)
	th.publish(store.Event{Key: "k", PubID: "urn:uuid:empty"})
	th.publish(store.Event{Key: "k"})
	waitUntil(t, "both events", func() bool { return len(s.c.received()) >= 2 })
	got := s.c.received()
	if got[0].data != "" || got[1].data != "from the source" || f.calls.Load() != 1 {
		t.Fatalf("got %q then %q, %d fills; want the empty update as is, then the filled poke, 1 fill", got[0].data, got[1].data, f.calls.Load())
	}
}

// TestMercureLiveStreamToldOfRemovedEvents: events removed from the store
// before the feed reader read them (here max_events 1 and three events in
// one append) are announced to live Mercure streams with a gap before
// what follows.
func TestMercureLiveStreamToldOfRemovedEvents(t *testing.T) {
	st, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1, MaxEvents: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	th := newTestHub(t, st, 1, nil)
	s := th.open(0, Subscription{Mercure: &MercureSub{Topics: []string{"/x/{n}"}}}, true)
	ev := store.Event{Key: "/x/1", Data: []byte("d")}
	id := th.publish(ev, ev, ev)
	waitUntil(t, "the last event", func() bool { got := ids(s.c.received()); return len(got) > 0 })
	got := s.c.received()
	if len(got) != 2 || got[0].name != "gap" || !got[1].hasID || got[1].id != id[2] {
		t.Fatalf("got %+v, want a gap then event %d", got, id[2])
	}
}
