package server_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/server"
)

func installBaseAndChild(e *env) {
	e.t.Helper()
	installTestPlugin(e, "base-plugin", "healthy", nil, nil)
	installTestPlugin(e, "child-plugin", "healthy", map[string]any{"dependencies": map[string]any{"plugins": map[string]any{"base-plugin": ">=1.0.0"}}}, nil)
	e.mustREST("POST", "/api/v1/plugins/base-plugin/enable", e.Admin, map[string]any{})
	e.mustREST("POST", "/api/v1/plugins/child-plugin/enable", e.Admin, map[string]any{})
}

// A dependency disabled or uninstalled by force takes its running dependents down with it:
// each is stopped and shown in error with the reason, in the API and in its logs, instead of
// running silently without its dependency.
func TestForcedDisableOrUninstallStopsDependents(t *testing.T) {
	e := startRuntimeServer(t)
	installBaseAndChild(e)
	if res := e.rest("POST", "/api/v1/plugins/base-plugin/disable", e.Admin, map[string]any{}); res.errorCode() != "PLUGIN_DEPENDENCY_ERROR" {
		t.Fatalf("disable without force: %d %s", res.Status, res.Raw)
	}
	for _, step := range []struct {
		verb string
		do   func()
	}{
		{"disabled", func() {
			e.mustREST("POST", "/api/v1/plugins/base-plugin/disable", e.Admin, map[string]any{"force": true, "timeout_seconds": 2})
		}},
		{"uninstalled", func() { e.mustREST("DELETE", "/api/v1/plugins/base-plugin?force=true", e.Admin, nil) }},
	} {
		step.do()
		st, p := status(e, "child-plugin")
		reason, _ := p["error"].(string)
		if st != "error" || !strings.Contains(reason, "base-plugin was "+step.verb+" by force") {
			t.Fatalf("after base-plugin was %s: child is %s (%q)", step.verb, st, reason)
		}
		if running := p["runtime"].(map[string]any)["pid"]; running != nil && running != 0.0 {
			t.Fatalf("the child still runs (pid %v)", running)
		}
		waitFor(t, "the reason in the child's logs", 10*time.Second, func() bool {
			logs := e.mustREST("GET", "/api/v1/plugins/child-plugin/logs?level=ERROR&search="+step.verb+"+by+force", e.Admin, nil)["logs"].([]any)
			return len(logs) > 0
		})
		if step.verb == "disabled" {
			// Once the dependency is back, the child is enabled again by its administrator.
			e.mustREST("POST", "/api/v1/plugins/base-plugin/enable", e.Admin, map[string]any{})
			e.mustREST("POST", "/api/v1/plugins/child-plugin/enable", e.Admin, map[string]any{})
			if st, _ := status(e, "child-plugin"); st != "active" {
				t.Fatalf("the child after its dependency came back: %s", st)
			}
		}
	}
}

// After a restart, an enabled plugin that cannot start because its dependency is not active
// is in error with the reason, in the API and in its logs (not only on the server's stderr).
func TestEnabledPluginWithInactiveDependencyAfterRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	tune := func(c *server.Config) {
		c.DataDir = dir
		c.HealthInterval = 300 * time.Millisecond
	}
	e := startServerWith(t, io.Discard, slog.LevelInfo, tune)
	installBaseAndChild(e)
	e.srv.Close()

	// While the server is down, the dependency is disabled behind its back.
	ctx := context.Background()
	st, err := storesqlite.Open(ctx, filepath.Join(dir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Write(ctx, func(tx store.Tx) error {
		p, err := tx.Plugin("base-plugin")
		if err != nil {
			return err
		}
		p.Enabled = false
		return tx.PutPlugin(p)
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	e2 := startServerWith(t, io.Discard, slog.LevelInfo, tune)
	waitFor(t, "the child to be in error", 20*time.Second, func() bool {
		st, _ := status(e2, "child-plugin")
		return st == "error"
	})
	_, p := status(e2, "child-plugin")
	if reason, _ := p["error"].(string); !strings.Contains(reason, "did not start with the server") || !strings.Contains(reason, "base-plugin") {
		t.Fatalf("reason %q", reason)
	}
	if p["enabled"] != true {
		t.Fatal("the child is no longer enabled: it should wait for its administrator, enabled")
	}
	waitFor(t, "the reason in the child's logs", 10*time.Second, func() bool {
		logs := e2.mustREST("GET", "/api/v1/plugins/child-plugin/logs?level=ERROR&search=did+not+start", e2.Admin, nil)["logs"].([]any)
		return len(logs) > 0
	})
}
