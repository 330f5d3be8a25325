package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCompareSmall runs every scenario against a real sseloop and the
// baseline with a few hundred connections, through two worker processes.
func TestCompareSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and worker processes")
	}
	dir := t.TempDir()
	var out bytes.Buffer
	cfg := CompareConfig{
		Run: RunConfig{
			Conns: 300, Procs: 2, Events: 5, Rate: 50, Duration: time.Second,
			ChurnRate: 20, ChurnHold: 300 * time.Millisecond,
			Settle: 200 * time.Millisecond, Quiet: 200 * time.Millisecond,
		},
		JSON:  filepath.Join(dir, "r.json"),
		Chart: filepath.Join(dir, "r.svg"),
		Out:   &out,
	}
	results, err := Compare(context.Background(), cfg)
	if err != nil {
		t.Fatalf("compare: %v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
	if len(results) != 2*len(Scenarios) {
		t.Fatalf("%d results", len(results))
	}
	for _, r := range results {
		if r.Connected != 300 || r.ConnectFailed != 0 {
			t.Errorf("%s %s: connected %d failed %d", r.Server, r.Scenario, r.Connected, r.ConnectFailed)
		}
		if r.Procs != 2 {
			t.Errorf("%s %s: procs %d", r.Server, r.Scenario, r.Procs)
		}
		if r.RSSBytes <= 0 {
			t.Errorf("%s %s: no rss", r.Server, r.Scenario)
		}
		if r.Scenario == ScenarioIdle {
			continue
		}
		if r.Events == 0 || r.DeliveriesExpected == 0 || r.DeliveriesReceived != r.DeliveriesExpected || r.Lost != 0 || r.Duplicates != 0 {
			t.Errorf("%s %s: events %d expected %d received %d lost %d dups %d", r.Server, r.Scenario,
				r.Events, r.DeliveriesExpected, r.DeliveriesReceived, r.Lost, r.Duplicates)
		}
		if r.Latency.P50 <= 0 || r.Latency.Max < r.Latency.P99 || r.Latency.P99 < r.Latency.P50 {
			t.Errorf("%s %s: latency %+v", r.Server, r.Scenario, r.Latency)
		}
		if r.Scenario == ScenarioChurn && (r.ChurnOpened == 0 || r.ChurnErrors != 0) {
			t.Errorf("%s churn: opened %d errors %d (%v)", r.Server, r.ChurnOpened, r.ChurnErrors, r.Errors)
		}
	}
	b, err := os.ReadFile(cfg.JSON)
	if err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	if err := json.Unmarshal(b, &objs); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"server", "scenario", "conns", "connected", "rss_bytes", "rss_per_conn_bytes", "cpu_seconds",
		"events", "deliveries_expected", "deliveries_received", "lost", "duplicates", "latency_ms", "deliveries_per_second"} {
		if _, ok := objs[0][f]; !ok {
			t.Errorf("JSON lacks %q", f)
		}
	}
	svg, err := os.ReadFile(cfg.Chart)
	if err != nil || !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "fan-out latency") {
		t.Errorf("chart: %v %.80q", err, svg)
	}
	if !strings.Contains(out.String(), "rss per conn B") {
		t.Errorf("table lacks memory row:\n%s", out.String())
	}
}
