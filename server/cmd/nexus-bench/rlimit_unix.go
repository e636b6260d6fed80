//go:build unix

package main

import (
	"fmt"
	"syscall"
)

// ensureFileLimit raises this process's soft limit on open descriptors to n when it is
// lower (Go raises it to the hard limit at start; this only checks that that is enough), and
// fails when the hard limit is below n.
func ensureFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= n {
		return nil
	}
	if lim.Max < n {
		return fmt.Errorf("the hard limit on open files is %d, below the %d this measurement needs (raise it: ulimit -Hn)", lim.Max, n)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	return nil
}
