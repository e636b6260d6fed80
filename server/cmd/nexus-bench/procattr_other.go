//go:build !linux

package main

import "syscall"

// sysProcAttr is the default elsewhere: children are stopped by the explicit cleanup only.
func sysProcAttr() *syscall.SysProcAttr { return nil }
