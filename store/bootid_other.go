//go:build !linux

package store

// kernelBootID returns "": this platform has no boot id sseloop knows how to
// read, so a crash is always taken for one the machine may not have survived.
func kernelBootID() string { return "" }
