package timerwheel

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// t0 is the fake start time of every test wheel; tests never read the real clock.
var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

const testTick = 10 * time.Millisecond

// harness drives a wheel with numbered timers and records which callbacks ran.
type harness struct {
	t      *testing.T
	w      *Wheel
	timers [16]Timer
	fired  []int
	at     []time.Time // wheel time of each entry in fired
}

func newHarness(t *testing.T, slots int) *harness {
	return &harness{t: t, w: New(testTick, slots, t0)}
}

// schedule arms timer id, d from now; then, if not nil, runs in the callback
// after the firing is recorded.
func (h *harness) schedule(id int, d time.Duration, then func()) {
	h.w.Schedule(&h.timers[id], d, func() {
		h.fired = append(h.fired, id)
		h.at = append(h.at, h.w.Now())
		if then != nil {
			then()
		}
	})
}

// advance moves the wheel to t0+at and checks that exactly want ran, in order.
func (h *harness) advance(at time.Duration, want ...int) {
	h.t.Helper()
	h.fired = h.fired[:0]
	h.at = h.at[:0]
	n := h.w.Advance(t0.Add(at))
	if !slices.Equal(h.fired, want) && (len(h.fired) > 0 || len(want) > 0) {
		h.t.Fatalf("Advance(t0+%v) ran %v, want %v", at, h.fired, want)
	}
	if n != len(want) {
		h.t.Fatalf("Advance(t0+%v) = %d, want %d", at, n, len(want))
	}
}

func (h *harness) stop(id int, want bool) {
	h.t.Helper()
	if got := h.timers[id].Stop(); got != want {
		h.t.Fatalf("timer %d: Stop() = %v, want %v", id, got, want)
	}
}

func (h *harness) wantLen(n int) {
	h.t.Helper()
	if got := h.w.Len(); got != n {
		h.t.Fatalf("Len() = %d, want %d", got, n)
	}
}

func (h *harness) wantActive(id int, want bool) {
	h.t.Helper()
	if got := h.timers[id].Active(); got != want {
		h.t.Fatalf("timer %d: Active() = %v, want %v", id, got, want)
	}
}

func TestWheel(t *testing.T) {
	tests := []struct {
		name  string
		slots int
		run   func(h *harness)
	}{
		{"fires_at_deadline_not_before", 64, func(h *harness) {
			h.schedule(0, 30*time.Millisecond, nil) // on a tick boundary
			h.advance(10 * time.Millisecond)
			h.advance(30*time.Millisecond - 1)
			h.advance(30*time.Millisecond, 0)
			h.advance(time.Second)
		}},
		{"deadline_between_ticks_rounds_up", 64, func(h *harness) {
			h.schedule(0, 25*time.Millisecond, nil)
			h.advance(25 * time.Millisecond) // deadline reached, its tick (30 ms) not yet
			h.advance(30*time.Millisecond - 1)
			h.advance(30*time.Millisecond, 0)
		}},
		{"at_most_one_tick_late", 8, func(h *harness) {
			// From several unaligned start times, with deadlines on and off
			// tick boundaries and beyond a revolution (80 ms).
			id := 0
			now := time.Duration(0)
			for _, start := range []time.Duration{0, 3 * time.Millisecond, 17*time.Millisecond + 1} {
				for _, d := range []time.Duration{1, testTick - 1, testTick, testTick + 1, 47 * time.Millisecond, 250*time.Millisecond + 3} {
					now += start
					h.advance(now)
					h.schedule(id%len(h.timers), d, nil)
					h.advance(now + d - 1)
					h.advance(now+d+testTick-1, id%len(h.timers))
					now += d + testTick
					id++
				}
			}
		}},
		{"stop_before_fire", 64, func(h *harness) {
			h.schedule(0, 20*time.Millisecond, nil)
			h.stop(0, true)
			h.wantActive(0, false)
			h.wantLen(0)
			h.advance(time.Second)
			h.stop(0, false)
		}},
		{"stop_after_fire_returns_false", 64, func(h *harness) {
			h.schedule(0, 20*time.Millisecond, nil)
			h.advance(20*time.Millisecond, 0)
			h.wantActive(0, false)
			h.stop(0, false)
			h.stop(1, false) // zero Timer
		}},
		{"reschedule_moves_earlier", 64, func(h *harness) {
			h.schedule(0, 50*time.Millisecond, nil)
			h.schedule(0, 20*time.Millisecond, nil)
			h.wantLen(1)
			h.advance(20*time.Millisecond, 0)
			h.advance(time.Second)
		}},
		{"reschedule_moves_later", 64, func(h *harness) {
			h.schedule(0, 20*time.Millisecond, nil)
			h.schedule(0, 50*time.Millisecond, nil)
			h.wantLen(1)
			h.advance(40 * time.Millisecond)
			h.advance(50*time.Millisecond, 0)
			h.wantLen(0)
		}},
		{"reschedule_to_zero_delay", 64, func(h *harness) {
			h.schedule(0, time.Hour, nil)
			h.schedule(0, 0, nil)
			h.wantLen(1)
			h.advance(0, 0)
		}},
		{"one_slot_many_revolutions", 4, func(h *harness) {
			// 4 slots × 10 ms: 10, 50, 90 and 130 ms all land in slot 1.
			h.schedule(3, 130*time.Millisecond, nil)
			h.schedule(0, 10*time.Millisecond, nil)
			h.schedule(2, 90*time.Millisecond, nil)
			h.schedule(1, 50*time.Millisecond, nil)
			want := map[time.Duration]int{10: 0, 50: 1, 90: 2, 130: 3}
			for ms := time.Duration(10); ms <= 200; ms += 10 {
				if id, ok := want[ms]; ok {
					h.advance(ms*time.Millisecond, id)
				} else {
					h.advance(ms * time.Millisecond)
				}
			}
		}},
		{"deadline_order_then_fifo", 64, func(h *harness) {
			h.schedule(0, 30*time.Millisecond, nil)
			h.schedule(1, 10*time.Millisecond, nil)
			h.schedule(2, 30*time.Millisecond, nil)
			h.schedule(3, 0, nil)
			h.schedule(4, 25*time.Millisecond, nil) // tick 3, after 0 and 2
			h.schedule(5, 20*time.Millisecond, nil)
			h.advance(35*time.Millisecond, 3, 1, 5, 0, 2, 4)
		}},
		{"callback_reschedules_itself", 64, func(h *harness) {
			var beat func()
			beat = func() { h.schedule(0, 30*time.Millisecond, beat) }
			h.schedule(0, 30*time.Millisecond, beat)
			var times []time.Duration
			for ms := time.Duration(0); ms <= 200; ms += 5 {
				h.w.Advance(t0.Add(ms * time.Millisecond))
				for _, at := range h.at {
					times = append(times, at.Sub(t0))
				}
				h.at = h.at[:0]
			}
			want := []time.Duration{30, 60, 90, 120, 150, 180}
			for i := range want {
				want[i] *= time.Millisecond
			}
			if !slices.Equal(times, want) {
				h.t.Fatalf("heartbeat ran at %v, want %v", times, want)
			}
			h.wantLen(1)
		}},
		{"callback_reschedules_itself_late_advance", 64, func(h *harness) {
			// Rescheduled from the Advance's now, not from the old deadline.
			var beat func()
			beat = func() { h.schedule(0, 30*time.Millisecond, beat) }
			h.schedule(0, 30*time.Millisecond, beat)
			h.advance(40*time.Millisecond, 0) // due at 30 ms, run at 40 ms: next at 70 ms
			h.advance(69 * time.Millisecond)
			h.advance(70*time.Millisecond, 0)
		}},
		{"callback_stops_next_in_same_slot", 64, func(h *harness) {
			h.schedule(0, 20*time.Millisecond, func() { h.stop(1, true) })
			h.schedule(1, 20*time.Millisecond, nil)
			h.schedule(2, 20*time.Millisecond, nil)
			h.advance(20*time.Millisecond, 0, 2)
			h.wantLen(0)
			h.advance(time.Second)
		}},
		{"callback_stops_timer_in_later_slot", 64, func(h *harness) {
			h.schedule(0, 10*time.Millisecond, func() { h.stop(1, true) })
			h.schedule(1, 20*time.Millisecond, nil)
			h.advance(30*time.Millisecond, 0)
		}},
		{"callback_moves_next_in_same_slot", 64, func(h *harness) {
			h.schedule(0, 20*time.Millisecond, func() { h.schedule(1, 10*time.Millisecond, nil) })
			h.schedule(1, 20*time.Millisecond, nil)
			h.schedule(2, 20*time.Millisecond, nil)
			h.advance(20*time.Millisecond, 0, 2)
			h.advance(30*time.Millisecond, 1)
		}},
		{"callback_stops_itself_and_all", 64, func(h *harness) {
			h.schedule(0, 20*time.Millisecond, func() {
				h.stop(0, false) // already taken off the wheel
				for id := 1; id < 4; id++ {
					h.stop(id, true)
				}
			})
			for id := 1; id < 4; id++ {
				h.schedule(id, 20*time.Millisecond, nil)
			}
			h.advance(time.Second, 0)
			h.wantLen(0)
		}},
		{"callback_schedules_zero_delay", 64, func(h *harness) {
			h.schedule(0, 10*time.Millisecond, func() {
				h.schedule(1, 0, nil)
				h.schedule(2, -time.Second, nil)
			})
			h.advance(10*time.Millisecond, 0)
			h.wantLen(2)
			h.advance(10*time.Millisecond, 1, 2) // same now: still the next Advance
		}},
		{"zero_delay_callback_reschedules_itself", 64, func(h *harness) {
			var again func()
			again = func() { h.schedule(0, 0, again) }
			h.schedule(0, 0, again)
			for range 3 {
				h.advance(0, 0) // once per Advance, never a loop
			}
		}},
		{"callback_schedules_one_tick_into_walked_range", 4, func(h *harness) {
			// Jumping 25 ticks walks every slot; the new timer lands in a slot
			// not yet walked and must wait for its own tick.
			h.schedule(0, 10*time.Millisecond, func() { h.schedule(1, 1, nil) })
			h.advance(250*time.Millisecond, 0)
			h.advance(259 * time.Millisecond)
			h.advance(260*time.Millisecond, 1)
		}},
		{"big_jump", 8, func(h *harness) {
			h.schedule(0, 10*time.Millisecond, nil)
			h.schedule(1, time.Second, nil)
			h.schedule(2, time.Hour, nil)
			h.schedule(3, 3*time.Hour, nil)
			h.schedule(4, 5*time.Hour, nil)
			h.schedule(5, 0, nil)
			h.advance(3*time.Hour+time.Millisecond, 5, 0, 1, 2, 3)
			h.wantLen(1)
			h.advance(5*time.Hour, 4)
		}},
		{"big_jump_one_nanosecond_tick", 4, func(h *harness) {
			// 1 ns ticks: a century is ~3e18 ticks, impossible to walk one by one.
			h.w = New(1, 4, t0)
			h.schedule(0, 100*365*24*time.Hour, nil)
			h.schedule(1, 7, nil)
			h.advance(101*365*24*time.Hour, 1, 0)
		}},
		{"huge_delay_saturates", 4, func(h *harness) {
			h.w = New(1, 4, t0)
			h.advance(time.Hour)
			h.schedule(0, time.Duration(1<<63-1), nil)
			h.wantActive(0, true)
			h.advance(200 * 365 * 24 * time.Hour)
		}},
		{"now_going_backwards", 64, func(h *harness) {
			h.advance(50 * time.Millisecond)
			h.schedule(0, 0, nil)
			h.schedule(1, 20*time.Millisecond, nil) // from t0+50ms
			h.advance(20 * time.Millisecond)        // earlier: no-op, 0 does not run
			if got := h.w.Now(); !got.Equal(t0.Add(50 * time.Millisecond)) {
				h.t.Fatalf("Now() = %v after going backwards, want t0+50ms", got.Sub(t0))
			}
			h.wantLen(2)
			h.advance(69*time.Millisecond, 0)
			h.advance(70*time.Millisecond, 1)
		}},
		{"len_active_bookkeeping", 8, func(h *harness) {
			h.wantLen(0)
			h.wantActive(0, false)
			h.schedule(0, 10*time.Millisecond, nil)
			h.schedule(1, time.Hour, nil)
			h.schedule(2, 0, nil)
			h.wantLen(3)
			h.schedule(1, 20*time.Millisecond, nil) // move: still 3
			h.wantLen(3)
			for id := range 3 {
				h.wantActive(id, true)
			}
			h.stop(2, true)
			h.wantLen(2)
			h.advance(10*time.Millisecond, 0)
			h.wantLen(1)
			h.wantActive(0, false)
			h.wantActive(1, true)
			h.advance(20*time.Millisecond, 1)
			h.wantLen(0)
			var activeInside bool
			h.schedule(3, 10*time.Millisecond, func() { activeInside = h.timers[3].Active() })
			h.advance(30*time.Millisecond, 3)
			if activeInside {
				h.t.Fatal("Active() = true inside its own callback")
			}
		}},
		{"after_func", 64, func(h *harness) {
			ran := false
			tm := h.w.AfterFunc(10*time.Millisecond, func() { ran = true })
			h.wantLen(1)
			if !tm.Active() {
				h.t.Fatal("AfterFunc timer not active")
			}
			h.w.Advance(t0.Add(10 * time.Millisecond))
			if !ran || tm.Active() || h.w.Len() != 0 {
				h.t.Fatalf("after Advance: ran=%v Active=%v Len=%d", ran, tm.Active(), h.w.Len())
			}
		}},
		{"move_between_wheels", 64, func(h *harness) {
			other := New(testTick, 4, t0)
			other.Schedule(&h.timers[0], time.Second, func() { h.t.Fatal("ran on the old wheel") })
			h.schedule(0, 10*time.Millisecond, nil)
			if other.Len() != 0 {
				h.t.Fatalf("old wheel Len() = %d, want 0", other.Len())
			}
			other.Advance(t0.Add(time.Hour))
			h.advance(10*time.Millisecond, 0)
		}},
		{"callback_panic_keeps_wheel_usable", 8, func(h *harness) {
			h.schedule(0, 10*time.Millisecond, nil)
			h.schedule(1, 10*time.Millisecond, func() { panic("boom") })
			h.schedule(2, 10*time.Millisecond, nil)
			h.schedule(3, 20*time.Millisecond, nil)
			h.schedule(4, time.Hour, nil)
			func() {
				defer func() {
					if recover() == nil {
						h.t.Fatal("panic did not propagate")
					}
				}()
				h.w.Advance(t0.Add(30 * time.Millisecond))
			}()
			if !slices.Equal(h.fired, []int{0, 1}) {
				h.t.Fatalf("before the panic ran %v, want [0 1]", h.fired)
			}
			h.wantLen(3)
			h.advance(30*time.Millisecond, 2, 3)
			h.advance(time.Hour, 4)
		}},
		{"advance_from_callback_panics", 8, func(h *harness) {
			var got any
			h.schedule(0, 10*time.Millisecond, func() {
				defer func() { got = recover() }()
				h.w.Advance(t0.Add(time.Hour))
			})
			h.schedule(1, time.Hour, nil)
			h.advance(10*time.Millisecond, 0)
			if got == nil {
				h.t.Fatal("Advance inside a callback did not panic")
			}
			h.advance(time.Hour, 1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(newHarness(t, tt.slots))
		})
	}
}

func TestNew(t *testing.T) {
	for _, tt := range []struct {
		slots, want int
	}{{1, 1}, {2, 2}, {3, 4}, {512, 512}, {513, 1024}} {
		if got := len(New(time.Second, tt.slots, t0).slots); got != tt.want {
			t.Errorf("New(_, %d, _) has %d slots, want %d", tt.slots, got, tt.want)
		}
	}
	w := New(time.Second, 8, t0)
	if !w.Now().Equal(t0) || w.Len() != 0 {
		t.Errorf("new wheel: Now() = %v, Len() = %d", w.Now(), w.Len())
	}
}

func TestPanics(t *testing.T) {
	w := New(time.Second, 8, t0)
	tests := []struct {
		name string
		f    func()
	}{
		{"zero_tick", func() { New(0, 8, t0) }},
		{"negative_tick", func() { New(-time.Second, 8, t0) }},
		{"zero_slots", func() { New(time.Second, 0, t0) }},
		{"negative_slots", func() { New(time.Second, -1, t0) }},
		{"nil_func", func() { w.Schedule(new(Timer), time.Second, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("did not panic")
				}
			}()
			tt.f()
		})
	}
}

// TestTimerSize keeps Timer small: it is embedded once or twice in every
// connection, and there may be a million of those.
func TestTimerSize(t *testing.T) {
	if size := unsafe.Sizeof(Timer{}); size > 48 {
		t.Errorf("sizeof(Timer) = %d, want <= 48", size)
	}
}

// model is the reference for TestModel: the scheduled timers in a plain slice,
// sorted when needed, with the wheel's documented rules written out directly.
type model struct {
	tick    int64
	nowNs   int64 // since t0
	advance int   // Advance calls that moved or kept the clock
	entries []entry
	seq     int
}

type entry struct {
	id    int
	ready bool  // scheduled with d <= 0
	epoch int   // model.advance when scheduled (ready entries)
	when  int64 // deadline tick
	seq   int   // scheduling order
}

func (m *model) schedule(id int, d time.Duration) {
	m.stop(id)
	m.seq++
	e := entry{id: id, seq: m.seq}
	if d <= 0 {
		e.ready, e.epoch = true, m.advance
	} else {
		ns := m.nowNs + int64(d)
		e.when = (ns + m.tick - 1) / m.tick
	}
	m.entries = append(m.entries, e)
}

func (m *model) stop(id int) bool {
	for i, e := range m.entries {
		if e.id == id {
			m.entries = slices.Delete(m.entries, i, i+1)
			return true
		}
	}
	return false
}

// due reports whether e must run in the Advance in progress, which moves the
// clock to tick target.
func (m *model) due(e entry, target int64) bool {
	if e.ready {
		return e.epoch < m.advance
	}
	return e.when <= target
}

// sort puts entries in the documented run order: ready ones first in
// scheduling order, then by deadline tick, then in scheduling order.
func (m *model) sort() {
	slices.SortFunc(m.entries, func(a, b entry) int {
		switch {
		case a.ready != b.ready:
			if a.ready {
				return -1
			}
			return 1
		case !a.ready && a.when != b.when:
			return int(a.when - b.when)
		}
		return a.seq - b.seq
	})
}

// TestModel runs random Schedule, Stop and Advance calls, including calls from
// callbacks, against the model, and checks that each Advance runs exactly the
// due timers, in the documented order when the jump is shorter than a revolution.
func TestModel(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint("seed_", seed), func(t *testing.T) {
			testModel(t, seed)
		})
	}
}

func testModel(t *testing.T, seed uint64) {
	const (
		tick   = time.Millisecond
		slots  = 8
		timers = 24
	)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	w := New(tick, slots, t0)
	m := &model{tick: int64(tick)}
	var ts [timers]Timer
	var ops []string // recent operations, for the failure message
	logf := func(format string, args ...any) {
		ops = append(ops, fmt.Sprintf(format, args...))
		if len(ops) > 30 {
			ops = ops[1:]
		}
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s\nrecent ops:\n%v", seed, fmt.Sprintf(format, args...), ops)
	}

	randDelay := func() time.Duration {
		switch r := rng.IntN(100); {
		case r < 15:
			return -time.Duration(rng.Int64N(int64(3 * tick)))
		case r < 20:
			return 0
		case r < 50:
			return 1 + time.Duration(rng.Int64N(int64(3*tick)))
		case r < 80:
			return 1 + time.Duration(rng.Int64N(int64(slots*tick)))
		case r < 95:
			return 1 + time.Duration(rng.Int64N(int64(5*slots*tick)))
		default:
			return time.Duration(rng.Int64N(int64(time.Hour)))
		}
	}

	var (
		inAdvance bool
		target    int64 // tick of the Advance in progress
		ordered   bool  // the Advance in progress must follow the model's order
		ran       int
	)
	var schedule func(id int, d time.Duration)
	callback := func(id int, action, other int, d time.Duration) func() {
		return func() {
			if !inAdvance {
				fail("timer %d ran outside Advance", id)
			}
			i := slices.IndexFunc(m.entries, func(e entry) bool { return e.id == id })
			if i < 0 {
				fail("timer %d ran but is not scheduled in the model", id)
			}
			if !m.due(m.entries[i], target) {
				fail("timer %d ran early: %+v, target tick %d", id, m.entries[i], target)
			}
			if first := slices.IndexFunc(m.entries, func(e entry) bool { return m.due(e, target) }); ordered && i != first {
				fail("timer %d ran before timer %d (model order %+v)", id, m.entries[first].id, m.entries)
			}
			m.entries = slices.Delete(m.entries, i, i+1)
			ran++
			logf("  ran %d", id)
			switch action {
			case 1:
				schedule(id, d)
			case 2:
				logf("  stop %d", other)
				if got, want := ts[other].Stop(), m.stop(other); got != want {
					fail("Stop(%d) in callback = %v, want %v", other, got, want)
				}
			case 3:
				schedule(other, d)
			}
		}
	}
	schedule = func(id int, d time.Duration) {
		action, other := 0, rng.IntN(timers)
		if r := rng.IntN(100); r >= 60 {
			action = 1 + r%3 // reschedule itself, stop another, schedule another
		}
		logf("schedule %d in %v (action %d on %d)", id, d, action, other)
		w.Schedule(&ts[id], d, callback(id, action, other, randDelay()))
		m.schedule(id, d)
		if inAdvance {
			m.sort()
		}
	}

	for range 2000 {
		switch r := rng.IntN(100); {
		case r < 45:
			schedule(rng.IntN(timers), randDelay())
		case r < 60:
			id := rng.IntN(timers)
			logf("stop %d", id)
			if got, want := ts[id].Stop(), m.stop(id); got != want {
				fail("Stop(%d) = %v, want %v", id, got, want)
			}
		default:
			var step int64
			switch r := rng.IntN(100); {
			case r < 5:
				step = -rng.Int64N(int64(3 * tick))
			case r < 15:
				step = 0
			case r < 35:
				step = rng.Int64N(int64(tick))
			case r < 75:
				step = rng.Int64N(int64(3 * tick))
			case r < 90:
				step = rng.Int64N(int64(slots * tick))
			default:
				step = rng.Int64N(int64(20 * slots * tick))
			}
			ns := m.nowNs + step
			logf("advance to %d (step %d)", ns, step)
			if step < 0 {
				if n := w.Advance(t0.Add(time.Duration(ns))); n != 0 {
					fail("Advance backwards ran %d timers", n)
				}
				break
			}
			oldTick := m.nowNs / m.tick
			m.nowNs = ns
			m.advance++
			target = ns / m.tick
			ordered = target-oldTick < slots
			m.sort()
			inAdvance, ran = true, 0
			n := w.Advance(t0.Add(time.Duration(ns)))
			inAdvance = false
			if n != ran {
				fail("Advance returned %d, ran %d", n, ran)
			}
			for _, e := range m.entries {
				if m.due(e, target) {
					fail("timer %d due (%+v, target tick %d) but did not run", e.id, e, target)
				}
			}
		}
		if w.Len() != len(m.entries) {
			fail("Len() = %d, model has %d", w.Len(), len(m.entries))
		}
		for id := range ts {
			want := slices.ContainsFunc(m.entries, func(e entry) bool { return e.id == id })
			if ts[id].Active() != want {
				fail("timer %d: Active() = %v, want %v", id, !want, want)
			}
		}
	}
}

// TestResetKeepsCallback: a timer keeps its callback after it fires and
// after Stop, so Reset re-arms it without a new closure.
func TestResetKeepsCallback(t *testing.T) {
	start := time.Unix(0, 0)
	w := New(time.Millisecond, 8, start)
	var tm Timer
	n := 0
	w.Schedule(&tm, time.Millisecond, func() { n++ })
	w.Advance(start.Add(time.Millisecond))
	w.Reset(&tm, time.Millisecond)
	w.Advance(start.Add(2 * time.Millisecond))
	w.Reset(&tm, time.Millisecond)
	tm.Stop()
	w.Reset(&tm, time.Millisecond)
	w.Advance(start.Add(3 * time.Millisecond))
	if n != 3 {
		t.Fatalf("fired %d times, want 3", n)
	}
	if allocs := testing.AllocsPerRun(100, func() { w.Reset(&tm, time.Millisecond); tm.Stop() }); allocs != 0 {
		t.Fatalf("Reset allocates %v times", allocs)
	}
}
