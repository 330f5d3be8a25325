package store

// bootID returns the id of the running kernel's boot ("" if unknown). A
// variable so that tests can play a machine that rebooted (SetBootID).
var bootID = kernelBootID

// maxBootID bounds a boot id read from the system or from n:boot (Linux's is
// a 36-byte UUID).
const maxBootID = 64

// validBootID reports whether id can be a boot id: not empty, at most
// maxBootID bytes of printable ASCII.
func validBootID(id string) bool {
	if id == "" || len(id) > maxBootID {
		return false
	}
	for i := range len(id) {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}
