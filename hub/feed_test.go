package hub

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sseloop/sseloop/store"
)

// stallLoop makes loop i of th busy until the returned function is called
// (or the test ends): a task that blocks it, so fan-outs queue behind it as
// they do behind a long fan-out to thousands of streams.
func stallLoop(th *testHub, i int) (release func()) {
	gate := make(chan struct{})
	th.loops[i].Execute(func() { <-gate })
	release = sync.OnceFunc(func() { close(gate) })
	th.t.Cleanup(release) // before the hub's cleanup waits for the loop
	return release
}

// TestHeldEventReadWithinMaxBatchWait pins the age bound of adaptive
// batching: while the loops are busy the feed reader leaves new events in
// the store so that they form bigger batches, but an event waits for a
// batch no longer than MaxBatchWait. It is read, and queued behind the
// running fan-outs, exactly when it is that old, not before (that would be
// no batching at all) and not when the loops drain (which under load takes
// as long as the fan-outs ahead of it).
func TestHeldEventReadWithinMaxBatchWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const wait = 5 * time.Millisecond
		th := newTestHub(t, bubbleStore(t), 1, func(c *Config) { c.Poll, c.MaxBatchWait = time.Hour, wait })
		s := th.open(0, Subscription{Keys: keys("k")}, true)
		release := stallLoop(th, 0)
		var want []uint64
		pub := func() uint64 {
			id := th.publish(store.Event{Key: "k", Data: []byte("x")})[0]
			want = append(want, id)
			synctest.Wait()
			return id
		}
		// Two batches fill the loop's queue (maxQueuedFanouts)...
		pub()
		id2 := pub()
		if c := th.h.cursor.Load(); c != id2 {
			t.Fatalf("cursor %d after two events on an idle feed, want %d", c, id2)
		}
		// ...so the next event is held back, until it is MaxBatchWait old.
		id3 := pub()
		time.Sleep(wait - time.Microsecond)
		synctest.Wait()
		if c := th.h.cursor.Load(); c != id2 {
			t.Fatalf("cursor %d before the event was %v old, want %d (held for a bigger batch)", c, wait, id2)
		}
		time.Sleep(time.Microsecond)
		synctest.Wait()
		if c := th.h.cursor.Load(); c != id3 {
			t.Fatalf("cursor %d once the event was %v old, want %d (read, queued behind the busy loop)", c, wait, id3)
		}
		if n := th.h.m.waitReads.Get(); n != 1 {
			t.Fatalf("sseloop_feed_wait_reads_total = %d, want 1", n)
		}
		release()
		synctest.Wait()
		if got := ids(s.c.received()); !slices.Equal(got, want) {
			t.Fatalf("stream got %v, want %v", got, want)
		}
	})
}

// TestOverloadedLoopHoldsEventsWhateverTheirAge: a loop with
// maxQueuedFanoutsHard fan-outs queued is overloaded; the age bound gives
// way, so that the batches queued on it, and their memory, stay bounded.
// The events are read, in one batch, once the loop catches up.
func TestOverloadedLoopHoldsEventsWhateverTheirAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const wait = 5 * time.Millisecond
		th := newTestHub(t, bubbleStore(t), 1, func(c *Config) { c.Poll, c.MaxBatchWait = time.Hour, wait })
		s := th.open(0, Subscription{Keys: keys("k")}, true)
		release := stallLoop(th, 0)
		var want []uint64
		pub := func() uint64 {
			id := th.publish(store.Event{Key: "k", Data: []byte("x")})[0]
			want = append(want, id)
			synctest.Wait()
			return id
		}
		var last uint64
		for range maxQueuedFanoutsHard {
			last = pub()
			time.Sleep(wait) // each is read at the latest when this old
			synctest.Wait()
		}
		if c := th.h.cursor.Load(); c != last {
			t.Fatalf("cursor %d, want %d: %d batches should be queued", c, last, maxQueuedFanoutsHard)
		}
		pub()
		pub()
		time.Sleep(10 * wait)
		synctest.Wait()
		if c := th.h.cursor.Load(); c != last {
			t.Fatalf("cursor %d with %d fan-outs queued, want %d (held)", c, maxQueuedFanoutsHard, last)
		}
		if n := th.loops[0].hl.fanouts.Load(); n != maxQueuedFanoutsHard {
			t.Fatalf("%d fan-outs queued, want %d", n, maxQueuedFanoutsHard)
		}
		release()
		synctest.Wait()
		if c, w := th.h.cursor.Load(), want[len(want)-1]; c != w {
			t.Fatalf("cursor %d after the loop caught up, want %d", c, w)
		}
		if got := ids(s.c.received()); !slices.Equal(got, want) {
			t.Fatalf("stream got %v, want %v", got, want)
		}
	})
}
