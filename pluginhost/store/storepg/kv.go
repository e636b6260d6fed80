package storepg

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const kvColumns = `plugin_id, key, value, version, expires_at, updated_at`

// KV implements store.Tx.
func (t *tx) KV(pluginID, key string) (store.KVEntry, error) {
	const op = "kv"
	if err := t.use(op, false); err != nil {
		return store.KVEntry{}, err
	}
	e, err := scanKV(t.queryRow(`SELECT `+kvColumns+` FROM kv WHERE plugin_id = $1 AND key = $2`, pluginID, key))
	if errors.Is(err, pgx.ErrNoRows) {
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
		return fmt.Errorf("storepg: %s: empty plugin id", op)
	}
	if e.Key == "" {
		return fmt.Errorf("storepg: %s: empty key", op)
	}
	expiresAt, err := timeValue(e.ExpiresAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: expires at: %w", op, e.Key, err)
	}
	updatedAt, err := timeValue(e.UpdatedAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: updated at: %w", op, e.Key, err)
	}
	_, err = t.exec(op, `INSERT INTO kv (`+kvColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
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
	n, err := t.exec(op, `DELETE FROM kv WHERE plugin_id = $1 AND key = $2`, pluginID, key)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("kv entry of "+pluginID, key)
	}
	return nil
}

// KVList implements store.Tx. The prefix is matched as a key range of the primary key (key
// >= prefix and key below the least string after every string with the prefix); keys are
// COLLATE "C", which compares byte-wise as Go strings do. Keys are valid UTF-8 (PostgreSQL
// text holds nothing else), and so must prefix and after be.
func (t *tx) KVList(pluginID, prefix, after string, limit int) ([]store.KVEntry, error) {
	const op = "kv list"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, fmt.Errorf("storepg: %s: limit %d: must be at least 1", op, limit)
	}
	query := `SELECT ` + kvColumns + ` FROM kv WHERE plugin_id = $1 AND key >= $2 AND key > $3`
	args := []any{pluginID, prefix, after}
	if end, ok := prefixEnd(prefix); ok {
		query += ` AND key < $4`
		args = append(args, end)
	}
	query += fmt.Sprintf(` ORDER BY key LIMIT $%d`, len(args)+1)
	args = append(args, limit)
	return list(t, op, query, args, scanKV)
}

// KVCount implements store.Tx.
func (t *tx) KVCount(pluginID string) (int, error) {
	const op = "kv count"
	if err := t.use(op, false); err != nil {
		return 0, err
	}
	var n int
	if err := t.queryRow(`SELECT count(*) FROM kv WHERE plugin_id = $1`, pluginID).Scan(&n); err != nil {
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
		return 0, fmt.Errorf("storepg: %s: zero time", op)
	}
	if limit < 1 {
		return 0, fmt.Errorf("storepg: %s: limit %d: must be at least 1", op, limit)
	}
	v, err := timeValue(before)
	if err != nil {
		return 0, fmt.Errorf("storepg: %s: %w", op, err)
	}
	n, err := t.exec(op, `DELETE FROM kv WHERE (plugin_id, key) IN (
	SELECT plugin_id, key FROM kv WHERE expires_at IS NOT NULL AND expires_at < $1
	ORDER BY expires_at LIMIT $2)`, v, limit)
	return int(n), err
}

// DeletePluginKV implements store.Tx. An empty pluginID is refused.
func (t *tx) DeletePluginKV(pluginID string) error {
	const op = "delete plugin kv"
	if err := t.use(op, true); err != nil {
		return err
	}
	if pluginID == "" {
		return fmt.Errorf("storepg: %s: empty plugin id", op)
	}
	if _, err := t.exec(op, `DELETE FROM kv WHERE plugin_id = $1`, pluginID); err != nil {
		return err
	}
	_, err := t.exec(op, `DELETE FROM kv_shares WHERE plugin_id = $1 OR reader_id = $1`, pluginID)
	return err
}

// KVReaders implements store.Tx.
func (t *tx) KVReaders(pluginID string) ([]string, error) {
	const op = "kv readers"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	return list(t, op, `SELECT reader_id FROM kv_shares WHERE plugin_id = $1 ORDER BY reader_id`,
		[]any{pluginID}, func(r rowScanner) (string, error) {
			var id string
			err := r.Scan(&id)
			return id, err
		})
}

// PutKVReaders implements store.Tx. An empty pluginID or reader id is refused.
func (t *tx) PutKVReaders(pluginID string, readers []string) error {
	const op = "put kv readers"
	if err := t.use(op, true); err != nil {
		return err
	}
	if pluginID == "" {
		return fmt.Errorf("storepg: %s: empty plugin id", op)
	}
	for i, r := range readers {
		if r == "" {
			return fmt.Errorf("storepg: %s %q: reader %d: empty id", op, pluginID, i)
		}
	}
	if _, err := t.exec(op, `DELETE FROM kv_shares WHERE plugin_id = $1`, pluginID); err != nil {
		return err
	}
	if len(readers) == 0 {
		return nil
	}
	_, err := t.exec(op, `INSERT INTO kv_shares (plugin_id, reader_id)
	SELECT $1, r FROM unnest($2::text[]) AS r ON CONFLICT DO NOTHING`, pluginID, readers)
	return err
}

// scanKV reads one row of kvColumns.
func scanKV(r rowScanner) (store.KVEntry, error) {
	var (
		e                    store.KVEntry
		expiresAt, updatedAt pgtype.Int8
	)
	if err := r.Scan(&e.PluginID, &e.Key, &e.Value, &e.Version, &expiresAt, &updatedAt); err != nil {
		return store.KVEntry{}, err
	}
	e.ExpiresAt = timeFrom(expiresAt)
	e.UpdatedAt = timeFrom(updatedAt)
	return e, nil
}

// prefixEnd returns the least valid UTF-8 string above every valid UTF-8 string that starts
// with prefix, and false when there is none (prefix is empty or all U+10FFFF). It
// increments the last code point that can be (skipping the surrogates, which UTF-8 does not
// encode) and drops what follows: UTF-8 orders byte-wise as code points do, so a key
// starts with prefix exactly when it is at least prefix and below the result. Unlike the
// byte-wise bound storesqlite uses, the result is valid UTF-8, which PostgreSQL text needs.
func prefixEnd(prefix string) (string, bool) {
	rs := []rune(prefix)
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i] + 1
		if r >= 0xd800 && r <= 0xdfff {
			r = 0xe000
		}
		if r <= utf8.MaxRune {
			rs[i] = r
			return string(rs[:i+1]), true
		}
	}
	return "", false
}
