package serverproc

import "syscall"

// withPdeathsig has the kernel kill the process when the OS thread that started it exits
// (see Start), keeping what else attr sets.
func withPdeathsig(attr *syscall.SysProcAttr) *syscall.SysProcAttr {
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Pdeathsig = syscall.SIGKILL
	return attr
}
