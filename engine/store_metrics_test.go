package engine

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sseloop/sseloop/store"
)

// A buntdb record that failed its checksum (here: dropped by Repair at open)
// shows in the metrics, so an operator can alert on it.
func TestMetricsCountCorruptStoreRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	opts := store.Options{Sync: store.SyncNever, SweepInterval: -1, Logger: slog.New(slog.DiscardHandler)}
	st, err := store.OpenBunt(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Append(context.Background(), []store.Event{{Key: "a", Data: []byte("payload-1")}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte("payload-1"), []byte("payload-9"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Repair = true
	st, err = store.OpenBunt(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := New(Config{}, st)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	e.WriteMetrics(&out)
	if !strings.Contains(out.String(), "\nsseloop_store_corrupt_records 1\n") {
		t.Errorf("metrics lack sseloop_store_corrupt_records 1:\n%s", out.String())
	}
}
