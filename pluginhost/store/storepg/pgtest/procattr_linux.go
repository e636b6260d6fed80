package pgtest

import "syscall"

// sysProcAttr has the kernel kill the process when the OS thread that started it exits, so
// that no server outlives a test binary that panics or is killed; launch keeps that thread
// for as long as the server runs. With cred set, the process runs under that uid and gid
// (a root test binary starts PostgreSQL as an unprivileged user: it refuses to run as
// root). The parent-death signal is set after the credentials change, so it survives it.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
}
