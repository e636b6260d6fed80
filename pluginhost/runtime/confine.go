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
	if rt.cfg.Confinement == nil {
		c.report = sandbox.OffReport("confinement is turned off in this host's configuration")
		return c, nil
	}
	want := rt.pluginWant(p.rec)
	if !p.rec.SandboxEnabled {
		c.report = sandbox.OffReport("sandbox_enabled is false for this plugin")
		return c, nil
	}
	h := sandbox.Probe()
	pkg := rt.abs(p.rec.Dir)
	box := &supervisor.Sandbox{Confine: sandbox.Exec{UID: -1, GID: -1, NoNewPrivs: true}}
	set := func(m, state, detail string) {
		c.report = append(c.report, sandbox.State{Mechanism: m, State: state, Detail: detail})
	}

	// identity
	uid, gid := -1, -1
	switch {
	case h.Root:
		u, err := rt.pluginUID(id, home, apply)
		if err == nil {
			err = reachable(u, []string{pkg, home})
		}
		if err != nil {
			set(sandbox.Identity, sandbox.Unavailable, err.Error())
			break
		}
		uid, gid = u, u
		box.Confine.UID, box.Confine.GID = uid, gid
		set(sandbox.Identity, sandbox.Enforced, fmt.Sprintf("uid %d and gid %d of its own; the host's files and other plugins' directories are not readable by it", uid, gid))
	case h.UserNSErr == "":
		box.UserNamespace = true
		set(sandbox.Identity, sandbox.Enforced, fmt.Sprintf("a user namespace of its own (the server is not root, so outside it the plugin keeps the server's uid %d; Landlock keeps it off the server's files)", os.Getuid()))
	default:
		set(sandbox.Identity, sandbox.Unavailable, h.UserNSErr)
	}
	set(sandbox.NoNewPrivs, sandbox.Enforced, "no_new_privs: setuid programs and file capabilities cannot raise its privileges")

	// filesystem
	switch {
	case !want[sandbox.Filesystem]:
		set(sandbox.Filesystem, sandbox.Off, "security level "+p.rec.SecurityLevel+" does not restrict the filesystem")
	case h.LandlockABI == 0:
		set(sandbox.Filesystem, sandbox.Unavailable, h.LandlockErr)
	default:
		box.Confine.Landlock = &sandbox.FSRules{
			ReadExec:  append(append([]string{pkg}, systemReadExec...), rt.cfg.Confinement.ReadPaths...),
			ReadWrite: []string{home},
			ROFiles:   systemReadFiles,
			RWFiles:   deviceFiles,
			ProcSelf:  true,
		}
		detail := fmt.Sprintf("Landlock ABI %d: read and execute in its package directory and the system's library and certificate paths, read and write in its data directory (HOME and TMPDIR), nothing else", h.LandlockABI)
		if want[sandbox.WriteXorExecute] {
			box.Confine.Landlock.NoExecWrite = true
			detail += "; nothing it can write is executable"
		}
		set(sandbox.Filesystem, sandbox.Enforced, detail)
	}

	// network
	switch {
	case !want[sandbox.Network]:
		set(sandbox.Network, sandbox.Off, "granted http:external: the host's network")
	case h.NetNSErr != "":
		set(sandbox.Network, sandbox.Unavailable, h.NetNSErr)
	case rt.cfg.Confinement.HostSocket == nil:
		set(sandbox.Network, sandbox.Unavailable, "the host serves no Unix socket for plugins")
	default:
		box.NewNetwork, box.Confine.LoopbackUp = true, true
		if !h.Root {
			box.UserNamespace = true
		}
		set(sandbox.Network, sandbox.Enforced, "a network namespace with only loopback; the host is reached over a Unix socket")
	}
	// Every confined plugin reaches the host over its own socket when it can.
	if rt.cfg.Confinement.HostSocket != nil && apply {
		u, err := rt.cfg.Confinement.HostSocket(id, uid, gid)
		switch {
		case err == nil:
			c.host = u
		case box.NewNetwork:
			return c, fmt.Errorf("serve the host's socket for the plugin: %w", err)
		}
	}

	// syscalls
	switch {
	case !want[sandbox.Syscalls]:
		set(sandbox.Syscalls, sandbox.Off, "security level "+p.rec.SecurityLevel+" does not filter system calls")
	case h.SeccompErr != "":
		set(sandbox.Syscalls, sandbox.Unavailable, h.SeccompErr)
	default:
		box.Confine.Seccomp = true
		set(sandbox.Syscalls, sandbox.Enforced, "seccomp: ptrace, mount, bpf, kexec, keyctl, module loading, namespace creation and io_uring are refused")
	}

	// ipc
	switch {
	case !want[sandbox.IPC]:
		set(sandbox.IPC, sandbox.Off, "security level "+p.rec.SecurityLevel+" does not scope signals and abstract Unix sockets")
	case box.Confine.Landlock == nil:
		set(sandbox.IPC, sandbox.Unavailable, "needs Landlock, which confines the filesystem too: "+c.report.Get(sandbox.Filesystem).Detail)
	case h.LandlockABI < 6:
		set(sandbox.IPC, sandbox.Unavailable, fmt.Sprintf("needs Landlock ABI 6 (Linux 6.12); this kernel has %d", h.LandlockABI))
	default:
		box.Confine.Landlock.ScopeIPC = true
		set(sandbox.IPC, sandbox.Enforced, "Landlock scoping: no signals to, and no abstract Unix sockets of, processes outside its sandbox")
	}
	c.box = box
	return c, nil
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
