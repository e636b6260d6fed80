package server_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/server"
)

// TestInstancesSpreadOverReplicas runs three servers on one PostgreSQL and one Redis. A
// host-launched plugin whose manifest asks for two instances runs on exactly two replicas,
// and its detail view says which replica holds each slot; set to three through the API, it
// runs on all three; set to five, it still runs once per replica and two slots wait; set
// to one, two replicas stop it. A restart and an update through a replica that does not run
// it restart it where it runs. Bad counts are refused naming the field. Uninstalled and
// installed again, it has its manifest's count.
func TestInstancesSpreadOverReplicas(t *testing.T) {
	const ttl = 2 * time.Second
	reps := newReplicaSet(t, "test-instances:", func(c *server.Config) { c.LeaseTTL, c.HealthInterval = ttl, 300*time.Millisecond })
	all := map[string]*env{}
	for _, id := range []string{"alpha", "beta", "gamma"} {
		all[id] = reps.inProcess(id)
	}
	a, c := all["alpha"], all["gamma"]
	const id = "spread-plugin"
	// runsOn is the replicas a launched instance of the plugin is connected to, sorted.
	runsOn := func() []string {
		var on []string
		for name, e := range all {
			for _, rep := range connectedInstances(e, id, name) {
				if rep != name {
					t.Errorf("an instance connected to %s says replica %s", name, rep)
				}
				on = append(on, name)
			}
		}
		slices.Sort(on)
		return on
	}
	// onDistinct waits until n instances run, each on its own replica, then checks that
	// it stays so over two renewals of the leases.
	onDistinct := func(n int) []string {
		t.Helper()
		var on []string
		waitFor(t, "the plugin on "+string(rune('0'+n))+" replicas", ttl+15*time.Second, func() bool {
			on = runsOn()
			return len(on) == n && len(slices.Compact(slices.Clone(on))) == n
		})
		for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			if now := runsOn(); !slices.Equal(now, on) {
				t.Fatalf("the plugin ran on %v, then on %v", on, now)
			}
		}
		return on
	}
	slots := func(e *env) (desired float64, holders []string) {
		_, p := status(e, id)
		rt := p["runtime"].(map[string]any)
		if p["manifest"].(map[string]any)["instances"] != 2.0 {
			t.Errorf("manifest.instances = %v, want 2", p["manifest"].(map[string]any)["instances"])
		}
		for _, s := range rt["slots"].([]any) {
			rep, _ := s.(map[string]any)["replica_id"].(string)
			holders = append(holders, rep)
		}
		return rt["desired_instances"].(float64), holders
	}

	installTestPlugin(a, id, "healthy", map[string]any{"instances": 2}, nil)
	a.mustREST(http.MethodPost, "/api/v1/plugins/"+id+"/enable", a.Admin, nil)
	on := onDistinct(2)
	desired, holders := slots(c)
	slices.Sort(holders)
	if desired != 2 || !slices.Equal(holders, on) {
		t.Errorf("detail view: desired %v, slots held by %v; want 2 held by %v", desired, holders, on)
	}

	set := func(e *env, n int) map[string]any {
		t.Helper()
		return e.mustREST(http.MethodPut, "/api/v1/plugins/"+id+"/instances", e.Admin, map[string]any{"instances": n})
	}
	if r := set(c, 3); r["instances"] != 3.0 || r["live_replicas"] != 3.0 {
		t.Errorf("set 3 = %v", r)
	}
	onDistinct(3)

	r := set(c, 5)
	if r["live_replicas"] != 3.0 || !strings.Contains(r["message"].(string), "2 wait for more replicas") {
		t.Errorf("set 5 = %v", r)
	}
	onDistinct(3)
	if desired, holders := slots(a); desired != 5 || len(holders) != 5 || slices.Index(holders, "") < 0 {
		t.Errorf("detail view with 5 wanted: desired %v, slots %q; want 5 slots, some free", desired, holders)
	}

	set(a, 1)
	holder := onDistinct(1)[0]
	if st, _ := status(c, id); st != "active" {
		t.Errorf("status with one instance left: %s", st)
	}

	// A restart, then an update, through a replica that does not run the plugin restart the
	// copy where it runs, which keeps its slot.
	var other *env
	for name, e := range all {
		if name != holder {
			other = e
		}
	}
	pid := pluginPID(all[holder], id)
	other.mustREST(http.MethodPost, "/api/v1/plugins/"+id+"/restart", other.Admin, map[string]any{"reason": "test"})
	waitFor(t, "the copy on "+holder+" restarted", 20*time.Second, func() bool { return processGone(pid) && pluginPID(all[holder], id) != pid })
	if on := onDistinct(1); on[0] != holder {
		t.Errorf("after the restart the plugin runs on %v, want %s", on, holder)
	}
	pid = pluginPID(all[holder], id)
	res := other.rest(http.MethodPut, "/api/v1/plugins/"+id, other.Admin, map[string]any{
		"source": "file", "package_data": testPluginPackage(t, id, "healthy", map[string]any{"version": "1.1.0", "instances": 2}),
	})
	if res.Status != http.StatusOK {
		t.Fatalf("update through another replica: %d %s", res.Status, res.Raw)
	}
	waitFor(t, "the copy on "+holder+" at 1.1.0", 20*time.Second, func() bool { return processGone(pid) && pluginPID(all[holder], id) != pid })
	if on := onDistinct(1); on[0] != holder {
		t.Errorf("after the update the plugin runs on %v, want %s", on, holder)
	}
	if _, p := status(all[holder], id); p["version"] != "1.1.0" {
		t.Errorf("version after the update: %v", p["version"])
	}

	for _, tc := range []struct {
		token, body string
		status      int
		code        string
	}{
		{a.Admin, `{"instances": 0}`, http.StatusBadRequest, "VALIDATION_ERROR"},
		{a.Admin, `{"instances": 65}`, http.StatusBadRequest, "VALIDATION_ERROR"},
		{a.User, `{"instances": 2}`, http.StatusForbidden, "PLUGIN_PERMISSION_DENIED"},
	} {
		res := a.rest(http.MethodPut, "/api/v1/plugins/"+id+"/instances", tc.token, tc.body)
		if res.Status != tc.status || res.errorCode() != tc.code || tc.code == "VALIDATION_ERROR" && !strings.Contains(string(res.Raw), "instances") {
			t.Errorf("PUT %s: %d %s", tc.body, res.Status, res.Raw)
		}
	}
	if res := a.rest(http.MethodPut, "/api/v1/plugins/no-such-plugin/instances", a.Admin, map[string]any{"instances": 2}); res.Status != http.StatusNotFound || res.errorCode() != "PLUGIN_NOT_FOUND" {
		t.Errorf("unknown plugin: %d %s", res.Status, res.Raw)
	}
	onDistinct(1)

	// Uninstalled, the count set through the API goes: installed again, the plugin runs its
	// manifest's two copies.
	c.mustREST(http.MethodDelete, "/api/v1/plugins/"+id, c.Admin, nil)
	for name, e := range all {
		waitFor(t, "the uninstall seen by "+name, 10*time.Second, func() bool {
			return e.rest(http.MethodGet, "/api/v1/plugins/"+id, e.Admin, nil).Status == http.StatusNotFound
		})
	}
	installTestPlugin(a, id, "healthy", map[string]any{"instances": 2}, nil)
	a.mustREST(http.MethodPost, "/api/v1/plugins/"+id+"/enable", a.Admin, nil)
	onDistinct(2)
}

// TestInstancesOnOneServer: a single server records the count an administrator sets and
// says that it runs one copy; uninstalled and installed again, the plugin has its
// manifest's count; an external plugin has no count to set.
func TestInstancesOnOneServer(t *testing.T) {
	e := startRuntimeServer(t)
	const id = "single-plugin"
	installTestPlugin(e, id, "healthy", nil, nil)
	e.mustREST(http.MethodPost, "/api/v1/plugins/"+id+"/enable", e.Admin, nil)
	r := e.mustREST(http.MethodPut, "/api/v1/plugins/"+id+"/instances", e.Admin, map[string]any{"instances": 3})
	if r["live_replicas"] != 1.0 || !strings.Contains(r["message"].(string), "this server runs one copy") {
		t.Errorf("set 3 = %v", r)
	}
	desired := func() any {
		_, p := status(e, id)
		return p["runtime"].(map[string]any)["desired_instances"]
	}
	if d := desired(); d != 3.0 {
		t.Errorf("desired_instances = %v, want 3", d)
	}
	if n := len(connectedInstances(e, id, "")); n != 1 {
		t.Errorf("%d instances connected, want 1", n)
	}
	e.mustREST(http.MethodDelete, "/api/v1/plugins/"+id, e.Admin, nil)
	installTestPlugin(e, id, "healthy", nil, nil)
	if d := desired(); d != 1.0 {
		t.Errorf("desired_instances after a new install = %v, want the manifest's 1", d)
	}

	mustInstall(e, map[string]any{"id": "outside-plugin", "name": "Outside", "version": "1.0.0", "external": true})
	res := e.rest(http.MethodPut, "/api/v1/plugins/outside-plugin/instances", e.Admin, map[string]any{"instances": 2})
	if res.Status != http.StatusBadRequest || res.errorCode() != "VALIDATION_ERROR" || !strings.Contains(string(res.Raw), `"instances"`) || !strings.Contains(string(res.Raw), "external") {
		t.Errorf("external plugin: %d %s", res.Status, res.Raw)
	}
}
