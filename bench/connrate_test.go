package bench

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConnectRate(t *testing.T) {
	c := newConnectRate(100)
	for _, o := range []struct {
		at time.Duration
		n  int64
	}{{100 * time.Millisecond, 10}, {900 * time.Millisecond, 30}, {1500 * time.Millisecond, 50}, {2100 * time.Millisecond, 80}, {3200 * time.Millisecond, 100}, {4100 * time.Millisecond, 100}} {
		c.observeAt(o.at, o.n)
	}
	r := c.result()
	if r.To25 != 0.9 || r.To50 != 1.5 || r.To75 != 2.1 || r.To100 != 3.2 {
		t.Errorf("quartiles %v %v %v %v", r.To25, r.To50, r.To75, r.To100)
	}
	if !slices.Equal(r.PerSecond, []int64{30, 20, 30, 20}) || r.Peak != 30 || r.Mean != 100/3.2 {
		t.Errorf("per second %v peak %d mean %v", r.PerSecond, r.Peak, r.Mean)
	}
	var b bytes.Buffer
	writeConnectRate(&b, r)
	if !strings.Contains(b.String(), "100% 3.20 s") || !strings.Contains(b.String(), "connected per second: 30 20 30 20") {
		t.Errorf("%s", b.String())
	}
}
