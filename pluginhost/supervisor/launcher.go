package supervisor

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// launcher runs every fork of this package, and the cgroup bookkeeping, on
// one goroutine locked to its OS thread for the life of the host process.
//
// Linux sends a child its parent-death signal (Pdeathsig) when the thread
// that forked it exits, not when the process exits, and the Go runtime may
// end an OS thread whenever it likes (for example one whose locked
// goroutine returned). A plugin forked from an ordinary goroutine could
// then be SIGKILLed while the host is perfectly healthy. Forking from a
// thread that never exits makes the signal mean "the host died". The same
// thread is the ptrace tracer that applies limits before the plugin runs,
// and ptrace requests must come from the tracing thread.
type launcher struct {
	once  sync.Once
	calls chan func() // created once; never closed: serve runs until the process exits

	// cgroups is touched only by functions running on the launcher
	// goroutine, which serialises it without a lock.
	cgroups cgroupManager
}

// theLauncher is the package's only global state. It must be global: the
// thread that forks a plugin must outlive the plugin, so it cannot belong
// to any one caller, and the cgroup parent directory it manages is shared
// by every plugin of the host process.
var theLauncher launcher

// do runs f on the launcher goroutine, starting that goroutine on first
// use, and returns when f has returned. f must not call do.
func (l *launcher) do(f func()) {
	l.once.Do(func() {
		l.calls = make(chan func())
		go l.serve()
	})
	done := make(chan struct{})
	l.calls <- func() {
		defer close(done)
		f()
	}
	<-done
}

// serve runs calls on a locked OS thread. It never returns and never
// unlocks the thread: see launcher.
func (l *launcher) serve() {
	runtime.LockOSThread()
	for f := range l.calls {
		f()
	}
}

// launchPlan says what forkExec must set up for a new process, besides
// what syscall.ProcAttr carries.
type launchPlan struct {
	nofile uint64  // RLIMIT_NOFILE to set, or 0
	data   uint64  // RLIMIT_DATA to set, in bytes, or 0
	cg     *cgroup // cgroup to put the process in, or nil
	// noCgroupFD makes forkExec place the process with cgroup.procs rather
	// than at clone time (CLONE_INTO_CGROUP); for tests of that fallback.
	noCgroupFD bool
}

// forkExec starts path in a new process group with the parent-death signal
// and applies plan before the program's first instruction when the kernel
// allows ptrace (see the package documentation). It must run on the
// launcher goroutine. On error no process is left behind.
func forkExec(path string, argv []string, attr *syscall.ProcAttr, plan launchPlan) (int, error) {
	sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	attr.Sys = sys

	cgroupFD := -1
	if plan.cg != nil && !plan.noCgroupFD {
		if fd, err := plan.cg.open(); err == nil {
			cgroupFD = fd
			defer unix.Close(fd)
		}
	}
	mayTrace := true
	for {
		sys.UseCgroupFD, sys.CgroupFD = cgroupFD >= 0, max(cgroupFD, 0)
		placed := plan.cg == nil || sys.UseCgroupFD
		sys.Ptrace = mayTrace && (plan.nofile > 0 || plan.data > 0 || !placed)

		pid, err := syscall.ForkExec(path, argv, attr)
		switch {
		case err != nil && sys.UseCgroupFD:
			// clone3 or CLONE_INTO_CGROUP may be unsupported (before Linux
			// 5.7); place the process through cgroup.procs instead. An
			// error of the program itself just happens again.
			cgroupFD = -1
			continue
		case err != nil && sys.Ptrace && errors.Is(err, syscall.EPERM):
			// PTRACE_TRACEME refused (seccomp, Yama): apply the limits
			// right after the start instead.
			mayTrace = false
			continue
		case err != nil:
			return 0, err
		}

		if sys.Ptrace {
			if err := waitExecStop(pid); err != nil {
				return 0, err
			}
		}
		if err := applyPlan(pid, plan, placed); err != nil {
			killAndReap(pid)
			return 0, err
		}
		if sys.Ptrace {
			if err := unix.PtraceDetach(pid); err != nil {
				killAndReap(pid)
				return 0, fmt.Errorf("detach: %w", err)
			}
		}
		return pid, nil
	}
}

// waitExecStop waits until the traced child pid stops after its execve,
// passing on any signal that stops it before. On error the child is gone
// and reaped.
func waitExecStop(pid int) error {
	for {
		var ws unix.WaitStatus
		err := retryEINTR(func() error { _, err := unix.Wait4(pid, &ws, 0, nil); return err })
		switch {
		case err != nil:
			killAndReap(pid)
			return fmt.Errorf("wait for exec: %w", err)
		case !ws.Stopped():
			return fmt.Errorf("process ended before it ran (wait status %#x)", uint32(ws))
		case ws.StopSignal() == syscall.SIGTRAP:
			return nil
		}
		if err := unix.PtraceCont(pid, int(ws.StopSignal())); err != nil {
			killAndReap(pid)
			return fmt.Errorf("resume before exec: %w", err)
		}
	}
}

// killAndReap kills the child pid, traced or not, and reaps it.
func killAndReap(pid int) {
	_ = unix.Kill(pid, syscall.SIGKILL)
	for {
		var ws unix.WaitStatus
		err := retryEINTR(func() error { _, err := unix.Wait4(pid, &ws, 0, nil); return err })
		if err != nil || !ws.Stopped() {
			return
		}
	}
}

// applyPlan sets the rlimits of plan on pid and, unless it is already
// placed, moves it into plan's cgroup.
func applyPlan(pid int, plan launchPlan, placed bool) error {
	if plan.nofile > 0 {
		if err := lowerRlimit(pid, unix.RLIMIT_NOFILE, plan.nofile); err != nil {
			return fmt.Errorf("set file handle limit: %w", err)
		}
	}
	if plan.data > 0 {
		if err := lowerRlimit(pid, unix.RLIMIT_DATA, plan.data); err != nil {
			return fmt.Errorf("set memory limit: %w", err)
		}
	}
	if !placed {
		if err := plan.cg.addProcess(pid); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	return nil
}

// lowerRlimit sets both the soft and the hard limit of resource for pid to
// limit, or to the current hard limit if that is lower already. Setting
// the hard limit stops the plugin from raising the soft one again (as the
// Go runtime does for RLIMIT_NOFILE at start).
func lowerRlimit(pid, resource int, limit uint64) error {
	var old unix.Rlimit
	if err := unix.Prlimit(pid, resource, nil, &old); err != nil {
		return err
	}
	limit = min(limit, old.Max)
	return unix.Prlimit(pid, resource, &unix.Rlimit{Cur: limit, Max: limit}, nil)
}
