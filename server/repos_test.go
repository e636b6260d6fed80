package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/catalog"
	"github.com/nexus-platform/nexus/pluginhost/repository"
	"github.com/nexus-platform/nexus/server"
)

// makeRepository writes signed packages and an index into a new directory.
func makeRepository(t *testing.T, key repository.PrivateKey, manifests ...map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	for _, m := range manifests {
		data := pkg(t, m, map[string]string{"bin/" + m["id"].(string): "#!/bin/sh\n"})
		name := m["id"].(string) + "-" + m["version"].(string) + ".tar.gz"
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := repository.BuildIndex(dir, key, repository.BuildOptions{Name: "test", Description: "Test repository"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range idx.Plugins {
		idx.Plugins[i].Rating = float64(len(idx.Plugins[i].ID) % 5)
		idx.Plugins[i].Downloads = int64(100 * (i + 1))
	}
	if err := repository.WriteIndex(dir, idx); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRepositoriesSyncListAndSearch(t *testing.T) {
	pub, priv, err := repository.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	local := makeRepository(t, priv, analyticsManifest("1.2.0"), analyticsManifest("1.3.0"), dependentManifest())
	webDir := makeRepository(t, priv, map[string]any{
		"id": "social-auth-plugin", "name": "Social Authentication Plugin", "version": "2.1.0", "category": "authentication",
		"description": "OAuth integration with Google, GitHub, Facebook", "author": "Community Dev",
		"tags": []string{"oauth", "social", "authentication"}, "entry_point": "bin/social-auth-plugin",
	})
	web := httptest.NewServer(repository.Handler(webDir))
	defer web.Close()
	e := startServerWith(t, io.Discard, slog.LevelInfo, func(c *server.Config) {
		c.Repositories = []catalog.Config{
			{Name: "local", URL: "file://" + local, Enabled: true, TrustedKeys: []string{pub.String()}},
			{Name: "community", URL: web.URL + "/index.json", Description: "Community-maintained plugins", Enabled: true, TrustedKeys: []string{pub.String()}},
			{Name: "down", URL: "http://127.0.0.1:1/", Enabled: true, AllowUnsigned: true},
		}
		c.RepositorySyncInterval = 0
	})
	d := e.mustREST("POST", "/api/v1/plugins/repositories/sync", e.Admin, map[string]any{})
	if len(d["repositories"].([]any)) != 3 {
		t.Fatalf("sync answered %v", d)
	}
	repos := e.mustREST("GET", "/api/v1/plugins/repositories", e.User, nil)
	compareShape(t, "", seed(t, "list_repositories")["data"], repos)
	byName := map[string]map[string]any{}
	for _, r := range repos["repositories"].([]any) {
		byName[r.(map[string]any)["name"].(string)] = r.(map[string]any)
	}
	if byName["local"]["plugin_count"] != 2.0 || byName["local"]["last_error"] != "" || byName["local"]["last_sync"] == nil {
		t.Errorf("local = %v", byName["local"])
	}
	if byName["community"]["plugin_count"] != 1.0 || byName["community"]["description"] != "Community-maintained plugins" {
		t.Errorf("community = %v", byName["community"])
	}
	if byName["down"]["plugin_count"] != 0.0 || byName["down"]["last_error"] == "" || byName["down"]["last_sync"] != nil {
		t.Errorf("down = %v", byName["down"])
	}

	res := e.mustREST("GET", "/api/v1/plugins/search?query=oauth", e.User, nil)
	compareShape(t, "", seed(t, "search_plugins")["data"], res)
	hits := res["plugins"].([]any)
	if len(hits) != 1 || hits[0].(map[string]any)["id"] != "social-auth-plugin" || hits[0].(map[string]any)["repository"] != "community" {
		t.Fatalf("query=oauth: %v", hits)
	}
	cases := map[string][]string{
		"":                            {"analytics-plugin", "social-auth-plugin", "user-management"},
		"?category=analytics":         {"analytics-plugin"},
		"?tags=events&tags=analytics": {"analytics-plugin"},
		"?tags=events&tags=oauth":     {},
		"?tags=events,analytics":      {"analytics-plugin"},
		"?author=community":           {"social-auth-plugin"},
		"?sort=downloads":             {"user-management", "analytics-plugin", "social-auth-plugin"},
		"?per_page=1&page=2":          {"social-auth-plugin"},
		"?min_rating=4.5":             {},
	}
	for q, want := range cases {
		got := []string{}
		for _, p := range e.mustREST("GET", "/api/v1/plugins/search"+q, e.User, nil)["plugins"].([]any) {
			got = append(got, p.(map[string]any)["id"].(string))
		}
		if !equalStrings(got, want) {
			t.Errorf("search%s = %v, want %v", q, got, want)
		}
	}
	if v := e.mustREST("GET", "/api/v1/plugins/search?category=analytics", e.User, nil)["plugins"].([]any)[0].(map[string]any)["version"]; v != "1.3.0" {
		t.Errorf("the newest version is %v", v)
	}

	// A repository that goes down keeps its last good catalog.
	if err := os.Remove(filepath.Join(local, "index.json")); err != nil {
		t.Fatal(err)
	}
	e.mustREST("POST", "/api/v1/plugins/repositories/sync", e.Admin, map[string]any{})
	for _, r := range e.mustREST("GET", "/api/v1/plugins/repositories", e.User, nil)["repositories"].([]any) {
		if r := r.(map[string]any); r["name"] == "local" && (r["plugin_count"] != 2.0 || r["last_error"] == "") {
			t.Errorf("local after its index vanished: %v", r)
		}
	}
	if got := e.mustREST("GET", "/api/v1/plugins/search?category=analytics", e.User, nil)["plugins"].([]any); len(got) != 1 {
		t.Errorf("the last good catalog is not searched: %v", got)
	}
	if res := e.rest("POST", "/api/v1/plugins/repositories/sync", e.User, map[string]any{}); res.Status != http.StatusForbidden {
		t.Errorf("a user synced repositories: %d", res.Status)
	}
}

func TestRepositoryNeedsATrustedKeyOrExplicitUnsigned(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.AdminToken = testAdminToken
	cfg.Repositories = []catalog.Config{{Name: "r", URL: "file:///nowhere", Enabled: true}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if srv, err := server.New(context.Background(), cfg, slog.New(slog.NewJSONHandler(io.Discard, nil))); err == nil {
		srv.Close()
		t.Fatal("a repository without trusted keys was accepted")
	}
}

func TestRepositoryFlagAndFileSyntax(t *testing.T) {
	pub, _, _ := repository.GenerateKey()
	cfg, err := server.ParseConfig([]string{"--repository", "official=https://plugins.example.com/index.json;key=" + pub.String() + ";description=Official",
		"--repository", "lab=file:///srv/repo;allow-unsigned;disabled"}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Repositories) != 2 || cfg.Repositories[0].Description != "Official" || len(cfg.Repositories[0].TrustedKeys) != 1 ||
		!cfg.Repositories[1].AllowUnsigned || cfg.Repositories[1].Enabled {
		t.Fatalf("repositories = %+v", cfg.Repositories)
	}
	file := filepath.Join(t.TempDir(), "nexus.yaml")
	_ = os.WriteFile(file, []byte("repositories:\n  - name: official\n    url: file:///srv/repo\n    trusted_keys: ["+pub.String()+"]\n"), 0o600)
	cfg, err = server.ParseConfig([]string{"--config", file}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil || len(cfg.Repositories) != 1 || !cfg.Repositories[0].Enabled {
		t.Fatalf("from the file: %+v %v", cfg.Repositories, err)
	}
	if _, err := server.ParseConfig([]string{"--repository", "nourl"}, func(string) string { return "" }, &bytes.Buffer{}); err == nil {
		t.Fatal("a repository without a URL was accepted")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestInstallFromRepositoryAndURL(t *testing.T) {
	pub, priv, _ := repository.GenerateKey()
	_, otherKey, _ := repository.GenerateKey()
	good := makeRepository(t, priv, analyticsManifest("1.2.0"), analyticsManifest("1.3.0"))
	tampered := makeRepository(t, priv, map[string]any{"id": "tampered-plugin", "name": "T", "version": "1.0.0", "entry_point": "bin/tampered-plugin"})
	pkgPath := filepath.Join(tampered, "tampered-plugin-1.0.0.tar.gz")
	raw, _ := os.ReadFile(pkgPath)
	raw[len(raw)/2] ^= 0xff
	_ = os.WriteFile(pkgPath, raw, 0o644)
	untrusted := makeRepository(t, otherKey, map[string]any{"id": "foreign-plugin", "name": "F", "version": "1.0.0", "entry_point": "bin/foreign-plugin"})
	web := httptest.NewServer(repository.Handler(good))
	defer web.Close()
	e := startServerWith(t, io.Discard, slog.LevelInfo, func(c *server.Config) {
		c.Repositories = []catalog.Config{
			{Name: "tampered", URL: "file://" + tampered, Enabled: true, TrustedKeys: []string{pub.String()}},
			{Name: "untrusted", URL: "file://" + untrusted, Enabled: true, TrustedKeys: []string{pub.String()}},
			{Name: "web", URL: web.URL, Enabled: true, TrustedKeys: []string{pub.String()}},
		}
		c.RepositorySyncInterval = 0
	})
	e.mustREST("POST", "/api/v1/plugins/repositories/sync", e.Admin, map[string]any{})
	before := snapshot(e)
	for _, c := range []struct {
		name string
		body map[string]any
		code string
	}{
		{"tampered package", map[string]any{"source": "repository", "plugin_name": "tampered-plugin"}, "PLUGIN_INSTALLATION_FAILED"},
		{"untrusted key", map[string]any{"source": "repository", "plugin_name": "foreign-plugin"}, "PLUGIN_INSTALLATION_FAILED"},
		{"unknown plugin", map[string]any{"source": "repository", "plugin_name": "no-such-plugin"}, "PLUGIN_NOT_FOUND"},
		{"unsatisfiable constraint", map[string]any{"source": "repository", "plugin_name": "analytics-plugin", "version": ">=2.0.0"}, "PLUGIN_NOT_FOUND"},
		{"url with a wrong sha256", map[string]any{"source": "url", "download_url": web.URL + "/analytics-plugin-1.2.0.tar.gz", "sha256": strings.Repeat("0", 64)}, "PLUGIN_INSTALLATION_FAILED"},
	} {
		res := e.rest("POST", "/api/v1/plugins/install", e.Admin, c.body)
		if res.errorCode() != c.code {
			t.Errorf("%s: %d %s", c.name, res.Status, res.Raw)
		}
		if after := snapshot(e); after != before {
			t.Fatalf("%s changed the store", c.name)
		}
	}
	d := e.mustREST("POST", "/api/v1/plugins/install", e.Admin, map[string]any{"source": "repository", "plugin_name": "analytics-plugin", "version": "~1.2"})
	if v := d["installation"].(map[string]any)["version"]; v != "1.2.0" {
		t.Fatalf("~1.2 installed %v", v)
	}
	d = e.mustREST("POST", "/api/v1/plugins/install", e.Admin, map[string]any{"source": "repository", "plugin_name": "analytics-plugin", "version": "latest", "force_reinstall": true})
	if v := d["installation"].(map[string]any)["version"]; v != "1.3.0" {
		t.Fatalf("latest installed %v", v)
	}
	sum := sha256.Sum256(mustRead(t, filepath.Join(good, "analytics-plugin-1.2.0.tar.gz")))
	d = e.mustREST("POST", "/api/v1/plugins/install", e.Admin, map[string]any{"source": "url", "download_url": web.URL + "/analytics-plugin-1.2.0.tar.gz",
		"sha256": hex.EncodeToString(sum[:]), "force_reinstall": true})
	if v := d["installation"].(map[string]any)["version"]; v != "1.2.0" {
		t.Fatalf("url install %v", v)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRepositoryInstallResolvesDependencies(t *testing.T) {
	pub, priv, _ := repository.GenerateKey()
	m := func(id, version string, deps map[string]any) map[string]any {
		out := map[string]any{"id": id, "name": id, "version": version, "entry_point": "bin/" + id}
		if deps != nil {
			out["dependencies"] = map[string]any{"plugins": deps}
		}
		return out
	}
	dir := makeRepository(t, priv,
		m("app-plugin", "1.0.0", map[string]any{"lib-plugin": ">=1.0.0"}),
		m("lib-plugin", "1.1.0", map[string]any{"core-plugin": "^1.0.0"}),
		m("core-plugin", "1.0.0", nil),
		m("core-plugin", "2.0.0", nil),
		m("loop-a", "1.0.0", map[string]any{"loop-b": "*"}),
		m("loop-b", "1.0.0", map[string]any{"loop-a": "*"}),
		m("orphan-plugin", "1.0.0", map[string]any{"missing-plugin": ">=1.0.0"}),
		m("new-core-user", "1.0.0", map[string]any{"core-plugin": ">=2.0.0"}),
	)
	e := startServerWith(t, io.Discard, slog.LevelInfo, func(c *server.Config) {
		c.Repositories = []catalog.Config{{Name: "local", URL: "file://" + dir, Enabled: true, TrustedKeys: []string{pub.String()}}}
		c.RepositorySyncInterval = 0
	})
	e.mustREST("POST", "/api/v1/plugins/repositories/sync", e.Admin, map[string]any{})
	before := snapshot(e)
	for _, c := range []struct{ name, contains string }{
		{"loop-a", "dependency cycle: loop-a -> loop-b -> loop-a"},
		{"orphan-plugin", "orphan-plugin -> missing-plugin"},
	} {
		res := e.rest("POST", "/api/v1/plugins/install", e.Admin, map[string]any{"source": "repository", "plugin_name": c.name})
		if res.errorCode() != "PLUGIN_DEPENDENCY_ERROR" || !strings.Contains(string(res.Raw), c.contains) {
			t.Errorf("%s: %d %s", c.name, res.Status, res.Raw)
		}
		if after := snapshot(e); after != before {
			t.Fatalf("%s left something installed", c.name)
		}
	}
	e.mustREST("POST", "/api/v1/plugins/install", e.Admin, map[string]any{"source": "repository", "plugin_name": "app-plugin"})
	got := map[string]string{}
	for _, p := range e.mustREST("GET", "/api/v1/plugins", e.Admin, nil)["plugins"].([]any) {
		p := p.(map[string]any)
		got[p["id"].(string)] = p["version"].(string) + "@" + strconv.Itoa(int(p["load_order"].(float64)))
	}
	if got["core-plugin"] != "1.0.0@1" || got["lib-plugin"] != "1.1.0@2" || got["app-plugin"] != "1.0.0@3" {
		t.Fatalf("installed = %v (version@load_order)", got)
	}
	res := e.rest("POST", "/api/v1/plugins/install", e.Admin, map[string]any{"source": "repository", "plugin_name": "new-core-user"})
	if res.errorCode() != "PLUGIN_DEPENDENCY_ERROR" || !strings.Contains(string(res.Raw), "core-plugin >=2.0.0, but 1.0.0 is installed") {
		t.Fatalf("conflict: %d %s", res.Status, res.Raw)
	}
}
