// Package redistest runs a real redis-server for tests and benchmarks: on a free loopback
// port, in a directory of its own, killed when the test ends. A missing redis-server is a
// test failure, never a skip.
//
//	srv := redistest.Start(t, redistest.Options{AOF: true})
//	b, err := busredis.New(ctx, busredis.Config{URL: srv.URL()})
//
// StartServer does the same outside tests (a benchmark command, say); its caller owns the
// server and must Close it.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/internal/serverproc"
)

// Binary is the redis-server executable looked up on PATH.
const Binary = "redis-server"

const (
	// readyTimeout bounds the wait for a started server to answer PING (and finish loading
	// its append-only file).
	readyTimeout = 15 * time.Second
	// stopTimeout bounds the wait for a server to exit after SIGTERM before it is killed.
	stopTimeout = 10 * time.Second
	// startAttempts bounds the retries when the chosen port is taken by someone else.
	startAttempts = 5
)

// Options configure a server.
type Options struct {
	// AOF turns on the append-only file with appendfsync always, so every write a client
	// saw acknowledged survives Kill and Restart.
	AOF bool
	// Args are extra redis-server arguments, appended last (e.g. "--maxmemory", "10mb").
	Args []string
	// ProcessGroup runs the server in a process group of its own, so that a signal sent to
	// the caller's group (Ctrl-C at a terminal) does not reach it and the caller stops it in
	// its own time. It still dies with the caller.
	ProcessGroup bool
}

// Server is a redis-server process. Its methods are safe for concurrent use.
type Server struct {
	opts   Options
	dir    string // assigned once
	ownDir bool   // assigned once: dir is removed by Close

	// mu guards the fields below and serialises Start, Stop, Kill, Restart and Close.
	mu     sync.Mutex
	port   int
	proc   *serverproc.Process // nil before the first start
	closed bool
}

// StartServer starts a redis-server on a free 127.0.0.1 port in a new temporary directory
// and waits until it answers. The caller must Close it.
func StartServer(opts Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	s, err := startIn(opts, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.ownDir = true
	return s, nil
}

// Start starts a server for tb (in tb.TempDir()) and kills it when tb ends. It fails tb when
// redis-server is missing or does not start.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := startIn(opts, tb.TempDir())
	if err != nil {
		tb.Fatalf("redistest: %v (install it with: apt-get install -y redis-server)", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("redistest: %v", err)
		}
	})
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL is the server's redis:// URL (database 0).
func (s *Server) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// Dir is the server's working directory (where the append-only file lives).
func (s *Server) Dir() string { return s.dir }

// Running reports whether the process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runningLocked()
}

// Stop asks the server to exit (SIGTERM: it flushes its append-only file) and waits; after a
// bounded wait it is killed. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(syscall.SIGTERM)
}

// Kill kills the server (SIGKILL) and waits for it to exit, as a crash would.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(syscall.SIGKILL)
}

// Restart stops the server gracefully if it runs, then starts it again on the same port and
// directory, so data in the append-only file survives. It waits until the server answers.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("redistest: server closed")
	}
	if err := s.stopLocked(syscall.SIGTERM); err != nil {
		return err
	}
	var err error
	// The port was free a moment ago; another process may take it in between, briefly.
	for attempt := 0; attempt < startAttempts; attempt++ {
		if err = s.launchLocked(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// Close kills the server and removes the directory StartServer made. Further calls do
// nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.stopLocked(syscall.SIGKILL)
	if s.ownDir {
		if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
			err = fmt.Errorf("redistest: %w", rerr)
		}
	}
	return err
}

func startIn(opts Options, dir string) (*Server, error) {
	if _, err := exec.LookPath(Binary); err != nil {
		return nil, fmt.Errorf("%s not found on PATH: %w", Binary, err)
	}
	s := &Server{opts: opts, dir: dir}
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for attempt := 0; attempt < startAttempts; attempt++ {
		if s.port, err = serverproc.FreePort(); err != nil {
			return nil, fmt.Errorf("redistest: %w", err)
		}
		if err = s.launchLocked(); err == nil {
			return s, nil
		}
	}
	return nil, err
}

func (s *Server) runningLocked() bool {
	return s.proc != nil && s.proc.Running()
}

// launchLocked starts the process on s.port and waits until it is ready.
func (s *Server) launchLocked() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", "",
	}
	if s.opts.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.opts.Args...)

	logPath := filepath.Join(s.dir, "redis.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	cmd := exec.Command(Binary, args...)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: s.opts.ProcessGroup}
	// serverproc.Start has the kernel kill the server if the test binary dies first.
	proc, err := serverproc.Start(cmd, logFile)
	if err != nil {
		return fmt.Errorf("redistest: start %s: %w", Binary, err)
	}
	s.proc = proc

	// Ready when PING answers PONG and the server is not loading its data.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	if err := proc.WaitReady(readyTimeout, func(context.Context) error { return probe(addr) }); err != nil {
		_ = s.stopLocked(syscall.SIGKILL)
		return fmt.Errorf("redistest: %s on port %d: %w; log tail:\n%s", Binary, s.port, err, serverproc.Tail(logPath, 2048))
	}
	return nil
}

// stopLocked signals the process and waits for it to exit; SIGTERM escalates to SIGKILL
// after stopTimeout.
func (s *Server) stopLocked(sig syscall.Signal) error {
	if !s.runningLocked() {
		return nil
	}
	if err := s.proc.Stop(sig, stopTimeout); err != nil {
		return fmt.Errorf("redistest: %w", err)
	}
	return nil
}

// probe sends PING and INFO persistence over a raw connection.
func probe(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "PING\r\nINFO persistence\r\n"); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "$") {
		return fmt.Errorf("INFO answered %q", strings.TrimSpace(line))
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 0 {
		return fmt.Errorf("INFO answered %q", strings.TrimSpace(line))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return err
	}
	if strings.Contains(string(body), "loading:1") {
		return errors.New("loading its data")
	}
	return nil
}
