package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/sandbox"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// Confinement configures how host-launched plugins are confined (see package sandbox).
type Confinement struct {
	// FirstUID and UIDCount are the range of uids (and equal gids) given to plugins, one
	// each, when the host runs as root.
	FirstUID, UIDCount int
	// HostSocket serves the host for one plugin on a Unix socket that uid and gid (-1 when
	// the plugin keeps the host's) may connect to, and returns its URL (unix:///...). It
	// is how a plugin in a network namespace of its own reaches the host.
	HostSocket func(pluginID string, uid, gid int) (string, error)
	// MaxProcesses bounds the processes and threads of each plugin (0: unlimited).
	MaxProcesses int
	// ReadPaths are more directories every confined plugin may read and execute below
	// (a language runtime installed outside the system paths, say).
	ReadPaths []string
}

// systemReadExec are the directories a confined plugin may read and execute below, besides
// its package: the system's programs, libraries, certificates and time zones. Missing ones
// are skipped.
var systemReadExec = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
	"/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/alternatives", "/etc/ld.so.conf.d"}

// systemReadFiles are single system files a confined plugin may read.
var systemReadFiles = []string{"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/localtime",
	"/etc/passwd", "/etc/group", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/mime.types", "/etc/os-release",
	"/etc/host.conf", "/etc/gai.conf"}

// deviceFiles are the devices a confined plugin may read and write.
var deviceFiles = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}

// confinement is the plan for one launch: the sandbox for the supervisor, the host URL the
// plugin gets, and the report of every mechanism but the limits (which the supervisor
// reports once the process runs).
type confinement struct {
	box    *supervisor.Sandbox
	host   string
	report sandbox.Report
}

// pluginWant is the profile of an installed plugin.
func (rt *Runtime) pluginWant(rec store.Plugin) sandbox.Want {
	return sandbox.Profile(rec.SecurityLevel, rec.SandboxEnabled, permission.Allowed(rec.Granted, "http:external"), rt.limitsOf(rec))
}

func (rt *Runtime) limitsOf(rec store.Plugin) sandbox.Limits {
	maxProcs := 0
	if rt.cfg.Confinement != nil {
		maxProcs = rt.cfg.Confinement.MaxProcesses
	}
	return sandbox.Limits{MemoryMB: rec.Limits.MemoryMB, CPUPercent: rec.Limits.CPUPercent,
		FileHandles: rec.Limits.FileHandles, Processes: maxProcs}
}

// confine plans the confinement of a launch of p, preparing what it needs on disk (the
// plugin's uid owning its data directory) and the host's socket for it. With apply false it
// only predicts the report (for views of a plugin that is not running) and changes nothing.
func (rt *Runtime) confine(id string, p loaded, home string, apply bool) (confinement, error) {
	c := confinement{host: rt.cfg.HostURL()}
	switch {
	case rt.cfg.Confinement == nil:
		c.report = sandbox.IsolationOffReport("confinement is turned off in this host's configuration")
		return c, nil
	case !p.rec.SandboxEnabled:
		c.report = sandbox.IsolationOffReport("sandbox_enabled is false for this plugin")
		return c, nil
	}
	pl := &planner{rt: rt, conf: rt.cfg.Confinement, id: id, level: p.rec.SecurityLevel, home: home,
		pkg: rt.abs(p.rec.Dir), apply: apply, want: rt.pluginWant(p.rec), h: sandbox.Probe(),
		box: &supervisor.Sandbox{Confine: sandbox.Exec{UID: -1, GID: -1, NoNewPrivs: true}}}
	pl.identity()
	pl.set(sandbox.NoNewPrivs, sandbox.Enforced, "no_new_privs: setuid programs and file capabilities cannot raise its privileges")
	pl.filesystem()
	pl.network()
	if pl.conf.HostSocket != nil && apply {
		// Every confined plugin reaches the host over its own socket when it can.
		u, err := pl.conf.HostSocket(id, pl.box.Confine.UID, pl.box.Confine.GID)
		switch {
		case err == nil:
			c.host = u
		case pl.box.NewNetwork:
			return c, fmt.Errorf("serve the host's socket for the plugin: %w", err)
		}
	}
	pl.syscalls()
	pl.ipc()
	c.box, c.report = pl.box, pl.report
	return c, nil
}

// planner builds one launch's sandbox and its report, a mechanism at a time.
type planner struct {
	rt        *Runtime
	conf      *Confinement
	id, level string
	home, pkg string
	apply     bool
	want      sandbox.Want
	h         sandbox.Host
	box       *supervisor.Sandbox
	report    sandbox.Report
}

func (pl *planner) set(m, state, detail string) {
	pl.report = append(pl.report, sandbox.State{Mechanism: m, State: state, Detail: detail})
}

// off reports mechanism m as not asked for by the plugin's security level.
func (pl *planner) off(m, what string) {
	pl.set(m, sandbox.Off, "security level "+pl.level+" does not "+what)
}

// identity: a uid of the plugin's own when the host is root, else a user namespace.
func (pl *planner) identity() {
	switch {
	case pl.h.Root:
		uid, err := pl.rt.pluginUID(pl.id, pl.home, pl.apply)
		if err == nil {
			err = reachable(uid, []string{pl.pkg, pl.home})
		}
		if err != nil {
			pl.set(sandbox.Identity, sandbox.Unavailable, err.Error())
			return
		}
		pl.box.Confine.UID, pl.box.Confine.GID = uid, uid
		pl.set(sandbox.Identity, sandbox.Enforced, fmt.Sprintf("uid %d and gid %d of its own; the host's files and other plugins' directories are not readable by it", uid, uid))
	case pl.h.UserNSErr == "":
		pl.box.UserNamespace = true
		detail := fmt.Sprintf("a user namespace of its own (the server is not root, so outside it the plugin keeps the server's uid %d", os.Getuid())
		if pl.want[sandbox.Filesystem] && pl.h.LandlockABI > 0 {
			detail += "; Landlock keeps it off the server's files)"
		} else {
			detail += "; at this security level nothing keeps it off the server's files)"
		}
		pl.set(sandbox.Identity, sandbox.Enforced, detail)
	default:
		pl.set(sandbox.Identity, sandbox.Unavailable, pl.h.UserNSErr)
	}
}

// filesystem: Landlock rules for the package, the system paths and the data directory.
func (pl *planner) filesystem() {
	switch {
	case !pl.want[sandbox.Filesystem]:
		pl.off(sandbox.Filesystem, "restrict the filesystem")
		return
	case pl.h.LandlockABI == 0:
		pl.set(sandbox.Filesystem, sandbox.Unavailable, pl.h.LandlockErr)
		return
	}
	pl.box.Confine.Landlock = &sandbox.FSRules{
		ReadExec:  append(append([]string{pl.pkg}, systemReadExec...), pl.conf.ReadPaths...),
		ReadWrite: []string{pl.home},
		ROFiles:   systemReadFiles,
		RWFiles:   deviceFiles,
		ProcSelf:  true,
	}
	detail := fmt.Sprintf("Landlock ABI %d: read and execute in its package directory and the system's library and certificate paths, read and write in its data directory (HOME and TMPDIR), nothing else", pl.h.LandlockABI)
	if pl.want[sandbox.WriteXorExecute] {
		pl.box.Confine.Landlock.NoExecWrite = true
		detail += "; nothing it can write is executable"
	}
	pl.set(sandbox.Filesystem, sandbox.Enforced, detail)
}

// network: without http:external, a network namespace with only loopback.
func (pl *planner) network() {
	switch {
	case !pl.want[sandbox.Network]:
		pl.set(sandbox.Network, sandbox.Off, "granted http:external: the host's network")
	case pl.h.NetNSErr != "":
		pl.set(sandbox.Network, sandbox.Unavailable, pl.h.NetNSErr)
	case pl.conf.HostSocket == nil:
		pl.set(sandbox.Network, sandbox.Unavailable, "the host serves no Unix socket for plugins")
	default:
		pl.box.NewNetwork, pl.box.Confine.LoopbackUp = true, true
		if !pl.h.Root {
			pl.box.UserNamespace = true
		}
		pl.set(sandbox.Network, sandbox.Enforced, "a network namespace with only loopback; the host is reached over a Unix socket")
	}
}

// syscalls: the seccomp deny list.
func (pl *planner) syscalls() {
	switch {
	case !pl.want[sandbox.Syscalls]:
		pl.off(sandbox.Syscalls, "filter system calls")
	case pl.h.SeccompErr != "":
		pl.set(sandbox.Syscalls, sandbox.Unavailable, pl.h.SeccompErr)
	default:
		pl.box.Confine.Seccomp = true
		pl.set(sandbox.Syscalls, sandbox.Enforced, "seccomp: ptrace, mount, bpf, kexec, keyctl, module loading, namespace creation and io_uring are refused")
	}
}

// ipc: Landlock scoping of signals and abstract Unix sockets (it needs the Landlock domain
// the filesystem rules create).
func (pl *planner) ipc() {
	switch {
	case !pl.want[sandbox.IPC]:
		pl.off(sandbox.IPC, "scope signals and abstract Unix sockets")
	case pl.box.Confine.Landlock == nil:
		pl.set(sandbox.IPC, sandbox.Unavailable, "needs Landlock, which confines the filesystem too: "+pl.report.Get(sandbox.Filesystem).Detail)
	case pl.h.LandlockABI < 6:
		pl.set(sandbox.IPC, sandbox.Unavailable, fmt.Sprintf("needs Landlock ABI 6 (Linux 6.12); this kernel has %d", pl.h.LandlockABI))
	default:
		pl.box.Confine.Landlock.ScopeIPC = true
		pl.set(sandbox.IPC, sandbox.Enforced, "Landlock scoping: no signals to, and no abstract Unix sockets of, processes outside its sandbox")
	}
}

// limitReport adds the state of each resource limit to r: how e (what the supervisor
// enforced, or can enforce) applies the limits the profile sets.
func limitReport(r sandbox.Report, want sandbox.Want, e supervisor.Enforcement, lim sandbox.Limits, memory string) sandbox.Report {
	cg := "cgroup " + e.Cgroup
	add := func(m string, value int, unit, how string, why string) {
		switch {
		case !want[m]:
			r = append(r, sandbox.State{Mechanism: m, State: sandbox.Off, Detail: "no limit set"})
		case how == "":
			r = append(r, sandbox.State{Mechanism: m, State: sandbox.Unavailable, Detail: why})
		default:
			r = append(r, sandbox.State{Mechanism: m, State: sandbox.Enforced, Detail: fmt.Sprintf("%d %s, by %s", value, unit, how)})
		}
	}
	how := func(s string) string {
		switch s {
		case supervisor.EnforcedByCgroup:
			return cg
		case supervisor.EnforcedByRlimit:
			return "rlimit"
		}
		return s
	}
	mem := how(e.Memory)
	if memory == "monitor" {
		mem = "the host watching the resident memory of its whole process tree"
	}
	add(sandbox.Memory, lim.MemoryMB, "MiB", mem, "")
	add(sandbox.CPU, lim.CPUPercent, "% of one CPU", how(e.CPU), "no usable cgroup cpu controller on this host")
	add(sandbox.Processes, lim.Processes, "processes", how(e.Processes), "no usable cgroup pids controller, and no uid of its own for RLIMIT_NPROC")
	add(sandbox.FileHandles, lim.FileHandles, "open files", how(e.FileHandles), "")
	return r
}

// pluginUID returns the uid of plugin id: the owner of its data directory when that is in
// the range and no other plugin's, else the lowest free uid of the range, which then takes
// the directory over (with apply).
func (rt *Runtime) pluginUID(id, home string, apply bool) (int, error) {
	conf := rt.cfg.Confinement
	if conf.UIDCount <= 0 {
		return 0, errors.New("no uid range for plugins is configured")
	}
	rt.uidMu.Lock()
	defer rt.uidMu.Unlock()
	root := filepath.Dir(home)
	used := map[int]string{}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if st, err := os.Stat(filepath.Join(root, e.Name())); err == nil {
			if u := int(st.Sys().(*syscall.Stat_t).Uid); e.Name() != id && u >= conf.FirstUID && u < conf.FirstUID+conf.UIDCount {
				used[u] = e.Name()
			}
		}
	}
	uid := -1
	if st, err := os.Stat(home); err == nil {
		if u := int(st.Sys().(*syscall.Stat_t).Uid); u >= conf.FirstUID && u < conf.FirstUID+conf.UIDCount && used[u] == "" {
			uid = u
		}
	}
	for u := conf.FirstUID; uid < 0 && u < conf.FirstUID+conf.UIDCount; u++ {
		if used[u] == "" {
			uid = u
		}
	}
	if uid < 0 {
		return 0, fmt.Errorf("every uid of the plugin range %d-%d is taken", conf.FirstUID, conf.FirstUID+conf.UIDCount-1)
	}
	if !apply {
		return uid, nil
	}
	if err := os.Chmod(root, 0o711); err != nil {
		return 0, err
	}
	if err := filepath.WalkDir(home, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, uid)
	}); err != nil {
		return 0, fmt.Errorf("give the plugin's data directory to uid %d: %w", uid, err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		return 0, err
	}
	return uid, nil
}

// reachable checks that uid can reach each of dirs: search permission on every directory
// above it that exists (the host creates the others searchable, and preparePackage opens
// the package directory to the plugin's group).
func reachable(uid int, dirs []string) error {
	for _, d := range dirs {
		for p := filepath.Dir(d); ; p = filepath.Dir(p) {
			st, err := os.Stat(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue // created at launch, searchable
			}
			if err != nil {
				return err
			}
			sys := st.Sys().(*syscall.Stat_t)
			mode := st.Mode().Perm()
			if mode&0o001 == 0 && !(int(sys.Uid) == uid && mode&0o100 != 0) && !(int(sys.Gid) == uid && mode&0o010 != 0) {
				return fmt.Errorf("%s (mode %#o) is not searchable by other users, so a plugin under its own uid cannot reach %s; allow search (chmod o+x) on it", p, mode, d)
			}
			if p == "/" || p == "." {
				break
			}
		}
	}
	return nil
}

// preparePackage opens the plugin's package to its gid only: plugins/<id> becomes
// root:<gid> 0750, so no other plugin can read it.
func preparePackage(pkg string, gid int) error {
	top := filepath.Dir(pkg)
	if err := os.Chmod(filepath.Dir(top), 0o711); err != nil {
		return err
	}
	if err := os.Lchown(top, 0, gid); err != nil {
		return err
	}
	return os.Chmod(top, 0o750)
}

// Confinement reports how plugin id is confined: as applied to its running process, or
// else as its next launch would be.
func (rt *Runtime) Confinement(id string) sandbox.Report {
	p, err := rt.load(id)
	if err != nil {
		return nil
	}
	if p.man.External {
		return sandbox.OffReport("external plugin: it runs outside the host, which cannot confine it")
	}
	r := rt.get(id)
	r.mu.Lock()
	report := r.report
	running := r.proc != nil
	r.mu.Unlock()
	if running && report != nil {
		return report
	}
	home := filepath.Join(rt.dataDir, "plugin-data", id)
	conf, _ := rt.confine(id, p, home, false)
	caps := supervisor.Capabilities()
	return limitReport(conf.report, rt.pluginWant(p.rec), caps, rt.limitsOf(p.rec), MemoryEnforcement(caps))
}
