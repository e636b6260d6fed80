package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"

	"github.com/nexus-platform/nexus/pluginhost/sandbox"
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
// thread that never exits makes the signal mean "the host died".
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
	nproc  uint64  // RLIMIT_NPROC to set, or 0 (meaningful only under a uid of its own)
	cg     *cgroup // cgroup to put the process in, or nil
	// noCgroupFD makes forkExec place the process with cgroup.procs rather
	// than at clone time (CLONE_INTO_CGROUP); for tests of that fallback.
	noCgroupFD bool
}

// selfExe is the executable the init stage runs from: the host's own, which links the
// sandbox package (see sandbox.InitArg0).
const selfExe = "/proc/self/exe"

// forkExec starts the program of e through the sandbox init stage, in a new process group
// with the parent-death signal. The init stage waits for its plan, which is written only
// once the process is in its cgroup, so no instruction of the plugin runs unconfined or
// unlimited. It must run on the launcher goroutine. On error no process is left behind.
func forkExec(e sandbox.Exec, box *Sandbox, attr *syscall.ProcAttr, plan launchPlan) (int, error) {
	planR, planW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer planW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		planR.Close()
		return 0, err
	}
	defer statusR.Close()
	fork := *attr
	fork.Dir = ""
	fork.Env = []string{}
	fork.Files = append(slices.Clone(attr.Files), planR.Fd(), statusW.Fd())
	sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if box != nil {
		sys.Cloneflags, sys.UidMappings, sys.GidMappings, sys.AmbientCaps = box.cloneAttrs()
	}
	fork.Sys = sys

	cgroupFD := -1
	if plan.cg != nil && !plan.noCgroupFD {
		if fd, err := plan.cg.open(); err == nil {
			cgroupFD = fd
			defer unix.Close(fd)
		}
	}
	var pid int
	for {
		sys.UseCgroupFD, sys.CgroupFD = cgroupFD >= 0, max(cgroupFD, 0)
		pid, err = syscall.ForkExec(selfExe, []string{sandbox.InitArg0}, &fork)
		if err != nil && sys.UseCgroupFD {
			// clone3 or CLONE_INTO_CGROUP may be unsupported (before Linux 5.7); place
			// the process through cgroup.procs instead.
			cgroupFD = -1
			continue
		}
		break
	}
	_ = planR.Close()
	_ = statusW.Close()
	if err != nil {
		return 0, err
	}
	if plan.cg != nil && !sys.UseCgroupFD || plan.cg != nil && plan.cg.v1() {
		if err := plan.cg.addProcess(pid); err != nil {
			killAndReap(pid)
			return 0, fmt.Errorf("join cgroup: %w", err)
		}
	}
	for _, r := range []struct {
		res int
		v   uint64
	}{{unix.RLIMIT_NOFILE, plan.nofile}, {unix.RLIMIT_DATA, plan.data}, {unix.RLIMIT_NPROC, plan.nproc}} {
		if r.v > 0 {
			e.Rlimits = append(e.Rlimits, sandbox.Rlimit{Resource: r.res, Value: r.v})
		}
	}
	e.ParentPID = os.Getpid()
	if err := json.NewEncoder(planW).Encode(e); err != nil {
		killAndReap(pid)
		return 0, fmt.Errorf("send the sandbox plan: %w", err)
	}
	_ = planW.Close()
	// The status pipe closes on exec; anything written is why the init stage failed.
	msg, _ := io.ReadAll(io.LimitReader(statusR, 4096))
	if len(msg) > 0 {
		killAndReap(pid)
		return 0, sandbox.InitError(msg)
	}
	return pid, nil
}

// killAndReap kills the child pid and reaps it.
func killAndReap(pid int) {
	_ = unix.Kill(pid, syscall.SIGKILL)
	var ws unix.WaitStatus
	_ = retryEINTR(func() error { _, err := unix.Wait4(pid, &ws, 0, nil); return err })
}
