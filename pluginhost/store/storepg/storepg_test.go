package storepg_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
)

// open opens a store on url and closes it when the test ends.
func open(t *testing.T, url string) *storepg.Store {
	t.Helper()
	s, err := storepg.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawConn connects to url directly, without the store, and closes the connection when the
// test ends.
func rawConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

type migrationRow struct {
	version, compatibleFrom int
	name                    string
	appliedAt               int64
}

func migrationRows(t *testing.T, url string) []migrationRow {
	t.Helper()
	rows, err := rawConn(t, url).Query(t.Context(),
		`SELECT version, compatible_from, name, applied_at FROM nexus_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read nexus_schema_migrations: %v", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (migrationRow, error) {
		var m migrationRow
		err := r.Scan(&m.version, &m.compatibleFrom, &m.name, &m.appliedAt)
		return m, err
	})
	if err != nil {
		t.Fatalf("read nexus_schema_migrations: %v", err)
	}
	return out
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	url := shared.NewDatabase(t)
	at := time.Date(2026, 11, 24, 12, 0, 0, 5, time.UTC)

	s, err := storepg.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	known := len(storepg.Migrations())
	if got, want := s.Schema(), (storepg.Schema{Version: known, CompatibleFrom: 1, Known: known}); got != want {
		t.Errorf("Schema() = %+v, want %+v", got, want)
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
	if err := s.Write(t.Context(), func(store.Tx) error { return nil }); err == nil {
		t.Error("Write after Close succeeded")
	}
	first := migrationRows(t, url)
	if len(first) != len(storepg.Migrations()) || first[0].version != 1 {
		t.Fatalf("nexus_schema_migrations after the first Open: %+v", first)
	}

	for i := range 2 {
		s := open(t, url)
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
		if again := migrationRows(t, url); fmt.Sprint(again) != fmt.Sprint(first) {
			t.Errorf("reopen %d re-ran migrations:\n got %+v\nwant %+v", i, again, first)
		}
	}
}

// TestConcurrentOpen starts several servers on a new database at once: the migration lock
// lets one migrate while the others wait, and each step is applied once.
func TestConcurrentOpen(t *testing.T) {
	const servers = 6
	url := shared.NewDatabase(t)
	ms := storepg.Migrations()
	slow := len(ms) + 1
	ms = append(ms, storepg.NewMigration(slow, "slow additive step", ms[len(ms)-1].CompatibleFrom(),
		`SELECT pg_sleep(0.2); CREATE TABLE extra (id int)`))
	var (
		wg   sync.WaitGroup
		errs = make([]error, servers)
	)
	for i := range servers {
		wg.Go(func() {
			s, err := storepg.OpenWith(t.Context(), url, ms)
			if err == nil {
				err = s.Write(t.Context(), func(tx store.Tx) error { return tx.PutPlugin(store.Plugin{ID: "p" + strconv.Itoa(i)}) })
				_ = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("server %d: %v", i, err)
		}
	}
	rows := migrationRows(t, url)
	if len(rows) != slow {
		t.Errorf("nexus_schema_migrations: %+v, want versions 1 to %d once each", rows, slow)
	}
	for i, r := range rows {
		if r.version != i+1 {
			t.Errorf("nexus_schema_migrations[%d] is version %d, want %d", i, r.version, i+1)
		}
	}
}

// additive and breaking are steps a newer Nexus might add after the package's: one an
// older server can work with, one it cannot.
func newerSteps(compatibleFrom int) []storepg.Migration {
	ms := storepg.Migrations()
	next := len(ms) + 1
	if compatibleFrom == 0 { // additive: keeps the compatibility of the last step
		return append(ms, storepg.NewMigration(next, "plugin notes", ms[len(ms)-1].CompatibleFrom(),
			`ALTER TABLE plugins ADD COLUMN note text; CREATE TABLE plugin_notes (plugin_id text PRIMARY KEY, note text NOT NULL)`))
	}
	return append(ms, storepg.NewMigration(next, "rename dir", compatibleFrom,
		`ALTER TABLE plugins RENAME COLUMN dir TO package_dir`))
}

// TestRollingUpgrade: a newer server migrates the database additively while an older one
// runs on it, and the older one goes on working, and can restart.
func TestRollingUpgrade(t *testing.T) {
	url := shared.NewDatabase(t)
	old := open(t, url)
	put := func(s *storepg.Store, id string) error {
		return s.Write(t.Context(), func(tx store.Tx) error { return tx.PutPlugin(store.Plugin{ID: id, Dir: "/p/" + id}) })
	}
	if err := put(old, "before"); err != nil {
		t.Fatalf("old server: %v", err)
	}

	newer, err := storepg.OpenWith(t.Context(), url, newerSteps(0))
	if err != nil {
		t.Fatalf("newer server: Open: %v", err)
	}
	defer newer.Close()
	known := len(storepg.Migrations())
	if got, want := newer.Schema(), (storepg.Schema{Version: known + 1, CompatibleFrom: 1, Known: known + 1}); got != want {
		t.Errorf("newer server: Schema() = %+v, want %+v", got, want)
	}

	// The running older server still reads and writes.
	if err := put(old, "after"); err != nil {
		t.Fatalf("old server after the newer one migrated: %v", err)
	}
	if err := put(newer, "newer"); err != nil {
		t.Fatalf("newer server: %v", err)
	}
	err = old.Read(t.Context(), func(tx store.Tx) error {
		ps, err := tx.Plugins()
		if err != nil {
			return err
		}
		if len(ps) != 3 {
			t.Errorf("old server sees %d plugins, want 3", len(ps))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("old server: Read: %v", err)
	}

	// An older server (re)starting on the newer schema starts, knowing it is behind.
	again, err := storepg.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("old server restarting on a compatible newer schema: %v", err)
	}
	defer again.Close()
	if got, want := again.Schema(), (storepg.Schema{Version: known + 1, CompatibleFrom: 1, Known: known}); got != want {
		t.Errorf("restarted old server: Schema() = %+v, want %+v", got, want)
	}
	if err := put(again, "restarted"); err != nil {
		t.Fatalf("restarted old server: %v", err)
	}
	if rows := migrationRows(t, url); len(rows) != known+1 {
		t.Errorf("nexus_schema_migrations: %+v", rows)
	}
}

// TestIncompatibleSchemaRefused: an older server does not start on a database a newer one
// migrated with a breaking step, and says which versions are involved.
func TestIncompatibleSchemaRefused(t *testing.T) {
	url := shared.NewDatabase(t)
	known := len(storepg.Migrations())
	newer, err := storepg.OpenWith(t.Context(), url, newerSteps(known+1))
	if err != nil {
		t.Fatalf("newer server: Open: %v", err)
	}
	if err := newer.Close(); err != nil {
		t.Fatal(err)
	}
	before := migrationRows(t, url)

	s, err := storepg.Open(t.Context(), url)
	if err == nil {
		_ = s.Close()
		t.Fatal("an older server opened a database with an incompatible newer schema")
	}
	if !errors.Is(err, storepg.ErrSchemaIncompatible) {
		t.Errorf("Open: error %v, want ErrSchemaIncompatible", err)
	}
	for _, want := range []string{
		fmt.Sprintf("at version %d", known+1),
		fmt.Sprintf("schema version %d or later", known+1),
		fmt.Sprintf("up to %d", known),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open: error %q does not say %q", err, want)
		}
	}
	if after := migrationRows(t, url); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refused Open changed nexus_schema_migrations:\n got %+v\nwant %+v", after, before)
	}

	// A server that knows the breaking step opens it.
	s, err = storepg.OpenWith(t.Context(), url, newerSteps(known+1))
	if err != nil {
		t.Fatalf("a server knowing the breaking step: %v", err)
	}
	_ = s.Close()
}

// TestUpgrade: a database at an older schema is brought up to date, keeping its data.
func TestUpgrade(t *testing.T) {
	url := shared.NewDatabase(t)
	old := open(t, url)
	if err := old.Write(t.Context(), func(tx store.Tx) error { return tx.PutPlugin(store.Plugin{ID: "p1"}) }); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	ms := newerSteps(0)
	s, err := storepg.OpenWith(t.Context(), url, ms)
	if err != nil {
		t.Fatalf("Open with a newer step: %v", err)
	}
	defer s.Close()
	rows := migrationRows(t, url)
	if len(rows) != len(ms) || rows[len(rows)-1].name != "plugin notes" || rows[len(rows)-1].compatibleFrom != 1 {
		t.Errorf("nexus_schema_migrations after the upgrade: %+v", rows)
	}
	var note *string
	if err := rawConn(t, url).QueryRow(t.Context(), `SELECT note FROM plugins WHERE id = 'p1'`).Scan(&note); err != nil || note != nil {
		t.Errorf("the new column on the kept row: %v, %v", note, err)
	}
}

func TestMigrationRules(t *testing.T) {
	m1 := storepg.Migrations()[0]
	tests := []struct {
		name string
		ms   []storepg.Migration
	}{
		{"version gap", []storepg.Migration{m1, storepg.NewMigration(3, "x", 1, "SELECT 1")}},
		{"compatible from after its version", []storepg.Migration{m1, storepg.NewMigration(2, "x", 3, "SELECT 1")}},
		{"compatible from going back", []storepg.Migration{m1, storepg.NewMigration(2, "x", 2, "SELECT 1"), storepg.NewMigration(3, "y", 1, "SELECT 1")}},
		{"compatible from 0", []storepg.Migration{storepg.NewMigration(1, "x", 0, "SELECT 1")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := shared.NewDatabase(t)
			s, err := storepg.OpenWith(t.Context(), url, tc.ms)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
	if err := errors.Join(checkReleased(storepg.Migrations())...); err != nil {
		t.Error(err)
	}
}

// checkReleased holds the package's own steps to the rules.
func checkReleased(ms []storepg.Migration) []error {
	var errs []error
	prev := 1
	for i, m := range ms {
		if m.Version() != i+1 || m.CompatibleFrom() < prev || m.CompatibleFrom() > m.Version() {
			errs = append(errs, fmt.Errorf("migration %d breaks the rules: %+v", i, m))
		}
		prev = m.CompatibleFrom()
	}
	return errs
}

// TestWritesAcrossServers: two stores on one database stand in for two servers; their
// read-modify-write transactions never interleave and never fail because of each other.
func TestWritesAcrossServers(t *testing.T) {
	const (
		perStore = 4
		each     = 25
	)
	url := shared.NewDatabase(t)
	stores := []*storepg.Store{open(t, url), open(t, url)}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
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
					err := s.Write(ctx, func(tx store.Tx) error {
						n := 0
						if v, err := tx.Setting("counter"); err == nil {
							n, _ = strconv.Atoi(string(v))
						} else if !errors.Is(err, store.ErrNotFound) {
							return err
						}
						if err := tx.PutPlugin(store.Plugin{ID: fmt.Sprintf("s%d-g%d-%02d", si, g, i)}); err != nil {
							return err
						}
						return tx.PutSetting("counter", []byte(strconv.Itoa(n+1)))
					})
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
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
	want := len(stores) * perStore * each
	err := stores[1].Read(ctx, func(tx store.Tx) error {
		ps, err := tx.Plugins()
		if err != nil {
			return err
		}
		v, err := tx.Setting("counter")
		if err != nil {
			return err
		}
		if len(ps) != want || string(v) != strconv.Itoa(want) {
			t.Errorf("%d plugins, counter %s; want %d and %d (lost updates)", len(ps), v, want, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
}

// TestWriteWaitsWithItsContext: a Write waiting for another server's Write gives up when its
// context ends, and the other commits.
func TestWriteWaitsWithItsContext(t *testing.T) {
	url := shared.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	inWrite, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- a.Write(t.Context(), func(tx store.Tx) error {
			if err := tx.PutSetting("holder", []byte("a")); err != nil {
				return err
			}
			close(inWrite)
			<-release
			return nil
		})
	}()
	<-inWrite
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Write(ctx, func(tx store.Tx) error { return tx.PutSetting("holder", []byte("b")) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Write waiting for the lock: error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the waiting Write took %v to give up", d)
	}
	// A Read does not wait.
	if err := b.Read(t.Context(), func(tx store.Tx) error {
		_, err := tx.Setting("holder")
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Read during the Write: %v, want ErrNotFound", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the holding Write: %v", err)
	}
	// b's pool is usable again, and sees a's commit.
	if err := b.Write(t.Context(), func(tx store.Tx) error {
		v, err := tx.Setting("holder")
		if err == nil && string(v) != "a" {
			t.Errorf("holder = %q, want a", v)
		}
		return err
	}); err != nil {
		t.Fatalf("Write after the wait: %v", err)
	}
}

// TestTextFromPluginOutput: a plugin's output may hold NUL and invalid UTF-8, which
// PostgreSQL text cannot; log messages, status reasons and the caller-given text of audit
// entries are kept with U+FFFD instead, and the rest of the batch is not lost.
func TestTextFromPluginOutput(t *testing.T) {
	s := open(t, shared.NewDatabase(t))
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bad := "CRASH\x00 at \xff\xfe end"
	const clean = "CRASH\ufffd at \ufffd\ufffd end"
	err := s.Write(t.Context(), func(tx store.Tx) error {
		if err := tx.AppendLogs([]store.LogRecord{
			{PluginID: "p", Time: at, Level: "INFO", Message: "before"},
			{PluginID: "p", Time: at.Add(time.Second), Level: "ERROR", Message: bad},
		}); err != nil {
			return err
		}
		p := store.Plugin{ID: "p", Status: "error", StatusReason: bad}
		if err := tx.PutPlugin(p); err != nil {
			return err
		}
		if err := tx.AppendAudit(store.AuditEntry{ID: "a1", Time: at, Actor: "tok", ActorName: bad, Role: store.RoleAdmin,
			Action: "UninstallPlugin", Target: bad, Outcome: "denied", RequestID: bad}); err != nil {
			return err
		}
		return tx.PutBackup(store.Backup{ID: "b", PluginID: "p", Plugin: p})
	})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	err = s.Read(t.Context(), func(tx store.Tx) error {
		recs, total, err := tx.Logs(store.LogFilter{PluginID: "p", Page: 1, PerPage: 10})
		if err != nil {
			return err
		}
		if total != 2 || recs[0].Message != clean || recs[1].Message != "before" {
			t.Errorf("logs: %d, %+v", total, recs)
		}
		found, _, err := tx.Logs(store.LogFilter{PluginID: "p", Page: 1, PerPage: 10, Search: "crash\x00 AT"})
		if err != nil {
			return err
		}
		if len(found) != 1 {
			t.Errorf("search found %d records, want 1", len(found))
		}
		p, err := tx.Plugin("p")
		if err != nil {
			return err
		}
		b, err := tx.Backup("b")
		if err != nil {
			return err
		}
		if p.StatusReason != clean || b.Plugin.StatusReason != clean {
			t.Errorf("status reason %q, in the backup %q; want %q", p.StatusReason, b.Plugin.StatusReason, clean)
		}
		audit, err := tx.Audit(store.AuditFilter{})
		if err != nil {
			return err
		}
		if len(audit) != 1 || audit[0].Target != clean || audit[0].ActorName != clean || audit[0].RequestID != clean {
			t.Errorf("audit %+v", audit)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}

	// Other text is refused, with an error rather than changed.
	err = s.Write(t.Context(), func(tx store.Tx) error { return tx.PutPlugin(store.Plugin{ID: "a\x00b"}) })
	if err == nil {
		t.Error("a plugin id with a NUL was stored")
	}
}

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"":             "",
		"plain":        "plain",
		"é日本":          "é日本",
		"a\x00b":       "a\ufffdb",
		"\xff":         "\ufffd",
		"a\xe6\x97b":   "a\ufffd\ufffdb", // a truncated three-byte sequence
		"\ufffd":       "\ufffd",
		"ok\x00\x00ok": "ok\ufffd\ufffdok",
	} {
		if got := storepg.CleanText(in); got != want {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		prefix, want string
		ok           bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"a/b", "a/c", true},
		{"a\x7f", "a\u0080", true},
		{"é", "ê", true},
		{"\ud7ff", "\ue000", true}, // the surrogates are skipped
		{"a\U0010ffff", "b", true},
		{"\U0010ffff\U0010ffff", "", false},
		{"日本", "日札", true}, // U+672C, U+672D
	}
	for _, tc := range tests {
		got, ok := storepg.PrefixEnd(tc.prefix)
		if got != tc.want || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tc.prefix, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	url := shared.NewDatabase(t)
	tests := []struct {
		name, url, notInError string
	}{
		{"not a URL", "postgres://nexus:s3cret@127.0.0.1:notaport/db", "s3cret"},
		{"no such database", strings.Replace(url, "/test_", "/missing_", 1), ""},
		{"no server", "postgres://nexus@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := storepg.Open(t.Context(), tc.url)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q) succeeded", tc.url)
			}
			if tc.notInError != "" && strings.Contains(err.Error(), tc.notInError) {
				t.Errorf("the error shows %q: %v", tc.notInError, err)
			}
		})
	}
}

func TestInvalidInput(t *testing.T) {
	s := open(t, shared.NewDatabase(t))
	tests := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"plugin without id", func(tx store.Tx) error { return tx.PutPlugin(store.Plugin{}) }},
		{"token without hash", func(tx store.Tx) error { return tx.PutToken(store.Token{ID: "t"}) }},
		{"time before 1678", func(tx store.Tx) error {
			return tx.PutPlugin(store.Plugin{ID: "p", InstalledAt: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)})
		}},
		{"time after 2261", func(tx store.Tx) error {
			return tx.AppendLogs([]store.LogRecord{{PluginID: "p", Time: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}})
		}},
		{"negative trim", func(tx store.Tx) error { return tx.TrimLogs("p", -1) }},
		{"kv list limit 0", func(tx store.Tx) error {
			_, err := tx.KVList("p", "", "", 0)
			return err
		}},
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
	s := open(t, shared.NewDatabase(t))
	err := s.Write(t.Context(), func(tx store.Tx) error {
		return tx.AppendLogs([]store.LogRecord{{PluginID: "p", Time: time.Unix(1, 0), Level: "INFO", Message: "m"}})
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

// TestIndexes checks that the hot queries can be served by their indexes, in the order they
// read (no sort step). Sequential scans are made as costly as the planner allows, and for
// ordered queries bitmap scans and sorts too: the tables are small here, and a planner would
// rightly scan and sort them. A sort left in a plan is one no index can spare.
func TestIndexes(t *testing.T) {
	url := shared.NewDatabase(t)
	open(t, url)
	conn := rawConn(t, url)
	if _, err := conn.Exec(t.Context(), `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, query, index string
		sorted             bool // the query has ORDER BY and the index must give it
	}{
		{"token by hash", `SELECT * FROM tokens WHERE hash = '\x01'::bytea`, "tokens_hash", false},
		{"tokens newest first", `SELECT * FROM tokens ORDER BY created_at DESC NULLS LAST, seq DESC`, "tokens_created_at", true},
		{"tokens of a plugin", `DELETE FROM tokens WHERE plugin_id = 'p'`, "tokens_plugin_id", false},
		{"logs page", `SELECT * FROM logs WHERE plugin_id = 'p' AND time >= 1 AND time <= 2 ORDER BY time DESC NULLS LAST, seq DESC LIMIT 10`, "logs_plugin_time", true},
		{"logs trim", `SELECT seq FROM logs WHERE plugin_id = 'p' ORDER BY time DESC NULLS LAST, seq DESC OFFSET 10`, "logs_plugin_time", true},
		{"backups of a plugin", `SELECT * FROM backups WHERE plugin_id = 'p' ORDER BY created_at DESC NULLS LAST, seq DESC`, "backups_plugin_created_at", true},
		{"audit of a target", `SELECT * FROM audit WHERE target = 't' ORDER BY time DESC NULLS LAST, seq DESC LIMIT 10`, "audit_target_time", true},
		{"audit newest first", `SELECT * FROM audit ORDER BY time DESC NULLS LAST, seq DESC LIMIT 10`, "audit_time", true},
		{"kv page", `SELECT * FROM kv WHERE plugin_id = 'p' AND key >= 'a' AND key > '' AND key < 'b' ORDER BY key LIMIT 10`, "kv_pkey", true},
		{"expired kv", `SELECT plugin_id, key FROM kv WHERE expires_at IS NOT NULL AND expires_at < 1 ORDER BY expires_at LIMIT 10`, "kv_expires_at", true},
		{"kv shares of a reader", `SELECT * FROM kv_shares WHERE plugin_id = 'p' OR reader_id = 'p'`, "kv_shares_reader_id", false},
		{"plugins by id", `SELECT * FROM plugins ORDER BY id`, "plugins_pkey", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			allow := strconv.FormatBool(!tc.sorted)
			if _, err := conn.Exec(t.Context(), `SELECT set_config('enable_bitmapscan', $1, false), set_config('enable_sort', $1, false)`, allow); err != nil {
				t.Fatal(err)
			}
			rows, err := conn.Query(t.Context(), "EXPLAIN "+tc.query)
			if err != nil {
				t.Fatalf("EXPLAIN: %v", err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatalf("EXPLAIN: %v", err)
			}
			plan := strings.Join(lines, "\n")
			if !strings.Contains(plan, tc.index) {
				t.Errorf("the plan does not use %s:\n%s", tc.index, plan)
			}
			if tc.sorted && strings.Contains(plan, "Sort") {
				t.Errorf("the plan sorts instead of reading %s in order:\n%s", tc.index, plan)
			}
		})
	}
}

// TestServerRestart: the store survives a restart of PostgreSQL (its pool reconnects) and a
// crash of it (committed writes are kept).
func TestServerRestart(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	s := open(t, srv.NewDatabase(t))
	put := func(key string) error {
		return s.Write(t.Context(), func(tx store.Tx) error { return tx.PutSetting(key, []byte(key)) })
	}
	if err := put("before"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	// The postmaster is gone, but a backend of an open connection notices only after a
	// moment (it may still commit one write): writes fail from then on.
	deadline := time.Now().Add(5 * time.Second)
	for put("down") == nil {
		if time.Now().After(deadline) {
			t.Fatal("writes still succeed 5s after PostgreSQL was killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// The pool's broken connections fail at most once each.
	var err error
	for i := range 10 {
		if err = put("after"); err == nil {
			break
		}
		t.Logf("Write %d after the restart: %v", i, err)
	}
	if err != nil {
		t.Fatalf("Write after PostgreSQL restarted: %v", err)
	}
	err = s.Read(t.Context(), func(tx store.Tx) error {
		for _, k := range []string{"before", "after"} {
			if _, err := tx.Setting(k); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Read after the restart: %v", err)
	}
}

// TestSearchPath: a URL's search_path puts the tables in a schema of their own, so two
// deployments can share a database.
func TestSearchPath(t *testing.T) {
	url := shared.NewDatabase(t)
	if _, err := rawConn(t, url).Exec(t.Context(), `CREATE SCHEMA one; CREATE SCHEMA two`); err != nil {
		t.Fatal(err)
	}
	one, two := open(t, url+"&search_path=one"), open(t, url+"&search_path=two")
	if err := one.Write(t.Context(), func(tx store.Tx) error { return tx.PutSetting("k", []byte("one")) }); err != nil {
		t.Fatal(err)
	}
	err := two.Read(t.Context(), func(tx store.Tx) error {
		_, err := tx.Setting("k")
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a setting of schema one seen in schema two: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := rawConn(t, url).QueryRow(t.Context(), `SELECT count(*) FROM one.settings`).Scan(&n); err != nil || n != 1 {
		t.Errorf("one.settings holds %d rows (%v), want 1", n, err)
	}
}
