package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOpenLoopStampsScheduledTimes: with OpenLoop every event carries the
// time the Rate schedule gave it, not the time a sender got to it, so that
// a server slow to answer triggers shows that wait as latency instead of
// being offered fewer events (coordinated omission). Event n is due
// exactly n intervals after the first, whoever sent it and when.
func TestOpenLoopStampsScheduledTimes(t *testing.T) {
	var mu sync.Mutex
	stamps := map[string]uint64{} // payload SEQ@key -> NS
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seq, ns, ok := parsePayload(b)
		if !ok {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		mu.Lock()
		stamps[strings.TrimPrefix(r.URL.Path, "/trigger/")+"@"+string(rune('0'+seq))] = ns
		mu.Unlock()
		_, _ = io.WriteString(w, `{"id":"1"}`)
	}))
	defer srv.Close()

	const n, rate = 20, 1000.0
	keys := []string{"a", "b"}
	cfg := RunConfig{Target: srv.URL, Rate: rate, Senders: 2, OpenLoop: true, Progress: io.Discard}
	st := publish(context.Background(), cfg, keys, false, 0, n, 0)
	if st.total != n || st.errors != 0 {
		t.Fatalf("sent %d, errors %d (%s), want %d sent", st.total, st.errors, st.errSample, n)
	}
	interval := uint64(time.Duration(float64(time.Second) / rate))
	first := stamps["a@0"]
	for i := range n {
		k := keys[i%len(keys)] + "@" + string(rune('0'+i/len(keys)))
		ns, ok := stamps[k]
		if !ok {
			t.Fatalf("event %d (%s) not received", i, k)
		}
		if ns-first != uint64(i)*interval {
			t.Fatalf("event %d stamped %d ns after the first, want exactly %d (its place in the schedule)", i, ns-first, uint64(i)*interval)
		}
	}
}
