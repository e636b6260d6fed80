package sandbox

import (
	"fmt"
	"slices"
	"strings"
)

// Mechanism names, as the API reports them.
const (
	Identity    = "identity"
	NoNewPrivs  = "no_new_privs"
	Filesystem  = "filesystem"
	Network     = "network"
	Syscalls    = "syscalls"
	IPC         = "ipc"
	Memory      = "memory"
	CPU         = "cpu"
	Processes   = "processes"
	FileHandles = "file_handles"
)

// Mechanisms lists every mechanism in the order reports show them: the isolation
// mechanisms, then the resource limits.
var Mechanisms = append(slices.Clip(IsolationMechanisms), Memory, CPU, Processes, FileHandles)

// IsolationMechanisms are the mechanisms that are not resource limits.
var IsolationMechanisms = []string{Identity, NoNewPrivs, Filesystem, Network, Syscalls, IPC}

// States of a mechanism.
const (
	Enforced    = "enforced"    // applied to the plugin's process
	Unavailable = "unavailable" // the profile asks for it, this host cannot apply it
	Off         = "off"         // the profile does not ask for it
)

// Levels, as the manifest and the API name them.
const (
	LevelLow      = "low"
	LevelMedium   = "medium"
	LevelHigh     = "high"
	LevelCritical = "critical"
)

// Want is what a plugin's profile asks for.
type Want map[string]bool

// Profile returns the mechanisms a security level turns on for a host-launched plugin:
//
//   - low: identity, no_new_privs, network (when the plugin lacks http:external) and the
//     resource limits that are set;
//   - medium (the default): low, plus filesystem (Landlock), syscalls (seccomp) and ipc
//     (Landlock scoping of signals and abstract Unix sockets);
//   - high: medium, and what the plugin can write it cannot execute (its data directory
//     loses the execute right);
//   - critical: high, and the plugin is not started unless every one is enforced.
//
// sandbox false (an administrator's choice) turns every confinement mechanism off; the
// resource limits stay, since they are limits rather than confinement.
func Profile(level string, sandbox, externalNetwork bool, limits Limits) Want {
	w := Want{
		Memory:      limits.MemoryMB > 0,
		CPU:         limits.CPUPercent > 0,
		Processes:   limits.Processes > 0,
		FileHandles: limits.FileHandles > 0,
	}
	if !sandbox {
		return w
	}
	w[Identity], w[NoNewPrivs] = true, true
	w[Network] = !externalNetwork
	if level != LevelLow {
		w[Filesystem], w[Syscalls], w[IPC] = true, true, true
	}
	if level == LevelHigh || level == LevelCritical {
		w[WriteXorExecute] = true
	}
	return w
}

// WriteXorExecute is the key of Want that takes execute away from what a plugin can write
// (a refinement of the filesystem mechanism, reported in its detail).
const WriteXorExecute = "write_xor_execute"

// FailClosed reports whether a level refuses to start a plugin whose profile is not fully
// enforced.
func FailClosed(level string) bool { return level == LevelCritical }

// Limits are the resource limits of a plugin, zero meaning none.
type Limits struct {
	MemoryMB, CPUPercent, Processes, FileHandles int
}

// State is one mechanism's state in a report.
type State struct {
	Mechanism string `json:"mechanism"`
	State     string `json:"state"`
	// Detail says how it is enforced, or why it is unavailable or off.
	Detail string `json:"detail"`
}

// Report is the state of every mechanism, in the order of Mechanisms.
type Report []State

// Get returns the state of mechanism m.
func (r Report) Get(m string) State {
	for _, s := range r {
		if s.Mechanism == m {
			return s
		}
	}
	return State{Mechanism: m, State: Off}
}

// Complete reports whether every mechanism the profile asks for is enforced, and none of
// the confinement mechanisms is off by the administrator's choice.
func (r Report) Complete() bool {
	for _, s := range r {
		if s.State == Unavailable {
			return false
		}
	}
	for _, m := range []string{Identity, NoNewPrivs} {
		if r.Get(m).State != Enforced {
			return false
		}
	}
	return true
}

// Missing names the mechanisms that are unavailable, with their reasons.
func (r Report) Missing() string {
	var b []string
	for _, s := range r {
		if s.State == Unavailable {
			b = append(b, fmt.Sprintf("%s (%s)", s.Mechanism, s.Detail))
		}
	}
	return strings.Join(b, "; ")
}

// Off builds the report of a plugin the host does not confine at all, with the reason.
func OffReport(reason string) Report {
	return offReport(Mechanisms, reason)
}

// IsolationOffReport reports every isolation mechanism off, with the reason: for a plugin
// launched without a sandbox, whose resource limits are still applied and reported apart.
func IsolationOffReport(reason string) Report {
	return offReport(IsolationMechanisms, reason)
}

func offReport(mechanisms []string, reason string) Report {
	r := make(Report, 0, len(mechanisms))
	for _, m := range mechanisms {
		r = append(r, State{Mechanism: m, State: Off, Detail: reason})
	}
	return r
}
