package sandbox

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// probeArg0 is argv[0] of the process Probe starts to try the namespaces: it exits at
// once (see init).
const probeArg0 = "nexus-sandbox-probe"

// Host is what this host can apply, as Probe found it. A field's error says why a
// mechanism is unavailable ("" when it is available).
type Host struct {
	// Root is true when the host runs as root: plugins get uids of their own.
	Root bool
	// LandlockABI is the kernel's Landlock ABI version, 0 without Landlock.
	LandlockABI int
	LandlockErr string
	// SeccompErr is why seccomp filters cannot be installed.
	SeccompErr string
	// NetNSErr is why a process cannot get a network namespace of its own (through a user
	// namespace when the host is not root).
	NetNSErr string
	// UserNSErr, when the host is not root, is why no user namespace can be created.
	UserNSErr string
}

var (
	probeOnce sync.Once
	probed    Host
)

// Probe reports, once per process, what this host can apply: it asks the kernel for its
// Landlock ABI and seccomp support, and starts a short-lived process with new namespaces
// to see whether it is allowed.
func Probe() Host {
	probeOnce.Do(func() { probed = probe() })
	return probed
}

func probe() Host {
	h := Host{Root: os.Geteuid() == 0}
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	switch {
	case errno == unix.ENOSYS:
		h.LandlockErr = "the kernel has no Landlock (Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK)"
	case errno == unix.EOPNOTSUPP:
		h.LandlockErr = "Landlock is disabled at boot (add landlock to the lsm= kernel parameter)"
	case errno != 0:
		h.LandlockErr = "landlock_create_ruleset: " + errno.Error()
	default:
		h.LandlockABI = int(abi)
	}
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		h.SeccompErr = "the kernel has no seccomp filters: " + err.Error()
	}
	flags := uintptr(syscall.CLONE_NEWNET)
	attr := &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL}
	if !h.Root {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getuid(), HostID: os.Getuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getgid(), HostID: os.Getgid(), Size: 1}}
	}
	if err := tryStart(attr); err != nil {
		if h.Root {
			h.NetNSErr = "cannot create a network namespace: " + err.Error()
		} else {
			h.UserNSErr = "the server is not root and cannot create a user namespace: " + err.Error()
			h.NetNSErr = h.UserNSErr
		}
	}
	return h
}

// tryStart starts this executable as the probe process with attr and waits for it.
func tryStart(attr *syscall.SysProcAttr) error {
	pid, err := syscall.ForkExec("/proc/self/exe", []string{probeArg0}, &syscall.ProcAttr{Env: []string{}, Sys: attr})
	if err != nil {
		return err
	}
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return fmt.Errorf("the probe process ended with status %#x", uint32(ws))
	}
	return nil
}
