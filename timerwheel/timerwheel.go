// Package timerwheel implements a hashed timing wheel: a large number of timers
// (heartbeats, request-header timeouts, token expiry) with O(1) [Wheel.Schedule]
// and [Timer.Stop], and no allocation when the [Timer] is embedded in the
// caller's own struct.
//
// The one rule: a [Wheel] and its timers belong to one goroutine. Every method,
// [Wheel.Advance] included, must be called from that goroutine (in sseloop, the
// gnet event loop that owns the connections), and callbacks run on it, inside
// Advance. Nothing is locked.
//
// The wheel has no clock of its own: the caller passes now to [New] and
// [Wheel.Advance]. Deadlines are rounded up to a whole tick, so a timer never
// fires before its deadline and, when Advance is called at least once per tick,
// fires less than one tick after it.
package timerwheel

import (
	"math"
	"math/bits"
	"time"
)

// Timer is one scheduled callback. The zero value is ready to use; embed it in
// your own struct so that scheduling it allocates nothing. A Timer belongs to the
// goroutine that owns its [Wheel] and must not be copied while scheduled (go vet
// reports copies).
type Timer struct {
	_    noCopy
	next *Timer // intrusive circular list; nil when not scheduled
	prev *Timer
	w    *Wheel // nil when not scheduled
	when int64  // deadline tick, counted from the wheel's start; unused on the ready list
	f    func()
}

// noCopy makes go vet's copylocks check report copies of a Timer: a copy of a
// scheduled Timer would leave the wheel's list pointing at the original. It is
// the first field because a trailing zero-size field would add padding.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// Wheel is a hashed timing wheel. Create one with [New]; only the goroutine
// that owns it may call its methods.
type Wheel struct {
	// slots[i] is the sentinel of the list of timers whose deadline tick is
	// congruent to i modulo len(slots). A timer more than one revolution away
	// stays in its slot and is skipped (its when is compared) until its tick.
	slots []Timer
	mask  int64
	tick  int64 // nanoseconds

	start time.Time // tick 0
	now   time.Time // last now given to Advance, or New's
	nowNs int64     // now - start, in nanoseconds
	cur   int64     // every timer whose deadline tick is <= cur has run

	n int // scheduled timers, in slots, ready and firing

	ready   Timer // sentinel: timers scheduled with d <= 0, run at the next Advance
	firing  Timer // sentinel: due timers taken from the slot being walked
	running bool  // inside Advance
}

// New returns a wheel with the given tick resolution and number of slots
// (rounded up to a power of two), whose clock starts at now. tick <= 0 or
// slots <= 0 panics.
//
// A timer more than slots×tick away is visited, and skipped, once per
// revolution, so choose slots×tick at least as long as the common timeouts
// (e.g. a 100 ms tick and 512 slots for 30 s heartbeats); rare long timers such
// as token expiry may be longer. Each slot costs 40 bytes.
func New(tick time.Duration, slots int, now time.Time) *Wheel {
	if tick <= 0 {
		panic("timerwheel: tick must be positive")
	}
	if slots <= 0 {
		panic("timerwheel: slots must be positive")
	}
	size := 1 << bits.Len(uint(slots-1))
	w := &Wheel{
		slots: make([]Timer, size),
		mask:  int64(size - 1),
		tick:  int64(tick),
		start: now,
		now:   now,
	}
	for i := range w.slots {
		s := &w.slots[i]
		s.next, s.prev = s, s
	}
	w.ready.next, w.ready.prev = &w.ready, &w.ready
	w.firing.next, w.firing.prev = &w.firing, &w.firing
	return w
}

// Schedule arms t to run f once, d from the wheel's current time ([Wheel.Now]).
// If t is already scheduled it is moved, in O(1). d <= 0 means "at the next
// Advance". The deadline is rounded up to a whole tick; see [Wheel.Advance].
//
// Schedule may be called from a callback. A nil f panics. If t is scheduled on
// another wheel, it is taken off that one, which must belong to the same
// goroutine.
func (w *Wheel) Schedule(t *Timer, d time.Duration, f func()) {
	if f == nil {
		// Fail here rather than inside Advance, far from the cause.
		panic("timerwheel: Schedule with nil func")
	}
	if t.w != nil {
		t.unlink()
	}
	var list *Timer
	if d <= 0 {
		t.when = w.cur
		list = &w.ready
	} else {
		t.when = w.deadlineTick(d)
		list = &w.slots[t.when&w.mask]
	}
	// Append, so timers with the same deadline tick run in scheduling order.
	t.prev, t.next = list.prev, list
	list.prev.next = t
	list.prev = t
	t.w, t.f = w, f
	w.n++
}

// deadlineTick returns the first tick at or after now+d, for d > 0. It is
// always > w.cur, so a callback can never schedule a timer into the Advance
// that is running it.
func (w *Wheel) deadlineTick(d time.Duration) int64 {
	ns := int64(math.MaxInt64) // saturate: hundreds of years means never
	if int64(d) <= math.MaxInt64-w.nowNs {
		ns = w.nowNs + int64(d)
	}
	q := ns / w.tick
	if ns%w.tick != 0 {
		q++
	}
	return q
}

// AfterFunc allocates a Timer and schedules it to run f, d from the wheel's
// current time. It is a convenience for tests and rare timers; embed a [Timer]
// and call [Wheel.Schedule] to avoid the allocation.
func (w *Wheel) AfterFunc(d time.Duration, f func()) *Timer {
	t := new(Timer)
	w.Schedule(t, d, f)
	return t
}

// Reset arms t again, d from the wheel's current time, with the callback it
// was last scheduled with: a Timer keeps its callback when it fires or is
// stopped, so a caller that re-arms one timer many times (a heartbeat) binds
// its closure once and stores no func of its own. Reset panics if t was never
// scheduled.
func (w *Wheel) Reset(t *Timer, d time.Duration) {
	w.Schedule(t, d, t.f)
}

// Stop cancels t in O(1) and reports whether it was scheduled. It is safe on a
// zero Timer, a stopped one and one that has fired. A callback may stop any
// timer, including one due in the same Advance that has not run yet: it will
// not run. t keeps its callback (see [Wheel.Reset]); the closure lives as
// long as t.
func (t *Timer) Stop() bool {
	if t.w == nil {
		return false
	}
	t.unlink()
	return true
}

// Active reports whether t is scheduled. It is false inside t's own callback
// unless the callback scheduled t again.
func (t *Timer) Active() bool {
	return t.w != nil
}

// unlink takes a scheduled t off its list and its wheel.
func (t *Timer) unlink() {
	t.prev.next = t.next
	t.next.prev = t.prev
	t.w.n--
	t.next, t.prev, t.w = nil, nil, nil
}

// Advance moves the wheel's clock to now and runs, on the caller's goroutine,
// every due callback, and returns how many ran. now earlier than [Wheel.Now] is
// a no-op that returns 0.
//
// A timer is due when its deadline, rounded up to a whole tick (counted from
// the time given to [New]), is <= now; a timer scheduled with d <= 0 is due at
// the next Advance whatever now is. A timer therefore fires at or after its
// deadline and less than one tick after it, relative to now.
//
// Order: first the timers scheduled with d <= 0, in the order they were
// scheduled; then the ticks since the last Advance are walked in increasing
// order, so callbacks run in deadline-tick order, and timers with the same
// deadline tick run in the order they were (last) scheduled. Exception: if now
// is a whole revolution (slots×tick) or more past the wheel's time, each slot is
// walked once, starting after the old position, so a timer overdue by more than
// a revolution may run after one due later. Every due timer still runs once.
//
// Callbacks run with [Wheel.Now] already equal to now and may Schedule or Stop
// any timer, including themselves and timers due in the same Advance that have
// not run yet (a stopped or moved one does not run). A timer scheduled by a
// callback always runs at a later Advance, even with d <= 0. A callback must not
// call Advance (it panics). If a callback panics, the panic propagates and the
// wheel stays usable: due timers that had not run yet run at the next Advance.
//
// The cost is O(min(elapsed ticks, slots) + timers in the walked slots), so a
// jump of hours costs at most one walk of the whole wheel.
func (w *Wheel) Advance(now time.Time) int {
	if w.running {
		panic("timerwheel: Advance called from a timer callback")
	}
	ns := int64(now.Sub(w.start))
	if ns < w.nowNs {
		return 0
	}
	w.now, w.nowNs = now, ns
	target := ns / w.tick
	if target == w.cur && w.ready.next == &w.ready {
		return 0
	}

	w.running = true
	defer w.unwind()
	ran := 0
	if w.ready.next != &w.ready {
		// Take the whole list first: timers a callback schedules with d <= 0
		// go to the emptied ready list and wait for the next Advance.
		moveAll(&w.firing, &w.ready)
		ran += w.fire()
	}
	steps := target - w.cur
	if steps > int64(len(w.slots)) {
		// A revolution or more: every slot once, not every elapsed tick.
		steps = int64(len(w.slots))
	}
	base := w.cur
	for i := int64(1); i <= steps; i++ {
		s := &w.slots[(base+i)&w.mask]
		// No callback runs in this loop, so next cannot go stale. Due timers
		// go to the firing list, where a callback can still stop or move them.
		for t := s.next; t != s; {
			next := t.next
			if t.when <= target {
				t.prev.next = t.next
				t.next.prev = t.prev
				t.prev, t.next = w.firing.prev, &w.firing
				w.firing.prev.next = t
				w.firing.prev = t
			}
			t = next
		}
		if w.firing.next != &w.firing {
			ran += w.fire()
		}
		// All timers whose deadline tick is <= base+i have run: if a later
		// callback panics, the next Advance resumes after this slot.
		w.cur = base + i
	}
	w.cur = target
	w.running = false
	return ran
}

// fire runs the firing list, always taking its head afresh: a callback may have
// stopped or moved any timer in it.
func (w *Wheel) fire() int {
	ran := 0
	for {
		t := w.firing.next
		if t == &w.firing {
			return ran
		}
		f := t.f
		t.unlink()
		f()
		ran++
	}
}

// unwind runs when Advance returns. After a panic in a callback it puts the due
// timers that have not run yet at the front of the ready list, so the next
// Advance runs them first, and allows Advance again.
func (w *Wheel) unwind() {
	if !w.running {
		return
	}
	if w.firing.next != &w.firing {
		moveAll(w.ready.next, &w.firing) // insert before the ready list's head
	}
	w.running = false
}

// moveAll moves every timer of the list with sentinel src, in order, in front
// of at (a sentinel to append to a list, or a list's first element), leaving
// src empty.
func moveAll(at, src *Timer) {
	if src.next == src {
		return
	}
	first, last := src.next, src.prev
	first.prev = at.prev
	at.prev.next = first
	last.next = at
	at.prev = last
	src.next, src.prev = src, src
}

// Len returns the number of scheduled timers.
func (w *Wheel) Len() int {
	return w.n
}

// Now returns the wheel's current time: the last now given to Advance that
// was not earlier than the one before, or New's.
func (w *Wheel) Now() time.Time {
	return w.now
}
