package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupManager finds a cgroup v2 directory where this host may create
// cgroups with the memory and cpu controllers, and creates and removes the
// per-process cgroups below it. All its methods run on the launcher
// goroutine (see launcher), which serialises them.
//
// Where no cgroup v2 hierarchy delegates those controllers but cgroup v1
// hierarchies of them are mounted (and writable), it uses those: one
// directory per controller, created below the host's own cgroup of each.
type cgroupManager struct {
	probed bool
	base   string // cgroup whose subtree_control has the controllers below enabled; "" if none is usable
	memory bool   // the memory controller is enabled below base
	cpu    bool   // the cpu controller is enabled below base
	pids   bool   // the pids controller is enabled below base
	dir    string // base/nexus-<pid>, or "" while no cgroup of ours exists
	users  int    // cgroups of ours below dir
	seq    uint64 // numbers the cgroups, to keep their names unique

	// v1 maps each usable cgroup v1 controller (memory, cpu, pids) to the
	// host's own cgroup in its hierarchy; empty when cgroup v2 is used.
	v1 map[string]string
	// disabled makes the manager use no cgroup at all (tests of the fallbacks).
	disabled bool
}

// cgroup is the cgroup of one plugin process. Its methods other than
// release touch only its own directory and may run on any goroutine.
type cgroup struct {
	path  string            // the cgroup v2 directory, or "" with v1
	dirs  map[string]string // with v1: controller -> directory
	owner *cgroupManager
}

// v1 reports whether the cgroup is made of cgroup v1 directories.
func (c *cgroup) v1() bool { return c.path == "" }

// cgroupPeriod is the cpu.max period, in microseconds.
const cgroupPeriod = 100000

// capabilities reports what the host can enforce.
func (m *cgroupManager) capabilities() Enforcement {
	m.probe()
	e := Enforcement{FileHandles: EnforcedByRlimit, Memory: EnforcedByRlimit, Processes: EnforcedByRlimit, Cgroup: m.version()}
	if m.memory {
		e.Memory = EnforcedByCgroup
	}
	if m.cpu {
		e.CPU = EnforcedByCgroup
	}
	if m.pids {
		e.Processes = EnforcedByCgroup
	}
	return e
}

// plan decides how the limits of s are enforced, creating the process's
// cgroup if one is needed and possible.
func (m *cgroupManager) plan(s *Spec) (launchPlan, Enforcement) {
	m.probe()
	var (
		p launchPlan
		e Enforcement
	)
	if s.Limits.FileHandles > 0 {
		p.nofile = uint64(s.Limits.FileHandles)
		e.FileHandles = EnforcedByRlimit
	}
	lim := cgroupLimits{memBytes: int64(s.Limits.MemoryMB) << 20, cpuPercent: s.Limits.CPUPercent, pids: s.Limits.Processes}
	if !m.memory {
		lim.memBytes = 0
	}
	if !m.cpu {
		lim.cpuPercent = 0
	}
	if !m.pids {
		lim.pids = 0
	}
	if lim.memBytes > 0 || lim.cpuPercent > 0 || lim.pids > 0 {
		if cg, err := m.create(s.PluginID, lim); err == nil {
			p.cg = cg
			e.Cgroup = m.version()
			if lim.memBytes > 0 {
				e.Memory = EnforcedByCgroup
			}
			if lim.cpuPercent > 0 {
				e.CPU = EnforcedByCgroup
			}
			if lim.pids > 0 {
				e.Processes = EnforcedByCgroup
			}
		}
	}
	if s.Limits.MemoryMB > 0 && e.Memory == "" {
		p.data = uint64(s.Limits.MemoryMB) << 20
		e.Memory = EnforcedByRlimit
	}
	if s.Limits.Processes > 0 && e.Processes == "" && s.Sandbox != nil && s.Sandbox.Confine.UID > 0 {
		// RLIMIT_NPROC counts the processes of the real uid: a bound of the
		// plugin's own only when the uid is its own.
		p.nproc = uint64(s.Limits.Processes)
		e.Processes = EnforcedByRlimit
	}
	return p, e
}

// probe looks, once, for a usable cgroup: the host's own cgroup if the
// memory or cpu controller can be enabled for its children, else the root
// of the cgroup2 mount.
func (m *cgroupManager) probe() {
	if m.probed {
		return
	}
	m.probed = true
	if m.disabled {
		return
	}
	if mount, own, err := ownCgroup2(); err == nil {
		candidates := []string{filepath.Join(mount, own)}
		if own != "/" {
			candidates = append(candidates, mount)
		}
		for _, dir := range candidates {
			if m.memory, m.cpu, m.pids = enableControllers(dir, "memory", "cpu", "pids"); m.memory || m.cpu {
				m.base = dir
				return
			}
		}
	}
	m.v1 = ownCgroup1("memory", "cpu", "pids")
	m.sweepStaleV1()
	_, m.memory = m.v1["memory"]
	_, m.cpu = m.v1["cpu"]
	_, m.pids = m.v1["pids"]
}

// version is "v2" or "v1", the cgroup version in use, or "" for none.
func (m *cgroupManager) version() string {
	switch {
	case m.base != "":
		return "v2"
	case len(m.v1) > 0:
		return "v1"
	}
	return ""
}

// cgroupLimits are the limits written into a new cgroup; zero for none.
type cgroupLimits struct {
	memBytes   int64
	cpuPercent int
	pids       int
}

// create makes a cgroup for a process of plugin id with the given limits
// (zero for none).
func (m *cgroupManager) create(id string, lim cgroupLimits) (*cgroup, error) {
	if len(m.v1) > 0 {
		return m.createV1(id, lim)
	}
	if m.dir == "" {
		dir := filepath.Join(m.base, fmt.Sprintf("nexus-%d", os.Getpid()))
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		var want []string
		for c, on := range map[string]bool{"memory": m.memory, "cpu": m.cpu, "pids": m.pids} {
			if on {
				want = append(want, c)
			}
		}
		enableControllers(dir, want...)
		m.dir = dir
	}
	var path string
	for {
		m.seq++
		path = filepath.Join(m.dir, fmt.Sprintf("%s-%d", cgroupName(id), m.seq))
		err := os.Mkdir(path, 0o755)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) {
			m.removeDirIfUnused()
			return nil, err
		}
	}
	cg := &cgroup{path: path, owner: m}
	m.users++
	if err := cg.configure(lim); err != nil {
		cg.remove()
		m.release()
		return nil, err
	}
	return cg, nil
}

// release records that one cgroup of ours is gone, and removes dir with
// the last one.
func (m *cgroupManager) release() {
	m.users--
	m.removeDirIfUnused()
}

// removeDirIfUnused removes dir when no cgroup of ours is left in it.
func (m *cgroupManager) removeDirIfUnused() {
	if m.users == 0 && len(m.v1) > 0 {
		m.removeDirV1()
	}
	if m.users == 0 && m.dir != "" {
		_ = unix.Rmdir(m.dir)
		m.dir = ""
	}
}

// configure writes the limits into the cgroup. The swap and OOM-group
// settings are best effort: swap may be off, and an OOM kill takes the
// whole plugin (its children included) rather than one random process.
func (c *cgroup) configure(lim cgroupLimits) error {
	if c.v1() {
		return c.configureV1(lim)
	}
	memBytes, cpuPercent := lim.memBytes, lim.cpuPercent
	if lim.pids > 0 {
		if err := c.write("pids.max", strconv.Itoa(lim.pids)); err != nil {
			return err
		}
	}
	if memBytes > 0 {
		if err := c.write("memory.max", strconv.FormatInt(memBytes, 10)); err != nil {
			return err
		}
		_ = c.write("memory.swap.max", "0")
		_ = c.write("memory.oom.group", "1")
	}
	if cpuPercent > 0 {
		// The kernel refuses quotas under 1ms.
		quota := max(int64(cpuPercent)*cgroupPeriod/100, 1000)
		if err := c.write("cpu.max", fmt.Sprintf("%d %d", quota, cgroupPeriod)); err != nil {
			return err
		}
	}
	return nil
}

// open returns a file descriptor of the cgroup directory, for
// CLONE_INTO_CGROUP.
func (c *cgroup) open() (int, error) {
	return unix.Open(c.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// addProcess moves pid into the cgroup.
func (c *cgroup) addProcess(pid int) error {
	if c.v1() {
		for _, d := range c.dirs {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
				return err
			}
		}
		return nil
	}
	return c.write("cgroup.procs", strconv.Itoa(pid))
}

// kill kills every process in the cgroup: with cgroup.kill (Linux 5.14),
// or else by PID, a few rounds to catch processes forked meanwhile.
func (c *cgroup) kill() {
	if !c.v1() {
		if err := c.write("cgroup.kill", "1"); err == nil {
			return
		}
	}
	for range 3 {
		b, err := os.ReadFile(filepath.Join(c.procsDir(), "cgroup.procs"))
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
}

// waitEmpty waits, for a bounded time, until no process is left in the
// cgroup.
func (c *cgroup) waitEmpty() {
	deadline := time.Now().Add(2 * time.Second)
	for pause := time.Millisecond; time.Now().Before(deadline); pause = min(2*pause, 50*time.Millisecond) {
		if c.v1() {
			b, err := os.ReadFile(filepath.Join(c.procsDir(), "cgroup.procs"))
			if err != nil || len(bytes.TrimSpace(b)) == 0 {
				return
			}
		} else if v, ok := c.readKey("cgroup.events", "populated"); !ok || v == 0 {
			return
		}
		time.Sleep(pause)
	}
}

// oomKilled reports whether the kernel's OOM killer killed a process of
// the cgroup.
func (c *cgroup) oomKilled() bool {
	if c.v1() {
		d, ok := c.dirs["memory"]
		if !ok {
			return false
		}
		n, _ := readKey(filepath.Join(d, "memory.oom_control"), "oom_kill")
		return n > 0
	}
	n, _ := c.readKey("memory.events", "oom_kill")
	return n > 0
}

// procsDir is a directory whose cgroup.procs lists every process of the
// cgroup.
func (c *cgroup) procsDir() string {
	if !c.v1() {
		return c.path
	}
	for _, name := range []string{"pids", "memory", "cpu"} {
		if d, ok := c.dirs[name]; ok {
			return d
		}
	}
	return ""
}

// remove deletes the cgroup directory, retrying for a bounded time while
// the kernel still holds it busy.
func (c *cgroup) remove() {
	if c.v1() {
		for _, d := range c.dirs {
			rmdirBusy(d)
		}
		return
	}
	rmdirBusy(c.path)
}

// rmdirBusy removes the cgroup directory dir, retrying for a bounded time
// while the kernel still holds it busy.
func rmdirBusy(dir string) {
	deadline := time.Now().Add(time.Second)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return
		}
		time.Sleep(pause)
	}
}

// release tells the manager the cgroup is gone. It must not run on the
// launcher goroutine.
func (c *cgroup) release() {
	theLauncher.do(c.owner.release)
}

// write writes value to the cgroup's file name.
func (c *cgroup) write(name, value string) error {
	return os.WriteFile(filepath.Join(c.path, name), []byte(value), 0)
}

// readKey returns the number after key in a flat-keyed cgroup file such as
// memory.events.
func (c *cgroup) readKey(name, key string) (int64, bool) {
	return readKey(filepath.Join(c.path, name), key)
}

// readKey returns the number after key in the flat-keyed file path.
func readKey(path, key string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// enableControllers enables each wanted controller that dir offers for
// its children, if dir is writable, and reports which of memory and cpu
// are enabled afterwards.
func enableControllers(dir string, want ...string) (memory, cpu, pids bool) {
	if unix.Access(dir, unix.W_OK) != nil {
		return false, false, false
	}
	available, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return false, false, false
	}
	control := filepath.Join(dir, "cgroup.subtree_control")
	for _, w := range want {
		if hasWord(available, w) {
			// One controller per write: a refusal of one (EBUSY when dir
			// holds processes) must not stop the other.
			_ = os.WriteFile(control, []byte("+"+w), 0)
		}
	}
	enabled, err := os.ReadFile(control)
	if err != nil {
		return false, false, false
	}
	return hasWord(enabled, "memory"), hasWord(enabled, "cpu"), hasWord(enabled, "pids")
}

// hasWord reports whether the space-separated list b contains w.
func hasWord(b []byte, w string) bool {
	for _, f := range strings.Fields(string(b)) {
		if f == w {
			return true
		}
	}
	return false
}

// ownCgroup2 returns the mount point of the cgroup v2 hierarchy and the
// host process's cgroup relative to it.
func ownCgroup2() (mount, own string, err error) {
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", err
	}
	path := ""
	for line := range strings.Lines(string(cg)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			path = p
		}
	}
	if !strings.HasPrefix(path, "/") {
		return "", "", errors.New("not in a cgroup v2 hierarchy")
	}
	mounts, err := readMounts()
	if err != nil {
		return "", "", err
	}
	for _, m := range mounts {
		if m.fstype != "cgroup2" {
			continue
		}
		root, point := m.root, m.point
		rel, ok := strings.CutPrefix(path, root)
		if root == "/" {
			rel, ok = path, true
		}
		if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
			continue
		}
		if st, err := os.Stat(filepath.Join(point, rel)); err == nil && st.IsDir() {
			return point, filepath.Clean("/" + rel), nil
		}
	}
	return "", "", errors.New("no cgroup v2 mount holds this process's cgroup")
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	root, point, fstype string
	superOpts           []string
}

// readMounts reads the mounts of /proc/self/mountinfo.
func readMounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+3 >= len(fields) {
			continue
		}
		out = append(out, mountInfo{root: unescapeMount(fields[3]), point: unescapeMount(fields[4]),
			fstype: fields[sep+1], superOpts: strings.Split(fields[sep+3], ",")})
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for a space) of a path in
// /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupName turns a plugin ID into a safe cgroup directory name.
func cgroupName(id string) string {
	b := []byte(id)
	if len(b) > 64 {
		b = b[:64]
	}
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "plugin"
	}
	return string(b)
}
