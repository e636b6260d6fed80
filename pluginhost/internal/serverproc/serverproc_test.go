package serverproc_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/internal/serverproc"
)

// helperEnv switches the test binary into a helper process (see TestMain); its value is
// what the helper does.
const helperEnv = "SERVERPROC_TEST_HELPER"

// TestMain runs the test binary as a stand-in server when helperEnv is set:
//   - "serve": exits on SIGTERM; writes the file named by its first argument once ready.
//   - "stubborn": ignores SIGTERM; writes the file once it does.
//   - "exit": exits at once.
func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "serve":
		ready(os.Args[1])
		time.Sleep(time.Minute)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		ready(os.Args[1])
		time.Sleep(time.Minute)
	case "exit":
	}
	os.Exit(0)
}

func ready(path string) {
	if err := os.WriteFile(path, []byte("ready\n"), 0o600); err != nil {
		os.Exit(2)
	}
}

// helper returns a command running the test binary as the helper mode, and the file it
// writes once ready.
func helper(t *testing.T, mode string) (*exec.Cmd, string) {
	t.Helper()
	readyFile := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(os.Args[0], readyFile)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd, readyFile
}

// fileExists is a readiness probe: the helper has written path.
func fileExists(path string) func(context.Context) error {
	return func(context.Context) error {
		_, err := os.Stat(path)
		return err
	}
}

func start(t *testing.T, cmd *exec.Cmd) *serverproc.Process {
	t.Helper()
	p, err := serverproc.Start(cmd, nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = p.Stop(syscall.SIGKILL, 10*time.Second) })
	return p
}

func TestStartStop(t *testing.T) {
	cmd, readyFile := helper(t, "serve")
	p := start(t, cmd)
	if err := p.WaitReady(10*time.Second, fileExists(readyFile)); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if !p.Running() || p.Pid() <= 0 {
		t.Fatalf("Running() = %v, Pid() = %d after start", p.Running(), p.Pid())
	}
	if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if p.Running() {
		t.Fatal("Running after Stop")
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
	if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestStopEscalates(t *testing.T) {
	cmd, readyFile := helper(t, "stubborn")
	p := start(t, cmd)
	if err := p.WaitReady(10*time.Second, fileExists(readyFile)); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	err := p.Stop(syscall.SIGTERM, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not exit within 200ms") || !strings.Contains(err.Error(), "was killed") {
		t.Fatalf("Stop of a process ignoring SIGTERM = %v; want it killed, and said so", err)
	}
	if p.Running() {
		t.Fatal("Running after Stop escalated to SIGKILL")
	}
}

func TestKill(t *testing.T) {
	cmd, readyFile := helper(t, "stubborn")
	p := start(t, cmd)
	if err := p.WaitReady(10*time.Second, fileExists(readyFile)); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if err := p.Stop(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatalf("Stop(SIGKILL): %v", err)
	}
	if p.Running() {
		t.Fatal("Running after SIGKILL")
	}
}

func TestWaitReady(t *testing.T) {
	t.Run("exited", func(t *testing.T) {
		cmd, _ := helper(t, "exit")
		p := start(t, cmd)
		never := func(context.Context) error { return errors.New("not yet") }
		if err := p.WaitReady(10*time.Second, never); err == nil || !strings.Contains(err.Error(), "exited during startup") {
			t.Fatalf("WaitReady on an exiting process = %v; want exited during startup", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		cmd, _ := helper(t, "serve")
		p := start(t, cmd)
		notYet := errors.New("not yet")
		err := p.WaitReady(100*time.Millisecond, func(context.Context) error { return notYet })
		if !errors.Is(err, notYet) || !strings.Contains(err.Error(), "not ready after 100ms") {
			t.Fatalf("WaitReady past its timeout = %v; want not ready, wrapping the probe's error", err)
		}
	})
}

func TestStartMissingBinary(t *testing.T) {
	if _, err := serverproc.Start(exec.Command(filepath.Join(t.TempDir(), "missing")), nil); err == nil {
		t.Fatal("Start of a missing binary succeeded")
	}
}

func TestRun(t *testing.T) {
	cmd, readyFile := helper(t, "exit")
	if err := serverproc.Run(cmd); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(readyFile); !os.IsNotExist(err) {
		t.Fatalf("the exit helper wrote its ready file: %v", err)
	}
	if err := serverproc.Run(exec.Command(filepath.Join(t.TempDir(), "missing"))); err == nil {
		t.Fatal("Run of a missing binary succeeded")
	}
}

func TestFreePort(t *testing.T) {
	port, err := serverproc.FreePort()
	if err != nil {
		t.Fatalf("FreePort: %v", err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen on the free port %d: %v", port, err)
	}
	_ = l.Close()
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("first line\nlast line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{n: 10, want: "last line\n"},
		{n: 1024, want: "first line\nlast line\n"},
	} {
		if got := serverproc.Tail(path, tc.n); got != tc.want {
			t.Errorf("Tail(%d) = %q; want %q", tc.n, got, tc.want)
		}
	}
	if got := serverproc.Tail(filepath.Join(t.TempDir(), "missing"), 10); got != "" {
		t.Errorf("Tail of a missing file = %q; want empty", got)
	}
}
