package storepg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migration is one step of the schema. Steps are numbered 1, 2, 3... and never change once
// released: a schema change is a new step appended to migrations.
type migration struct {
	version int
	name    string
	// compatibleFrom is the oldest schema version whose code still works with the schema
	// this step leaves (see migrations for the rule).
	compatibleFrom int
	sql            string
}

// migrations returns every schema step in order.
//
// Rolling upgrades: servers of several versions share the database while they are upgraded
// one at a time, so the migrations of the first upgraded server must not break the older
// ones still running. Every step declares compatibleFrom, the oldest schema version whose
// code works with the schema the step leaves:
//   - an additive step (a new table, index, or column that is nullable or has a default
//     and that older code can ignore) keeps the compatibleFrom of the step before it;
//   - a breaking step (dropping or renaming a table or a column, changing a type or a
//     constraint that older writes would violate, giving existing data a new meaning)
//     raises compatibleFrom to the oldest version whose code works with it, at most its
//     own version.
//
// A breaking change is released in two steps, expand then contract: first an additive step
// with code that works with the old and the new shape, then, in a later release, once no
// server older than that code runs, the step that breaks and raises compatibleFrom.
//
// A server whose newest known step K is below the database's version V (it is older than
// the server that migrated the database) starts when compatibleFrom of step V is at most K,
// and otherwise refuses to start with ErrSchemaIncompatible, naming both versions. It never
// applies or undoes a step in that case. compatibleFrom never decreases from one step to
// the next, and a step's compatibleFrom is at least 1 and at most its version.
//
// Times are bigint nanoseconds since the Unix epoch, UTC (NULL for the zero time). Ordered
// reads sort by time DESC NULLS LAST (a zero time last, as SQLite does) and then by seq, an
// identity column giving the order rows were appended in; the indexes are declared in that
// order so that they serve the reads without a sort.
func migrations() []migration {
	return []migration{
		{version: 1, name: "initial schema", compatibleFrom: 1, sql: `
CREATE TABLE plugins (
	id                 text COLLATE "C" PRIMARY KEY,
	version            text NOT NULL,
	manifest           bytea,
	dir                text NOT NULL,
	source             text NOT NULL,
	package_sha256     text NOT NULL,
	enabled            boolean NOT NULL,
	status             text NOT NULL,
	status_reason      text NOT NULL,
	config             bytea,
	config_updated_at  bigint,
	requested          text[] NOT NULL,
	granted            text[] NOT NULL,
	denied             text[] NOT NULL,
	security_level     text NOT NULL,
	sandbox_enabled    boolean NOT NULL,
	limit_memory_mb    bigint NOT NULL,
	limit_cpu_percent  bigint NOT NULL,
	limit_file_handles bigint NOT NULL,
	installed_at       bigint,
	updated_at         bigint
);

CREATE TABLE tokens (
	seq        bigint GENERATED ALWAYS AS IDENTITY,
	id         text COLLATE "C" PRIMARY KEY,
	name       text NOT NULL,
	role       text NOT NULL,
	plugin_id  text COLLATE "C" NOT NULL,
	hash       bytea NOT NULL CONSTRAINT tokens_hash UNIQUE,
	created_at bigint,
	revoked_at bigint,
	expires_at bigint
);
CREATE INDEX tokens_plugin_id ON tokens (plugin_id);
CREATE INDEX tokens_created_at ON tokens (created_at DESC NULLS LAST, seq DESC);

CREATE TABLE audit (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id         text COLLATE "C" NOT NULL CONSTRAINT audit_id UNIQUE,
	time       bigint,
	actor      text NOT NULL,
	actor_name text NOT NULL,
	role       text NOT NULL,
	action     text NOT NULL,
	target     text COLLATE "C" NOT NULL,
	outcome    text NOT NULL,
	request_id text NOT NULL,
	details    bytea
);
CREATE INDEX audit_time ON audit (time DESC NULLS LAST, seq DESC);
CREATE INDEX audit_target_time ON audit (target, time DESC NULLS LAST, seq DESC);

CREATE TABLE logs (
	seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	plugin_id      text COLLATE "C" NOT NULL,
	time           bigint,
	level          text NOT NULL,
	level_rank     smallint NOT NULL,
	message        text NOT NULL,
	-- The message lower-cased by Go's Unicode rules, for the case-insensitive search;
	-- NULL when that is the message itself. Lower-casing here, not with SQL's lower(),
	-- keeps the search the same whatever the database's locale.
	message_folded text,
	metadata       bytea
);
CREATE INDEX logs_plugin_time ON logs (plugin_id, time DESC NULLS LAST, seq DESC);

CREATE TABLE backups (
	seq        bigint GENERATED ALWAYS AS IDENTITY,
	id         text COLLATE "C" PRIMARY KEY,
	plugin_id  text COLLATE "C" NOT NULL,
	version    text NOT NULL,
	reason     text NOT NULL,
	created_at bigint,
	dir        text NOT NULL,
	size_bytes bigint NOT NULL,
	plugin     jsonb NOT NULL
);
CREATE INDEX backups_plugin_created_at ON backups (plugin_id, created_at DESC NULLS LAST, seq DESC);

CREATE TABLE settings (
	key   text COLLATE "C" PRIMARY KEY,
	value bytea
);

CREATE TABLE kv (
	plugin_id  text COLLATE "C" NOT NULL,
	key        text COLLATE "C" NOT NULL,
	value      bytea,
	version    bigint NOT NULL,
	expires_at bigint,
	updated_at bigint,
	PRIMARY KEY (plugin_id, key)
);
CREATE INDEX kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE kv_shares (
	plugin_id text COLLATE "C" NOT NULL,
	reader_id text COLLATE "C" NOT NULL,
	PRIMARY KEY (plugin_id, reader_id)
);
CREATE INDEX kv_shares_reader_id ON kv_shares (reader_id);

CREATE TABLE version_switches (
	plugin_id   text COLLATE "C" PRIMARY KEY,
	old         jsonb NOT NULL,
	new_version text NOT NULL,
	new_dir     text NOT NULL,
	backup_id   text NOT NULL,
	started_at  bigint
);
`},
		{version: 2, name: "package files", compatibleFrom: 1, sql: `
CREATE TABLE packages (
	sha256    text COLLATE "C" PRIMARY KEY,
	data      bytea NOT NULL,
	stored_at bigint NOT NULL
);
`},
		{version: 3, name: "replicas", compatibleFrom: 1, sql: `
CREATE TABLE replicas (
	id                 text COLLATE "C" PRIMARY KEY,
	advertise_url      text NOT NULL,
	version            text NOT NULL,
	started_at         bigint,
	heartbeat_at       bigint,
	-- nanoseconds
	heartbeat_interval bigint NOT NULL,
	instances          bigint NOT NULL
);
`},
		// Additive: a server of the previous release ignores the column.
		{version: 4, name: "replica sessions", compatibleFrom: 1, sql: `
ALTER TABLE replicas ADD COLUMN sessions text;
`},
	}
}

// checkMigrations checks that ms follows the numbering and compatibility rules.
func checkMigrations(ms []migration) error {
	prev := 1
	for i, m := range ms {
		switch {
		case m.version != i+1:
			return fmt.Errorf("migration %d has version %d, want %d", i, m.version, i+1)
		case m.compatibleFrom < prev || m.compatibleFrom > m.version:
			return fmt.Errorf("migration %d (%s): compatible from %d, want %d to %d", m.version, m.name, m.compatibleFrom, prev, m.version)
		}
		prev = m.compatibleFrom
	}
	return nil
}

// schemaIncompatibleError is Open's refusal of a database migrated by a newer Nexus.
type schemaIncompatibleError struct {
	version, compatibleFrom, known int
}

func (e *schemaIncompatibleError) Error() string {
	return fmt.Sprintf("the database schema is at version %d, which works only with Nexus code of schema version %d or later; "+
		"this server knows schema versions up to %d: upgrade this server to the version that migrated the database",
		e.version, e.compatibleFrom, e.known)
}

func (e *schemaIncompatibleError) Is(target error) bool { return target == ErrSchemaIncompatible }

// migrate brings the database up to the last of ms, one transaction per step, holding a
// session-level advisory lock throughout so that servers starting at once migrate one after
// the other (the later ones find nothing left to do). Each step also takes the write lock,
// so that no Write of a server already running overlaps its DDL.
func migrate(ctx context.Context, pool *pgxpool.Pool, ms []migration, log *slog.Logger) (Schema, error) {
	known := len(ms)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return Schema{}, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return Schema{}, fmt.Errorf("migrate: wait for the migration lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, migrateLockKey); err != nil {
			// The lock goes with the session: end it rather than pool a locked connection.
			_ = conn.Conn().Close(uctx)
		}
	}()

	const bootstrap = `CREATE TABLE IF NOT EXISTS nexus_schema_migrations (
	version         integer PRIMARY KEY,
	name            text NOT NULL,
	compatible_from integer NOT NULL,
	applied_at      bigint NOT NULL
)`
	if _, err := conn.Exec(ctx, bootstrap); err != nil {
		return Schema{}, fmt.Errorf("migrate: create nexus_schema_migrations: %w", err)
	}
	cur, compat, err := schemaVersion(ctx, conn.Conn())
	if err != nil {
		return Schema{}, err
	}
	if cur > known {
		if compat > known {
			return Schema{}, &schemaIncompatibleError{version: cur, compatibleFrom: compat, known: known}
		}
		log.Warn("the database schema is newer than this server knows, and compatible with it: a newer Nexus migrated it",
			"schema_version", cur, "compatible_from", compat, "known", known)
		return Schema{Version: cur, CompatibleFrom: compat, Known: known}, nil
	}
	for _, m := range ms[cur:] {
		start := time.Now()
		if err := applyMigration(ctx, conn.Conn(), m); err != nil {
			return Schema{}, err
		}
		log.Info("migrated the database schema", "version", m.version, "name", m.name,
			"compatible_from", m.compatibleFrom, "duration", time.Since(start).String())
		compat = m.compatibleFrom
	}
	return Schema{Version: known, CompatibleFrom: compat, Known: known}, nil
}

// applyMigration applies m in its own transaction.
func applyMigration(ctx context.Context, conn *pgx.Conn, m migration) (err error) {
	pgTx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate %d (%s): begin: %w", m.version, m.name, err)
	}
	defer func() {
		if err != nil {
			rollback(ctx, pgTx)
		}
	}()
	if _, err := pgTx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		return fmt.Errorf("migrate %d (%s): wait for the write lock: %w", m.version, m.name, err)
	}
	var cur int
	if err := pgTx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM nexus_schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("migrate %d (%s): read version: %w", m.version, m.name, err)
	}
	if cur != m.version-1 {
		// Only possible if something migrates without the migration lock.
		return fmt.Errorf("migrate %d (%s): the database is at version %d", m.version, m.name, cur)
	}
	if _, err := pgTx.Exec(ctx, m.sql); err != nil {
		return fmt.Errorf("migrate %d (%s): %w", m.version, m.name, err)
	}
	if _, err := pgTx.Exec(ctx,
		`INSERT INTO nexus_schema_migrations (version, name, compatible_from, applied_at) VALUES ($1, $2, $3, $4)`,
		m.version, m.name, m.compatibleFrom, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("migrate %d (%s): record: %w", m.version, m.name, err)
	}
	if err := pgTx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate %d (%s): commit: %w", m.version, m.name, err)
	}
	return nil
}

// schemaVersion returns the newest applied step and its compatibleFrom, 0 and 0 for a new
// database.
func schemaVersion(ctx context.Context, conn *pgx.Conn) (version, compatibleFrom int, err error) {
	err = conn.QueryRow(ctx, `SELECT version, compatible_from FROM nexus_schema_migrations ORDER BY version DESC LIMIT 1`).
		Scan(&version, &compatibleFrom)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("migrate: read version: %w", err)
	}
	return version, compatibleFrom, nil
}
