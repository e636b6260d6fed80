// Package storesqlite is the default store.Store: one SQLite file, opened with the pure-Go
// driver modernc.org/sqlite (no cgo).
//
// The database runs in WAL mode with synchronous=NORMAL, foreign keys on and a busy
// timeout, so read transactions proceed while a write transaction is open, and a crash of
// the process never loses or half-applies a committed transaction. The schema is created
// and upgraded by Open from migrations compiled into the package; Open refuses a database
// whose schema is newer than this code knows (ErrSchemaTooNew).
//
// Write transactions are serialised inside the process: they run on a single connection,
// each starting with BEGIN IMMEDIATE, so concurrent Write calls wait their turn (honouring
// their context) rather than failing with SQLITE_BUSY. Read transactions run on a separate
// pool of read-only connections and see a consistent snapshot of the last committed state.
package storesqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// ErrSchemaTooNew is returned by Open when the database was migrated by a newer version of
// Nexus than this one: its schema version is above the newest migration this code knows.
var ErrSchemaTooNew = errors.New("storesqlite: database schema is newer than this version of Nexus supports")

const (
	// busyTimeoutMS is how long a connection waits for a lock held by another connection
	// (in practice another process, as writes in this process are serialised).
	busyTimeoutMS = 5000
	// maxReaders bounds the read-only connection pool.
	maxReaders = 4
)

// Store is a store.Store kept in one SQLite file. It is safe for concurrent use.
//
// At most one write transaction runs at a time; other Write calls wait for it, or for
// their context to end. A Write must not call Write on the same Store from inside its
// function: the inner call waits for the outer one, which cannot finish, until the inner
// call's context ends. Reads may be nested in a Write but do not see its uncommitted changes.
type Store struct {
	// writer holds at most one connection, which serialises write transactions; every
	// transaction it begins is BEGIN IMMEDIATE. Assigned once in Open.
	writer *sql.DB
	// reader is the pool of query_only connections used by Read. Assigned once in Open.
	reader *sql.DB

	// closeOnce makes Close idempotent; closeErr is the result of the first Close and is
	// written only inside closeOnce.
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// FileName is the database's file in a server's data directory.
const FileName = "nexus.db"

// Open opens (creating it if needed) the SQLite database at path, applies any pending
// schema migrations and returns the store. The caller must Close it.
//
// Open fails with ErrSchemaTooNew when the database belongs to a newer Nexus, and with an
// error when the file system cannot hold a WAL-mode database.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("storesqlite: open: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("storesqlite: open %s: %w", path, err)
	}
	drv, err := newDriver()
	if err != nil {
		return nil, fmt.Errorf("storesqlite: open %s: %w", abs, err)
	}

	writer := sql.OpenDB(connector{drv: drv, dsn: dsn(abs, true)})
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)
	if err := checkWAL(ctx, writer); err != nil {
		return nil, errors.Join(fmt.Errorf("storesqlite: open %s: %w", abs, err), writer.Close())
	}
	if err := migrate(ctx, writer, migrations()); err != nil {
		return nil, errors.Join(fmt.Errorf("storesqlite: open %s: %w", abs, err), writer.Close())
	}

	reader := sql.OpenDB(connector{drv: drv, dsn: dsn(abs, false)})
	reader.SetMaxOpenConns(maxReaders)
	reader.SetMaxIdleConns(maxReaders)
	if err := reader.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("storesqlite: open %s: readers: %w", abs, err),
			reader.Close(), writer.Close())
	}
	return &Store{writer: writer, reader: reader}, nil
}

// Read runs fn in a read-only transaction and returns fn's error unchanged. The transaction
// sees one consistent snapshot, taken at its first read, and does not wait for an open
// write transaction. Write methods of the Tx fail.
func (s *Store) Read(ctx context.Context, fn func(store.Tx) error) error {
	sqlTx, err := s.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("storesqlite: begin read: %w", err)
	}
	t := &tx{ctx: ctx, sqlTx: sqlTx}
	defer func() {
		// Runs on return and on panic alike, so the connection goes back to the pool.
		t.done.Store(true)
		_ = sqlTx.Rollback()
	}()
	return fn(t)
}

// Write runs fn in one read-write transaction. It commits when fn returns nil and rolls
// back every change when fn returns an error, which Write returns unchanged. If ctx ends
// before the commit, nothing is committed and Write returns an error wrapping ctx.Err().
func (s *Store) Write(ctx context.Context, fn func(store.Tx) error) error {
	sqlTx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storesqlite: begin write: %w", err)
	}
	t := &tx{ctx: ctx, sqlTx: sqlTx, writable: true}
	finished := false
	defer func() {
		if !finished {
			// fn panicked: release the single write connection before the panic goes on.
			t.done.Store(true)
			_ = sqlTx.Rollback()
		}
	}()

	fnErr := fn(t)
	t.done.Store(true)
	finished = true
	if fnErr != nil {
		if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(fnErr, fmt.Errorf("storesqlite: rollback: %w", rbErr))
		}
		return fnErr
	}
	if err := ctx.Err(); err != nil {
		_ = sqlTx.Rollback()
		return fmt.Errorf("storesqlite: commit: %w", err)
	}
	if err := sqlTx.Commit(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, sql.ErrTxDone) {
			// database/sql rolled the transaction back when ctx ended.
			err = ctxErr
		}
		return fmt.Errorf("storesqlite: commit: %w", err)
	}
	return nil
}

// Close closes the store: Read and Write fail afterwards, and statements already running
// are waited for. Closing the last connection checkpoints the WAL into the database file.
// Close may be called more than once; later calls return the result of the first.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		rErr := s.reader.Close()
		wErr := s.writer.Close()
		if err := errors.Join(rErr, wErr); err != nil {
			s.closeErr = fmt.Errorf("storesqlite: close: %w", err)
		}
	})
	return s.closeErr
}

// dsn builds the driver's data source name for the database file at the absolute path:
// a file: URI (so any character in the path is safe) carrying the connection settings.
func dsn(path string, write bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.Itoa(busyTimeoutMS)+")")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if write {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	} else {
		q.Set("_query_only", "1")
	}
	p := filepath.ToSlash(path)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows drive paths: file:///C:/...
	}
	u := url.URL{Scheme: "file", Path: p, RawQuery: q.Encode()}
	return u.String()
}

// checkWAL opens the write connection and makes sure the database is in WAL mode; SQLite
// silently keeps another journal mode where WAL is impossible (some network file systems).
func checkWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, want WAL (is the file system local?)", mode)
	}
	return nil
}

// isConstraintUnique reports whether err is a UNIQUE or PRIMARY KEY constraint violation.
func isConstraintUnique(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}
