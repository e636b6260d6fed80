package supervisor

import (
	"bytes"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExitStatus describes how a plugin process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the process was killed by a signal
	// or its status is unknown.
	Code int
	// Signal describes the signal that killed the process, as Go's
	// syscall.Signal.String does ("killed", "terminated", "segmentation
	// fault"); empty when the process exited by itself.
	Signal string
	// OOMKilled reports, best effort, that the process died because of its
	// memory limit: with a cgroup, the kernel's OOM killer killed it
	// (memory.events counts an oom_kill and the process died of SIGKILL);
	// with RLIMIT_DATA, it failed (non-zero exit or a signal) shortly after
	// writing a well-known out-of-memory message to stderr (Go, C, C++,
	// Rust, Python, Java, Node). A C program that crashes on a failed
	// malloc without a message is not detected.
	OOMKilled bool

	signo syscall.Signal // the signal behind Signal, for String
}

// String describes the status for humans, for example "exited with code
// 3" or "killed by signal SIGKILL (memory limit exceeded)".
func (e ExitStatus) String() string {
	var s string
	switch {
	case e.Signal != "" && e.signo != 0:
		s = "killed by signal " + unix.SignalName(e.signo)
	case e.Signal != "":
		s = "killed by signal (" + e.Signal + ")"
	case e.Code >= 0:
		s = fmt.Sprintf("exited with code %d", e.Code)
	default:
		s = "exited with unknown status"
	}
	if e.OOMKilled {
		s += " (memory limit exceeded)"
	}
	return s
}

// exitStatus builds the ExitStatus of a reaped process from its wait
// status (valid when known), whether its cgroup saw an OOM kill, and the
// out-of-memory messages its stderr reader noticed.
func exitStatus(ws unix.WaitStatus, known, cgroupOOM bool, stderr *stream) ExitStatus {
	e := ExitStatus{Code: -1}
	switch {
	case !known:
	case ws.Signaled():
		e.signo = ws.Signal()
		e.Signal = e.signo.String()
	default:
		e.Code = ws.ExitStatus()
	}
	failed := known && (e.Signal != "" || e.Code != 0)
	switch {
	case cgroupOOM:
		e.OOMKilled = e.signo == syscall.SIGKILL
	case failed && stderr.oomMarkerRecent():
		e.OOMKilled = true
	}
	return e
}

// oomMarkerWindow is how many stderr lines may follow an out-of-memory
// message for it to still explain the exit. Runtimes print the message
// first and a stack dump after it; a Go crash prints every goroutine.
const oomMarkerWindow = 10000

// hasOOMMarker reports whether line contains a fragment of the messages
// runtimes print when an allocation fails: Go ("fatal error: runtime: out
// of memory"), glibc and many C programs ("Cannot allocate memory", "out of
// memory", "memory exhausted"), C++ (std::bad_alloc), Rust ("memory
// allocation of N bytes failed"), Python (MemoryError), Java
// (OutOfMemoryError) and Node ("JavaScript heap out of memory").
func hasOOMMarker(line []byte) bool {
	for _, m := range [...]string{
		"out of memory",
		"Out of memory",
		"Cannot allocate memory",
		"cannot allocate memory",
		"memory exhausted",
		"bad_alloc",
		"memory allocation of",
		"MemoryError",
		"OutOfMemoryError",
		"failed to allocate",
	} {
		if bytes.Contains(line, []byte(m)) {
			return true
		}
	}
	return false
}
