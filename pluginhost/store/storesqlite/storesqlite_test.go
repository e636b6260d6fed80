package storesqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // registers "sqlite" for the tests' direct look at the file

	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/pluginhost/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := storesqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nexus.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

// open opens a store at path and closes it when the test ends.
func open(t *testing.T, path string) *storesqlite.Store {
	t.Helper()
	s, err := storesqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// rawDB opens the database file directly, without the store, and closes it when the
// test ends.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: "_pragma=busy_timeout(5000)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type migrationRow struct {
	version   int
	name      string
	appliedAt int64
}

func migrationRows(t *testing.T, path string) []migrationRow {
	t.Helper()
	db := rawDB(t, path)
	rows, err := db.QueryContext(t.Context(), `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	var out []migrationRow
	for rows.Next() {
		var r migrationRow
		if err := rows.Scan(&r.version, &r.name, &r.appliedAt); err != nil {
			t.Fatalf("scan schema_migrations: %v", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return out
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nexus.db")
	at := time.Date(2026, 11, 24, 12, 0, 0, 5, time.UTC)

	s, err := storesqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	err = s.Write(t.Context(), func(tx store.Tx) error {
		if err := tx.PutPlugin(store.Plugin{ID: "p1", Version: "1.0.0", InstalledAt: at}); err != nil {
			return err
		}
		return tx.PutSetting("k", []byte("v"))
	})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Read(t.Context(), func(store.Tx) error { return nil }); err == nil {
		t.Error("Read after Close succeeded")
	}
	first := migrationRows(t, path)
	if len(first) == 0 || first[0].version != 1 {
		t.Fatalf("schema_migrations after the first Open: %+v", first)
	}

	for i := range 2 {
		s := open(t, path)
		err := s.Read(t.Context(), func(tx store.Tx) error {
			p, err := tx.Plugin("p1")
			if err != nil {
				return err
			}
			if p.Version != "1.0.0" || !p.InstalledAt.Equal(at) {
				t.Errorf("reopen %d: plugin %+v", i, p)
			}
			v, err := tx.Setting("k")
			if err != nil {
				return err
			}
			if string(v) != "v" {
				t.Errorf("reopen %d: setting %q", i, v)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("reopen %d: Read: %v", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("reopen %d: Close: %v", i, err)
		}
		again := migrationRows(t, path)
		if fmt.Sprint(again) != fmt.Sprint(first) {
			t.Errorf("reopen %d re-ran migrations:\n got %+v\nwant %+v", i, again, first)
		}
	}
}

func TestWALMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nexus.db")
	s := open(t, path)
	if err := s.Write(t.Context(), func(tx store.Tx) error { return tx.PutSetting("k", []byte("v")) }); err != nil {
		t.Fatalf("Write: %v", err)
	}
	var mode string
	if err := rawDB(t, path).QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatalf("PRAGMA journal_mode: %v", err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Errorf("no WAL file while the store is open: %v", err)
	}
}

func TestFutureSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nexus.db")
	s, err := storesqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db := rawDB(t, path)
	if _, err := db.ExecContext(t.Context(),
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES (1000, 'from the future', 0)`); err != nil {
		t.Fatalf("insert future migration: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s, err = storesqlite.Open(t.Context(), path)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !errors.Is(err, storesqlite.ErrSchemaTooNew) {
		t.Errorf("Open: error %v, want ErrSchemaTooNew", err)
	}
	if !strings.Contains(err.Error(), "1000") {
		t.Errorf("Open: error %q does not name the database's version", err)
	}
	rows := migrationRows(t, path)
	if rows[len(rows)-1].version != 1000 {
		t.Errorf("the refused Open changed schema_migrations: %+v", rows)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "not-a-db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("this is not a database\n", 300)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{"empty path", ""},
		{"missing directory", filepath.Join(dir, "missing", "nexus.db")},
		{"not a database", notDB},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := storesqlite.Open(t.Context(), tc.path)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q) succeeded", tc.path)
			}
		})
	}
}

func TestPathWithSpecialCharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%chars&x=y")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nexus.db")
	s := open(t, path)
	if err := s.Write(t.Context(), func(tx store.Tx) error { return tx.PutSetting("k", []byte("v")) }); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %s: %v", path, err)
	}
}

func TestInvalidInput(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "nexus.db"))
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"plugin without id", func(tx store.Tx) error { return tx.PutPlugin(store.Plugin{}) }},
		{"token without id", func(tx store.Tx) error { return tx.PutToken(store.Token{Hash: []byte("h")}) }},
		{"token without hash", func(tx store.Tx) error { return tx.PutToken(store.Token{ID: "t"}) }},
		{"audit entry without id", func(tx store.Tx) error { return tx.AppendAudit(store.AuditEntry{Time: at}) }},
		{"backup without id", func(tx store.Tx) error { return tx.PutBackup(store.Backup{PluginID: "p"}) }},
		{"time before 1678", func(tx store.Tx) error {
			return tx.PutPlugin(store.Plugin{ID: "p", InstalledAt: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)})
		}},
		{"time after 2261", func(tx store.Tx) error {
			return tx.AppendLogs([]store.LogRecord{{PluginID: "p", Time: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}})
		}},
		{"revoke at zero time", func(tx store.Tx) error {
			if err := tx.PutToken(store.Token{ID: "t", Hash: []byte("h")}); err != nil {
				return err
			}
			return tx.RevokeToken("t", time.Time{})
		}},
		{"delete tokens of the empty plugin id", func(tx store.Tx) error { return tx.DeletePluginTokens("") }},
		{"negative trim", func(tx store.Tx) error { return tx.TrimLogs("p", -1) }},
		{"logs page 0", func(tx store.Tx) error {
			_, _, err := tx.Logs(store.LogFilter{PluginID: "p", Page: 0, PerPage: 10})
			return err
		}},
		{"logs per page 0", func(tx store.Tx) error {
			_, _, err := tx.Logs(store.LogFilter{PluginID: "p", Page: 1})
			return err
		}},
		{"kv entry without plugin id", func(tx store.Tx) error { return tx.PutKV(store.KVEntry{Key: "k"}) }},
		{"kv entry without key", func(tx store.Tx) error { return tx.PutKV(store.KVEntry{PluginID: "p"}) }},
		{"kv entry expiring after 2261", func(tx store.Tx) error {
			return tx.PutKV(store.KVEntry{PluginID: "p", Key: "k", ExpiresAt: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)})
		}},
		{"kv list limit 0", func(tx store.Tx) error {
			_, err := tx.KVList("p", "", "", 0)
			return err
		}},
		{"delete kv expired before the zero time", func(tx store.Tx) error {
			_, err := tx.DeleteKVExpired(time.Time{}, 10)
			return err
		}},
		{"delete kv expired limit 0", func(tx store.Tx) error {
			_, err := tx.DeleteKVExpired(at, 0)
			return err
		}},
		{"delete kv of the empty plugin id", func(tx store.Tx) error { return tx.DeletePluginKV("") }},
		{"kv readers of the empty plugin id", func(tx store.Tx) error { return tx.PutKVReaders("", []string{"r"}) }},
		{"empty kv reader", func(tx store.Tx) error { return tx.PutKVReaders("p", []string{"r", ""}) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Write(t.Context(), tc.fn); err == nil {
				t.Error("succeeded")
			}
		})
	}
}

func TestLogsHugePage(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "nexus.db"))
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err := s.Write(t.Context(), func(tx store.Tx) error {
		return tx.AppendLogs([]store.LogRecord{{PluginID: "p", Time: at, Level: "INFO", Message: "m"}})
	})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	err = s.Read(t.Context(), func(tx store.Tx) error {
		recs, total, err := tx.Logs(store.LogFilter{PluginID: "p", Page: 1 << 62, PerPage: 1 << 62})
		if err != nil {
			return err
		}
		if len(recs) != 0 || total != 1 {
			t.Errorf("huge page: %d records, total %d; want 0, 1", len(recs), total)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
}

// TestIndexes checks that the hot look-ups are served by indexes, not table scans.
func TestIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nexus.db")
	open(t, path)
	db := rawDB(t, path)
	tests := []struct {
		name, query, index string
	}{
		{"token by hash", `SELECT * FROM tokens WHERE hash = x'01'`, "tokens_hash"},
		{"logs page", `SELECT * FROM logs WHERE plugin_id = 'p' AND time >= 1 AND time <= 2 ORDER BY time DESC, seq DESC LIMIT 10`, "logs_plugin_time"},
		{"backups of a plugin", `SELECT * FROM backups WHERE plugin_id = 'p' ORDER BY created_at DESC`, "backups_plugin_created_at"},
		{"audit of a target", `SELECT * FROM audit WHERE target = 't' ORDER BY time DESC`, "audit_target_time"},
		{"kv page", `SELECT * FROM kv WHERE plugin_id = 'p' AND key >= 'a' AND key > '' AND key < 'b' ORDER BY key LIMIT 10`, "PRIMARY KEY (plugin_id=? AND key>? AND key<?)"},
		{"expired kv", `SELECT plugin_id, key FROM kv WHERE expires_at IS NOT NULL AND expires_at < 1 ORDER BY expires_at LIMIT 10`, "kv_expires_at"},
		{"kv shares of a reader", `SELECT * FROM kv_shares WHERE plugin_id = 'p' OR reader_id = 'p'`, "kv_shares_reader_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+tc.query)
			if err != nil {
				t.Fatalf("EXPLAIN QUERY PLAN: %v", err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatalf("scan plan: %v", err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("plan: %v", err)
			}
			if got := strings.Join(plan, "; "); !strings.Contains(got, tc.index) {
				t.Errorf("plan %q does not use index %s", got, tc.index)
			}
		})
	}
}

// TestTwoStoresOneFile stands in for two processes sharing the database: their writes
// wait for each other (busy timeout, BEGIN IMMEDIATE) instead of failing with SQLITE_BUSY.
func TestTwoStoresOneFile(t *testing.T) {
	const (
		perStore = 4
		each     = 25
	)
	path := filepath.Join(t.TempDir(), "nexus.db")
	stores := []*storesqlite.Store{open(t, path), open(t, path)}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for si, s := range stores {
		for g := range perStore {
			wg.Go(func() {
				for i := range each {
					id := fmt.Sprintf("s%d-g%d-%02d", si, g, i)
					err := s.Write(ctx, func(tx store.Tx) error {
						if _, err := tx.Plugins(); err != nil { // read before write in the same transaction
							return err
						}
						return tx.PutPlugin(store.Plugin{ID: id})
					})
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("%s: %w", id, err))
						mu.Unlock()
						return
					}
				}
			})
		}
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	err := stores[1].Read(ctx, func(tx store.Tx) error {
		ps, err := tx.Plugins()
		if err != nil {
			return err
		}
		if want := len(stores) * perStore * each; len(ps) != want {
			t.Errorf("%d plugins, want %d", len(ps), want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
}

// Crash consistency: a child process writes transactions in a loop and is killed with
// SIGKILL, several times over; every transaction wrote a plugin, its token, its audit entry
// and its logs, so after each crash each must be there completely or not at all, and every
// transaction the child reported committed must have survived.

const (
	crashEnvDB   = "STORESQLITE_TEST_CRASH_DB"
	crashLogsPer = 50
)

func crashPlugin(i int) store.Plugin {
	id := fmt.Sprintf("p%06d", i)
	return store.Plugin{
		ID: id, Version: "1.0." + strconv.Itoa(i), Manifest: []byte(`{"id":"` + id + `"}`),
		Dir: "/plugins/" + id, Source: "file", Enabled: true, Status: "active",
		Requested: []string{"a", "b"}, Granted: []string{"a"}, Denied: []string{"b"},
		InstalledAt: time.Unix(1_800_000_000, int64(i)).UTC(),
	}
}

func crashToken(i int) store.Token {
	return store.Token{
		ID: fmt.Sprintf("t%06d", i), Role: store.RolePlugin, PluginID: fmt.Sprintf("p%06d", i),
		Hash: []byte(fmt.Sprintf("hash-%06d", i)), CreatedAt: time.Unix(1_800_000_000, int64(i)).UTC(),
	}
}

// crashWrite is transaction i of the child.
func crashWrite(tx store.Tx, i int) error {
	p := crashPlugin(i)
	if err := tx.PutPlugin(p); err != nil {
		return err
	}
	if err := tx.PutToken(crashToken(i)); err != nil {
		return err
	}
	if err := tx.AppendAudit(store.AuditEntry{ID: fmt.Sprintf("a%06d", i), Time: p.InstalledAt, Target: p.ID, Outcome: "ok"}); err != nil {
		return err
	}
	recs := make([]store.LogRecord, crashLogsPer)
	for j := range recs {
		recs[j] = store.LogRecord{PluginID: p.ID, Time: p.InstalledAt, Level: "INFO", Message: strings.Repeat("x", 512)}
	}
	return tx.AppendLogs(recs)
}

// TestHelperProcess is the child of TestCrashConsistency; it does nothing in a normal run.
// It goes on from the transactions already in the database, prints the number of each
// transaction once committed, and stops by itself after a while should nobody kill it.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(crashEnvDB)
	if path == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := storesqlite.Open(ctx, path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "open: %v\n", err)
		os.Exit(2)
	}
	first := 0
	if err := s.Read(ctx, func(tx store.Tx) error {
		ps, err := tx.Plugins()
		first = len(ps)
		return err
	}); err != nil {
		fmt.Fprintf(os.Stderr, "read: %v\n", err)
		os.Exit(2)
	}
	for i := first; ctx.Err() == nil; i++ {
		if err := s.Write(ctx, func(tx store.Tx) error { return crashWrite(tx, i) }); err != nil {
			fmt.Fprintf(os.Stderr, "write %d: %v\n", i, err)
			os.Exit(3)
		}
		fmt.Println(i)
	}
	os.Exit(0)
}

func TestCrashConsistency(t *testing.T) {
	const (
		rounds    = 3
		killAfter = 60 // transactions the child reports committed before it is killed
	)
	path := filepath.Join(t.TempDir(), "nexus.db")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	committed := 0
	for round := range rounds {
		reported := runAndKill(ctx, t, path, killAfter)
		if reported != committed+killAfter {
			t.Fatalf("round %d: the child went on from transaction %d, want %d", round, reported-killAfter, committed)
		}
		integrityCheck(t, path)
		committed = checkCrashed(ctx, t, path)
		if committed < reported {
			t.Fatalf("round %d: %d transactions survived, but the child reported %d committed", round, committed, reported)
		}
		t.Logf("round %d: child reported %d commits before the kill; %d survived", round, reported, committed)
	}

	// The store still takes writes, and the file is sound.
	s := open(t, path)
	if err := s.Write(ctx, func(tx store.Tx) error { return crashWrite(tx, committed) }); err != nil {
		t.Fatalf("Write after the crashes: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	integrityCheck(t, path)
}

// runAndKill runs the child on the database until it has reported killAfter commits,
// kills it with SIGKILL and returns how many transactions the database held by its
// reports. The kill comes after a random delay of up to a few milliseconds, so that over
// the rounds it lands at different points of a transaction (this delay is the point of
// the test, not a wait for something to happen).
func runAndKill(ctx context.Context, t *testing.T, path string, killAfter int) int {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDB+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the child: %v", err)
	}
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()

	last, seen := -1, 0
	sc := bufio.NewScanner(stdout)
	for seen < killAfter && sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			continue // test framework output
		}
		last = n
		seen++
	}
	if seen < killAfter {
		_ = cmd.Wait()
		waited = true
		t.Fatalf("the child stopped after %d transactions; stderr:\n%s", seen, stderr.String())
	}
	time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill the child: %v", err)
	}
	waitErr := cmd.Wait()
	waited = true
	var exitErr *exec.ExitError
	if !errors.As(waitErr, &exitErr) || exitErr.ExitCode() != -1 {
		t.Fatalf("the child did not die of the kill: %v; stderr:\n%s", waitErr, stderr.String())
	}
	return last + 1
}

// checkCrashed opens the database left by a killed child, checks that every transaction
// in it is complete and nothing of a later one is, and returns how many there are.
func checkCrashed(ctx context.Context, t *testing.T, path string) int {
	t.Helper()
	s, err := storesqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open after the crash: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	committed := 0
	err = s.Read(ctx, func(tx store.Tx) error {
		ps, err := tx.Plugins()
		if err != nil {
			return err
		}
		committed = len(ps)
		for i, p := range ps {
			want := crashPlugin(i)
			if p.ID != want.ID || p.Version != want.Version || string(p.Manifest) != string(want.Manifest) ||
				!p.InstalledAt.Equal(want.InstalledAt) || strings.Join(p.Denied, ",") != "b" {
				return fmt.Errorf("plugin %d is %+v, want %+v", i, p, want)
			}
			tok, err := tx.TokenByHash(crashToken(i).Hash)
			if err != nil {
				return fmt.Errorf("token of plugin %d: %w", i, err)
			}
			if tok.PluginID != p.ID {
				return fmt.Errorf("token of plugin %d bound to %q", i, tok.PluginID)
			}
			es, err := tx.Audit(store.AuditFilter{Target: p.ID})
			if err != nil {
				return err
			}
			if len(es) != 1 {
				return fmt.Errorf("plugin %d has %d audit entries, want 1", i, len(es))
			}
			_, total, err := tx.Logs(store.LogFilter{PluginID: p.ID, Page: 1, PerPage: 1})
			if err != nil {
				return err
			}
			if total != crashLogsPer {
				return fmt.Errorf("plugin %d has %d log records, want %d", i, total, crashLogsPer)
			}
		}
		// Nothing of a transaction that did not commit.
		toks, err := tx.Tokens()
		if err != nil {
			return err
		}
		es, err := tx.Audit(store.AuditFilter{})
		if err != nil {
			return err
		}
		if len(toks) != committed || len(es) != committed {
			return fmt.Errorf("%d plugins, %d tokens, %d audit entries: a transaction was torn", committed, len(toks), len(es))
		}
		_, total, err := tx.Logs(store.LogFilter{PluginID: fmt.Sprintf("p%06d", committed), Page: 1, PerPage: 1})
		if err != nil {
			return err
		}
		if total != 0 {
			return fmt.Errorf("%d log records of the uncommitted transaction %d", total, committed)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after the crash: %v", err)
	}
	return committed
}

// integrityCheck fails the test unless PRAGMA integrity_check passes on the file.
func integrityCheck(t *testing.T, path string) {
	t.Helper()
	db := rawDB(t, path)
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), "PRAGMA integrity_check")
	if err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			t.Fatalf("integrity_check: %v", err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	if len(msgs) != 1 || msgs[0] != "ok" {
		t.Errorf("integrity_check: %s", strings.Join(msgs, "; "))
	}
}

// TestUpgradeFromVersion1 opens a database as the first release left it (schema version 1,
// with data) and checks that Open adds the key-value and version switch tables and keeps
// the data.
func TestUpgradeFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nexus.db")
	s, err := storesqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Write(t.Context(), func(tx store.Tx) error { return tx.PutPlugin(store.Plugin{ID: "p1"}) }); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db := rawDB(t, path)
	for _, q := range []string{
		`DROP TABLE kv`, `DROP TABLE kv_shares`, `DROP TABLE version_switches`, `ALTER TABLE tokens DROP COLUMN expires_at`,
		`DROP TABLE replicas`, `DELETE FROM schema_migrations WHERE version > 1`,
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s = open(t, path)
	err = s.Write(t.Context(), func(tx store.Tx) error {
		if _, err := tx.Plugin("p1"); err != nil {
			return err
		}
		if err := tx.PutVersionSwitch(store.VersionSwitch{PluginID: "p1", Old: store.Plugin{ID: "p1"}}); err != nil {
			return err
		}
		return tx.PutKV(store.KVEntry{PluginID: "p1", Key: "k", Value: []byte(`1`), Version: 1})
	})
	if err != nil {
		t.Fatalf("Write after the upgrade: %v", err)
	}
	rows := migrationRows(t, path)
	if len(rows) < 3 || rows[1].version != 2 || rows[2].version != 3 {
		t.Errorf("schema_migrations after the upgrade: %+v", rows)
	}
}

// TestUpgradeFromVersion3 opens a database as schema version 3 left it, with a token, and
// checks that Open adds token expiry and that the old token has none (it never expires).
func TestUpgradeFromVersion3(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nexus.db")
	s, err := storesqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db := rawDB(t, path)
	for _, q := range []string{
		`ALTER TABLE tokens DROP COLUMN expires_at`, `DROP TABLE replicas`,
		`DELETE FROM schema_migrations WHERE version > 3`,
		`INSERT INTO tokens (id, name, role, plugin_id, hash, created_at, revoked_at) VALUES ('tok-old', 'old', 'user', '', x'01', 1, NULL)`,
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s = open(t, path)
	expires := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	err = s.Write(t.Context(), func(tx store.Tx) error {
		old, err := tx.TokenByHash([]byte{1})
		if err != nil {
			return err
		}
		if old.ID != "tok-old" || !old.ExpiresAt.IsZero() {
			t.Errorf("token from version 3: %+v, want tok-old without expiry", old)
		}
		return tx.PutToken(store.Token{ID: "tok-new", Role: store.RoleUser, Hash: []byte{2}, ExpiresAt: expires})
	})
	if err != nil {
		t.Fatalf("Write after the upgrade: %v", err)
	}
	err = s.Read(t.Context(), func(tx store.Tx) error {
		tok, err := tx.TokenByHash([]byte{2})
		if err == nil && !tok.ExpiresAt.Equal(expires) {
			t.Errorf("ExpiresAt after the upgrade = %v, want %v", tok.ExpiresAt, expires)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Read after the upgrade: %v", err)
	}
	rows := migrationRows(t, path)
	if len(rows) < 3 || rows[2].version != 3 {
		t.Errorf("schema_migrations after the upgrade: %+v", rows)
	}
}
