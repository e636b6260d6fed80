package server_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
	"github.com/nexus-platform/nexus/server"
)

// TestPostgresStore: with --database-url the server keeps its state in PostgreSQL: a
// plugin installed and configured before a restart is found as it was after it, a token
// issued before it still works, and no SQLite file is made.
func TestPostgresStore(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	dbURL := pg.NewDatabase(t)
	dir := searchableTempDir(t)
	tune := func(c *server.Config) { c.DataDir, c.DatabaseURL = dir, dbURL }

	e := startServerWith(t, testLogSink(), slog.LevelDebug, tune)
	mustInstall(e, analyticsManifest("1.2.0"))
	e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 300, "api_key": "kept-secret"})
	user := e.User
	e.srv.Close()

	e2 := startServerWith(t, testLogSink(), slog.LevelDebug, tune)
	p := e2.mustREST("GET", "/api/v1/plugins/analytics-plugin", e2.Admin, nil)["plugin"].(map[string]any)
	if p["version"] != "1.2.0" {
		t.Errorf("plugin after the restart: %v", p)
	}
	cfg := e2.mustREST("GET", "/api/v1/plugins/analytics-plugin/config?include_secrets=true", e2.Admin, nil)["configuration"].(map[string]any)
	if cfg["batch_size"] != 300.0 || cfg["api_key"] != "kept-secret" {
		t.Errorf("configuration after the restart: %v", cfg)
	}
	// A token issued before the restart still works.
	if res := e2.rest("GET", "/api/v1/plugins", user, nil); res.Status != 200 {
		t.Errorf("a user token from before the restart: %d %s", res.Status, res.Raw)
	}

	// The state is in PostgreSQL, not in a file.
	if _, err := os.Stat(filepath.Join(dir, "nexus.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("nexus.db in the data directory: %v", err)
	}
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var version string
	if err := conn.QueryRow(t.Context(), `SELECT version FROM plugins WHERE id = 'analytics-plugin'`).Scan(&version); err != nil || version != "1.2.0" {
		t.Errorf("the plugin's row in PostgreSQL: %q, %v", version, err)
	}
}

// TestPostgresUnreachable: a server whose database cannot be reached does not start, and
// says so.
func TestPostgresUnreachable(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = "postgres://nexus:s3cret@127.0.0.1:1/nexus?sslmode=disable&connect_timeout=2"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(t.Context(), cfg, server.NewLogger(testLogSink(), slog.LevelDebug))
	if err == nil {
		srv.Close()
		t.Fatal("New succeeded without a database")
	}
	if msg := err.Error(); !strings.Contains(msg, "--database-url") || strings.Contains(msg, "s3cret") {
		t.Errorf("error %q: want it to name --database-url and not show the password", msg)
	}
}
