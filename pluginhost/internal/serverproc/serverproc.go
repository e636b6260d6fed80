// Package serverproc is the process plumbing shared by the test harnesses that run real
// servers (redistest for redis-server, pgtest for PostgreSQL): a free loopback port, a server
// process that dies with the test binary, polling until it is ready, an escalating stop, and
// the tail of its log for error messages.
//
// What differs between servers stays with each harness: the command line, how readiness is
// probed, which signal asks the server to stop, and the error prefixes.
package serverproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// Process is a started server process. Its methods are safe for concurrent use.
type Process struct {
	cmd    *exec.Cmd     // assigned once; cmd.Process is read only
	name   string        // the executable's base name, for error messages; assigned once
	exited chan struct{} // closed when the process has exited
}

// Start starts cmd and returns once it has started. On Linux the kernel kills the process
// when the OS thread that started it exits, so that no server outlives a test binary that
// panics or is killed: the goroutine that starts the process waits for it, locked to its OS
// thread, which thus lives exactly as long as the process. Start sets that parent-death
// signal in cmd.SysProcAttr, keeping what else the caller set there (Credential, say: the
// signal is set after the credentials change, so it survives it). Elsewhere cleanup relies
// on the caller stopping the process.
//
// log, when not nil, is closed once the process has exited or failed to start: the file
// that cmd's output goes to, say.
func Start(cmd *exec.Cmd, log io.Closer) (*Process, error) {
	cmd.SysProcAttr = withPdeathsig(cmd.SysProcAttr)
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		if log != nil {
			defer log.Close()
		}
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		<-exited
		return nil, err
	}
	return &Process{cmd: cmd, name: filepath.Base(cmd.Path), exited: exited}, nil
}

// Run runs cmd to completion (a setup command such as initdb) with the same parent-death
// signal as Start, on a goroutine locked to its OS thread.
func Run(cmd *exec.Cmd) error {
	cmd.SysProcAttr = withPdeathsig(cmd.SysProcAttr)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		done <- cmd.Run()
	}()
	return <-done
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// WaitReady calls probe until it succeeds, the process exits, or timeout passes; then it
// returns nil, an error saying the process exited, or the last probe's error. probe's
// context ends at the timeout; probe is tried again 20ms after each failure.
func (p *Process) WaitReady(timeout time.Duration, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		select {
		case <-p.exited:
			return errors.New("exited during startup")
		default:
		}
		if last = probe(ctx); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return errors.New("exited during startup")
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: %w", timeout, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop sends sig to the process and waits for it to exit; after timeout it is killed
// (SIGKILL) and waited for as long again. A polite signal that had to be escalated is an
// error; stopping a process that has exited does nothing.
func (p *Process) Stop(sig syscall.Signal, timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
		if sig != syscall.SIGKILL {
			return fmt.Errorf("%s did not exit within %v of %v and was killed", p.name, timeout, sig)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.Pid())
	}
}

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Tail returns the last n bytes of the file at path (a server's log, for an error message),
// or "" when it cannot be read.
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
