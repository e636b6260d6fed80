package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Timeouts of the process plumbing.
const (
	// readyTimeout bounds the wait for a child (or the server) to say it is ready.
	readyTimeout = 30 * time.Second
	// stopGrace is how long a child may take to exit after SIGTERM before it is killed.
	stopGrace = 5 * time.Second
	// serverStopGrace is the same for nexus serve, which shuts down gracefully.
	serverStopGrace = 10 * time.Second
)

// procs owns the processes of one scenario; stopAll stops every one of them, last started
// first. Its methods are safe for concurrent use.
type procs struct {
	stderr io.Writer

	mu   sync.Mutex // guards list
	list []*proc
}

func newProcs(stderr io.Writer) *procs { return &procs{stderr: stderr} }

// proc is a started child process.
type proc struct {
	name  string
	cmd   *exec.Cmd
	grace time.Duration

	// lines receives the lines the child writes to stdout; the reader goroutine closes it at
	// EOF (when the child has exited, or closed its stdout). Lines nobody waits for are
	// dropped once the buffer is full.
	lines chan string
	// exited is closed when cmd.Wait has returned; waitErr is assigned before, so it may be
	// read without synchronisation after exited is closed.
	exited  chan struct{}
	waitErr error
	// stderr keeps the child's last lines on stderr, for the error when it exits without
	// reporting; nil when the caller set cmd.Stderr.
	stderr *prefixWriter
}

// start starts cmd as a child named name, with its stdout read line by line (see
// proc.readJSON) and its stderr, unless cmd sets one, copied to p.stderr with a prefix. The
// child is killed by the kernel should this process die without stopping it (Linux).
func (p *procs) start(name string, cmd *exec.Cmd, grace time.Duration) (*proc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = w
	var pw *prefixWriter
	if cmd.Stderr == nil {
		pw = &prefixWriter{prefix: "[" + name + "] ", w: p.stderr}
		cmd.Stderr = pw
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	w.Close() // the child holds its own copy
	c := &proc{name: name, cmd: cmd, grace: grace, lines: make(chan string, 16), exited: make(chan struct{}), stderr: pw}
	p.mu.Lock()
	p.list = append(p.list, c)
	p.mu.Unlock()

	go func() {
		defer close(c.lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stopAll stops every process, last started first.
func (p *procs) stopAll() {
	p.mu.Lock()
	list := p.list
	p.list = nil
	p.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop()
	}
}

// readJSON waits for the child's next stdout line and decodes it into v. It fails when the
// child exits first, when timeout passes, or when ctx ends.
func (c *proc) readJSON(ctx context.Context, timeout time.Duration, v any) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.exited
			return fmt.Errorf("%s exited without reporting: %v%s", c.name, exitText(c.waitErr), c.stderr.tailText())
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("%s wrote %q, not its JSON report: %w", c.name, line, err)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("%s did not report within %v", c.name, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// running reports whether the child has not exited yet.
func (c *proc) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// stop asks the child to exit (SIGTERM), kills it after its grace period, and waits.
func (c *proc) stop() {
	if !c.running() {
		return
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = c.cmd.Process.Kill()
	}
	timer := time.NewTimer(c.grace)
	defer timer.Stop()
	select {
	case <-c.exited:
		return
	case <-timer.C:
	}
	_ = c.cmd.Process.Kill()
	<-c.exited
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// prefixWriter writes whole lines to w, each with prefix. It is used by one goroutine at a
// time (exec's copier), so it needs no lock; lines of several children may interleave only
// whole.
type prefixWriter struct {
	prefix string
	w      io.Writer
	buf    []byte // a partial line

	mu   sync.Mutex // guards last
	last []string   // the last stderrTail complete lines, without the prefix
}

// stderrTail is how many of a child's last stderr lines its error quotes.
const stderrTail = 5

// tailText is "; its last lines on stderr: ..." with the lines written last, or "" (also
// for a nil writer).
func (pw *prefixWriter) tailText() string {
	if pw == nil {
		return ""
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if len(pw.last) == 0 {
		return ""
	}
	return "; its last lines on stderr: " + strings.Join(pw.last, " | ")
}

func (pw *prefixWriter) Write(b []byte) (int, error) {
	pw.buf = append(pw.buf, b...)
	for {
		i := bytes.IndexByte(pw.buf, '\n')
		if i < 0 {
			break
		}
		pw.mu.Lock()
		pw.last = append(pw.last, string(pw.buf[:i]))
		if len(pw.last) > stderrTail {
			pw.last = pw.last[len(pw.last)-stderrTail:]
		}
		pw.mu.Unlock()
		line := append([]byte(pw.prefix), pw.buf[:i+1]...)
		if _, err := pw.w.Write(line); err != nil {
			return len(b), err
		}
		pw.buf = pw.buf[i+1:]
	}
	return len(b), nil
}

// childEnv is this process's environment without NEXUS_* variables (a caller's
// NEXUS_REDIS_URL or NEXUS_CONFIG must not change what is measured), plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NEXUS_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// selfCmd is this executable run as the child role.
func (b *bench) selfCmd(role string, args ...string) *exec.Cmd {
	cmd := exec.Command(b.self, append([]string{childArg, role}, args...)...)
	cmd.Env = childEnv()
	return cmd
}
