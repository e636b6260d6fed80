package supervisor_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

func TestCapabilities(t *testing.T) {
	t.Parallel()
	c := supervisor.Capabilities()
	t.Logf("this host enforces: %+v", c)
	if c.FileHandles != supervisor.EnforcedByRlimit {
		t.Errorf("FileHandles = %q, want %q", c.FileHandles, supervisor.EnforcedByRlimit)
	}
	if c.Memory != supervisor.EnforcedByRlimit && c.Memory != supervisor.EnforcedByCgroup {
		t.Errorf("Memory = %q, want rlimit or cgroup", c.Memory)
	}
	if c.CPU != "" && c.CPU != supervisor.EnforcedByCgroup {
		t.Errorf("CPU = %q, want cgroup or empty", c.CPU)
	}
}

func TestNoLimitsNothingEnforced(t *testing.T) {
	t.Parallel()
	spec, _ := helperSpec(t, "echo", "0")
	p := start(t, spec)
	if e := p.Enforced(); e != (supervisor.Enforcement{}) {
		t.Errorf("Enforced() = %+v for a process without limits", e)
	}
	waitExit(t, p, 20*time.Second)
}

func TestFileHandleLimit(t *testing.T) {
	t.Parallel()
	const limit = 16
	spec, rec := helperSpec(t, "files", "64")
	spec.Limits.FileHandles = limit
	p := start(t, spec)
	if got := p.Enforced().FileHandles; got != supervisor.EnforcedByRlimit {
		t.Errorf("Enforced().FileHandles = %q, want rlimit", got)
	}
	waitExit(t, p, 20*time.Second)
	out := strings.Join(rec.texts(supervisor.StreamStdout), "\n")
	// The limit is in place when the program starts, soft and hard.
	if !strings.Contains(out, "nofile 16 16") {
		t.Errorf("child did not start with the limit: %q", out)
	}
	if !strings.Contains(out, "too many open files") {
		t.Errorf("child did not run out of file handles: %q", out)
	}
	opened, err := strconv.Atoi(rec.waitFor(t, supervisor.StreamStdout, "opened "))
	if err != nil || opened >= limit {
		t.Errorf("child opened %d files (%v), want fewer than %d", opened, err, limit)
	}
}

func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	caps := supervisor.Capabilities()
	spec, rec := helperSpec(t, "alloc")
	switch caps.Memory {
	case supervisor.EnforcedByCgroup:
		// Resident memory counts: touch the pages.
		spec.Limits.MemoryMB = 64
		spec.Args = []string{"1024", "touch"}
	default:
		// RLIMIT_DATA counts address space, so the pages need not be
		// touched. The limit leaves room for the race detector's runtime.
		spec.Limits.MemoryMB = 1024
		spec.Args = []string{"4096"}
	}
	p := start(t, spec)
	if got := p.Enforced().Memory; got != caps.Memory {
		t.Errorf("Enforced().Memory = %q, Capabilities().Memory = %q", got, caps.Memory)
	}
	st := waitExit(t, p, 30*time.Second)
	t.Logf("memory limit by %s: %v", caps.Memory, st)
	if out := rec.texts(supervisor.StreamStdout); len(out) > 0 {
		t.Errorf("child allocated past its limit: %q", out)
	}
	if !st.OOMKilled || !strings.HasSuffix(st.String(), "(memory limit exceeded)") {
		t.Errorf("Exit() = %+v (%v), want OOMKilled", st, st)
	}
	if caps.Memory == supervisor.EnforcedByCgroup && st.Signal != "killed" {
		t.Errorf("Exit() = %v, want killed by the OOM killer", st)
	}
}

func TestCPULimit(t *testing.T) {
	t.Parallel()
	caps := supervisor.Capabilities()
	spec, rec := helperSpec(t, "busy", "1500")
	spec.Limits.CPUPercent = 20
	p := start(t, spec)
	if got := p.Enforced().CPU; got != caps.CPU {
		t.Errorf("Enforced().CPU = %q, Capabilities().CPU = %q", got, caps.CPU)
	}
	if st := waitExit(t, p, 30*time.Second); st.Code != 0 {
		t.Fatalf("exit = %v", st)
	}
	cpu, err := strconv.ParseFloat(rec.waitFor(t, supervisor.StreamStdout, "cpu "), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CPU limit by %q: %.2fs of CPU in 1.5s", caps.CPU, cpu)
	if caps.CPU == supervisor.EnforcedByCgroup && cpu > 0.7 {
		t.Errorf("child used %.2fs of CPU in 1.5s under a 20%% limit", cpu)
	}
}
