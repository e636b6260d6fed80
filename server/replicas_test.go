package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/server"
)

// startReplicas starts two servers on one PostgreSQL database (at dbURL) and one Redis,
// sharing the secrets key (as the README asks replicas to).
func startReplicas(t *testing.T) (a, b *env, dbURL string) {
	t.Helper()
	set := newReplicaSet(t, "test-replicas:", func(c *server.Config) { c.HealthInterval = 300 * time.Millisecond })
	return set.inProcess(""), set.inProcess(""), set.DBURL
}

// A change made through one server is seen by the other at once: an install, a run-time
// event subscription, a new configuration (which reaches the instance connected to the
// other server), a disable (its session there ends), a token revoked, an uninstall.
func TestChangesReachEveryReplica(t *testing.T) {
	a, b, _ := startReplicas(t)
	seen := func(e *env, what string, cond func() bool) {
		t.Helper()
		start := time.Now()
		waitFor(t, what, 5*time.Second, cond)
		t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
	}

	m := map[string]any{
		"id": "shared-plugin", "name": "Shared", "version": "1.0.0", "category": "testing", "external": true, "nexus_version": ">=1.0.0",
		"permissions":   []string{"events:subscribe"},
		"configuration": map[string]any{"greeting": map[string]any{"type": "string", "default": "hello"}, "api_key": map[string]any{"type": "string", "secret": true}},
	}
	if res := installFromBytes(a, pkg(t, m, nil), map[string]any{"config": map[string]any{"api_key": "k1"}}); res.Status != http.StatusOK {
		t.Fatalf("install through A: %d %s", res.Status, res.Raw)
	}
	seen(b, "the install on B", func() bool {
		return b.rest("GET", "/api/v1/plugins/shared-plugin", b.Admin, nil).Status == http.StatusOK
	})
	a.mustREST(http.MethodPost, "/api/v1/plugins/shared-plugin/enable", a.Admin, nil)
	seen(b, "the enable on B", func() bool {
		p := b.mustREST("GET", "/api/v1/plugins/shared-plugin", b.Admin, nil)["plugin"].(map[string]any)
		return p["enabled"] == true
	})

	// An instance connected to B hears of a configuration set through A.
	changes := make(chan plugin.ConfigChange, 4)
	events := make(chan plugin.Event, 4)
	sessions := make(chan *plugin.Session, 1)
	token := a.token("plugin", "shared-plugin")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() {
		stopped <- plugin.Run(ctx, plugin.Plugin{Version: "1.0.0",
			OnStart: func(_ context.Context, s *plugin.Session) error { sessions <- s; return nil },
			OnConfigChange: func(_ context.Context, c plugin.ConfigChange) error {
				changes <- c
				return nil
			},
			OnEvent: func(_ context.Context, e plugin.Event) error { events <- e; return nil },
		}, plugin.WithHost(b.URL), plugin.WithToken(token), plugin.WithPluginID("shared-plugin"), plugin.WithInstanceID("on-b"))
	}()
	waitFor(t, "the instance on B", 10*time.Second, func() bool { st, _ := status(b, "shared-plugin"); return st == "active" })

	// A subscription made at run time through B routes the events emitted through A.
	sess := <-sessions
	if err := sess.Subscribe(ctx, "order.*"); err != nil {
		t.Fatal(err)
	}
	seen(a, "the subscription on A", func() bool {
		res := a.mustREST(http.MethodPost, "/api/v1/events", a.Admin, map[string]any{"type": "order.created", "data": map[string]any{"n": 1}})
		return len(res["recipients"].([]any)) == 1
	})
	select {
	case e := <-events:
		if e.Type != "order.created" {
			t.Errorf("the instance on B got %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event emitted through A never reached the instance on B")
	}
	a.mustREST(http.MethodPut, "/api/v1/plugins/shared-plugin/config", a.Admin, map[string]any{"greeting": "bonjour"})
	select {
	case c := <-changes:
		if c.Config["greeting"] != "bonjour" || c.Config["api_key"] != "k1" || len(c.UpdatedFields) != 1 || c.UpdatedFields[0] != "greeting" {
			t.Errorf("the instance on B got %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the configuration set through A never reached the instance on B")
	}
	cfg := b.mustREST("GET", "/api/v1/plugins/shared-plugin/config", b.Admin, nil)["configuration"].(map[string]any)
	if cfg["greeting"] != "bonjour" {
		t.Errorf("B's view of the configuration: %v", cfg)
	}

	// Disabled through A: the session on B ends, and B says disabled.
	a.mustREST(http.MethodPost, "/api/v1/plugins/shared-plugin/disable", a.Admin, map[string]any{"reason": "maintenance"})
	seen(b, "the disable on B", func() bool {
		p := b.mustREST("GET", "/api/v1/plugins/shared-plugin", b.Admin, nil)["plugin"].(map[string]any)
		return p["enabled"] == false && p["runtime"].(map[string]any)["instances"] == 0.0
	})
	cancel()
	<-stopped

	// A user token revoked through A no longer works on B.
	user := a.token("user", "")
	if res := b.rest("GET", "/api/v1/plugins", user, nil); res.Status != http.StatusOK {
		t.Fatalf("a user token on B: %d", res.Status)
	}
	id := tokenID(t, a, user)
	if err := a.srv.Identity().Revoke(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	seen(b, "the revocation on B", func() bool { return b.rest("GET", "/api/v1/plugins", user, nil).Status == http.StatusUnauthorized })

	// Uninstalled through B: gone from A.
	b.mustREST(http.MethodDelete, "/api/v1/plugins/shared-plugin", b.Admin, nil)
	seen(a, "the uninstall on A", func() bool {
		return a.rest("GET", "/api/v1/plugins/shared-plugin", a.Admin, nil).Status == http.StatusNotFound
	})
}

// tokenID is the id of a token in clear.
func tokenID(t *testing.T, e *env, token string) string {
	t.Helper()
	p, err := e.srv.Identity().Authenticate(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	return p.TokenID
}

// A host-launched plugin installed through A starts through B, whose data directory never
// had its files: B unpacks the package file the shared store keeps, checked against the
// sha256 on record (a tampered file is refused).
func TestPluginInstalledThroughAnotherReplicaStarts(t *testing.T) {
	a, b, dbURL := startReplicas(t)
	installTestPlugin(a, "moving-plugin", "healthy", nil, nil)
	waitFor(t, "the install on B", 5*time.Second, func() bool {
		return b.rest("GET", "/api/v1/plugins/moving-plugin", b.Admin, nil).Status == http.StatusOK
	})
	if dirs := pluginDirs(t, b.DataDir); len(dirs) != 0 {
		t.Fatalf("B has the plugin's files before it starts it: %v", dirs)
	}
	b.mustREST(http.MethodPost, "/api/v1/plugins/moving-plugin/enable", b.Admin, nil)
	if st, _ := status(b, "moving-plugin"); st != "active" {
		t.Fatalf("status on B: %s", st)
	}
	if dirs := pluginDirs(t, b.DataDir); len(dirs) != 1 {
		t.Fatalf("B's plugin directories: %v", dirs)
	}
	b.mustREST(http.MethodPost, "/api/v1/plugins/moving-plugin/disable", b.Admin, nil)

	// The stored package file no longer matches the record: B refuses to start it.
	if err := os.RemoveAll(filepath.Join(b.DataDir, "plugins", "moving-plugin")); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `UPDATE packages SET data = 'not the package'`); err != nil {
		t.Fatal(err)
	}
	res := b.rest(http.MethodPost, "/api/v1/plugins/moving-plugin/enable", b.Admin, nil)
	if res.Status < 500 || !strings.Contains(string(res.Raw), "sha256") {
		t.Fatalf("enable with a tampered package: %d %s", res.Status, res.Raw)
	}
}
