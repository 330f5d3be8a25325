package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// ConnectRate is how fast the stable streams of a run were established,
// measured by the parent from the workers' reports (every 50 ms, polled
// every 20 ms): times are from the first attempt.
type ConnectRate struct {
	// Seconds until 25, 50, 75 and 100 % of the requested connections
	// were established (0: never reached).
	To25  float64 `json:"to_25_seconds"`
	To50  float64 `json:"to_50_seconds"`
	To75  float64 `json:"to_75_seconds"`
	To100 float64 `json:"to_100_seconds"`
	// PerSecond counts the streams established in each whole second.
	PerSecond []int64 `json:"per_second"`
	// Mean is established streams per second up to the last one; Peak the
	// best whole second.
	Mean float64 `json:"mean_per_second"`
	Peak int64   `json:"peak_per_second"`
}

type connectRate struct {
	want  int64
	start time.Time
	last  int64
	lastT time.Duration
	r     ConnectRate
}

func newConnectRate(want int) *connectRate {
	return &connectRate{want: int64(want), start: time.Now()}
}

// observe records the established count now.
func (c *connectRate) observe(connected int64) { c.observeAt(time.Since(c.start), connected) }

// observeAt records the established count el after the start.
func (c *connectRate) observeAt(el time.Duration, connected int64) {
	sec := int(el / time.Second)
	for len(c.r.PerSecond) <= sec {
		c.r.PerSecond = append(c.r.PerSecond, 0)
	}
	if connected > c.last {
		c.r.PerSecond[sec] += connected - c.last
		c.last, c.lastT = connected, el
	}
	for i, p := range []*float64{&c.r.To25, &c.r.To50, &c.r.To75, &c.r.To100} {
		if *p == 0 && connected*4 >= c.want*int64(i+1) {
			*p = el.Seconds()
		}
	}
}

func (c *connectRate) result() ConnectRate {
	r := c.r
	// Trailing seconds after the last connection say nothing.
	for len(r.PerSecond) > 0 && r.PerSecond[len(r.PerSecond)-1] == 0 {
		r.PerSecond = r.PerSecond[:len(r.PerSecond)-1]
	}
	for _, n := range r.PerSecond {
		r.Peak = max(r.Peak, n)
	}
	if s := c.lastT.Seconds(); s > 0 {
		r.Mean = float64(c.last) / s
	}
	return r
}

// writeConnectRate prints the connect quartiles and the per-second series.
func writeConnectRate(w io.Writer, r ConnectRate) {
	fmt.Fprintf(w, "connect: 25%% %.2f s, 50%% %.2f s, 75%% %.2f s, 100%% %.2f s; mean %.0f/s, peak %d/s\n",
		r.To25, r.To50, r.To75, r.To100, r.Mean, r.Peak)
	if len(r.PerSecond) > 0 {
		s := make([]string, len(r.PerSecond))
		for i, n := range r.PerSecond {
			s[i] = fmt.Sprint(n)
		}
		fmt.Fprintf(w, "connected per second: %s\n", strings.Join(s, " "))
	}
}
