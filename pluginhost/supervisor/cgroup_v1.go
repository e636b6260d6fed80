package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// createV1 makes the cgroup v1 directories of a process of plugin id, one per controller
// a limit needs, below <host cgroup>/nexus-<host pid> of each hierarchy.
func (m *cgroupManager) createV1(id string, lim cgroupLimits) (*cgroup, error) {
	need := map[string]bool{"memory": lim.memBytes > 0, "cpu": lim.cpuPercent > 0, "pids": lim.pids > 0}
	m.seq++
	name := fmt.Sprintf("%s-%d", cgroupName(id), m.seq)
	cg := &cgroup{dirs: map[string]string{}, owner: m}
	m.users++
	for ctrl, base := range m.v1 {
		// pids is joined even when unlimited: its cgroup.procs is how the host finds
		// and kills every process of the plugin.
		if !need[ctrl] && ctrl != "pids" {
			continue
		}
		parent := filepath.Join(base, fmt.Sprintf("nexus-%d", os.Getpid()))
		if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			cg.remove()
			m.release()
			return nil, err
		}
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			cg.remove()
			m.release()
			return nil, err
		}
		cg.dirs[ctrl] = dir
	}
	if err := cg.configure(lim); err != nil {
		cg.remove()
		m.release()
		return nil, err
	}
	return cg, nil
}

// configureV1 writes the limits into the cgroup v1 directories.
func (c *cgroup) configureV1(lim cgroupLimits) error {
	write := func(ctrl, file, value string) error {
		return os.WriteFile(filepath.Join(c.dirs[ctrl], file), []byte(value), 0)
	}
	if lim.memBytes > 0 {
		if err := write("memory", "memory.limit_in_bytes", strconv.FormatInt(lim.memBytes, 10)); err != nil {
			return err
		}
		// Memory plus swap, where swap accounting is on: no way around the limit.
		_ = write("memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(lim.memBytes, 10))
	}
	if lim.cpuPercent > 0 {
		quota := max(int64(lim.cpuPercent)*cgroupPeriod/100, 1000)
		if err := write("cpu", "cpu.cfs_period_us", strconv.Itoa(cgroupPeriod)); err != nil {
			return err
		}
		if err := write("cpu", "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)); err != nil {
			return err
		}
	}
	if lim.pids > 0 {
		if err := write("pids", "pids.max", strconv.Itoa(lim.pids)); err != nil {
			return err
		}
	}
	return nil
}

// removeDirV1 removes the nexus-<pid> parents of the v1 hierarchies once no cgroup of ours
// is left in them.
func (m *cgroupManager) removeDirV1() {
	for _, base := range m.v1 {
		_ = unix.Rmdir(filepath.Join(base, fmt.Sprintf("nexus-%d", os.Getpid())))
	}
}

// sweepStaleV1 removes the nexus-<pid> cgroups that hosts which are gone (killed, so they
// could not remove them) left in the v1 hierarchies: their plugins died with them (the
// parent-death signal), so the directories are empty; a busy one is left alone.
func (m *cgroupManager) sweepStaleV1() {
	for _, base := range m.v1 {
		entries, _ := os.ReadDir(base)
		for _, e := range entries {
			n, ok := strings.CutPrefix(e.Name(), "nexus-")
			pid, err := strconv.Atoi(n)
			if !ok || err != nil || pid == os.Getpid() || unix.Kill(pid, 0) == nil || !e.IsDir() {
				continue
			}
			dir := filepath.Join(base, e.Name())
			children, _ := os.ReadDir(dir)
			for _, c := range children {
				if c.IsDir() {
					_ = unix.Rmdir(filepath.Join(dir, c.Name()))
				}
			}
			_ = unix.Rmdir(dir)
		}
	}
}

// ownCgroup1 returns, for each of the wanted controllers that has a writable cgroup v1
// hierarchy, the host process's own cgroup directory in it.
func ownCgroup1(want ...string) map[string]string {
	own := map[string]string{} // controller -> path within its hierarchy
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.Lines(string(b)) {
			// hierarchy-ID:controller-list:path
			parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
			if len(parts) != 3 || parts[1] == "" {
				continue
			}
			for _, c := range strings.Split(parts[1], ",") {
				own[c] = parts[2]
			}
		}
	}
	mounts, err := readMounts()
	if err != nil {
		return nil
	}
	found := map[string]string{}
	for _, m := range mounts {
		if m.fstype != "cgroup" {
			continue
		}
		root, point, opts := m.root, m.point, m.superOpts
		for _, w := range want {
			path, ok := own[w]
			if !ok || !slices.Contains(opts, w) {
				continue
			}
			rel, ok := strings.CutPrefix(path, root)
			if root == "/" {
				rel, ok = path, true
			}
			if !ok {
				continue
			}
			dir := filepath.Join(point, rel)
			if st, err := os.Stat(dir); err == nil && st.IsDir() && unix.Access(dir, unix.W_OK) == nil {
				found[w] = dir
			}
		}
	}
	return found
}
