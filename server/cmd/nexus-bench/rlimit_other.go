//go:build !unix

package main

// ensureFileLimit has nothing to check where there is no RLIMIT_NOFILE.
func ensureFileLimit(uint64) error { return nil }
