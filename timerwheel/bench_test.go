package timerwheel

import (
	"runtime"
	"testing"
	"time"
)

// Benchmark wheel shape: a 100 ms tick and 512 slots, so one revolution
// (51.2 s) holds a 30 s heartbeat without skipping.
const (
	benchTick  = 100 * time.Millisecond
	benchSlots = 512
	million    = 1_000_000
)

func BenchmarkSchedule(b *testing.B) {
	f := func() {}
	b.Run("wheel", func(b *testing.B) {
		w := New(benchTick, benchSlots, t0)
		var t Timer
		b.ReportAllocs()
		for b.Loop() {
			w.Schedule(&t, 30*time.Second, f)
			t.Stop()
		}
	})
	b.Run("time_AfterFunc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			t := time.AfterFunc(30*time.Second, f)
			t.Stop()
		}
	})
}

// BenchmarkMillionTimers schedules a million timers spread over 30 s, then
// cancels them all. The timers' own storage is allocated in the loop for both,
// so B/timer is the whole memory cost of a timer.
func BenchmarkMillionTimers(b *testing.B) {
	f := func() {}
	spread := func(i int) time.Duration { return 1 + time.Duration(i)*(30*time.Second/million) }
	b.Run("wheel", func(b *testing.B) {
		w := New(benchTick, benchSlots, t0)
		b.ReportAllocs()
		m := startPerTimer()
		for b.Loop() {
			timers := make([]Timer, million)
			for i := range timers {
				w.Schedule(&timers[i], spread(i), f)
			}
			for i := range timers {
				timers[i].Stop()
			}
			m.iters++
		}
		m.report(b)
	})
	b.Run("time_AfterFunc", func(b *testing.B) {
		b.ReportAllocs()
		m := startPerTimer()
		for b.Loop() {
			timers := make([]*time.Timer, million)
			for i := range timers {
				timers[i] = time.AfterFunc(spread(i), f)
			}
			for _, t := range timers {
				t.Stop()
			}
			m.iters++
		}
		m.report(b)
	})
}

// perTimer reports ns and heap bytes per timer for BenchmarkMillionTimers.
type perTimer struct {
	iters      int
	totalAlloc uint64
}

func startPerTimer() *perTimer {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &perTimer{totalAlloc: ms.TotalAlloc}
}

func (p *perTimer) report(b *testing.B) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	timers := float64(p.iters) * million
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/timers, "ns/timer")
	b.ReportMetric(float64(ms.TotalAlloc-p.totalAlloc)/timers, "B/timer")
}

func BenchmarkAdvance(b *testing.B) {
	// A million pending timers, none due: their deadlines are ~1000 h away
	// (token expiry) and spread over every slot, so each tick walks and skips
	// million/slots of them. This is the hashed wheel's idle cost; more slots
	// make it smaller.
	for _, bb := range []struct {
		name  string
		slots int
	}{
		{"1M_timers_idle_tick", benchSlots},
		{"1M_timers_idle_tick_64Ki_slots", 1 << 16},
	} {
		b.Run(bb.name, func(b *testing.B) {
			w := New(benchTick, bb.slots, t0)
			f := func() {}
			timers := make([]Timer, million)
			for i := range timers {
				w.Schedule(&timers[i], 1000*time.Hour+time.Duration(i)*benchTick, f)
			}
			now := t0
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(benchTick)
				if w.Advance(now) != 0 {
					b.Fatal("a timer fired")
				}
			}
		})
	}
	// A million 30 s heartbeats that reschedule themselves, at steady state:
	// each 100 ms tick runs about 3,333 callbacks.
	b.Run("1M_heartbeats_tick", func(b *testing.B) {
		type conn struct {
			heartbeat Timer
			beat      func()
		}
		w := New(benchTick, benchSlots, t0)
		conns := make([]conn, million)
		for i := range conns {
			c := &conns[i]
			c.beat = func() { w.Schedule(&c.heartbeat, 30*time.Second, c.beat) }
			w.Schedule(&c.heartbeat, 1+time.Duration(i)*(30*time.Second/million), c.beat)
		}
		now := t0
		ran := 0
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(benchTick)
			ran += w.Advance(now)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(ran), "ns/callback")
	})
}
