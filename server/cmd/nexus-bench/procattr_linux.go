package main

import "syscall"

// sysProcAttr has the kernel kill a child when this process dies without stopping it
// (killed, or crashed), so no child outlives the run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
