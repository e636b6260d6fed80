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
// measuring process, the others it was given by pid (-cpu-pids) and redis-server (-cpu-redis,
// from INFO cpu, as it is not a child of nexus-bench).
type scenarioCPU struct {
	pids []int
	rdb  *redis.Client // nil without -cpu-redis
	// bad is set when a flag named a process that cannot be read (not a pid, not a redis
	// URL): the figure is then unavailable rather than short of that process.
	bad bool
}

func newScenarioCPU(l loadFlags) *scenarioCPU {
	c := &scenarioCPU{pids: []int{os.Getpid()}}
	for _, f := range strings.Split(l.cpuPIDs, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			c.bad = true
			continue
		}
		c.pids = append(c.pids, pid)
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

// read returns the processes' CPU time so far; ok false when one of them cannot be read.
func (c *scenarioCPU) read(ctx context.Context) (total time.Duration, ok bool) {
	if c.bad {
		return 0, false
	}
	for _, pid := range c.pids {
		cpu, ok := cpuOf(pid)
		if !ok {
			return 0, false
		}
		total += cpu
	}
	if c.rdb != nil {
		cpu, err := redisServerCPU(ctx, c.rdb)
		if err != nil {
			return 0, false
		}
		total += cpu
	}
	return total, true
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

// cpuArgs are the flags that name a scenario's other processes to its measuring child.
func cpuArgs(redisURL string, procs ...*proc) []string {
	var pids []string
	for _, p := range procs {
		if p != nil && p.cmd.Process != nil {
			pids = append(pids, strconv.Itoa(p.cmd.Process.Pid))
		}
	}
	args := []string{"-cpu-pids", strings.Join(pids, ",")}
	if redisURL != "" {
		args = append(args, "-cpu-redis", redisURL)
	}
	return args
}
