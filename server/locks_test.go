package server_test

import (
	"net/http"
	"testing"
	"time"
)

// One plugin's slow lifecycle operation holds up only that plugin: while an update whose new
// version takes 20 s to fail to start is in flight, installing another plugin, changing a
// third plugin's configuration and listing every plugin each finish within a second.
func TestSlowUpdateBlocksOnlyItsPlugin(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "slow-plugin", "healthy", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/slow-plugin/enable", e.Admin, map[string]any{})
	installTestPlugin(e, "third-plugin", "healthy", map[string]any{"external": true, "entry_point": nil, "args": nil}, nil)
	other := testPluginPackage(t, "other-plugin", "healthy", nil)

	updated := make(chan restResult, 1)
	go func() {
		updated <- e.rest("PUT", "/api/v1/plugins/slow-plugin", e.Admin, map[string]any{
			"source": "file", "restart_plugin": true,
			"package_data": testPluginPackage(t, "slow-plugin", "hang-startup", map[string]any{"version": "2.0.0", "start_timeout_seconds": 20}),
		})
	}()
	waitFor(t, "the update to be starting the new version", 15*time.Second, func() bool {
		st, p := status(e, "slow-plugin")
		return st == "loading" && p["version"] == "2.0.0"
	})

	for _, op := range []struct {
		name string
		do   func() restResult
	}{
		{"install another plugin", func() restResult { return installFromBytes(e, other, nil) }},
		{"change a third plugin's configuration", func() restResult {
			return e.rest("PUT", "/api/v1/plugins/third-plugin/config", e.Admin, map[string]any{"greeting": "hi"})
		}},
		{"list every plugin", func() restResult { return e.rest("GET", "/api/v1/plugins", e.Admin, nil) }},
	} {
		start := time.Now()
		res := op.do()
		took := time.Since(start)
		if res.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", op.name, res.Status, res.Raw)
		}
		if took > time.Second {
			t.Errorf("%s took %s while another plugin's update was in flight", op.name, took)
		}
		select {
		case r := <-updated:
			t.Fatalf("the update returned before the other operations were tried: %d %s", r.Status, r.Raw)
		default:
		}
	}
	res := <-updated
	if res.errorCode() != "PLUGIN_STARTUP_FAILED" {
		t.Fatalf("the hanging update: %d %s", res.Status, res.Raw)
	}
	if st, p := status(e, "slow-plugin"); st != "active" || p["version"] != "1.0.0" {
		t.Fatalf("after the failed update: %s %v", st, p["version"])
	}
}
