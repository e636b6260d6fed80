package pgtest_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
)

// query runs a query returning one text value on a connection of its own.
func query(t *testing.T, url, q string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, q).Scan(&v)
	return v, err
}

// execSQL runs statements (several, separated by semicolons) on a connection of its own.
func execSQL(t *testing.T, url, sql string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func TestStartStopRestart(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	u := srv.NewDatabase(t)
	if !strings.HasPrefix(u, "postgres://"+pgtest.Role+"@127.0.0.1:") {
		t.Fatalf("NewDatabase URL = %q", u)
	}
	if err := execSQL(t, u, `CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')`); err != nil {
		t.Fatalf("create a table as %s: %v", pgtest.Role, err)
	}
	// The role is no superuser.
	if v, err := query(t, u, `SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user`); err != nil || v != "false" {
		t.Fatalf("rolsuper = %q, %v; want false", v, err)
	}
	if v, err := query(t, u, `SHOW server_encoding`); err != nil || v != "UTF8" {
		t.Fatalf("server_encoding = %q, %v; want UTF8", v, err)
	}

	// A crash loses nothing committed (the server is killed, not the machine).
	addr := srv.Addr()
	if err := srv.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if srv.Running() || srv.Pid() != 0 {
		t.Fatal("Running after Kill")
	}
	if _, err := query(t, u, `SELECT 1::text`); err == nil {
		t.Fatal("the server answered after Kill")
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart after Kill: %v", err)
	}
	if srv.Addr() != addr {
		t.Fatalf("Addr after Restart = %s; want %s", srv.Addr(), addr)
	}
	if v, err := query(t, u, `SELECT v FROM t`); err != nil || v != "kept" {
		t.Fatalf("after Kill and Restart: %q, %v; want the row kept", v, err)
	}

	// A running server restarts gracefully.
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if v, err := query(t, u, `SELECT v FROM t`); err != nil || v != "kept" {
		t.Fatalf("after Restart: %q, %v; want the row kept", v, err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestDatabasesAreSeparate(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{Settings: []string{"application_name=pgtest-settings"}})
	a, b := srv.NewDatabase(t), srv.NewDatabase(t)
	if a == b {
		t.Fatalf("two databases with one URL %q", a)
	}
	if err := execSQL(t, a, `CREATE TABLE only_in_a (v int)`); err != nil {
		t.Fatal(err)
	}
	if _, err := query(t, b, `SELECT count(*)::text FROM only_in_a`); err == nil {
		t.Fatal("a table of one database is seen in the other")
	}
	if v, err := query(t, a, `SELECT setting FROM pg_settings WHERE name = 'application_name' AND source = 'command line'`); err != nil || v != "pgtest-settings" {
		t.Fatalf("Options.Settings not applied: %q, %v", v, err)
	}
}

// TestNotRoot checks that the server never runs as root, whoever runs the test: as root
// the harness runs it as an unprivileged user, who owns the cluster.
func TestNotRoot(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	status, err := os.ReadFile("/proc/" + strconv.Itoa(srv.Pid()) + "/status")
	if err != nil {
		t.Fatalf("read the server's status: %v", err)
	}
	var uid string
	for line := range strings.SplitSeq(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid = f[1]
		}
	}
	if uid == "" || uid == "0" {
		t.Fatalf("postgres runs as uid %q", uid)
	}
	if os.Geteuid() != 0 && uid != strconv.Itoa(os.Geteuid()) {
		t.Fatalf("postgres runs as uid %s, not as the test's user %d", uid, os.Geteuid())
	}
	fi, err := os.Stat(filepath.Join(srv.Dir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	if owner := fi.Sys().(*syscall.Stat_t).Uid; strconv.FormatUint(uint64(owner), 10) != uid {
		t.Fatalf("the cluster belongs to uid %d, the server runs as %s", owner, uid)
	}
}

func TestStartServer(t *testing.T) {
	srv, err := pgtest.StartServer(pgtest.Options{})
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	dir := srv.Dir()
	u, err := srv.CreateDatabase(t.Context())
	if err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	if v, err := query(t, u, `SELECT current_user::text`); err != nil || v != pgtest.Role {
		t.Fatalf("current_user = %q, %v", v, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if srv.Running() {
		t.Fatal("Running after Close")
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := srv.Restart(); err == nil {
		t.Fatal("Restart after Close succeeded")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the server's directory is still there after Close: %v", err)
	}
}
