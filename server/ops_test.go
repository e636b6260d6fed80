package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/server"
	"github.com/nexus-platform/nexus/server/internal/syncbuf"
)

func TestReflectionListsEveryService(t *testing.T) {
	e := startServer(t)
	client := grpcreflect.NewClient(nexus.DefaultHTTPClient(), e.URL, connect.WithGRPC())
	stream := client.NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []protoreflect.FullName{"nexus.plugin.v1.PluginService", "nexus.plugin.v1.RepositoryService",
		"nexus.plugin.v1.MessagingService", "nexus.pluginhost.v1.PluginHostService"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lacks %s (has %v)", want, names)
		}
	}
	fd, err := stream.FileContainingSymbol("nexus.plugin.v1.PluginService")
	if err != nil || len(fd) == 0 {
		t.Fatalf("describe PluginService: %v", err)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	e := startServer(t)
	hc := grpchealth.NewClient(nexus.DefaultHTTPClient(), e.URL, connect.WithGRPC())
	res, err := hc.Check(context.Background(), &grpchealth.CheckRequest{Service: "nexus.plugin.v1.PluginService"})
	if err != nil || res.Status != grpchealth.StatusServing {
		t.Fatalf("grpc health: %v %v", res, err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(e.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
}

func TestPrometheusCountsRequestsByProcedureAndCode(t *testing.T) {
	e := startServer(t)
	e.mustREST("GET", "/api/v1/plugins", e.Admin, nil)
	e.rest("GET", "/api/v1/plugins/missing-plugin", e.Admin, nil)
	resp, err := http.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`nexus_rpc_requests_total{code="OK",procedure="/nexus.plugin.v1.PluginService/ListPlugins"} 1`,
		`nexus_rpc_requests_total{code="PLUGIN_NOT_FOUND",procedure="/nexus.plugin.v1.PluginService/GetPlugin"} 1`,
		`nexus_rpc_request_duration_seconds_bucket{code="OK",procedure="/nexus.plugin.v1.PluginService/ListPlugins",le="+Inf"} 1`,
		// The Go runtime's: the default ones and the live heap (what nexus-bench's idle
		// scenario reads).
		"\ngo_memstats_stack_inuse_bytes ", "\ngo_memstats_last_gc_time_seconds ", "\ngo_gc_heap_live_bytes ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestJSONLogsCarryRequestID(t *testing.T) {
	var logs syncbuf.Buffer
	e := startServerWithLog(t, &logs, slog.LevelInfo)
	res := e.rest("GET", "/api/v1/plugins", e.Admin, nil)
	rid := res.Body["request_id"].(string)
	if !strings.Contains(logs.String(), `"request_id":"`+rid+`"`) {
		t.Fatalf("no log record carries request id %s:\n%s", rid, logs.String())
	}
}

func TestAuditLogRecordsStateChanges(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	e.rest("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 1})
	e.rest("POST", "/api/v1/plugins/install", e.User, map[string]any{"source": "file", "file_path": "/x.tar.gz"})
	e.mustREST("DELETE", "/api/v1/plugins/analytics-plugin?backup=true", e.Admin, nil)
	e.mustREST("GET", "/api/v1/plugins", e.Admin, nil) // reads are not audited

	st, err := storesqlite.Open(context.Background(), filepath.Join(e.DataDir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Audit entries are stored in batches, within audit.FlushEvery of the call.
	var entries []store.AuditEntry
	waitFor(t, "four audit entries", 5*time.Second, func() bool {
		if err := st.Read(context.Background(), func(tx store.Tx) error {
			var err error
			entries, err = tx.Audit(store.AuditFilter{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return len(entries) >= 4
	})
	var got []string
	for _, a := range entries {
		got = append(got, strings.Join([]string{shortName(a.Action), a.Target, string(a.Role), a.Outcome}, " "))
		if a.Time.IsZero() || a.RequestID == "" || a.ID == "" {
			t.Errorf("incomplete audit entry %+v", a)
		}
	}
	slices.Reverse(got) // oldest first
	want := []string{
		"InstallPlugin analytics-plugin admin OK",
		"UpdatePluginConfig analytics-plugin admin PLUGIN_CONFIGURATION_ERROR",
		"InstallPlugin  user PLUGIN_PERMISSION_DENIED",
		"UninstallPlugin analytics-plugin admin OK",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func shortName(procedure string) string { return procedure[strings.LastIndex(procedure, "/")+1:] }

func TestUninstallDependentsForceBackupAndCleanup(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	mustInstall(e, dependentManifest())

	res := e.rest("DELETE", "/api/v1/plugins/analytics-plugin", e.Admin, nil)
	if res.Status != http.StatusConflict || res.errorCode() != "PLUGIN_DEPENDENCY_ERROR" {
		t.Fatalf("uninstall with dependents: %d %s", res.Status, res.Raw)
	}
	if !strings.Contains(string(res.Raw), "user-management") {
		t.Errorf("the error does not name the dependent: %s", res.Raw)
	}
	d := e.mustREST("DELETE", "/api/v1/plugins/analytics-plugin?force=true&backup=true", e.Admin, nil)["uninstallation"].(map[string]any)
	if d["backup_created"] != true || d["data_removed"] != false || d["backup_id"] == "" {
		t.Fatalf("uninstallation = %v", d)
	}
	backups := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/backups", e.Admin, nil)["backups"].([]any)
	if len(backups) != 1 || backups[0].(map[string]any)["backup_id"] != d["backup_id"] || backups[0].(map[string]any)["version"] != "1.2.0" {
		t.Fatalf("backups = %v", backups)
	}
	if res := e.rest("GET", "/api/v1/plugins/analytics-plugin", e.Admin, nil); res.errorCode() != "PLUGIN_NOT_FOUND" {
		t.Fatalf("after uninstall: %s", res.Raw)
	}
	// The dependent now has an unmet dependency but stays listed.
	um := e.mustREST("GET", "/api/v1/plugins/user-management", e.Admin, nil)["plugin"].(map[string]any)
	if um["dependencies"].([]any)[0] != "analytics-plugin" {
		t.Errorf("dependencies = %v", um["dependencies"])
	}
	d = e.mustREST("DELETE", "/api/v1/plugins/user-management?cleanup_data=true", e.Admin, nil)["uninstallation"].(map[string]any)
	if d["data_removed"] != true || d["backup_created"] != false {
		t.Fatalf("uninstallation = %v", d)
	}
	if dirs := pluginDirs(t, e.DataDir); len(dirs) != 0 {
		t.Errorf("plugin directories left: %v", dirs)
	}
}

func TestPermissionsGrantAndRevoke(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	p := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/permissions", e.User, nil)
	perms := p["permissions"].(map[string]any)
	if len(perms["requested"].([]any)) != 4 || len(perms["granted"].([]any)) != 3 || perms["denied"].([]any)[0] != "http:external" {
		t.Fatalf("initial permissions = %v", perms)
	}
	if p["security_level"] != "medium" || p["sandbox_enabled"] != true || p["resource_limits"].(map[string]any)["memory_mb"] != 256.0 {
		t.Fatalf("initial settings = %v", p)
	}
	p = e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/permissions", e.Admin, map[string]any{
		"grant": []string{"http:external"}, "revoke": []string{"database:write"}, "security_level": "high",
		"sandbox_enabled": false, "resource_limits": map[string]any{"memory_mb": 128, "cpu_percent": 5, "file_handles": 64},
	})
	perms = p["permissions"].(map[string]any)
	if got := perms["granted"].([]any); !slices.Equal(toStrings(got), []string{"database:read", "events:emit", "http:external"}) {
		t.Errorf("granted = %v", got)
	}
	if got := perms["denied"].([]any); !slices.Equal(toStrings(got), []string{"database:write"}) {
		t.Errorf("denied = %v", got)
	}
	if p["security_level"] != "high" || p["sandbox_enabled"] != false || p["resource_limits"].(map[string]any)["memory_mb"] != 128.0 {
		t.Errorf("settings = %v", p)
	}
	list := e.mustREST("GET", "/api/v1/plugins", e.Admin, nil)["plugins"].([]any)[0].(map[string]any)
	if got := toStrings(list["permissions"].([]any)); !slices.Contains(got, "http:external") || slices.Contains(got, "database:write") {
		t.Errorf("list view permissions = %v", got)
	}
	// Users read but never change permissions.
	if res := e.rest("PUT", "/api/v1/plugins/analytics-plugin/permissions", e.User, map[string]any{"grant": []string{"a:b"}}); res.Status != http.StatusForbidden {
		t.Errorf("user update: %d", res.Status)
	}
}

func toStrings(in []any) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i], _ = v.(string)
	}
	return out
}

func TestLogsFiltersAndPagination(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	for i := 0; i < 4; i++ {
		e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 100 + i})
	}
	all := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/logs", e.Admin, nil)
	if total := all["pagination"].(map[string]any)["total"]; total != 5.0 {
		t.Fatalf("total = %v (install + 4 config changes)", total)
	}
	page := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/logs?per_page=2&page=2", e.Admin, nil)
	pg := page["pagination"].(map[string]any)
	if len(page["logs"].([]any)) != 2 || pg["page"] != 2.0 || pg["per_page"] != 2.0 || pg["has_next"] != true {
		t.Fatalf("page 2 = %v", page)
	}
	last := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/logs?per_page=2&page=3", e.Admin, nil)
	if len(last["logs"].([]any)) != 1 || last["pagination"].(map[string]any)["has_next"] != false {
		t.Fatalf("page 3 = %v", last)
	}
	found := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/logs?search=INSTALLED", e.Admin, nil)
	if got := found["logs"].([]any); len(got) != 1 || !strings.Contains(got[0].(map[string]any)["message"].(string), "installed") {
		t.Fatalf("search = %v", got)
	}
	if got := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/logs?level=ERROR", e.Admin, nil)["logs"].([]any); len(got) != 0 {
		t.Fatalf("level=ERROR = %v", got)
	}
	if got := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/logs?end_time=2000-01-01T00:00:00Z", e.Admin, nil)["logs"].([]any); len(got) != 0 {
		t.Fatalf("end_time in the past = %v", got)
	}
	if got := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/logs?start_time=2000-01-01T00:00:00Z", e.Admin, nil)["logs"].([]any); len(got) != 5 {
		t.Fatalf("start_time in the past = %d entries", len(got))
	}
	c := nexus.New(e.URL, nexus.WithToken(e.Admin))
	res, err := c.Plugins.GetPluginLogs(context.Background(), connect.NewRequest(&pluginv1.GetPluginLogsRequest{PluginId: "analytics-plugin", Level: "INFO", PerPage: 1}))
	if err != nil || len(res.Msg.GetLogs()) != 1 || res.Msg.GetLogs()[0].GetMetadata().AsMap()["updated_fields"] == nil {
		t.Fatalf("connect logs: %v %v", res, err)
	}
}

func TestLogRetentionBound(t *testing.T) {
	e := startServerWith(t, io.Discard, slog.LevelInfo, func(c *server.Config) { c.LogRetention = 3 })
	mustInstall(e, analyticsManifest("1.2.0"))
	for i := 0; i < 5; i++ {
		e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 100 + i})
	}
	logs := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/logs", e.Admin, nil)
	if total := logs["pagination"].(map[string]any)["total"]; total != 3.0 {
		t.Fatalf("total = %v, want the 3 newest", total)
	}
	newest := logs["logs"].([]any)[0].(map[string]any)["metadata"].(map[string]any)
	if newest["updated_fields"] == nil {
		t.Fatalf("newest entry = %v", newest)
	}
}

func TestRESTAcceptsJSONWithoutContentType(t *testing.T) {
	e := startServer(t)
	req, _ := http.NewRequest("PUT", e.URL+"/api/v1/plugins/nothing-here/config", strings.NewReader(`{"a": 1}`))
	req.Header.Set("Authorization", "Bearer "+e.Admin)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404 (the body was read as JSON and the plugin looked up)", resp.StatusCode)
	}
}

func TestDataDirectoryCanMove(t *testing.T) {
	dir := t.TempDir()
	first := filepath.Join(dir, "first")
	e := startServerWith(t, io.Discard, slog.LevelInfo, func(c *server.Config) { c.DataDir = first })
	mustInstall(e, analyticsManifest("1.2.0"))
	e.srv.Close()
	moved := filepath.Join(dir, "moved")
	if err := os.Rename(first, moved); err != nil {
		t.Fatal(err)
	}
	e2 := startServerWith(t, io.Discard, slog.LevelInfo, func(c *server.Config) { c.DataDir = moved })
	if dirs := pluginDirs(t, moved); len(dirs) != 1 {
		t.Fatalf("package directories after the move: %v", dirs)
	}
	if d := e2.mustREST("GET", "/api/v1/plugins/analytics-plugin", e2.Admin, nil)["plugin"].(map[string]any); d["version"] != "1.2.0" {
		t.Fatalf("plugin after the move: %v", d)
	}
}

func TestForceReinstallKeepsConfigurationGrantsAndDependents(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	mustInstall(e, dependentManifest())
	e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 300, "api_key": "kept-secret"})
	e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/permissions", e.Admin, map[string]any{"grant": []string{"http:external"}, "revoke": []string{"database:write"}})

	// user-management needs analytics-plugin >=1.0.0: a 0.9.0 reinstall would break it.
	res := installFromBytes(e, pkg(e.t, analyticsManifest("0.9.0"), map[string]string{"bin/analytics-plugin": "#!/bin/sh\n"}), map[string]any{"force_reinstall": true})
	if res.errorCode() != "PLUGIN_DEPENDENCY_ERROR" || !strings.Contains(string(res.Raw), "user-management") {
		t.Fatalf("reinstall breaking a dependent: %d %s", res.Status, res.Raw)
	}
	res = installFromBytes(e, pkg(e.t, analyticsManifest("1.3.0"), map[string]string{"bin/analytics-plugin": "#!/bin/sh\n"}), map[string]any{"force_reinstall": true})
	if res.Status != http.StatusOK {
		t.Fatalf("reinstall: %d %s", res.Status, res.Raw)
	}
	cfg := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/config?include_secrets=true", e.Admin, nil)["configuration"].(map[string]any)
	if cfg["batch_size"] != 300.0 || cfg["api_key"] != "kept-secret" {
		t.Errorf("configuration not kept: %v", cfg)
	}
	perms := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/permissions", e.Admin, nil)["permissions"].(map[string]any)
	if got := fmt.Sprint(perms["granted"], perms["denied"]); got != "[database:read events:emit http:external] [database:write]" {
		t.Errorf("grants not kept: %s", got)
	}
	backups := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/backups", e.Admin, nil)["backups"].([]any)
	if len(backups) != 1 || backups[0].(map[string]any)["reason"] != "reinstall" || backups[0].(map[string]any)["version"] != "1.2.0" {
		t.Errorf("backups = %v", backups)
	}
}

func TestRevokeUnderAWildcardGrantIsRefused(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/permissions", e.Admin, map[string]any{"grant": []string{"http:*"}})
	res := e.rest("PUT", "/api/v1/plugins/analytics-plugin/permissions", e.Admin, map[string]any{"revoke": []string{"http:external"}})
	if res.errorCode() != "VALIDATION_ERROR" || !strings.Contains(string(res.Raw), "http:*") {
		t.Fatalf("revoke under a wildcard: %d %s", res.Status, res.Raw)
	}
}

func TestUnauthenticatedBodiesAreCutShort(t *testing.T) {
	e := startServer(t)
	big := `{"source":"file","package_data":"` + strings.Repeat("A", 1<<20) + `"}`
	res := e.rest("POST", "/api/v1/plugins/install", "", big)
	if res.Status != http.StatusUnauthorized && res.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("unauthenticated 1 MiB body: %d %s", res.Status, res.Raw)
	}
	// A user may not upload packages, and gets the message-sized limit.
	res = e.rest("PUT", "/api/v1/plugins/analytics-plugin/config", e.User, `{"a":"`+strings.Repeat("x", 5<<20)+`"}`)
	if res.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("user 5 MiB body: %d %.300s", res.Status, res.Raw)
	}
}

func TestCORSForConfiguredOrigins(t *testing.T) {
	e := startServerWith(t, io.Discard, slog.LevelInfo, func(c *server.Config) { c.CORSOrigins = []string{"https://console.example.com"} })
	for _, c := range []struct{ origin, method, path, want string }{
		{"https://console.example.com", "POST", "/nexus.plugin.v1.PluginService/ListPlugins", "https://console.example.com"},
		{"https://console.example.com", "GET", "/api/v1/plugins", "https://console.example.com"},
		{"https://evil.example.com", "POST", "/nexus.plugin.v1.PluginService/ListPlugins", ""},
	} {
		req, _ := http.NewRequest(http.MethodOptions, e.URL+c.path, nil)
		req.Header.Set("Origin", c.origin)
		req.Header.Set("Access-Control-Request-Method", c.method)
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != c.want {
			t.Errorf("preflight from %s: allow-origin %q, want %q", c.origin, got, c.want)
		}
	}
}
