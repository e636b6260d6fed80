package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/repository"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/server"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestTokenCreateListRevoke(t *testing.T) {
	dir := t.TempDir()
	if out, _, code := runCLI(t, "token", "list", "--data-dir", dir); code == 0 {
		t.Fatalf("list without a database succeeded: %s", out)
	}
	st, err := storesqlite.Open(context.Background(), filepath.Join(dir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	out, errOut, code := runCLI(t, "token", "create", "--data-dir", dir, "--role", "user", "--name", "ci-reader")
	if code != 0 || !strings.HasPrefix(out, "nxt_") {
		t.Fatalf("create: %d %q %q", code, out, errOut)
	}
	if _, _, code := runCLI(t, "token", "create", "--data-dir", dir, "--role", "plugin", "--plugin", "not-installed"); code == 0 {
		t.Fatal("a plugin token for a plugin that is not installed was created")
	}
	if _, _, code := runCLI(t, "token", "create", "--data-dir", dir, "--role", "root"); code == 0 {
		t.Fatal("an unknown role was accepted")
	}
	list, _, code := runCLI(t, "token", "list", "--data-dir", dir)
	if code != 0 || !strings.Contains(list, "ci-reader") || strings.Contains(list, strings.TrimSpace(out)) {
		t.Fatalf("list: %q", list)
	}
	id := strings.Fields(strings.Split(list, "\n")[1])[0]
	if _, errOut, code := runCLI(t, "token", "revoke", "--data-dir", dir, id); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	list, _, _ = runCLI(t, "token", "list", "--data-dir", dir)
	row := strings.Fields(strings.Split(list, "\n")[1])
	if revoked := row[len(row)-1]; revoked == "-" || !strings.HasPrefix(revoked, time.Now().UTC().Format("2006-01-02")) {
		t.Fatalf("revoked token not shown as revoked: %q", list)
	}
	// The same list as JSON and YAML, and the audit log of both actions.
	asJSON, _, code := runCLI(t, "token", "list", "--data-dir", dir, "-o", "json")
	var tokens []map[string]any
	if code != 0 || json.Unmarshal([]byte(asJSON), &tokens) != nil || len(tokens) != 1 || tokens[0]["name"] != "ci-reader" || tokens[0]["status"] != "revoked" {
		t.Fatalf("list -o json: %q", asJSON)
	}
	asYAML, _, code := runCLI(t, "token", "list", "--data-dir", dir, "--output", "yaml")
	if code != 0 || !strings.Contains(asYAML, "name: ci-reader") {
		t.Fatalf("list -o yaml: %q", asYAML)
	}
	audit, _, code := runCLI(t, "audit", "--data-dir", dir, "-o", "json")
	var entries []map[string]any
	if code != 0 || json.Unmarshal([]byte(audit), &entries) != nil || len(entries) != 2 || entries[0]["action"] != "nexus token revoke" {
		t.Fatalf("audit -o json: %q", audit)
	}
	if _, errOut, code := runCLI(t, "audit", "--data-dir", dir, "-o", "xml"); code == 0 || !strings.Contains(errOut, "want table, json or yaml") {
		t.Fatalf("audit -o xml: %d %q", code, errOut)
	}
}

func TestTokenTTL(t *testing.T) {
	dir := t.TempDir()
	st, err := storesqlite.Open(context.Background(), filepath.Join(dir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	// A token whose expiry has passed, as the store holds it.
	past := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	err = st.Write(context.Background(), func(tx store.Tx) error {
		return tx.PutToken(store.Token{ID: "tok_old", Name: "old-ci", Role: store.RoleUser, Hash: identity.Hash("nxt_old"),
			CreatedAt: past.Add(-time.Hour), ExpiresAt: past})
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	for _, bad := range []struct{ ttl, want string }{
		{"soon", "not a duration"},
		{"0s", "must be positive"},
		{"-1h", "must be positive"},
		{"1000000h", "at most"},
	} {
		_, errOut, code := runCLI(t, "token", "create", "--data-dir", dir, "--role", "user", "--ttl", bad.ttl)
		if code == 0 || !strings.Contains(errOut, "--ttl") || !strings.Contains(errOut, bad.want) {
			t.Errorf("--ttl %s: exit %d, %q; want an error naming --ttl (%s)", bad.ttl, code, errOut, bad.want)
		}
	}
	if _, errOut, code := runCLI(t, "token", "create", "--data-dir", dir, "--role", "user", "--name", "runtime:fake"); code == 0 || !strings.Contains(errOut, "reserved") {
		t.Errorf("a token named runtime:...: exit %d %q", code, errOut)
	}

	before := time.Now().UTC()
	out, errOut, code := runCLI(t, "token", "create", "--data-dir", dir, "--role", "user", "--name", "ci-day", "--ttl", "24h")
	if code != 0 || !strings.HasPrefix(out, "nxt_") || !strings.Contains(errOut, "expires 20") {
		t.Fatalf("create --ttl 24h: %d %q %q", code, out, errOut)
	}
	if _, _, code := runCLI(t, "token", "create", "--data-dir", dir, "--role", "user", "--name", "forever"); code != 0 {
		t.Fatal("create without --ttl failed")
	}
	list, _, code := runCLI(t, "token", "list", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("list: %d", code)
	}
	lines := strings.Split(strings.TrimSpace(list), "\n")
	header := strings.Fields(lines[0])
	col := func(name string) int {
		for i, h := range header {
			if h == name {
				return i
			}
		}
		t.Fatalf("no %s column in %q", name, lines[0])
		return -1
	}
	rows := map[string][]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		rows[f[col("NAME")]] = f
	}
	day := rows["ci-day"]
	expires, err := time.Parse(time.RFC3339, day[col("EXPIRES")])
	if err != nil || expires.Location() != time.UTC || expires.Before(before.Add(24*time.Hour-time.Second)) || expires.After(time.Now().Add(24*time.Hour)) {
		t.Errorf("ci-day expires %q (%v), want about 24h from now, in UTC", day[col("EXPIRES")], err)
	}
	for name, want := range map[string][2]string{
		"ci-day":  {"valid", day[col("EXPIRES")]},
		"forever": {"valid", "never"},
		"old-ci":  {"expired", "2025-01-02T03:04:05Z"},
	} {
		r := rows[name]
		if r == nil || r[col("STATUS")] != want[0] || r[col("EXPIRES")] != want[1] {
			t.Errorf("%s: row %q, want status %s and expiry %s", name, r, want[0], want[1])
		}
	}
}

// startTestServer runs a server in this process on a free loopback port, with its data in
// dataDir (and adminToken, or one it makes and keeps there), until the test ends; it returns
// the server's URL.
func startTestServer(t *testing.T, dataDir, adminToken string) string {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Listen, cfg.DataDir, cfg.AdminToken = "127.0.0.1:0", dataDir, adminToken
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return "http://" + ln.Addr().String()
}

func TestPackageAndPluginsCommands(t *testing.T) {
	const admin = "nxt_cli-test-admin"
	t.Setenv("NEXUS_URL", startTestServer(t, t.TempDir(), admin))
	t.Setenv("NEXUS_TOKEN", admin)

	// The example's manifest, with a stand-in entry point (make examples builds the real one).
	stage := t.TempDir()
	manifest, err := os.ReadFile("../../../clients/go/plugin/examples/analytics-plugin/plugin.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "plugin.json"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, code := runCLI(t, "package", stage, "-o", filepath.Join(t.TempDir(), "x.tar.gz")); code == 0 {
		t.Fatal("a package without its entry point was built")
	}
	_ = os.MkdirAll(filepath.Join(stage, "bin"), 0o755)
	if err := os.WriteFile(filepath.Join(stage, "bin", "analytics-plugin"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pkgFile := filepath.Join(t.TempDir(), "analytics.tar.gz")
	out, errOut, code := runCLI(t, "package", stage, "-o", pkgFile)
	if code != 0 || !strings.Contains(out, "analytics-plugin 1.2.0") {
		t.Fatalf("package: %d %s %s", code, out, errOut)
	}
	// The reference document's install configuration, as written.
	out, errOut, code = runCLI(t, "plugins", "install", pkgFile, "--config", `{"enabled": true, "batch_size": 100, "flush_interval": 60}`)
	if code != 0 || !strings.Contains(out, `"plugin_id": "analytics-plugin"`) {
		t.Fatalf("install: %d %s %s", code, out, errOut)
	}
	_, errOut, code = runCLI(t, "plugins", "install", pkgFile)
	if code == 0 || !strings.Contains(errOut, "PLUGIN_ALREADY_INSTALLED") {
		t.Fatalf("second install: %d %s", code, errOut)
	}
	_, errOut, code = runCLI(t, "plugins", "config", "analytics-plugin", "--set", `{"batch_size": "x"}`)
	if code == 0 || !strings.Contains(errOut, "PLUGIN_CONFIGURATION_ERROR") || !strings.Contains(errOut, "batch_size") {
		t.Fatalf("bad config: %d %s", code, errOut)
	}
	out, _, code = runCLI(t, "plugins", "list")
	var list struct {
		Plugins []struct {
			ID            string         `json:"id"`
			Configuration map[string]any `json:"configuration"`
		} `json:"plugins"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Plugins) != 1 || list.Plugins[0].Configuration["batch_size"] != 100.0 ||
		list.Plugins[0].Configuration["enabled"] != true {
		t.Fatalf("list: %d %s", code, out)
	}
	if out, errOut, code = runCLI(t, "plugins", "uninstall", "analytics-plugin", "--backup"); code != 0 || !strings.Contains(out, `"backup_created": true`) {
		t.Fatalf("uninstall: %d %s %s", code, out, errOut)
	}
	if _, err := os.Stat(pkgFile); err != nil {
		t.Fatal(err)
	}
}

func TestRepoKeygenIndexServe(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(t.TempDir(), "repo.key")
	pub, errOut, code := runCLI(t, "repo", "keygen", "-o", key)
	if code != 0 || !strings.HasPrefix(pub, "ed25519:") {
		t.Fatalf("keygen: %d %q %s", code, pub, errOut)
	}
	stage := t.TempDir()
	_ = os.MkdirAll(filepath.Join(stage, "bin"), 0o755)
	_ = os.WriteFile(filepath.Join(stage, "plugin.json"), []byte(`{"id":"repo-demo","name":"Demo","version":"1.0.0","entry_point":"bin/x"}`), 0o644)
	_ = os.WriteFile(filepath.Join(stage, "bin", "x"), []byte("#!/bin/sh\n"), 0o755)
	if _, errOut, code := runCLI(t, "package", stage, "-o", filepath.Join(dir, "repo-demo-1.0.0.tar.gz")); code != 0 {
		t.Fatalf("package: %s", errOut)
	}
	out, errOut, code := runCLI(t, "repo", "index", dir, "--key", key, "--name", "local")
	if code != 0 || !strings.Contains(out, "1 plugins, 1 versions") {
		t.Fatalf("index: %d %s %s", code, out, errOut)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := repository.ParseIndex(raw)
	if err != nil {
		t.Fatal(err)
	}
	p := idx.Plugin("repo-demo")
	if p == nil || p.Versions[0].Signature == nil {
		t.Fatalf("index = %s", raw)
	}
	trusted, err := repository.ParsePublicKey(strings.TrimSpace(pub))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, p.Versions[0].URL))
	if err != nil {
		t.Fatal(err)
	}
	if err := repository.VerifyPackage(p.Versions[0], "repo-demo", data, []repository.PublicKey{trusted}, false); err != nil {
		t.Fatalf("verify: %v", err)
	}
}
