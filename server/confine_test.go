package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"golang.org/x/sys/unix"
)

// probeResult is what the probe plugin found: each attempt with the error it got ("" when
// it succeeded).
type probeResult struct {
	UID      int               `json:"uid"`
	Attempts map[string]string `json:"attempts"`
}

// runProbe tries, as an attacker plugin would, to reach what a confined plugin must not:
// the server's files, another plugin's directories, the server's environment, the
// network, and a denied system call. args: the data directory, the server's TCP address,
// another plugin's id. It writes what happened to $HOME/probe.json and then runs as a
// normal plugin (so the test also sees that it still works).
func runProbe(args []string) int {
	dataDir, serverAddr, other := args[0], args[1], args[2]
	res := probeResult{UID: os.Getuid(), Attempts: map[string]string{}}
	try := func(name string, f func() error) {
		if err := f(); err != nil {
			res.Attempts[name] = err.Error()
		} else {
			res.Attempts[name] = ""
		}
	}
	readFile := func(p string) func() error {
		return func() error { _, err := os.ReadFile(p); return err }
	}
	try("read admin-token", readFile(filepath.Join(dataDir, "admin-token")))
	try("read secret.key", readFile(filepath.Join(dataDir, "secret.key")))
	try("write nexus.db", func() error {
		f, err := os.OpenFile(filepath.Join(dataDir, "nexus.db"), os.O_RDWR, 0)
		if err == nil {
			f.Close()
		}
		return err
	})
	try("list data dir", func() error { _, err := os.ReadDir(dataDir); return err })
	try("list other plugin's package", func() error { _, err := os.ReadDir(filepath.Join(dataDir, "plugins", other)); return err })
	try("list other plugin's data", func() error { _, err := os.ReadDir(filepath.Join(dataDir, "plugin-data", other)); return err })
	try("read server environ", readFile(fmt.Sprintf("/proc/%d/environ", os.Getppid())))
	try("read /etc/shadow", readFile("/etc/shadow"))
	try("write /tmp", func() error { return os.WriteFile("/tmp/nexus-probe-escape", []byte("x"), 0o600) })
	try("connect server tcp", func() error {
		c, err := net.DialTimeout("tcp", serverAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	try("connect outside", func() error {
		c, err := net.DialTimeout("tcp", "192.0.2.1:80", time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	try("ptrace server", func() error { return unix.PtraceAttach(os.Getppid()) })
	try("unshare user namespace", func() error { return unix.Unshare(unix.CLONE_NEWUSER) })
	try("signal server", func() error { return unix.Kill(os.Getppid(), 0) })
	try("write home", func() error { return os.WriteFile(filepath.Join(os.Getenv("HOME"), "mine"), []byte("x"), 0o600) })
	try("write tmpdir", func() error { return os.WriteFile(filepath.Join(os.Getenv("TMPDIR"), "mine"), []byte("x"), 0o600) })
	try("exec from home", func() error {
		script := filepath.Join(os.Getenv("HOME"), "dropped.sh")
		if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			return err
		}
		return exec.Command(script).Run()
	})
	b, _ := json.Marshal(res)
	if err := os.WriteFile(filepath.Join(os.Getenv("HOME"), "probe.json"), b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		return 1
	}
	if err := plugin.Run(context.Background(), plugin.Plugin{Version: "1.0.0"}); err != nil {
		fmt.Fprintln(os.Stderr, "probe plugin:", err)
		return 1
	}
	return 0
}

// readProbe waits for the probe plugin id to be active and returns what it found.
func readProbe(e *env, id string) probeResult {
	e.t.Helper()
	waitFor(e.t, id+" active", 15*time.Second, func() bool { s, _ := status(e, id); return s == "active" })
	b, err := os.ReadFile(filepath.Join(e.DataDir, "plugin-data", id, "probe.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var r probeResult
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// confinement returns the plugin's mechanisms from GET /permissions, by name.
func confinement(e *env, id string) (map[string]map[string]any, map[string]any) {
	e.t.Helper()
	perms := e.mustREST(http.MethodGet, "/api/v1/plugins/"+id+"/permissions", e.Admin, nil)
	out := map[string]map[string]any{}
	list, _ := perms["confinement"].([]any)
	for _, m := range list {
		m := m.(map[string]any)
		out[m["mechanism"].(string)] = m
	}
	return out, perms
}

// TestConfinedPluginCannotReachTheHostsSecrets is the attack of the issue that brought
// confinement in: a plugin with no permissions reads the admin token, the key, the
// database, another plugin's files and the server's environment, and opens sockets. Each
// must fail, and the plugin must still work. Which mechanisms apply depends on the host;
// the test asserts what the API reports and checks each reported protection for real.
func TestConfinedPluginCannotReachTheHostsSecrets(t *testing.T) {
	e := startRuntimeServer(t)
	addr := strings.TrimPrefix(e.URL, "http://")
	// The test server takes its admin token from the environment, as a production one may:
	// a generated one would be in this file.
	if err := os.WriteFile(filepath.Join(e.DataDir, "admin-token"), []byte(testAdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	installTestPlugin(e, "other-plugin", "serve", nil, map[string]any{"secret_token": "other-secret"})
	e.mustREST(http.MethodPost, "/api/v1/plugins/other-plugin/enable", e.Admin, nil)
	installTestPlugin(e, "probe-plugin", "probe", map[string]any{
		"args":            []string{testPluginArg, "probe", e.DataDir, addr, "other-plugin"},
		"resource_limits": map[string]any{"memory_mb": 512, "cpu_percent": 100, "file_handles": 256},
	}, nil)
	e.mustREST(http.MethodPost, "/api/v1/plugins/probe-plugin/enable", e.Admin, nil)
	r := readProbe(e, "probe-plugin")
	mech, perms := confinement(e, "probe-plugin")
	t.Logf("probe: %+v", r)
	for _, m := range []string{"identity", "no_new_privs", "filesystem", "network", "syscalls", "ipc", "memory", "cpu", "processes", "file_handles"} {
		if mech[m] == nil {
			t.Fatalf("GET /permissions reports no %s mechanism: %v", m, perms["confinement"])
		}
		t.Logf("%-13s %-11s %s", m, mech[m]["state"], mech[m]["detail"])
	}
	enforced := func(m string) bool { return mech[m]["state"] == "enforced" }
	mustFail := func(attempts ...string) {
		t.Helper()
		for _, a := range attempts {
			if err, ok := r.Attempts[a]; !ok || err == "" {
				t.Errorf("the confined plugin could %s", a)
			}
		}
	}
	mustWork := func(attempts ...string) {
		t.Helper()
		for _, a := range attempts {
			if err := r.Attempts[a]; err != "" {
				t.Errorf("the confined plugin could not %s: %s", a, err)
			}
		}
	}
	// Whatever the host: the secrets are out of reach by one mechanism or the other.
	if !enforced("identity") && !enforced("filesystem") {
		t.Fatalf("neither identity nor filesystem is enforced: %v", perms["confinement"])
	}
	mustFail("read admin-token", "read secret.key", "write nexus.db", "list data dir",
		"list other plugin's package", "list other plugin's data", "read server environ", "read /etc/shadow")
	mustWork("write home", "write tmpdir", "exec from home") // medium: no write-xor-execute
	if enforced("identity") && os.Geteuid() == 0 && r.UID == 0 {
		t.Errorf("identity is reported enforced, but the plugin runs as root")
	}
	if enforced("filesystem") {
		mustFail("write /tmp")
	}
	if enforced("network") {
		mustFail("connect server tcp", "connect outside")
	}
	if enforced("syscalls") {
		mustFail("ptrace server", "unshare user namespace")
	}
	if enforced("identity") || enforced("ipc") {
		mustFail("signal server")
	}
	if os.Geteuid() == 0 && unix.Access("/sys/fs/cgroup", unix.W_OK) == nil {
		// The machines this project runs on (and CI) have Landlock, seccomp, namespaces
		// and cgroups: there, the whole profile must be enforced.
		for _, m := range []string{"identity", "no_new_privs", "filesystem", "network", "syscalls", "ipc", "memory", "cpu", "processes", "file_handles"} {
			if !enforced(m) {
				t.Errorf("%s is %s here: %s", m, mech[m]["state"], mech[m]["detail"])
			}
		}
	}
	complete := true
	for _, m := range mech {
		if m["state"] == "unavailable" {
			complete = false
		}
	}
	if perms["sandbox_enabled"] != complete {
		t.Errorf("sandbox_enabled = %v, but the profile complete = %v", perms["sandbox_enabled"], complete)
	}
}

// TestExternalNetworkPermissionKeepsTheNetwork: with http:external granted the plugin has
// the host's network (and the report says the network mechanism is off, and why).
func TestExternalNetworkPermissionKeepsTheNetwork(t *testing.T) {
	e := startRuntimeServer(t)
	addr := strings.TrimPrefix(e.URL, "http://")
	installTestPlugin(e, "other-plugin", "serve", nil, nil)
	installTestPlugin(e, "net-plugin", "probe", map[string]any{
		"args":           []string{testPluginArg, "probe", e.DataDir, addr, "other-plugin"},
		"permissions":    []string{"http:external"},
		"security_level": "high",
	}, nil)
	e.mustREST(http.MethodPut, "/api/v1/plugins/net-plugin/permissions", e.Admin, map[string]any{"grant": []string{"http:external"}})
	e.mustREST(http.MethodPost, "/api/v1/plugins/net-plugin/enable", e.Admin, nil)
	r := readProbe(e, "net-plugin")
	mech, _ := confinement(e, "net-plugin")
	if mech["network"]["state"] != "off" || !strings.Contains(mech["network"]["detail"].(string), "http:external") {
		t.Errorf("network = %v, want off because of http:external", mech["network"])
	}
	if err := r.Attempts["connect server tcp"]; err != "" {
		t.Errorf("with http:external the plugin could not reach the server over TCP: %s", err)
	}
	// The filesystem confinement stays, and at the high level what the plugin writes it
	// cannot execute.
	if mech["filesystem"]["state"] == "enforced" {
		if r.Attempts["read admin-token"] == "" {
			t.Error("the plugin read the admin token")
		}
		if !strings.Contains(mech["filesystem"]["detail"].(string), "nothing it can write is executable") {
			t.Errorf("filesystem detail at the high level: %v", mech["filesystem"]["detail"])
		}
		if r.Attempts["exec from home"] == "" {
			t.Error("at the high level the plugin executed a file it wrote")
		}
	}
}

// TestUnprivilegedServerConfinesPlugins runs the server as nobody: plugins then get a user
// namespace instead of a uid of their own (so the server's files are theirs by owner, and
// only Landlock keeps them out), the network namespace through it, and the limits that need
// no root. The probe's attacks must fail all the same; the report must say what is missing
// (no cgroup a non-root server may write here: cpu and the process count are unavailable,
// memory is watched by the host), sandbox_enabled must be false, and a critical plugin must
// not start.
func TestUnprivilegedServerConfinesPlugins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the server already runs unprivileged in the other confinement tests")
	}
	const nobody = 65534
	base, err := os.MkdirTemp("", "nexus-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	dataDir, runDir := filepath.Join(base, "data"), filepath.Join(base, "run")
	for _, d := range []string{dataDir, runDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	_, url := startProcessAs(t, dataDir, filepath.Join(runDir, "addr"), &syscall.Credential{Uid: nobody, Gid: nobody})
	e := &env{t: t, URL: url, DataDir: dataDir, Admin: testAdminToken}
	if err := os.WriteFile(filepath.Join(dataDir, "admin-token"), []byte(testAdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dataDir, "admin-token"), nobody, nobody); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(url, "http://")
	installTestPlugin(e, "other-plugin", "serve", nil, nil)
	e.mustREST(http.MethodPost, "/api/v1/plugins/other-plugin/enable", e.Admin, nil)
	installTestPlugin(e, "probe-plugin", "probe", map[string]any{
		"args":            []string{testPluginArg, "probe", dataDir, addr, "other-plugin"},
		"resource_limits": map[string]any{"memory_mb": 512, "cpu_percent": 100},
	}, nil)
	e.mustREST(http.MethodPost, "/api/v1/plugins/probe-plugin/enable", e.Admin, nil)
	r := readProbe(e, "probe-plugin")
	mech, perms := confinement(e, "probe-plugin")
	for _, m := range []string{"identity", "no_new_privs", "filesystem", "network", "syscalls", "ipc", "memory", "cpu", "processes", "file_handles"} {
		t.Logf("%-13s %-11s %s", m, mech[m]["state"], mech[m]["detail"])
	}
	for _, m := range []string{"identity", "no_new_privs", "filesystem", "network", "syscalls", "ipc", "memory"} {
		if mech[m]["state"] != "enforced" {
			t.Errorf("%s is %v: %v", m, mech[m]["state"], mech[m]["detail"])
		}
	}
	if d := mech["identity"]["detail"].(string); !strings.Contains(d, "user namespace") {
		t.Errorf("identity detail %q", d)
	}
	if d := mech["memory"]["detail"].(string); !strings.Contains(d, "process tree") {
		t.Errorf("memory detail %q: want the host's watching", d)
	}
	if mech["cpu"]["state"] != "unavailable" {
		t.Errorf("cpu is %v without a writable cgroup", mech["cpu"])
	}
	if perms["sandbox_enabled"] != false {
		t.Errorf("sandbox_enabled = %v with mechanisms unavailable", perms["sandbox_enabled"])
	}
	if r.UID != nobody {
		t.Errorf("the plugin runs as uid %d inside its user namespace, want the server's %d", r.UID, nobody)
	}
	for _, a := range []string{"read admin-token", "read secret.key", "write nexus.db", "list data dir",
		"list other plugin's package", "list other plugin's data", "read server environ", "read /etc/shadow",
		"write /tmp", "connect server tcp", "connect outside", "ptrace server", "unshare user namespace", "signal server"} {
		if err, ok := r.Attempts[a]; !ok || err == "" {
			t.Errorf("the plugin of an unprivileged server could %s", a)
		}
	}
	for _, a := range []string{"write home", "write tmpdir"} {
		if err := r.Attempts[a]; err != "" {
			t.Errorf("could not %s: %s", a, err)
		}
	}

	// critical refuses to start what it cannot fully confine.
	installTestPlugin(e, "critical-plugin", "serve", map[string]any{
		"security_level":  "critical",
		"resource_limits": map[string]any{"cpu_percent": 50},
	}, nil)
	res := e.rest(http.MethodPost, "/api/v1/plugins/critical-plugin/enable", e.Admin, nil)
	if res.errorCode() != "PLUGIN_STARTUP_FAILED" || !strings.Contains(string(res.Raw), "cpu") {
		t.Errorf("enable of a critical plugin this host cannot fully confine: %d %s", res.Status, res.Raw)
	}
}
