package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/server"
)

// env is a real Nexus server on a loopback port, with a SQLite store in a temp dir.
type env struct {
	t       testing.TB
	URL     string
	DataDir string
	Admin   string
	User    string
	srv     *server.Server
}

const testAdminToken = "nxt_test-admin-token-0123456789abcdef"

func startServer(t testing.TB) *env {
	t.Helper()
	return startServerWithLog(t, testLogSink(), slog.LevelDebug)
}

// testLogSink is where test servers log: stderr with -v, nowhere otherwise.
func testLogSink() io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}

func startServerWithLog(t testing.TB, sink io.Writer, level slog.Level) *env {
	t.Helper()
	return startServerWith(t, sink, level, func(*server.Config) {})
}

// startServerWith starts a server after tune adjusts its configuration.
func startServerWith(t testing.TB, sink io.Writer, level slog.Level, tune func(*server.Config)) *env {
	t.Helper()
	dir := searchableTempDir(t)
	cfg := server.DefaultConfig()
	cfg.PluginReadPaths = pluginReadPaths(t)
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.AdminToken = testAdminToken
	cfg.MaxRequestBytes = 8 << 20
	cfg.MaxUnpackedBytes = 8 << 20
	cfg.MaxPackageFiles = 500
	cfg.ShutdownTimeout = 5 * time.Second
	tune(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := server.NewLogger(sink, level)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("server did not shut down")
		}
		srv.Close()
	})
	e := &env{t: t, URL: "http://" + ln.Addr().String(), DataDir: cfg.DataDir, Admin: testAdminToken, srv: srv}
	e.User = e.token(store.RoleUser, "")
	return e
}

// token issues a token through the server's identity service.
func (e *env) token(role store.Role, pluginID string) string {
	e.t.Helper()
	plain, _, err := e.srv.Identity().Create(context.Background(), "test-"+string(role), role, pluginID)
	if err != nil {
		e.t.Fatalf("create %s token: %v", role, err)
	}
	return plain
}

// restResult is a decoded REST answer.
type restResult struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

func (r restResult) data() map[string]any {
	d, _ := r.Body["data"].(map[string]any)
	return d
}

func (r restResult) errorCode() string {
	e, _ := r.Body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// rest calls the REST API; body is JSON-encoded unless it is []byte or string.
func (e *env) rest(method, path, token string, body any) restResult {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	res := restResult{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if err := json.Unmarshal(raw, &res.Body); err != nil {
		e.t.Fatalf("%s %s: answer is not a JSON object (status %d): %q", method, path, resp.StatusCode, raw)
	}
	return res
}

// mustREST calls the REST API and fails unless the answer is a success with want status.
func (e *env) mustREST(method, path, token string, body any) map[string]any {
	e.t.Helper()
	res := e.rest(method, path, token, body)
	if res.Status != http.StatusOK || res.Body["success"] != true {
		e.t.Fatalf("%s %s: status %d: %s", method, path, res.Status, res.Raw)
	}
	return res.data()
}

// pkg builds a plugin package from a manifest and extra files.
func pkg(t testing.TB, manifest map[string]any, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	mb, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plugin.json"), mb, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := archive.Create(&buf, dir); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// analyticsManifest is the reference document's analytics plugin.
func analyticsManifest(version string) map[string]any {
	return map[string]any{
		"id": "analytics-plugin", "name": "Analytics Plugin", "version": version,
		"description": "Collects and batches analytics events", "author": "Nexus Team",
		"email": "team@nexus.dev", "homepage": "https://nexus.dev/plugins/analytics",
		"license": "MIT", "category": "analytics", "tags": []string{"analytics", "events"},
		"entry_point":   "bin/analytics-plugin",
		"nexus_version": ">=1.0.0",
		"permissions":   []string{"database:read", "database:write", "events:emit", "http:external"},
		"api_endpoints": []map[string]any{{"path": "/api/v1/analytics/report", "methods": []string{"GET"}, "description": "Analytics report"}},
		"events": map[string]any{
			"emits":      []map[string]any{{"type": "analytics.batch_processed", "description": "A batch was processed"}},
			"subscribes": []map[string]any{{"type": "user.*", "description": "Counts user activity"}},
		},
		"configuration": map[string]any{
			"batch_size":      map[string]any{"type": "integer", "default": 50, "min": 10, "max": 1000, "description": "Number of events to batch before processing"},
			"flush_interval":  map[string]any{"type": "integer", "default": 30, "description": "Interval in seconds to flush batched events", "restart_required": true},
			"storage_backend": map[string]any{"type": "string", "enum": []string{"database", "file", "redis"}, "default": "database", "description": "Backend storage for analytics data"},
			"api_key":         map[string]any{"type": "string", "secret": true, "description": "API key for external analytics service"},
		},
		"resource_limits": map[string]any{"memory_mb": 256, "cpu_percent": 10, "file_handles": 100},
	}
}

// dependentManifest is a plugin that depends on analytics-plugin.
func dependentManifest() map[string]any {
	return map[string]any{
		"id": "user-management", "name": "User Management", "version": "1.0.0",
		"description": "Manages users", "author": "Nexus Team", "license": "MIT", "category": "security",
		"entry_point": "bin/user-management", "nexus_version": ">=1.0.0",
		"dependencies": map[string]any{"plugins": map[string]any{"analytics-plugin": ">=1.0.0"}},
		"permissions":  []string{"events:emit", "messages:send"},
	}
}

func installFromBytes(e *env, data []byte, extra map[string]any) restResult {
	e.t.Helper()
	body := map[string]any{"source": "file", "package_data": data}
	for k, v := range extra {
		body[k] = v
	}
	return e.rest(http.MethodPost, "/api/v1/plugins/install", e.Admin, body)
}

func mustInstall(e *env, manifest map[string]any) {
	e.t.Helper()
	res := installFromBytes(e, pkg(e.t, manifest, map[string]string{"bin/" + manifest["id"].(string): "#!/bin/sh\nexit 0\n"}), nil)
	if res.Status != http.StatusOK {
		e.t.Fatalf("install %s: %d %s", manifest["id"], res.Status, res.Raw)
	}
}

// pluginDirs lists the package directories under data/plugins (relative).
func pluginDirs(t testing.TB, dataDir string) []string {
	t.Helper()
	var out []string
	root := filepath.Join(dataDir, "plugins")
	ids, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		vs, err := os.ReadDir(filepath.Join(root, id.Name()))
		if err != nil {
			continue
		}
		for _, v := range vs {
			out = append(out, filepath.Join(id.Name(), v.Name()))
		}
	}
	return out
}
