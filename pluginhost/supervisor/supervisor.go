package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/sandbox"
	"golang.org/x/sys/unix"
)

// Stream names passed to [Spec.Output].
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// DefaultMaxLineBytes is the output line length used when
// [Spec.MaxLineBytes] is zero.
const DefaultMaxLineBytes = 16 << 10

// maxMaxLineBytes bounds Spec.MaxLineBytes: each stream's buffer has that
// size for the life of the process.
const maxMaxLineBytes = 1 << 20

// ErrInvalidSpec is wrapped by the error [Start] returns for a [Spec] that
// can never be started (a caller bug rather than a plugin or host failure).
var ErrInvalidSpec = errors.New("supervisor: invalid spec")

// Limits are the resource limits of one plugin process. Zero means
// unlimited. See the package documentation for how each is enforced.
type Limits struct {
	// FileHandles is the maximum number of open file descriptors.
	FileHandles int
	// MemoryMB is the memory limit in MiB: resident memory (swap disabled)
	// with a cgroup, private writable address space with RLIMIT_DATA.
	MemoryMB int
	// CPUPercent is the CPU limit in percent of one CPU (200 means two
	// CPUs), enforced only with a cgroup.
	CPUPercent int
	// Processes is the most processes and threads the plugin may run at
	// once: a cgroup's pids.max, or else RLIMIT_NPROC when the plugin runs
	// under a uid of its own.
	Processes int
}

// Sandbox is how a process is confined; see package sandbox.
type Sandbox struct {
	// Confine is what the init stage applies: UID, GID, LoopbackUp,
	// NoNewPrivs, Landlock, Seccomp. Its Path, Argv, Env, Dir and Rlimits
	// come from the Spec.
	Confine sandbox.Exec
	// NewNetwork gives the process a network namespace of its own, holding
	// only a loopback interface (LoopbackUp brings it up).
	NewNetwork bool
	// UserNamespace puts the process in a user namespace of its own that
	// maps the host's uid and gid: how a host that is not root creates the
	// network namespace. Confine.UID must then be -1.
	UserNamespace bool
}

// cloneAttrs returns the clone flags, id mappings and ambient capabilities
// the init stage is forked with.
func (b *Sandbox) cloneAttrs() (flags uintptr, uids, gids []syscall.SysProcIDMap, caps []uintptr) {
	if b.NewNetwork {
		flags |= syscall.CLONE_NEWNET
	}
	if b.UserNamespace {
		flags |= syscall.CLONE_NEWUSER
		uids = []syscall.SysProcIDMap{{ContainerID: os.Getuid(), HostID: os.Getuid(), Size: 1}}
		gids = []syscall.SysProcIDMap{{ContainerID: os.Getgid(), HostID: os.Getgid(), Size: 1}}
		if b.NewNetwork {
			// The init stage keeps the right to bring loopback up across its exec; it
			// clears its ambient capabilities before it executes the plugin.
			caps = []uintptr{unix.CAP_NET_ADMIN}
		}
	}
	return flags, uids, gids, caps
}

// Spec describes a plugin process to start.
type Spec struct {
	// PluginID names the plugin in errors and in its cgroup. Required.
	PluginID string
	// Dir is the working directory; empty means the host's.
	Dir string
	// Path is the absolute path of the executable. Required.
	Path string
	// Args are the arguments after the program name (argv[0] is Path).
	Args []string
	// Env is the child's whole environment, as "KEY=value" entries. Nothing
	// is inherited from the host: a nil Env means an empty environment.
	Env []string
	// Limits are the resource limits to apply.
	Limits Limits
	// Sandbox, if not nil, confines the process.
	Sandbox *Sandbox
	// MaxLineBytes is the longest output line delivered whole; longer lines
	// are cut. Zero means DefaultMaxLineBytes; at most 1 MiB.
	MaxLineBytes int
	// Output, if not nil, receives every line the process writes, without
	// its line ending, with the name of the stream (StreamStdout or
	// StreamStderr). Lines of one stream arrive in order on one goroutine;
	// the two streams are delivered concurrently. It is called
	// synchronously: while it runs, that stream is not read and the plugin
	// eventually blocks writing to it. It must return; the process is not
	// Done until every line has been delivered.
	Output func(stream, line string, truncated bool)
}

// Process is a running (or finished) plugin process started by [Start].
// Its methods are safe for concurrent use.
type Process struct {
	pid      int           // assigned once in Start
	id       string        // assigned once in Start
	enforced Enforcement   // assigned once in Start
	cg       *cgroup       // assigned once in Start, then used only by supervise
	streams  [2]*stream    // assigned once in Start
	done     chan struct{} // closed by supervise once exit is set
	exit     ExitStatus    // written by supervise before done is closed, read only after

	// mu guards reaped. It is held while the process group is signalled and
	// while /proc is read, so the PID cannot be reaped (and reused by an
	// unrelated process) in between.
	mu     sync.Mutex
	reaped bool
}

// Start starts the process described by spec with its limits applied and
// returns once it runs. The process is in its own process group and is
// SIGKILLed by the kernel if the host dies. A limit this host cannot
// enforce is not an error; see [Process.Enforced].
func Start(spec Spec) (*Process, error) {
	return start(spec, func(s *Spec) (launchPlan, Enforcement) {
		return theLauncher.cgroups.plan(s)
	})
}

// PID returns the process ID of the plugin's main process (also its
// process group ID).
func (p *Process) PID() int { return p.pid }

// Done returns a channel that is closed when the process has exited, the
// rest of its process group (and cgroup) has been killed, and its output
// has been read to the end.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit returns how the process ended. It is valid after Done is closed;
// before that it returns the zero ExitStatus.
func (p *Process) Exit() ExitStatus {
	select {
	case <-p.done:
		return p.exit
	default:
		return ExitStatus{}
	}
}

// Enforced reports which of the process's limits are enforced and how. A
// field is empty for a limit that is zero or that this host cannot enforce.
func (p *Process) Enforced() Enforcement { return p.enforced }

// Signal sends sig to the process's whole process group. It returns
// os.ErrProcessDone once the process has exited and been reaped.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return os.ErrProcessDone
	}
	// Until it is reaped, the main process holds its PID and therefore the
	// process group ID, even as a zombie, so this cannot hit another group.
	if err := unix.Kill(-p.pid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return os.ErrProcessDone
		}
		return fmt.Errorf("supervisor: signal plugin %q: %w", p.id, err)
	}
	return nil
}

// Stop terminates the process: it sends SIGTERM (and SIGCONT, so that a
// stopped process can act on it) to the process group, waits up to grace
// for the process to exit, then sends SIGKILL to the group. A grace of zero
// or less kills at once, and so does ctx ending. Stop returns only when the
// process is gone and its output has been drained (ctx does not cut that
// short: SIGKILL cannot be refused, so this is bounded). It is idempotent
// and safe to call concurrently, including with a natural exit.
func (p *Process) Stop(ctx context.Context, grace time.Duration) ExitStatus {
	select {
	case <-p.done:
		return p.exit
	default:
	}
	if grace > 0 && ctx.Err() == nil {
		_ = p.Signal(syscall.SIGTERM)
		_ = p.Signal(syscall.SIGCONT)
		timer := time.NewTimer(grace)
		select {
		case <-p.done:
			timer.Stop()
			return p.exit
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
	return p.exit
}

// start is Start with the choice of limits and cgroup left to plan, which
// runs on the launcher goroutine.
func start(spec Spec, plan func(*Spec) (launchPlan, Enforcement)) (*Process, error) {
	s, err := spec.normalized()
	if err != nil {
		return nil, err
	}
	p := &Process{id: s.PluginID, done: make(chan struct{})}

	// The parent keeps the read ends; the child gets the write ends and
	// /dev/null as stdin. All are close-on-exec, so no other child forked
	// concurrently by the host inherits them.
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("supervisor: start plugin %q: %w", s.PluginID, err)
	}
	files = append(files, stdin)
	var readEnds, writeEnds [2]*os.File
	for i := range readEnds {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("supervisor: start plugin %q: %w", s.PluginID, err)
		}
		readEnds[i], writeEnds[i] = r, w
		files = append(files, r, w)
	}
	// Fd puts the write ends in blocking mode, which the child expects of
	// its stdout and stderr (the mode is shared with the child's copies).
	attr := &syscall.ProcAttr{
		Dir:   s.Dir,
		Env:   s.Env,
		Files: []uintptr{stdin.Fd(), writeEnds[0].Fd(), writeEnds[1].Fd()},
	}
	e := sandbox.Exec{UID: -1, GID: -1}
	if s.Sandbox != nil {
		e = s.Sandbox.Confine
	}
	e.Path, e.Argv, e.Env, e.Dir = s.Path, append([]string{s.Path}, s.Args...), s.Env, s.Dir

	theLauncher.do(func() {
		var lp launchPlan
		lp, p.enforced = plan(&s)
		p.cg = lp.cg
		p.pid, err = forkExec(e, s.Sandbox, attr, lp)
	})
	_ = stdin.Close()
	_ = writeEnds[0].Close()
	_ = writeEnds[1].Close()
	if err != nil {
		_ = readEnds[0].Close()
		_ = readEnds[1].Close()
		if p.cg != nil {
			p.cg.remove()
			p.cg.release()
		}
		return nil, fmt.Errorf("supervisor: start plugin %q: %w", s.PluginID, err)
	}

	for i, name := range []string{StreamStdout, StreamStderr} {
		p.streams[i] = newStream(name, readEnds[i], s.MaxLineBytes, s.Output, name == StreamStderr && p.enforced.Memory == EnforcedByRlimit)
		go p.streams[i].run()
	}
	go p.supervise()
	return p, nil
}

// normalized validates s and returns a copy with defaults applied that
// shares no slices with the caller.
func (s Spec) normalized() (Spec, error) {
	invalid := func(format string, args ...any) (Spec, error) {
		return Spec{}, fmt.Errorf("%w: plugin %q: %s", ErrInvalidSpec, s.PluginID, fmt.Sprintf(format, args...))
	}
	switch {
	case s.PluginID == "":
		return invalid("plugin ID is empty")
	case !filepath.IsAbs(s.Path):
		return invalid("executable path %q is not absolute", s.Path)
	case s.Limits.FileHandles < 0 || s.Limits.MemoryMB < 0 || s.Limits.CPUPercent < 0 || s.Limits.Processes < 0:
		return invalid("negative limit in %+v", s.Limits)
	case s.MaxLineBytes < 0 || s.MaxLineBytes > maxMaxLineBytes:
		return invalid("MaxLineBytes %d outside [0, %d]", s.MaxLineBytes, maxMaxLineBytes)
	}
	if s.MaxLineBytes == 0 {
		s.MaxLineBytes = DefaultMaxLineBytes
	}
	// A non-nil, possibly empty, slice: syscall.ForkExec would otherwise
	// pass the host's environment.
	s.Env = append([]string{}, s.Env...)
	s.Args = append([]string(nil), s.Args...)
	return s, nil
}

// supervise waits for the main process to exit, kills what is left of its
// group and cgroup, reaps it, drains its output, removes its cgroup, and
// finally records the exit status and closes done. It is the owner of the
// two stream goroutines, which have exited when it closes done.
func (p *Process) supervise() {
	// Wait without reaping: as a zombie, the main process keeps its PID and
	// so the group ID, and the group can be killed without any risk of
	// hitting a process that reused the ID.
	var info unix.Siginfo
	err := retryEINTR(func() error {
		return unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
	})

	p.mu.Lock()
	var ws unix.WaitStatus
	known := false
	if err == nil {
		_ = unix.Kill(-p.pid, syscall.SIGKILL)
		err = retryEINTR(func() error {
			_, err := unix.Wait4(p.pid, &ws, 0, nil)
			return err
		})
		known = err == nil
	}
	// Without a known status (ECHILD: someone else reaped our child, e.g.
	// the host ignores SIGCHLD) the process is gone all the same.
	p.reaped = true
	p.mu.Unlock()
	exitedAt := time.Now()

	if p.cg != nil {
		p.cg.kill()
	}
	drain(p.streams[:], exitedAt)

	oomKilled := false
	if p.cg != nil {
		p.cg.waitEmpty()
		oomKilled = p.cg.oomKilled()
		p.cg.remove()
		p.cg.release()
	}
	p.exit = exitStatus(ws, known, oomKilled, p.streams[1])
	close(p.done)
}

// retryEINTR calls f until it returns something other than EINTR.
func retryEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
