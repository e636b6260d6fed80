package main

import (
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
)

// TestTokenAndAuditOnPostgres: the token and audit commands work on the PostgreSQL
// database of a server run with --database-url, given as the flag or the env var.
func TestTokenAndAuditOnPostgres(t *testing.T) {
	url := pgtest.Start(t, pgtest.Options{}).NewDatabase(t)
	dir := t.TempDir() // no SQLite file here: the commands must not need one
	out, errOut, code := runCLI(t, "token", "create", "--data-dir", dir, "--database-url", url, "--role", "user", "--name", "pg-reader")
	if code != 0 || !strings.HasPrefix(out, "nxt_") {
		t.Fatalf("create: %d %q %q", code, out, errOut)
	}
	t.Setenv("NEXUS_DATABASE_URL", url)
	list, errOut, code := runCLI(t, "token", "list", "--data-dir", dir)
	if code != 0 || !strings.Contains(list, "pg-reader") {
		t.Fatalf("list through NEXUS_DATABASE_URL: %d %q %q", code, list, errOut)
	}
	audit, errOut, code := runCLI(t, "audit", "--data-dir", dir)
	if code != 0 || !strings.HasPrefix(audit, "TIME") {
		t.Fatalf("audit: %d %q %q", code, audit, errOut)
	}
}
