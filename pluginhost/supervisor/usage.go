package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Usage is a snapshot of the resources used by a plugin's main process
// (not the processes it forked).
type Usage struct {
	// RSSBytes is the resident set size.
	RSSBytes int64
	// CPUSeconds is the user plus system CPU time consumed so far.
	CPUSeconds float64
	// OpenFiles is the number of open file descriptors.
	OpenFiles int
	// Threads is the number of threads.
	Threads int
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat. The
// kernel fixes it at 100 on every architecture Go supports.
const clockTicks = 100

// Usage reads the current resource usage of the process from /proc. It
// returns os.ErrProcessDone once the process has exited and been reaped.
func (p *Process) Usage() (Usage, error) {
	// Holding mu keeps the process from being reaped, so the PID cannot
	// belong to another process while /proc is read.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return Usage{}, os.ErrProcessDone
	}
	dir := "/proc/" + strconv.Itoa(p.pid)
	var u Usage

	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return Usage{}, p.usageError(err)
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// and parentheses; the fields after the last ')' start with field 3.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Usage{}, p.usageError(errors.New("malformed stat"))
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return Usage{}, p.usageError(errors.New("malformed stat"))
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(fields[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return Usage{}, p.usageError(err)
	}
	u.CPUSeconds = float64(utime+stime) / clockTicks

	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return Usage{}, p.usageError(err)
	}
	for line := range strings.Lines(string(status)) {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "VmRSS":
			kb, err := strconv.ParseInt(strings.TrimSuffix(value, " kB"), 10, 64)
			if err == nil {
				u.RSSBytes = kb << 10
			}
		case "Threads":
			u.Threads, _ = strconv.Atoi(value)
		}
	}

	fd, err := os.Open(dir + "/fd")
	if err != nil {
		return Usage{}, p.usageError(err)
	}
	defer fd.Close()
	names, err := fd.Readdirnames(-1)
	if err != nil {
		return Usage{}, p.usageError(err)
	}
	u.OpenFiles = len(names)
	return u, nil
}

// usageError wraps an error reading /proc for the process.
func (p *Process) usageError(err error) error {
	return fmt.Errorf("supervisor: usage of plugin %q (pid %d): %w", p.id, p.pid, err)
}
