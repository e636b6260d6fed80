package supervisor

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// pageSize converts the page counts of /proc/<pid>/stat into bytes.
var pageSize = int64(os.Getpagesize())

// TreeRSS returns the resident memory of the plugin's whole process tree: its main
// process, every descendant, and every process of its process group (which includes
// children that were orphaned and reparented away from it). It is what the host watches
// to enforce a memory limit where no cgroup can: each call reads /proc once per process.
// It returns os.ErrProcessDone once the process has exited and been reaped.
func (p *Process) TreeRSS() (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return 0, os.ErrProcessDone
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	type proc struct {
		ppid, pgrp int
		rss        int64
	}
	procs := make(map[int]proc, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// Fields after the command name, which is in parentheses and may hold anything.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 22 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])             // field 4
		pgrp, _ := strconv.Atoi(f[2])             // field 5
		rss, _ := strconv.ParseInt(f[21], 10, 64) // field 24, in pages
		procs[pid] = proc{ppid: ppid, pgrp: pgrp, rss: rss * pageSize}
	}
	in := func(pid int) bool {
		for seen := 0; pid > 1 && seen < 1<<16; seen++ {
			q, ok := procs[pid]
			if !ok {
				return false
			}
			if pid == p.pid || q.pgrp == p.pid {
				return true
			}
			pid = q.ppid
		}
		return false
	}
	var total int64
	for pid, q := range procs {
		if in(pid) {
			total += q.rss
		}
	}
	return total, nil
}
