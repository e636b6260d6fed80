package sandbox_test

import (
	"errors"
	"syscall"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/sandbox"
)

func TestProfileLevels(t *testing.T) {
	lim := sandbox.Limits{MemoryMB: 64}
	for _, tc := range []struct {
		level    string
		sandbox  bool
		external bool
		on, off  []string
	}{
		{"low", true, false, []string{"identity", "no_new_privs", "network", "memory"}, []string{"filesystem", "syscalls", "ipc", "cpu", sandbox.WriteXorExecute}},
		{"medium", true, false, []string{"identity", "no_new_privs", "network", "filesystem", "syscalls", "ipc"}, []string{sandbox.WriteXorExecute}},
		{"high", true, false, []string{"filesystem", "syscalls", "ipc", sandbox.WriteXorExecute}, nil},
		{"critical", true, false, []string{"filesystem", "syscalls", "ipc", sandbox.WriteXorExecute}, nil},
		{"medium", true, true, []string{"identity", "filesystem"}, []string{"network"}},
		{"critical", false, false, []string{"memory"}, []string{"identity", "no_new_privs", "network", "filesystem", "syscalls", "ipc"}},
	} {
		w := sandbox.Profile(tc.level, tc.sandbox, tc.external, lim)
		for _, m := range tc.on {
			if !w[m] {
				t.Errorf("%s (sandbox %v, http:external %v): %s is off", tc.level, tc.sandbox, tc.external, m)
			}
		}
		for _, m := range tc.off {
			if w[m] {
				t.Errorf("%s (sandbox %v, http:external %v): %s is on", tc.level, tc.sandbox, tc.external, m)
			}
		}
	}
	if !sandbox.FailClosed("critical") || sandbox.FailClosed("high") {
		t.Error("only critical fails closed")
	}
}

func TestReportComplete(t *testing.T) {
	full := sandbox.Report{
		{Mechanism: "identity", State: sandbox.Enforced},
		{Mechanism: "no_new_privs", State: sandbox.Enforced},
		{Mechanism: "network", State: sandbox.Off, Detail: "granted http:external"},
	}
	if !full.Complete() || full.Missing() != "" {
		t.Errorf("%v: complete %v, missing %q", full, full.Complete(), full.Missing())
	}
	missing := append(full, sandbox.State{Mechanism: "cpu", State: sandbox.Unavailable, Detail: "no cgroup"})
	if missing.Complete() || missing.Missing() != "cpu (no cgroup)" {
		t.Errorf("%v: complete %v, missing %q", missing, missing.Complete(), missing.Missing())
	}
	if off := sandbox.OffReport("turned off"); off.Complete() || len(off) != len(sandbox.Mechanisms) || off.Get("ipc").Detail != "turned off" {
		t.Errorf("OffReport: %v", off)
	}
}

func TestInitErrorKeepsTheErrno(t *testing.T) {
	err := sandbox.InitError([]byte("2 exec /nowhere: no such file or directory"))
	if !errors.Is(err, syscall.ENOENT) || err.Error() != "exec /nowhere: no such file or directory" {
		t.Errorf("InitError = %v", err)
	}
	if err := sandbox.InitError([]byte("0 the host exited")); err.Error() != "the host exited" || errors.Is(err, syscall.ENOENT) {
		t.Errorf("InitError = %v", err)
	}
}
