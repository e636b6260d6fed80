// Package supervisor runs host-launched plugins as operating-system
// processes on Linux: it starts them, applies their resource limits, reads
// their output line by line, reports how they ended, and makes sure none of
// them outlives the host.
//
// The package decides nothing about when a plugin runs; the plugin host's
// domain code calls [Start] and [Process.Stop] and talks to the plugin over
// its own stream. This package only owns the process.
//
// # Process model
//
// Every plugin runs in its own process group, so [Process.Signal] and
// [Process.Stop] reach the plugin and everything it forked without leaving
// the group. When the main process exits, whatever is left of its group is
// killed too: a plugin is one unit, and orphans the host no longer tracks
// would hold resources (and often the output pipes) forever.
//
// The parent-death signal (SIGKILL) guarantees that a plugin's main process
// dies when the host dies, even from SIGKILL. Linux sends that signal when
// the thread that forked the child exits, not the process, and the Go
// runtime may retire threads at any time; so every fork happens on one
// goroutine locked to its OS thread for the life of the host (see launcher).
// Processes a plugin forks itself are not covered by that signal; when the
// plugin runs in a cgroup they are killed with it when it exits normally.
//
// # Limits
//
// [Limits] are applied before the plugin executes its first instruction.
// The launcher thread does not start the plugin directly: it starts this
// executable as the sandbox init stage (see package sandbox), with the
// parent-death signal, in a new process group and, when the Spec has a
// [Sandbox], in the namespaces it asks for. The init stage waits for its
// plan; the launcher first puts it in the plugin's cgroup (at clone time
// with CLONE_INTO_CGROUP on cgroup v2, else through cgroup.procs), then
// sends the plan (the rlimits, the confinement, the program). The init
// stage applies it on one thread and executes the plugin from that thread.
//
//   - FileHandles: RLIMIT_NOFILE, soft and hard.
//   - MemoryMB: memory.max of a cgroup v2 of the process's own where the
//     host delegates the memory controller, else memory.limit_in_bytes of a
//     cgroup v1 where that hierarchy is mounted and writable; otherwise
//     RLIMIT_DATA (and the caller watches [Process.TreeRSS]). RLIMIT_AS is
//     deliberately not used: the Go runtime reserves about a gigabyte of
//     address space at start, so any Go plugin fails to start under an
//     address-space limit below that.
//   - CPUPercent: cpu.max (v2) or cpu.cfs_quota_us (v1); not enforced
//     without a usable cgroup.
//   - Processes: pids.max (v2 or v1), else RLIMIT_NPROC when the plugin
//     runs under a uid of its own.
//
// [Capabilities] reports what the host can enforce and [Process.Enforced]
// what was applied to one process. A limit that cannot be enforced never
// makes [Start] fail.
//
// Cgroups are created as <cgroup2 mount>/<host cgroup>/nexus-<host pid>/
// <plugin id>-<n>, or directly under the cgroup2 mount when the host's own
// cgroup cannot delegate controllers (cgroup v2 forbids enabling
// controllers for children of a non-root cgroup that holds processes);
// with cgroup v1, as <controller mount>/<host cgroup>/nexus-<host pid>/
// <plugin id>-<n> in each of the memory, cpu and pids hierarchies. They are
// removed when the process is gone.
//
// # Output
//
// Stdout and stderr are read by one goroutine each, through a buffer of
// MaxLineBytes+1 bytes: a longer line is cut at MaxLineBytes (on a UTF-8
// boundary), delivered with truncated set, and the rest of it is read and
// dropped without being buffered. Memory per process is therefore bounded
// whatever the plugin writes. The Output callback runs synchronously on the
// reader goroutine; while it runs nothing is read from that pipe, so a slow
// callback makes the plugin block on its writes. That backpressure is
// intended: the alternative is unbounded buffering in the host.
package supervisor
