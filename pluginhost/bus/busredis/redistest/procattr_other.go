//go:build !linux

package redistest

import "syscall"

// sysProcAttr is the default elsewhere: cleanup relies on Close.
func sysProcAttr() *syscall.SysProcAttr { return nil }
