package bench

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"strings"
)

// histSub is the number of sub-buckets per power of two: values are kept
// with a relative error under 1/histSub (1.6%), whatever their magnitude.
const histSub = 64

// Hist is a log-linear latency histogram of microsecond values, mergeable
// across worker processes. The zero value is ready to use.
type Hist struct {
	Counts map[int]int64 `json:"counts,omitempty"` // bucket index -> count
	N      int64         `json:"n"`
	Max    int64         `json:"max_us"`
}

func histBucket(v int64) int {
	if v < histSub {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - 7 // v>>shift is in [64, 128)
	return histSub + shift*histSub + int(v>>shift) - histSub
}

// histValue is the upper bound of bucket i.
func histValue(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	shift := (i - histSub) / histSub
	m := int64((i-histSub)%histSub + histSub)
	return (m+1)<<shift - 1
}

// Record adds one value in microseconds.
func (h *Hist) Record(us int64) {
	if h.Counts == nil {
		h.Counts = make(map[int]int64)
	}
	h.Counts[histBucket(us)]++
	h.N++
	if us > h.Max {
		h.Max = us
	}
}

// Merge adds o's values to h.
func (h *Hist) Merge(o *Hist) {
	if o.N == 0 {
		return
	}
	if h.Counts == nil {
		h.Counts = make(map[int]int64)
	}
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.N += o.N
	h.Max = max(h.Max, o.Max)
}

// Quantile returns the value at quantile q (0..1) in microseconds, never
// above the maximum recorded.
func (h *Hist) Quantile(q float64) int64 {
	if h.N == 0 {
		return 0
	}
	idx := make([]int, 0, len(h.Counts))
	for i := range h.Counts {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	rank := int64(q*float64(h.N) + 0.5)
	rank = min(max(rank, 1), h.N)
	var seen int64
	for _, i := range idx {
		seen += h.Counts[i]
		if seen >= rank {
			return min(histValue(i), h.Max)
		}
	}
	return h.Max
}

// LatencyMS is a latency summary in milliseconds.
type LatencyMS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

func (h *Hist) summary() LatencyMS {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return LatencyMS{P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)), P999: ms(h.Quantile(0.999)), Max: ms(h.Max)}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports (sysconf needs cgo).
const clockTicks = 100

// errNoProc means the /proc file had an unexpected format.
var errNoProc = errors.New("bench: unexpected /proc format")

// procRSS returns the resident set size of pid in bytes (VmRSS).
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("%w: VmRSS %q", errNoProc, strings.TrimSpace(rest))
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%w: VmRSS: %w", errNoProc, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%w: no VmRSS for pid %d", errNoProc, pid)
}

// procCPU returns user+system CPU time of pid in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	// The command name may contain spaces and parentheses: fields start
	// after the last ')'. Field 3 (state) is f[0], utime (14) f[11], stime f[12].
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errNoProc
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errNoProc
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errNoProc
	}
	return float64(ut+st) / clockTicks, nil
}

// loadAvg returns the 1-minute load average from /proc/loadavg, 0 if
// unavailable.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// sumProc adds up a /proc reading over the server's processes.
func sumProc[T int64 | float64](read func(int) (T, error), pid int, more []int) (T, error) {
	var total T
	for _, p := range append([]int{pid}, more...) {
		v, err := read(p)
		if err != nil {
			return total, err
		}
		total += v
	}
	return total, nil
}

// listensOn reports whether process pid has a TCP socket listening on
// port (Linux: /proc/net/tcp{,6} and /proc/pid/fd). Where /proc cannot
// tell, it reports true.
func listensOn(pid, port int) bool {
	inodes := map[string]bool{}
	readable := false
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		readable = true
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			i := strings.LastIndexByte(fs[1], ':')
			if p, err := strconv.ParseUint(fs[1][i+1:], 16, 16); err == nil && int(p) == port {
				inodes[fs[9]] = true
			}
		}
	}
	if !readable {
		return true
	}
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return false
	}
	for _, fd := range fds {
		l, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name())
		if err == nil && strings.HasPrefix(l, "socket:[") && inodes[strings.TrimSuffix(l[len("socket:["):], "]")] {
			return true
		}
	}
	return false
}
