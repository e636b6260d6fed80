package storesqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// migration is one step of the schema. Steps are numbered 1, 2, 3... and never change once
// released: a schema change is a new step appended to migrations.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns every schema step in order.
//
// Times are INTEGER nanoseconds since the Unix epoch, UTC (NULL for the zero time), and so
// are durations; lists of strings are JSON arrays in TEXT columns; booleans are 0 or 1.
func migrations() []migration {
	return []migration{
		{version: 1, name: "initial schema", sql: `
CREATE TABLE plugins (
	id                 TEXT NOT NULL PRIMARY KEY,
	version            TEXT NOT NULL,
	manifest           BLOB,
	dir                TEXT NOT NULL,
	source             TEXT NOT NULL,
	package_sha256     TEXT NOT NULL,
	enabled            INTEGER NOT NULL,
	status             TEXT NOT NULL,
	status_reason      TEXT NOT NULL,
	config             BLOB,
	config_updated_at  INTEGER,
	requested          TEXT NOT NULL,
	granted            TEXT NOT NULL,
	denied             TEXT NOT NULL,
	security_level     TEXT NOT NULL,
	sandbox_enabled    INTEGER NOT NULL,
	limit_memory_mb    INTEGER NOT NULL,
	limit_cpu_percent  INTEGER NOT NULL,
	limit_file_handles INTEGER NOT NULL,
	installed_at       INTEGER,
	updated_at         INTEGER
) STRICT;

CREATE TABLE tokens (
	id         TEXT NOT NULL PRIMARY KEY,
	name       TEXT NOT NULL,
	role       TEXT NOT NULL,
	plugin_id  TEXT NOT NULL,
	hash       BLOB NOT NULL,
	created_at INTEGER,
	revoked_at INTEGER
) STRICT;
CREATE UNIQUE INDEX tokens_hash ON tokens (hash);
CREATE INDEX tokens_plugin_id ON tokens (plugin_id);
CREATE INDEX tokens_created_at ON tokens (created_at);

CREATE TABLE audit (
	seq        INTEGER PRIMARY KEY,
	id         TEXT NOT NULL UNIQUE,
	time       INTEGER,
	actor      TEXT NOT NULL,
	actor_name TEXT NOT NULL,
	role       TEXT NOT NULL,
	action     TEXT NOT NULL,
	target     TEXT NOT NULL,
	outcome    TEXT NOT NULL,
	request_id TEXT NOT NULL,
	details    BLOB
) STRICT;
CREATE INDEX audit_time ON audit (time);
CREATE INDEX audit_target_time ON audit (target, time);

CREATE TABLE logs (
	seq        INTEGER PRIMARY KEY,
	plugin_id  TEXT NOT NULL,
	time       INTEGER,
	level      TEXT NOT NULL,
	level_rank INTEGER NOT NULL,
	message    TEXT NOT NULL,
	metadata   BLOB
) STRICT;
CREATE INDEX logs_plugin_time ON logs (plugin_id, time);

CREATE TABLE backups (
	id         TEXT NOT NULL PRIMARY KEY,
	plugin_id  TEXT NOT NULL,
	version    TEXT NOT NULL,
	reason     TEXT NOT NULL,
	created_at INTEGER,
	dir        TEXT NOT NULL,
	size_bytes INTEGER NOT NULL,
	plugin     TEXT NOT NULL
) STRICT;
CREATE INDEX backups_plugin_created_at ON backups (plugin_id, created_at);

CREATE TABLE settings (
	key   TEXT NOT NULL PRIMARY KEY,
	value BLOB
) STRICT;
`},
		{version: 2, name: "plugin key-value entries", sql: `
CREATE TABLE kv (
	plugin_id  TEXT NOT NULL,
	key        TEXT NOT NULL,
	value      BLOB,
	version    INTEGER NOT NULL,
	expires_at INTEGER,
	updated_at INTEGER,
	PRIMARY KEY (plugin_id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE kv_shares (
	plugin_id TEXT NOT NULL,
	reader_id TEXT NOT NULL,
	PRIMARY KEY (plugin_id, reader_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX kv_shares_reader_id ON kv_shares (reader_id);
`},
		{version: 3, name: "updates in flight", sql: `
CREATE TABLE version_switches (
	plugin_id   TEXT NOT NULL PRIMARY KEY,
	old         TEXT NOT NULL,
	new_version TEXT NOT NULL,
	new_dir     TEXT NOT NULL,
	backup_id   TEXT NOT NULL,
	started_at  INTEGER
) STRICT;
`},
		{version: 4, name: "token expiry", sql: `
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
`},
		{version: 5, name: "replicas", sql: `
CREATE TABLE replicas (
	id                 TEXT NOT NULL PRIMARY KEY,
	advertise_url      TEXT NOT NULL,
	version            TEXT NOT NULL,
	started_at         INTEGER,
	heartbeat_at       INTEGER,
	heartbeat_interval INTEGER NOT NULL,
	instances          INTEGER NOT NULL
) STRICT;
`},
		{version: 6, name: "replica sessions", sql: `
ALTER TABLE replicas ADD COLUMN sessions TEXT;
`},
	}
}

// migrate brings the database up to the last of ms, one transaction per step. Each step
// re-reads the version under the write lock, so processes opening the same file at once
// do not apply a step twice.
func migrate(ctx context.Context, db *sql.DB, ms []migration) error {
	for i, m := range ms {
		if m.version != i+1 {
			return fmt.Errorf("migrate: step %d has version %d, want %d", i, m.version, i+1)
		}
	}
	const bootstrap = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER NOT NULL PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_at INTEGER NOT NULL
) STRICT`
	if _, err := db.ExecContext(ctx, bootstrap); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	latest := len(ms)
	cur, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	if cur > latest {
		return fmt.Errorf("schema version %d, newest known %d: %w", cur, latest, ErrSchemaTooNew)
	}
	for _, m := range ms[cur:] {
		if err := applyMigration(ctx, db, m, latest); err != nil {
			return err
		}
	}
	return nil
}

// applyMigration applies m in its own transaction unless it is already applied.
func applyMigration(ctx context.Context, db *sql.DB, m migration, latest int) (err error) {
	sqlTx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate %d (%s): begin: %w", m.version, m.name, err)
	}
	defer func() {
		if err != nil {
			_ = sqlTx.Rollback()
		}
	}()
	var cur int
	if err := sqlTx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("migrate %d (%s): read version: %w", m.version, m.name, err)
	}
	switch {
	case cur > latest:
		return fmt.Errorf("schema version %d, newest known %d: %w", cur, latest, ErrSchemaTooNew)
	case cur >= m.version:
		// Another process applied it between our version check and now.
		return sqlTx.Rollback()
	case cur != m.version-1:
		return fmt.Errorf("migrate %d (%s): database is at version %d", m.version, m.name, cur)
	}
	if _, err := sqlTx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migrate %d (%s): %w", m.version, m.name, err)
	}
	if _, err := sqlTx.ExecContext(ctx,
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, time.Now().UTC().UnixNano()); err != nil {
		return fmt.Errorf("migrate %d (%s): record: %w", m.version, m.name, err)
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("migrate %d (%s): commit: %w", m.version, m.name, err)
	}
	return nil
}

// schemaVersion returns the newest applied migration, 0 for a new database.
func schemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("migrate: read version: %w", err)
	}
	return v, nil
}
