package store

import "unsafe"

// stringBytes returns the bytes of s without copying, for hash/crc32, which
// takes only []byte: copying every value buntdb hands out (immutable strings,
// up to the whole event data) to checksum it would allocate on every read.
// The result must never be written to.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
