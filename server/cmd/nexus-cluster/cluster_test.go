package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/server"
	"github.com/nexus-platform/nexus/server/internal/syncbuf"
)

// replicaEnv makes the test binary act as `nexus` (only `nexus serve`), so that the test
// needs no bin/nexus.
const replicaEnv = "NEXUS_CLUSTER_TEST_REPLICA"

func TestMain(m *testing.M) {
	if os.Getenv(replicaEnv) == "1" {
		os.Exit(serveAsNexus(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// serveAsNexus is `nexus serve ARGS`.
func serveAsNexus(args []string) int {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintf(os.Stderr, "the test's nexus only serves; got %q\n", args)
		return 2
	}
	cfg, err := server.ParseConfig(args[1:], os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	level, _ := cfg.LogLevelValue()
	if err := server.Run(ctx, cfg, server.NewLogger(os.Stderr, level)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestClusterRunsThreeReplicasAndStopsClean starts the cluster as `make run-cluster` does
// (on free ports), asks one replica for the cluster, which must list the three replicas up
// at the addresses they listen on, then stops it: afterwards no process it started is left
// (replicas, PostgreSQL with its backends, Redis) and the servers' directories are gone.
func TestClusterRunsThreeReplicasAndStopsClean(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, Redis and three server processes")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var stderr syncbuf.Buffer
	cfg := config{
		nexus: os.Args[0], dir: filepath.Join(t.TempDir(), "cluster"), replicas: 3,
		leaseTTL: 5 * time.Second, heartbeat: time.Second,
		env: []string{replicaEnv + "=1"},
	}
	c, err := startCluster(ctx, cfg, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	t.Logf("three replicas ready in %s", time.Since(began).Round(time.Millisecond))

	// What the summary tells the user to use: the env file and the token file.
	env, err := os.ReadFile(filepath.Join(cfg.dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(cfg.dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(env, []byte("export TOKEN="+strings.TrimSpace(string(token))+"\n")) ||
		!bytes.Contains(env, []byte("export NEXUS_TOKEN="+strings.TrimSpace(string(token))+"\n")) {
		t.Errorf("env file without the admin token:\n%s", env)
	}
	if !bytes.Contains(env, []byte("export NEXUS_URL=http://$NEXUS_A\n")) {
		t.Errorf("env file without NEXUS_URL:\n%s", env)
	}
	for _, r := range c.replica {
		line := fmt.Sprintf("export NEXUS_%s=%s\n", strings.ToUpper(r.id), strings.TrimPrefix(r.url, "http://"))
		if !bytes.Contains(env, []byte(line)) {
			t.Errorf("env file without %q:\n%s", line, env)
		}
		pid, err := os.ReadFile(r.pidPath)
		if err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(r.cmd.Process.Pid) {
			t.Errorf("%s says %q (%v); replica %s runs as %d", r.pidPath, pid, err, r.id, r.cmd.Process.Pid)
		}
	}

	// Replica b lists all three, up, at their addresses.
	list := listCluster(t, c.replica[1].url, strings.TrimSpace(string(token)))
	if list.Self != "b" {
		t.Errorf("self = %q, want b", list.Self)
	}
	var ids []string
	for i, rep := range list.Replicas {
		ids = append(ids, rep.ID)
		if i < len(c.replica) && (rep.Status != "up" || rep.AdvertiseURL != c.replica[i].url) {
			t.Errorf("replica %s: status %q at %q; want up at %s", rep.ID, rep.Status, rep.AdvertiseURL, c.replica[i].url)
		}
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Fatalf("the cluster lists %v, want [a b c]", ids)
	}

	// Every process the cluster runs descends from this test process.
	procs := descendants(t, os.Getpid())
	for _, r := range c.replica {
		if _, ok := procs[r.cmd.Process.Pid]; !ok {
			t.Errorf("replica %s (pid %d) is not among this process's descendants %v", r.id, r.cmd.Process.Pid, procs)
		}
	}
	if _, ok := procs[c.pg.Pid()]; !ok {
		t.Errorf("PostgreSQL (pid %d) is not among this process's descendants %v", c.pg.Pid(), procs)
	}
	// The replicas, PostgreSQL with at least one backend per replica, and Redis.
	if len(procs) < 3+1+3+1 {
		t.Errorf("descendants: %v; want at least 8", procs)
	}
	dirs := []string{c.pg.Dir(), c.redis.Dir()}

	stopped := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %s", time.Since(stopped).Round(time.Millisecond))
	for pid, start := range procs {
		if s, ok := startTime(pid); ok && s == start {
			t.Errorf("process %d (%s) still runs after Close", pid, cmdline(pid))
		}
	}
	if left := descendants(t, os.Getpid()); len(left) > 0 {
		t.Errorf("processes left after Close: %v", left)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", d, err)
		}
	}
	if strings.Contains(stderr.String(), "exited") {
		t.Errorf("a replica was reported lost: %s", stderr.String())
	}
	// The logs stay for the user to read; each replica stopped gracefully.
	for _, r := range c.replica {
		log, err := os.ReadFile(r.logPath)
		if err != nil || !bytes.Contains(log, []byte(`"msg":"stopped"`)) {
			t.Errorf("replica %s did not log a clean stop (%v):\n%s", r.id, err, tail(r.logPath, 2048))
		}
	}
}

// TestSecondClusterInTheSameDirectoryIsRefused: the working directory's lock keeps a second
// nexus-cluster out, and a directory that nexus-cluster did not make is never emptied.
func TestSecondClusterInTheSameDirectoryIsRefused(t *testing.T) {
	dir := t.TempDir()
	first := &cluster{dir: dir}
	if err := first.prepareDir(); err != nil {
		t.Fatal(err)
	}
	defer first.lock.Close()
	second := &cluster{dir: dir}
	if err := second.prepareDir(); err == nil || !strings.Contains(err.Error(), "another nexus-cluster") {
		t.Errorf("second prepareDir: %v; want refused as another nexus-cluster", err)
	}

	foreign := t.TempDir()
	keep := filepath.Join(foreign, "notes.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cluster{dir: foreign}
	if err := c.prepareDir(); err == nil || !strings.Contains(err.Error(), "not made by nexus-cluster") {
		t.Errorf("prepareDir on a foreign directory: %v; want refused", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the foreign directory's file: %v", err)
	}
}

type clusterList struct {
	Replicas []struct {
		ID           string `json:"id"`
		AdvertiseURL string `json:"advertise_url"`
		Status       string `json:"status"`
	} `json:"replicas"`
	Self string `json:"self"`
}

func listCluster(t *testing.T, url, token string) clusterList {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/api/v1/cluster", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var env struct {
		Success bool        `json:"success"`
		Data    clusterList `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil || resp.StatusCode != http.StatusOK || !env.Success {
		t.Fatalf("GET /api/v1/cluster: %d %s (%v)", resp.StatusCode, body, err)
	}
	return env.Data
}

// descendants returns the processes below pid (children, their children, ...), each with
// its start time, so that a pid reused later is not taken for one of them.
func descendants(t *testing.T, pid int) map[int]uint64 {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := parentOf(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	out := map[int]uint64{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, ch := range children[p] {
			if s, ok := startTime(ch); ok {
				out[ch] = s
			}
			queue = append(queue, ch)
		}
	}
	return out
}

// statFields returns the fields of /proc/pid/stat after the command name (field 3 on).
func statFields(pid int) ([]string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(string(b[i+1:])), true
}

func parentOf(pid int) (int, bool) {
	f, ok := statFields(pid)
	if !ok || len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// startTime is the process's start time (field 22 of /proc/pid/stat). A zombie counts as
// gone: it has exited.
func startTime(pid int) (uint64, bool) {
	f, ok := statFields(pid)
	if !ok || len(f) < 20 || f[0] == "Z" {
		return 0, false
	}
	s, err := strconv.ParseUint(f[19], 10, 64)
	return s, err == nil
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " ")
}
