package supervisor

// How a limit is enforced, as reported in [Enforcement].
const (
	EnforcedByRlimit = "rlimit" // a setrlimit(2) resource limit
	EnforcedByCgroup = "cgroup" // a cgroup controller (v2, or v1 where only v1 is mounted)
)

// Enforcement says, for each of the [Limits], how it is enforced:
// EnforcedByRlimit, EnforcedByCgroup, or "" when it is not.
type Enforcement struct {
	// FileHandles is EnforcedByRlimit or "".
	FileHandles string
	// Memory is EnforcedByCgroup, EnforcedByRlimit or "".
	Memory string
	// CPU is EnforcedByCgroup or "".
	CPU string
	// Processes is EnforcedByCgroup, EnforcedByRlimit or "".
	Processes string
	// Cgroup is the cgroup version the cgroup limits use: "v2", "v1" or "".
	Cgroup string
}

// Capabilities reports how this host enforces each limit when a plugin
// asks for it. The first call probes the cgroup v2 hierarchy and may
// enable the memory and cpu controllers for the cgroups below the host's
// (as starting a limited plugin would); the answer is then kept for the
// life of the process. A plugin whose cgroup cannot be created after all
// falls back to what [Process.Enforced] reports.
func Capabilities() Enforcement {
	var e Enforcement
	theLauncher.do(func() {
		e = theLauncher.cgroups.capabilities()
	})
	return e
}

// DisableCgroups makes every later start enforce its limits without cgroups (rlimits, and
// the host's own watching for memory), as on a host without usable cgroups. It must be
// called before the first start or Capabilities call; it is for tests of those fallbacks.
func DisableCgroups() {
	theLauncher.do(func() {
		theLauncher.cgroups = cgroupManager{disabled: true}
	})
}
