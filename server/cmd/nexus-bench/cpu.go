package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// scenarioCPU reads the CPU time used so far by the processes of a messaging scenario: the
// measuring process, the others it was given by name and pid (-cpu-pids) and redis-server
// (-cpu-redis, from INFO cpu, as it is not a child of nexus-bench).
type scenarioCPU struct {
	procs []cpuProc     // the measuring process first
	rdb   *redis.Client // nil without -cpu-redis
	// bad is set when a flag named a process that cannot be read (not a pid, not a redis
	// URL): the figure is then unavailable rather than short of that process.
	bad bool
}

// cpuProc is a process whose CPU time a scenario counts, by the name the report gives it.
type cpuProc struct {
	name string
	pid  int
}

// redisProcName is redis-server's name in a scenario's CPU split.
const redisProcName = "redis-server"

func newScenarioCPU(l loadFlags) *scenarioCPU {
	self := l.cpuSelf
	if self == "" {
		self = "measuring process"
	}
	c := &scenarioCPU{procs: []cpuProc{{self, os.Getpid()}}}
	for _, f := range strings.Split(l.cpuPIDs, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		name, p, named := strings.Cut(f, "=")
		if !named {
			p = f
		}
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 || name == "" && named {
			c.bad = true
			continue
		}
		if !named {
			name = "pid " + p
		}
		c.procs = append(c.procs, cpuProc{name, pid})
	}
	if l.cpuRedis != "" {
		opt, err := redis.ParseURL(l.cpuRedis)
		if err != nil {
			c.bad = true
		} else {
			c.rdb = redis.NewClient(opt)
		}
	}
	return c
}

// readEach returns each process's CPU time so far, by its name (processes of one name
// added up); ok false when one of them cannot be read.
func (c *scenarioCPU) readEach(ctx context.Context) (map[string]time.Duration, bool) {
	if c.bad {
		return nil, false
	}
	each := make(map[string]time.Duration, len(c.procs)+1)
	for _, p := range c.procs {
		cpu, ok := cpuOf(p.pid)
		if !ok {
			return nil, false
		}
		each[p.name] += cpu
	}
	if c.rdb != nil {
		cpu, err := redisServerCPU(ctx, c.rdb)
		if err != nil {
			return nil, false
		}
		each[redisProcName] += cpu
	}
	return each, true
}

func (c *scenarioCPU) close() {
	if c.rdb != nil {
		_ = c.rdb.Close()
	}
}

// redisServerCPU is the CPU time (user and system, its threads included) redis-server has
// used, from INFO cpu.
func redisServerCPU(ctx context.Context, rdb *redis.Client) (time.Duration, error) {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	found := 0
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (k != "used_cpu_sys" && k != "used_cpu_user") {
			continue
		}
		s, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu: %s: %w", k, err)
		}
		total += s
		found++
	}
	if found != 2 {
		return 0, fmt.Errorf("INFO cpu has no used_cpu_sys and used_cpu_user")
	}
	return time.Duration(total * float64(time.Second)), nil
}

// cpuArgs are the flags that name a scenario's processes to its measuring child, which is
// named self in the CPU split.
func cpuArgs(self, redisURL string, procs ...*proc) []string {
	var pids []string
	for _, p := range procs {
		if p != nil && p.cmd.Process != nil {
			pids = append(pids, p.name+"="+strconv.Itoa(p.cmd.Process.Pid))
		}
	}
	args := []string{"-cpu-self", self, "-cpu-pids", strings.Join(pids, ",")}
	if redisURL != "" {
		args = append(args, "-cpu-redis", redisURL)
	}
	return args
}
