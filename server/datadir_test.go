package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockHelperEnv switches the test binary into the helper process that holds a data
// directory's lock (see TestDataDirLockHelperProcess).
const lockHelperEnv = "NEXUS_TEST_LOCK_DATA_DIR"

// inUseMessage is the refusal for dir when pid holds it.
func inUseMessage(dir string, pid int) string {
	return fmt.Sprintf("data directory %s is in use by another nexus server (pid %d); stop it or choose another --data-dir", dir, pid)
}

func TestDataDirLockRefusesSecondHolder(t *testing.T) {
	dir := t.TempDir()
	first, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock belongs to the open file description: a second open conflicts, in this process too.
	_, err = lockDataDir(dir)
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second lock: %v, want ErrDataDirInUse", err)
	}
	if want := inUseMessage(dir, os.Getpid()); err.Error() != want {
		t.Fatalf("refusal:\n got %q\nwant %q", err, want)
	}

	// A holder that has not written its pid yet is still refused, without a pid.
	if err := os.WriteFile(filepath.Join(dir, lockFileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = lockDataDir(dir)
	if want := "data directory " + dir + " is in use by another nexus server; stop it or choose another --data-dir"; err == nil || err.Error() != want {
		t.Fatalf("refusal without a pid:\n got %v\nwant %q", err, want)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	defer again.Close()
	info, err := os.Stat(filepath.Join(dir, lockFileName))
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("lock file mode %v, want 0600", mode)
	}
	if pid := lockFilePID(t, dir); pid != os.Getpid() {
		t.Errorf("lock file names pid %d, want %d", pid, os.Getpid())
	}
}

// TestDataDirLockHelperProcess is not a test: run with lockHelperEnv set, it takes the lock
// on that directory, prints "locked" and blocks until it is killed or its stdin closes.
func TestDataDirLockHelperProcess(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		return
	}
	lock, err := lockDataDir(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = lock.Close()
	os.Exit(0)
}

func TestDataDirLockReleasedAfterSIGKILL(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDataDirLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	// The open stdin keeps the helper blocked; it closes when this process goes away.
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	locked := make(chan struct{})
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		seen := false
		for sc.Scan() {
			if sc.Text() == "locked" && !seen {
				seen = true
				close(locked)
			}
		}
		exited <- cmd.Wait() // after the last read of stdout, as Wait closes it
	}()
	kill := sync.OnceValue(func() error {
		_ = cmd.Process.Kill()
		select {
		case err := <-exited:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("the helper did not exit after SIGKILL")
		}
	})
	t.Cleanup(func() { _ = kill() })

	select {
	case <-locked:
	case err := <-exited:
		t.Fatalf("the helper exited before taking the lock: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the helper did not take the lock")
	}
	_, err = lockDataDir(dir)
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("lock held by the helper: %v, want ErrDataDirInUse", err)
	}
	if want := inUseMessage(dir, cmd.Process.Pid); err.Error() != want {
		t.Fatalf("refusal:\n got %q\nwant %q", err, want)
	}

	err = kill()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("helper exit: %v", err)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want SIGKILL", exit)
	}
	lock, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after the holder was killed: %v", err)
	}
	defer lock.Close()
	if pid := lockFilePID(t, dir); pid != os.Getpid() {
		t.Errorf("lock file names pid %d, want %d", pid, os.Getpid())
	}
}

func TestDataDirLockRefusesSecondServer(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.AdminToken = "nxt_test-admin-token-0123456789abcdef"
	cfg.ShutdownTimeout = 5 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := NewLogger(io.Discard, slog.LevelInfo)
	first, err := New(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			first.Close()
		}
	})

	second, err := New(t.Context(), cfg, log)
	if err == nil {
		second.Close()
		t.Fatal("a second server started on the same data directory")
	}
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second server: %v, want ErrDataDirInUse", err)
	}
	if want := inUseMessage(cfg.DataDir, os.Getpid()); err.Error() != want {
		t.Fatalf("refusal:\n got %q\nwant %q", err, want)
	}

	// The refused server left the first one working (its store answers readiness).
	rec := httptest.NewRecorder()
	first.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "ready" {
		t.Fatalf("first server after the refusal: %d %q", rec.Code, rec.Body.String())
	}

	closed = true
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, err := New(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("server after the first closed: %v", err)
	}
	if err := third.Close(); err != nil {
		t.Fatal(err)
	}
}

// lockFilePID reads the pid written in dir's lock file.
func lockFilePID(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, lockFileName))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("lock file %q: %v", b, err)
	}
	return pid
}
