package storesqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const kvColumns = `plugin_id, key, value, version, expires_at, updated_at`

// KV implements store.Tx.
func (t *tx) KV(pluginID, key string) (store.KVEntry, error) {
	const op = "kv"
	if err := t.use(op, false); err != nil {
		return store.KVEntry{}, err
	}
	row := t.sqlTx.QueryRowContext(t.ctx, `SELECT `+kvColumns+` FROM kv WHERE plugin_id = ? AND key = ?`,
		pluginID, key)
	e, err := scanKV(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.KVEntry{}, notFound("kv entry of "+pluginID, key)
	}
	if err != nil {
		return store.KVEntry{}, wrap(op, err)
	}
	return e, nil
}

// PutKV implements store.Tx. An entry needs a PluginID and a Key.
func (t *tx) PutKV(e store.KVEntry) error {
	const op = "put kv"
	if err := t.use(op, true); err != nil {
		return err
	}
	if e.PluginID == "" {
		return fmt.Errorf("storesqlite: %s: empty plugin id", op)
	}
	if e.Key == "" {
		return fmt.Errorf("storesqlite: %s: empty key", op)
	}
	expiresAt, err := timeValue(e.ExpiresAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: expires at: %w", op, e.Key, err)
	}
	updatedAt, err := timeValue(e.UpdatedAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: updated at: %w", op, e.Key, err)
	}
	_, err = t.exec(op, `INSERT INTO kv (`+kvColumns+`) VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value, version = excluded.version,
		expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
		e.PluginID, e.Key, e.Value, e.Version, expiresAt, updatedAt)
	return err
}

// DeleteKV implements store.Tx.
func (t *tx) DeleteKV(pluginID, key string) error {
	const op = "delete kv"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM kv WHERE plugin_id = ? AND key = ?`, pluginID, key)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("kv entry of "+pluginID, key)
	}
	return nil
}

// KVList implements store.Tx. The prefix is matched as a key range (key >= prefix and key
// below the least string after every string with the prefix), which SQLite answers from
// the primary key; TEXT compares with the BINARY collation, byte-wise as Go strings do.
func (t *tx) KVList(pluginID, prefix, after string, limit int) ([]store.KVEntry, error) {
	const op = "kv list"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, fmt.Errorf("storesqlite: %s: limit %d: must be at least 1", op, limit)
	}
	query := `SELECT ` + kvColumns + ` FROM kv WHERE plugin_id = ? AND key >= ? AND key > ?`
	args := []any{pluginID, prefix, after}
	if end, ok := prefixEnd(prefix); ok {
		query += ` AND key < ?`
		args = append(args, end)
	}
	query += ` ORDER BY key LIMIT ?`
	args = append(args, limit)
	rows, err := t.sqlTx.QueryContext(t.ctx, query, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.KVEntry
	for rows.Next() {
		e, err := scanKV(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// KVCount implements store.Tx.
func (t *tx) KVCount(pluginID string) (int, error) {
	const op = "kv count"
	if err := t.use(op, false); err != nil {
		return 0, err
	}
	var n int
	if err := t.sqlTx.QueryRowContext(t.ctx, `SELECT count(*) FROM kv WHERE plugin_id = ?`, pluginID).Scan(&n); err != nil {
		return 0, wrap(op, err)
	}
	return n, nil
}

// DeleteKVExpired implements store.Tx. A zero before and a limit below 1 are refused.
func (t *tx) DeleteKVExpired(before time.Time, limit int) (int, error) {
	const op = "delete expired kv"
	if err := t.use(op, true); err != nil {
		return 0, err
	}
	if before.IsZero() {
		return 0, fmt.Errorf("storesqlite: %s: zero time", op)
	}
	if limit < 1 {
		return 0, fmt.Errorf("storesqlite: %s: limit %d: must be at least 1", op, limit)
	}
	v, err := timeValue(before)
	if err != nil {
		return 0, fmt.Errorf("storesqlite: %s: %w", op, err)
	}
	n, err := t.exec(op, `DELETE FROM kv WHERE (plugin_id, key) IN (
	SELECT plugin_id, key FROM kv WHERE expires_at IS NOT NULL AND expires_at < ?
	ORDER BY expires_at LIMIT ?)`, v, limit)
	return int(n), err
}

// DeletePluginKV implements store.Tx. An empty pluginID is refused.
func (t *tx) DeletePluginKV(pluginID string) error {
	const op = "delete plugin kv"
	if err := t.use(op, true); err != nil {
		return err
	}
	if pluginID == "" {
		return fmt.Errorf("storesqlite: %s: empty plugin id", op)
	}
	if _, err := t.exec(op, `DELETE FROM kv WHERE plugin_id = ?`, pluginID); err != nil {
		return err
	}
	_, err := t.exec(op, `DELETE FROM kv_shares WHERE plugin_id = ?1 OR reader_id = ?1`, pluginID)
	return err
}

// KVReaders implements store.Tx.
func (t *tx) KVReaders(pluginID string) ([]string, error) {
	const op = "kv readers"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	rows, err := t.sqlTx.QueryContext(t.ctx,
		`SELECT reader_id FROM kv_shares WHERE plugin_id = ? ORDER BY reader_id`, pluginID)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// PutKVReaders implements store.Tx. An empty pluginID or reader id is refused.
func (t *tx) PutKVReaders(pluginID string, readers []string) error {
	const op = "put kv readers"
	if err := t.use(op, true); err != nil {
		return err
	}
	if pluginID == "" {
		return fmt.Errorf("storesqlite: %s: empty plugin id", op)
	}
	for i, r := range readers {
		if r == "" {
			return fmt.Errorf("storesqlite: %s %q: reader %d: empty id", op, pluginID, i)
		}
	}
	if _, err := t.exec(op, `DELETE FROM kv_shares WHERE plugin_id = ?`, pluginID); err != nil {
		return err
	}
	if len(readers) == 0 {
		return nil
	}
	stmt, err := t.sqlTx.PrepareContext(t.ctx,
		`INSERT INTO kv_shares (plugin_id, reader_id) VALUES (?, ?) ON CONFLICT DO NOTHING`)
	if err != nil {
		return wrap(op, err)
	}
	defer stmt.Close()
	for _, r := range readers {
		if _, err := stmt.ExecContext(t.ctx, pluginID, r); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}

// scanKV reads one row of kvColumns.
func scanKV(r rowScanner) (store.KVEntry, error) {
	var (
		e                    store.KVEntry
		expiresAt, updatedAt sql.NullInt64
	)
	if err := r.Scan(&e.PluginID, &e.Key, &e.Value, &e.Version, &expiresAt, &updatedAt); err != nil {
		return store.KVEntry{}, err
	}
	e.ExpiresAt = timeFrom(expiresAt)
	e.UpdatedAt = timeFrom(updatedAt)
	return e, nil
}

// prefixEnd returns the least string above every string that starts with prefix, and false
// when there is none (prefix is empty or all 0xff bytes). The result need not be valid
// UTF-8; SQLite compares it byte-wise all the same.
func prefixEnd(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}
