package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// runHold broadcasts to the held streams: cfg.Events events to the shared
// key, each once the previous reached every stream, then one event to each
// of cfg.Sample per-user keys spread over all keys. res.CPUSeconds is the
// servers' CPU for both.
func runHold(ctx context.Context, cfg *RunConfig, fl *fleet, keys []string, perKey []int, res *Result, cpu func() float64) (pubStats, error) {
	quiet := *cfg
	quiet.Progress = io.Discard
	var connected int64
	for _, r := range fl.snapshot() {
		connected += int64(r.Connected)
	}
	received := func() (n int64) {
		for _, r := range fl.snapshot() {
			n += r.Received
		}
		return n
	}
	deliveredBy := func(want int64, label string) error {
		b := newBar(cfg.Progress, label, want)
		defer b.end()
		var last int64
		lastChange := time.Now()
		return waitForEvery(ctx, 120*time.Second, 10*time.Millisecond, func() (bool, error) {
			got := received()
			b.set(got)
			if got != last {
				last, lastChange = got, time.Now()
			}
			return got >= want || time.Since(lastChange) > 5*time.Second, fl.firstErr()
		})
	}
	c0 := cpu()
	shared := []string{keys[0][:strings.LastIndexByte(keys[0], '-')+1] + "shared"}
	pub := pubStats{sent: make([]int64, 1)}
	for i := range cfg.Events {
		p := publish(ctx, quiet, shared, true, i, 1, 0)
		pub.merge(p)
		res.SharedDeliveries = pub.total * connected
		res.DeliveriesExpected = res.SharedDeliveries
		if err := deliveredBy(res.DeliveriesExpected, fmt.Sprintf("%s hold broadcast %d/%d", cfg.Server, i+1, cfg.Events)); err != nil {
			return pub, err
		}
	}
	// One event to each sampled per-user key.
	idx := make([]int, cfg.Sample)
	sample := make([]string, cfg.Sample)
	for j := range idx {
		idx[j] = j * len(keys) / cfg.Sample
		sample[j] = keys[idx[j]]
	}
	p := publish(ctx, quiet, sample, false, 0, len(sample), 0)
	for j, n := range p.sent {
		res.DeliveriesExpected += n * int64(perKey[idx[j]])
	}
	res.SampleKeys = cfg.Sample
	pub.total += p.total
	pub.errors += p.errors
	if pub.errSample == "" {
		pub.errSample = p.errSample
	}
	if p.last.After(pub.last) {
		pub.last = p.last
	}
	if err := deliveredBy(res.DeliveriesExpected, cfg.Server+" hold sample"); err != nil {
		return pub, err
	}
	res.CPUSeconds = cpu() - c0
	return pub, nil
}

// memAvailable returns the machine's MemAvailable in bytes (0 if unknown).
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// NodeStat is one server process while the streams are held.
type NodeStat struct {
	PID      int   `json:"pid"`
	RSSBytes int64 `json:"rss_bytes"`
	FDs      int   `json:"fds"`
}

func nodeStats(pids []int) []NodeStat {
	out := make([]NodeStat, len(pids))
	for i, p := range pids {
		out[i].PID = p
		out[i].RSSBytes, _ = procRSS(p)
		if ents, err := os.ReadDir("/proc/" + strconv.Itoa(p) + "/fd"); err == nil {
			out[i].FDs = len(ents)
		}
	}
	return out
}

// writeNodes prints the per-node figures and their spread.
func writeNodes(w io.Writer, nodes []NodeStat) {
	if len(nodes) == 0 {
		return
	}
	var total int64
	minFD, maxFD := nodes[0].FDs, nodes[0].FDs
	for _, n := range nodes {
		total += n.RSSBytes
		minFD, maxFD = min(minFD, n.FDs), max(maxFD, n.FDs)
		fmt.Fprintf(w, "node pid %d: %d descriptors, rss %.1f MiB\n", n.PID, n.FDs, float64(n.RSSBytes)/(1<<20))
	}
	fmt.Fprintf(w, "%d nodes: rss %.1f MiB in all, %.1f MiB mean; descriptors %d..%d per node\n",
		len(nodes), float64(total)/(1<<20), float64(total)/float64(len(nodes))/(1<<20), minFD, maxFD)
}
