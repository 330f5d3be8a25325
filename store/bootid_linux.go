package store

import (
	"os"
	"strings"
)

// bootIDPath holds a random UUID the kernel picks at boot: it changes with
// every boot, and so after every kernel crash or power loss. Containers see
// the host's.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// kernelBootID returns the running kernel's boot id, "" if it cannot be read.
func kernelBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	if !validBootID(id) {
		return ""
	}
	return id
}
