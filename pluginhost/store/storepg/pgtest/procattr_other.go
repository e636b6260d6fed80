//go:build !linux

package pgtest

import "syscall"

// sysProcAttr runs the process under cred when set; cleanup elsewhere relies on Close.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	if cred == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: cred}
}
