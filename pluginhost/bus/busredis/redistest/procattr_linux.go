package redistest

import "syscall"

// sysProcAttr has the kernel kill the server when the OS thread that started it exits, so
// that no server outlives a test binary that panics or is killed. launchLocked keeps that
// thread for as long as the server runs.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
