// Package proc starts and stops plugin processes: each in its own process group, killed
// with the parent-death signal when the host dies, with resource limits, its output read
// line by line with bounded memory, and an escalating stop (SIGTERM, then SIGKILL).
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits bounds a process; 0 means unlimited.
type Limits struct {
	FileHandles int
	MemoryMB    int
	CPUPercent  int
}

// Spec describes a process to start.
type Spec struct {
	PluginID string
	// Dir is the working directory.
	Dir string
	// Path is the absolute path of the executable.
	Path string
	Args []string
	// Env is the whole environment of the process: nothing is inherited.
	Env    []string
	Limits Limits
	// MaxLineBytes cuts longer output lines (default 16 KiB).
	MaxLineBytes int
	// Output receives each line the process writes, from one goroutine per stream
	// ("stdout", "stderr"). A slow Output makes the process block on its pipe
	// (backpressure) rather than the host buffer without bound.
	Output func(stream, line string, truncated bool)
}

// Enforcement says how each limit is enforced ("" when it is not).
type Enforcement struct {
	FileHandles string // "rlimit"
	// Memory is "monitor": the caller samples Usage and stops a process over its limit.
	// (RLIMIT_AS is not used: runtimes such as Go's reserve far more address space than
	// they use, and would fail at start under any useful limit.)
	Memory string
	CPU    string // "": CPU limits need cgroup v2 delegation, which this package does not use
}

// Capabilities tells what this host can enforce.
func Capabilities() Enforcement {
	return Enforcement{FileHandles: "rlimit", Memory: "monitor"}
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code   int
	Signal string
	// OOM is a best guess that the process died of its memory limit.
	OOM bool
	Err error
}

// String describes the exit for people.
func (e ExitStatus) String() string {
	var s string
	switch {
	case e.Err != nil && e.Signal == "" && e.Code < 0:
		s = "failed: " + e.Err.Error()
	case e.Signal != "":
		s = "killed by signal " + e.Signal
	default:
		s = fmt.Sprintf("exited with code %d", e.Code)
	}
	if e.OOM {
		s += " (memory limit exceeded)"
	}
	return s
}

// Usage is a running process's resource use, read from /proc.
type Usage struct {
	RSSBytes   int64
	CPUSeconds float64
	OpenFiles  int
	Threads    int
}

// Process is a started process.
type Process struct {
	cmd      *exec.Cmd
	pid      int
	enforced Enforcement
	done     chan struct{} // closed when the process has exited and its output is read

	mu       sync.Mutex // guards exit and stopping
	exit     ExitStatus
	lastErr  []string // the last stderr lines, for the OOM guess; guarded by mu
	stopOnce sync.Once
}

// launcher forks processes from one OS thread that never exits: Linux sends the
// parent-death signal when the thread that forked a child exits, and Go retires threads, so
// forking from arbitrary goroutines would kill plugins at random. It is the one piece of
// package state, started once.
var launcher struct {
	once sync.Once
	reqs chan launchReq
}

type launchReq struct {
	cmd  *exec.Cmd
	done chan error
}

func startLauncher() {
	launcher.reqs = make(chan launchReq)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the host
		for r := range launcher.reqs {
			r.done <- r.cmd.Start()
		}
	}()
}

// Start starts the process described by spec.
func Start(spec Spec) (*Process, error) {
	if spec.MaxLineBytes <= 0 {
		spec.MaxLineBytes = 16 << 10
	}
	if spec.Output == nil {
		spec.Output = func(string, string, bool) {}
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = spec.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	launcher.once.Do(startLauncher)
	req := launchReq{cmd: cmd, done: make(chan error, 1)}
	launcher.reqs <- req
	if err := <-req.done; err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	p := &Process{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	p.enforced = applyLimits(p.pid, spec.Limits)
	var readers sync.WaitGroup
	readers.Add(2)
	go p.readLines(&readers, "stdout", stdout, spec)
	go p.readLines(&readers, "stderr", stderr, spec)
	go func() {
		readers.Wait()
		err := cmd.Wait()
		p.mu.Lock()
		p.exit = exitStatus(err, p.lastErr, spec.Limits.MemoryMB > 0)
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// applyLimits sets the rlimits of a started process (before it does much: the window is
// the few microseconds between exec and this call).
func applyLimits(pid int, l Limits) Enforcement {
	var e Enforcement
	if l.FileHandles > 0 {
		lim := unix.Rlimit{Cur: uint64(l.FileHandles), Max: uint64(l.FileHandles)}
		if unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil) == nil {
			e.FileHandles = "rlimit"
		}
	}
	if l.MemoryMB > 0 {
		e.Memory = "monitor"
	}
	return e
}

func (p *Process) readLines(wg *sync.WaitGroup, stream string, r io.Reader, spec Spec) {
	defer wg.Done()
	br := bufio.NewReaderSize(r, 4096)
	var line []byte
	truncated := false
	flush := func() {
		if len(line) == 0 && !truncated {
			return
		}
		s := strings.TrimRight(string(line), "\r")
		if stream == "stderr" {
			p.mu.Lock()
			p.lastErr = append(p.lastErr, s)
			if len(p.lastErr) > 5 {
				p.lastErr = p.lastErr[1:]
			}
			p.mu.Unlock()
		}
		spec.Output(stream, s, truncated)
		line, truncated = line[:0], false
	}
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			body := chunk
			if body[len(body)-1] == '\n' {
				body = body[:len(body)-1]
			}
			if room := spec.MaxLineBytes - len(line); room > 0 {
				if len(body) > room {
					body, truncated = body[:room], true
				}
				line = append(line, body...)
			} else if len(body) > 0 {
				truncated = true
			}
			if chunk[len(chunk)-1] == '\n' {
				flush()
			}
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			flush()
			return
		}
	}
}

func exitStatus(err error, lastErr []string, memLimited bool) ExitStatus {
	if err == nil {
		return ExitStatus{}
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return ExitStatus{Code: -1, Err: err}
	}
	st := ExitStatus{Code: ee.ExitCode(), Err: err}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		st.Signal = unix.SignalName(ws.Signal())
		st.Code = -1
	}
	if memLimited {
		for _, l := range lastErr {
			if strings.Contains(l, "out of memory") || strings.Contains(l, "cannot allocate memory") {
				st.OOM = true
			}
		}
	}
	return st
}

// PID is the process id.
func (p *Process) PID() int { return p.pid }

// Done is closed when the process has exited and its output has been read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit is how the process ended; valid after Done.
func (p *Process) Exit() ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Enforced says how this process's limits are enforced.
func (p *Process) Enforced() Enforcement { return p.enforced }

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return syscall.Kill(-p.pid, sig)
}

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILL, and returns
// when the process is gone and its output read. It is safe to call more than once and
// concurrently with a natural exit.
func (p *Process) Stop(ctx context.Context, grace time.Duration) ExitStatus {
	p.stopOnce.Do(func() {
		_ = p.Signal(syscall.SIGTERM)
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-p.done:
		case <-timer.C:
		case <-ctx.Done():
		}
		_ = syscall.Kill(-p.pid, syscall.SIGKILL) // also reaps what the plugin started
	})
	<-p.done
	return p.Exit()
}

// Usage reads the process's resource use from /proc.
func (p *Process) Usage() (Usage, error) {
	var u Usage
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
	if err != nil {
		return u, err
	}
	// Fields after the command name (which is in parentheses and may hold spaces).
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) > 21 {
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		u.CPUSeconds = (utime + stime) / 100 // USER_HZ is 100 on Linux
		u.Threads, _ = strconv.Atoi(f[17])
		rss, _ := strconv.ParseInt(f[21], 10, 64)
		u.RSSBytes = rss * int64(os.Getpagesize())
	}
	if fds, err := os.ReadDir("/proc/" + strconv.Itoa(p.pid) + "/fd"); err == nil {
		u.OpenFiles = len(fds)
	}
	return u, nil
}
