//go:build !race

package timerwheel

import (
	"testing"
	"time"
)

// TestAllocs checks that an embedded Timer costs no allocation to schedule,
// move, stop or fire: there is one or two per connection. The race detector
// allocates, hence the build tag.
func TestAllocs(t *testing.T) {
	type conn struct {
		heartbeat Timer
		beats     int
	}
	w := New(100*time.Millisecond, 512, t0)
	c := new(conn)
	beat := func() { c.beats++ } // allocated once, like a method value stored at accept
	now := t0
	tests := []struct {
		name string
		f    func()
	}{
		{"schedule_stop", func() {
			w.Schedule(&c.heartbeat, 30*time.Second, beat)
			c.heartbeat.Stop()
		}},
		{"schedule_move", func() {
			w.Schedule(&c.heartbeat, 30*time.Second, beat)
			w.Schedule(&c.heartbeat, 10*time.Second, beat)
			c.heartbeat.Stop()
		}},
		{"schedule_advance_fire", func() {
			w.Schedule(&c.heartbeat, 100*time.Millisecond, beat)
			now = now.Add(100 * time.Millisecond)
			if w.Advance(now) != 1 {
				t.Fatal("heartbeat did not fire")
			}
		}},
		{"zero_delay_advance", func() {
			w.Schedule(&c.heartbeat, 0, beat)
			w.Advance(now)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
				t.Errorf("%v allocations per run, want 0", n)
			}
		})
	}
}
