//go:build !race

package store_test

import (
	"testing"

	"github.com/sseloop/sseloop/store"
)

// The ticker polls After every 10-100 ms on every node; with nothing new it
// must not allocate (or lock).
func TestAfterCaughtUpAllocatesNothing(t *testing.T) {
	s, err := store.OpenBunt(":memory:", store.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Append(bg, []store.Event{{Key: "a"}}); err != nil {
		t.Fatal(err)
	}
	last, err := s.LastID(bg)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if evs, err := s.After(bg, last, 100); err != nil || len(evs) != 0 {
			t.Fatalf("After = %v, %v", evs, err)
		}
	})
	if allocs != 0 {
		t.Errorf("After with nothing new: %v allocations, want 0", allocs)
	}
}
