// Package storepg is a store.Store kept in PostgreSQL, for several Nexus servers sharing one
// state. It uses github.com/jackc/pgx/v5 and its pool (pgxpool).
//
// # Transactions
//
// Read runs a REPEATABLE READ, READ ONLY transaction: one snapshot of the last committed
// state, taken at its first statement, that never waits for writers and never fails
// because of them.
//
// Write runs a READ COMMITTED transaction that first takes a transaction-level advisory
// lock (writeLockKey), the same for every server on the database: write transactions run
// one at a time across all servers, as they do in one process with storesqlite. Each
// statement of a Write thus sees every earlier Write committed and nothing of a later one,
// so a read-modify-write sequence in one Write (a counter, a compare-and-set, a token looked
// up then stored) is never interleaved with another: the writes are serialisable without
// serialization failures, and fn runs exactly once. The alternative, SERIALIZABLE with
// retries on SQLSTATE 40001 and 40P01, would run fn again after a conflict, and the
// functions given to Write (in kv, registry, identity) keep results in variables of their
// callers and are not written to run twice. The cost is that writes do not overlap: a Write
// holds the lock for its round trips to the database, so keep them short (they are: the
// slow work of an install or an update happens outside the store). A Write must not call
// Write on the same database, from any Store: the inner call waits for the lock the outer
// one holds until the inner call's context ends.
//
// A statement that fails in PostgreSQL aborts its whole transaction. The Tx methods that
// report store.ErrConflict or store.ErrNotFound find that out without failing a statement
// (ON CONFLICT DO NOTHING, rows affected), so such a result leaves the transaction usable,
// as the store.Store contract asks. Any other database error aborts the transaction: later
// calls fail and Write returns an error.
//
// # Schema
//
// Open creates and upgrades the schema with the migrations compiled into the package
// (migrate.go), once, under a session-level advisory lock, so servers starting together do
// not race. Every migration names the oldest schema version whose code still works with
// the schema it leaves; a server opening a database migrated by a newer Nexus goes on when
// its own code is at least that version and refuses to start (ErrSchemaIncompatible)
// otherwise. See migrations for the rule.
//
// The tables live in the first schema of the connection's search_path (public unless the
// URL sets search_path); give Nexus a database, or a schema, of its own. The database must
// be UTF8-encoded. Times are bigint nanoseconds since the Unix epoch, UTC (NULL for the zero
// time): timestamptz keeps only microseconds, and the store keeps nanoseconds. Identifiers
// and keys are text COLLATE "C", so they order byte-wise as Go strings do, whatever the
// database's collation. Values the store does not interpret (manifests, configurations,
// KV values, audit details, log metadata) are bytea, returned byte for byte; the plugin
// records kept in backups and updates in flight are jsonb.
//
// PostgreSQL text holds neither NUL nor invalid UTF-8, which a plugin's output may contain:
// log messages, a plugin's status reason (which quotes the last lines of its output) and the
// caller-given text of audit entries (target, action, actor name, request id) are stored
// with each NUL and invalid byte replaced by U+FFFD. Other text with a NUL or
// invalid UTF-8 is refused with an error.
package storepg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// ErrSchemaIncompatible is matched (with errors.Is) by the error Open returns when the
// database was migrated by a newer Nexus whose schema this code cannot work with.
var ErrSchemaIncompatible = errors.New("storepg: the database schema is newer than this version of Nexus can work with")

const (
	// writeLockKey is the transaction-level advisory lock every Write takes first (and every
	// migration step), serialising writes across all servers on the database. The key is
	// "nexus-wr" in ASCII; keys are per database.
	writeLockKey int64 = 0x6e65787573_2d7772
	// migrateLockKey is the session-level advisory lock held while migrating ("nexus-mg").
	migrateLockKey int64 = 0x6e65787573_2d6d67
	// rollbackTimeout bounds a rollback sent after the Write's context ended.
	rollbackTimeout = 5 * time.Second
)

// Store is a store.Store kept in a PostgreSQL database. It is safe for concurrent use.
type Store struct {
	// pool is the connection pool; assigned once in Open, safe for concurrent use.
	pool *pgxpool.Pool
	// schema is what Open found or left: assigned once.
	schema Schema
	// channel is the notification channel of the change feed (feed.go); log gets what the
	// feed cannot return. Assigned once.
	channel string
	log     *slog.Logger
	// writer admits one Write of this process at a time to the pool: Writes queued for the
	// database's write lock would otherwise hold every pooled connection, and Reads wait
	// behind them.
	writer chan struct{}

	// closeOnce makes Close idempotent.
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Schema describes the schema of an opened database.
type Schema struct {
	// Version is the database's schema version (its newest migration).
	Version int
	// CompatibleFrom is the oldest schema version whose code works with the database.
	CompatibleFrom int
	// Known is the newest schema version this code knows; above Version only when the
	// database was migrated by a newer Nexus.
	Known int
}

// Option configures Open.
type Option interface {
	apply(*options)
}

type options struct {
	log *slog.Logger
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithLogger logs the migrations Open applies, and a database migrated by a newer Nexus.
// By default nothing is logged.
func WithLogger(log *slog.Logger) Option {
	return optionFunc(func(o *options) { o.log = log })
}

// Open connects to the PostgreSQL database at url (postgres://user:password@host:port/db?...,
// or key=value settings; pgxpool's pool_* settings apply), brings its schema up to date and
// returns the store. The caller must Close it.
//
// Open fails with ErrSchemaIncompatible when the database belongs to a newer Nexus whose
// schema this code cannot work with, and with an error when the database is not UTF8.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	return open(ctx, url, migrations(), opts)
}

// open is Open with the migrations given (tests give other lists).
func open(ctx context.Context, url string, ms []migration, opts []Option) (*Store, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if err := checkMigrations(ms); err != nil {
		return nil, fmt.Errorf("storepg: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, errors.New("storepg: the database URL is not a valid PostgreSQL connection string")
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "nexus"
	}
	// A server cut off from the database in the middle of a Write must not hold the write
	// lock, which every server waits for, until TCP gives up on it (hours): PostgreSQL ends a
	// session idle in a transaction after this long. Writes are short round trips.
	if _, ok := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !ok {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "60s"
	}
	target := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("storepg: open %s: %w", target, err)
	}
	if err := checkServer(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("storepg: open %s: %w", target, err)
	}
	schema, err := migrate(ctx, pool, ms, o.log)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("storepg: open %s: %w", target, err)
	}
	var current string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&current); err != nil {
		pool.Close()
		return nil, fmt.Errorf("storepg: open %s: %w", target, err)
	}
	return &Store{pool: pool, schema: schema, channel: channelFor(current), log: o.log, writer: make(chan struct{}, 1)}, nil
}

// Schema returns the schema versions Open found or left.
func (s *Store) Schema() Schema { return s.schema }

// Read runs fn in a read-only transaction and returns fn's error unchanged. The transaction
// sees one consistent snapshot, taken at its first statement, and does not wait for open
// write transactions. Write methods of the Tx fail.
func (s *Store) Read(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storepg: begin read: %w", err)
	}
	pgTx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("storepg: begin read: %w", err)
	}
	t := &tx{ctx: ctx, pgTx: pgTx}
	defer func() {
		// Runs on return and on panic alike, so the connection goes back to the pool.
		t.done.Store(true)
		rollback(ctx, pgTx)
	}()
	return fn(t)
}

// Write runs fn in one read-write transaction, after every other Write on the database
// (from any server) has committed or rolled back. It commits when fn returns nil and rolls
// back every change when fn returns an error, which Write returns unchanged. If ctx ends
// before the commit, nothing is committed and Write returns an error wrapping ctx.Err().
func (s *Store) Write(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storepg: begin write: %w", err)
	}
	select {
	case s.writer <- struct{}{}:
		defer func() { <-s.writer }()
	case <-ctx.Done():
		return fmt.Errorf("storepg: begin write: wait for this server's other writes: %w", ctx.Err())
	}
	pgTx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite})
	if err != nil {
		return fmt.Errorf("storepg: begin write: %w", err)
	}
	t := &tx{ctx: ctx, pgTx: pgTx, writable: true}
	finished := false
	defer func() {
		if !finished {
			// fn panicked: roll back (releasing the write lock) before the panic goes on.
			t.done.Store(true)
			rollback(ctx, pgTx)
		}
	}()
	if _, err := pgTx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		finished = true
		rollback(ctx, pgTx)
		return fmt.Errorf("storepg: begin write: wait for the write lock: %w", err)
	}

	fnErr := fn(t)
	t.done.Store(true)
	finished = true
	if fnErr != nil {
		rollback(ctx, pgTx)
		return fnErr
	}
	if err := ctx.Err(); err != nil {
		rollback(ctx, pgTx)
		return fmt.Errorf("storepg: commit: %w", err)
	}
	if err := t.sendNotices(s.channel); err != nil {
		rollback(ctx, pgTx)
		return fmt.Errorf("storepg: commit: notify the other servers: %w", err)
	}
	// ctx was checked above: the commit itself is not cut short by it, since a COMMIT whose
	// connection is closed half-way may have committed, and Write would report otherwise.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if err := pgTx.Commit(cctx); err != nil {
		rollback(ctx, pgTx)
		return fmt.Errorf("storepg: commit: %w", err)
	}
	return nil
}

// Close closes the pool: Read and Write fail afterwards, and Close waits for the
// connections in use to be returned. Close may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// rollback ends a transaction that is not to be committed. When ctx has ended it uses a
// context of its own, so the connection is cleaned up rather than closed; a rollback that
// fails closes the connection (pgx), which ends the transaction on the server.
func rollback(ctx context.Context, pgTx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	_ = pgTx.Rollback(rctx)
}

// checkServer makes sure the database can hold the store's text.
func checkServer(ctx context.Context, pool *pgxpool.Pool) error {
	var enc string
	if err := pool.QueryRow(ctx, `SHOW server_encoding`).Scan(&enc); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if enc != "UTF8" {
		return fmt.Errorf("the database's encoding is %s; Nexus needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)", enc)
	}
	return nil
}
