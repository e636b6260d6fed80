//go:build !linux

package serverproc

import "syscall"

// withPdeathsig returns attr unchanged: there is no parent-death signal elsewhere, and
// cleanup relies on stopping the process.
func withPdeathsig(attr *syscall.SysProcAttr) *syscall.SysProcAttr { return attr }
