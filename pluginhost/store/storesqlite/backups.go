package storesqlite

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const backupColumns = `id, plugin_id, version, reason, created_at, dir, size_bytes, plugin`

// PutBackup implements store.Tx. A backup needs an ID.
func (t *tx) PutBackup(b store.Backup) error {
	const op = "put backup"
	if err := t.use(op, true); err != nil {
		return err
	}
	if b.ID == "" {
		return fmt.Errorf("storesqlite: %s: empty id", op)
	}
	createdAt, err := timeValue(b.CreatedAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: created at: %w", op, b.ID, err)
	}
	doc, err := pluginDocValue(b.Plugin)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: plugin: %w", op, b.ID, err)
	}
	_, err = t.exec(op, `INSERT INTO backups (`+backupColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		b.ID, b.PluginID, b.Version, b.Reason, createdAt, b.Dir, b.SizeBytes, doc)
	return err
}

// Backup implements store.Tx.
func (t *tx) Backup(id string) (store.Backup, error) {
	const op = "backup"
	if err := t.use(op, false); err != nil {
		return store.Backup{}, err
	}
	row := t.sqlTx.QueryRowContext(t.ctx, `SELECT `+backupColumns+` FROM backups WHERE id = ?`, id)
	b, err := scanBackup(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Backup{}, notFound("backup", id)
	}
	if err != nil {
		return store.Backup{}, wrap(op, err)
	}
	return b, nil
}

// Backups implements store.Tx.
func (t *tx) Backups(pluginID string) ([]store.Backup, error) {
	const op = "backups"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	rows, err := t.sqlTx.QueryContext(t.ctx, `SELECT `+backupColumns+` FROM backups
	WHERE plugin_id = ? ORDER BY created_at DESC, rowid DESC`, pluginID)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.Backup
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// DeleteBackup implements store.Tx.
func (t *tx) DeleteBackup(id string) error {
	const op = "delete backup"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM backups WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("backup", id)
	}
	return nil
}

// scanBackup reads one row of backupColumns.
func scanBackup(r rowScanner) (store.Backup, error) {
	var (
		b         store.Backup
		createdAt sql.NullInt64
		doc       string
	)
	if err := r.Scan(&b.ID, &b.PluginID, &b.Version, &b.Reason, &createdAt, &b.Dir, &b.SizeBytes, &doc); err != nil {
		return store.Backup{}, err
	}
	b.CreatedAt = timeFrom(createdAt)
	p, err := pluginFromDoc(doc)
	if err != nil {
		return store.Backup{}, fmt.Errorf("backup %q: %w", b.ID, err)
	}
	b.Plugin = p
	return b, nil
}
