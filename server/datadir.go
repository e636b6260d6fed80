package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrDataDirInUse is matched (with errors.Is) by the error New returns when another server
// holds the data directory.
var ErrDataDirInUse = errors.New("data directory in use by another nexus server")

// lockFileName is the lock file inside the data directory. It stays on disk after the lock
// is released: removing it would let a server lock a file another is about to replace.
const lockFileName = "nexus.lock"

// dataDirLock is an exclusive flock on the data directory's lock file, held while its file
// is open. The kernel releases it when the file is closed, which also happens when the
// process dies, SIGKILL included. The file is opened close-on-exec, so plugin processes do
// not inherit the lock and cannot keep it after the server is gone.
type dataDirLock struct {
	f *os.File
}

// lockDataDir takes the lock on dir without waiting, and writes this process's pid into the
// lock file so that a refused server can name the holder. The lock conflicts with every
// other open of the file, in this process too. When another holder has it, the error
// wraps ErrDataDirInUse.
func lockDataDir(dir string) (*dataDirLock, error) {
	path := filepath.Join(dir, lockFileName)
	// Not O_TRUNC: the pid in the file belongs to the holder until this open holds the lock.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the data directory lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := holderPID(f)
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &dataDirInUseError{dir: dir, pid: pid}
		}
		return nil, fmt.Errorf("lock the data directory %s: %w", dir, err)
	}
	if err := writePID(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write the data directory lock %s: %w", path, err)
	}
	return &dataDirLock{f: f}, nil
}

// Close releases the lock. The lock file stays.
func (l *dataDirLock) Close() error {
	return l.f.Close()
}

// dataDirInUseError is the refusal to lock a data directory another server holds.
type dataDirInUseError struct {
	dir string
	pid int // 0 when the holder had not written its pid yet
}

func (e *dataDirInUseError) Error() string {
	holder := "another nexus server"
	if e.pid > 0 {
		holder = fmt.Sprintf("another nexus server (pid %d)", e.pid)
	}
	return fmt.Sprintf("data directory %s is in use by %s; stop it or choose another --data-dir", e.dir, holder)
}

func (e *dataDirInUseError) Is(target error) bool { return target == ErrDataDirInUse }

// writePID replaces the lock file's content with this process's pid.
func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// holderPID reads the pid the lock's holder wrote, or 0 when there is none (yet).
func holderPID(f *os.File) int {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 64))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
