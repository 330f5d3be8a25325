package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestServerOutputOnlyWhenSomethingFailed(t *testing.T) {
	// Why: four "server output" blocks repeating a start-up warning made a
	// healthy comparison look like a failure.
	healthy := &Result{Server: ServerSseloop, Scenario: ScenarioFanout, Conns: 10, Connected: 10,
		ServerLog: "level=WARN msg=\"triggers accepted from loopback only\""}
	var out bytes.Buffer
	WriteTable(&out, []*Result{healthy})
	if strings.Contains(out.String(), "server output") {
		t.Errorf("server output shown for a healthy run:\n%s", out.String())
	}
	if !strings.Contains(out.String(), ratioNote) {
		t.Errorf("no sentence explaining the ratio:\n%s", out.String())
	}
	for name, r := range map[string]*Result{
		"lost":      {Lost: 1},
		"errors":    {Errors: map[string]int64{"EOF": 2}},
		"connected": {Connected: 9},
		"dropped":   {DroppedStreams: 1},
	} {
		r.Server, r.Scenario, r.ServerLog = ServerSseloop, ScenarioFanout, "level=ERROR msg=boom"
		r.Conns = 10
		if r.Connected == 0 {
			r.Connected = 10
		}
		out.Reset()
		writeNotes(&out, []*Result{r})
		if !strings.Contains(out.String(), "msg=boom") {
			t.Errorf("%s: server output hidden although the run failed:\n%s", name, out.String())
		}
	}
}
