package store_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sseloop/sseloop/internal/redistest"
	"github.com/sseloop/sseloop/store"
)

// TestRedisSubscriptions: a node lists the other live nodes' records, not
// its own; records are set and removed one by one; a node that stops
// renewing drops out of every list at its deadline and its records are
// handed to exactly one later PutSubscriptions; a node taken for dead, or
// whose entry was lost, is told fresh; a goodbye removes a node at once.
func TestRedisSubscriptions(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	r := openRedis(t, store.RedisConfig{Addr: srv.Addr(), Prefix: prefix}, store.Options{})
	ctx := context.Background()
	const long, short = time.Minute, time.Second
	rec := func(id string) store.SubscriptionRecord {
		return store.SubscriptionRecord{ID: id, Data: []byte(`{"topics":["` + id + `"]}`)}
	}
	put := func(node string, ttl time.Duration, recs ...store.SubscriptionRecord) (bool, string) {
		t.Helper()
		fresh, dead, err := r.PutSubscriptions(ctx, node, ttl, recs)
		if err != nil {
			t.Fatal(err)
		}
		return fresh, ids(dead)
	}
	list := func(node string) string {
		t.Helper()
		got, err := r.ListSubscriptions(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range got {
			if string(g.Data) != string(rec(g.ID).Data) {
				t.Errorf("record %s: data %q", g.ID, g.Data)
			}
		}
		return ids(got)
	}
	if fresh, dead := put("a", long, rec("a1"), rec("a2")); !fresh || dead != "" {
		t.Fatalf("first put: fresh %v, dead %q", fresh, dead)
	}
	if fresh, _ := put("b", long, rec("b1")); !fresh {
		t.Fatal("first put of b not fresh")
	}
	if fresh, _ := put("a", long); fresh {
		t.Fatal("a heartbeat of a live node says fresh")
	}
	if got := list("a"); got != "b1" {
		t.Fatalf("a lists %q, want b1", got)
	}
	if got := list("c"); got != "a1 a2 b1" {
		t.Fatalf("c lists %q", got)
	}
	put("a", long, store.SubscriptionRecord{ID: "a1"}, rec("a3"))
	if got := list("b"); got != "a2 a3" {
		t.Fatalf("after removing a1, adding a3: b lists %q", got)
	}

	// d dies without a goodbye: gone from lists at its deadline; its
	// records reach the first put after it, and only that one.
	put("d", short, rec("d1"), rec("d2"))
	putAt := time.Now()
	if got := list("a"); got != "b1 d1 d2" {
		t.Fatalf("with d: %q", got)
	}
	time.Sleep(time.Until(putAt.Add(short + 50*time.Millisecond)))
	if got := list("a"); got != "b1" {
		t.Fatalf("%v after d's heartbeat (ttl %v): a lists %q, want d gone", time.Since(putAt), short, got)
	}
	if _, dead := put("b", long); dead != "d1 d2" {
		t.Fatalf("first put after d's deadline: dead %q, want d1 d2", dead)
	}
	if _, dead := put("a", long); dead != "" {
		t.Fatalf("d's records handed out twice: %q", dead)
	}
	// d comes back (it was only paused): fresh, its old records gone.
	if fresh, _ := put("d", long); !fresh {
		t.Fatal("a node taken for dead is not told fresh")
	}
	if got := list("a"); got != "b1" {
		t.Fatalf("d's stale records listed again: %q", got)
	}

	// The nodes set lost (evicted), a's hash kept: a is fresh, and its
	// records it is about to put again are not listed twice meanwhile.
	if err := srv.Client(t).Del(ctx, prefix+"{sseloop}:msubs:nodes").Err(); err != nil {
		t.Fatal(err)
	}
	if fresh, _ := put("a", long); !fresh {
		t.Fatal("after losing the nodes set: not fresh")
	}
	if got := list("c"); got != "" {
		t.Fatalf("stale records of a fresh node listed: %q", got)
	}

	// Records lost (Redis wiped): fresh.
	if err := srv.Client(t).FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if fresh, _ := put("a", long); !fresh {
		t.Fatal("after FLUSHALL: not fresh")
	}

	// Goodbye.
	put("b", long, rec("b1"))
	if err := r.LeaveSubscriptions(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got := list("a"); got != "" {
		t.Fatalf("after b's goodbye: %q", got)
	}

	// More records than one script call takes.
	many := make([]store.SubscriptionRecord, 2500)
	for i := range many {
		many[i] = rec(strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String())
	}
	put("e", long, many...)
	got, err := r.ListSubscriptions(ctx, "a")
	if err != nil || len(got) != len(many) {
		t.Fatalf("2500 records put: %d listed, %v", len(got), err)
	}
}

func ids(recs []store.SubscriptionRecord) string {
	s := make([]string, len(recs))
	for i, r := range recs {
		s[i] = r.ID
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}
