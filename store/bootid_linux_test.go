package store

import (
	"regexp"
	"testing"
)

// On Linux the boot id is known, or a kill -9 under everysecond would still
// give every resuming client a false gap.
func TestKernelBootIDLinux(t *testing.T) {
	id := kernelBootID()
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("kernelBootID() = %q, want the UUID in %s", id, bootIDPath)
	}
	if again := kernelBootID(); again != id {
		t.Fatalf("kernelBootID() = %q, then %q", id, again)
	}
}
