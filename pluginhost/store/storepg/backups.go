package storepg

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const backupColumns = `id, plugin_id, version, reason, created_at, dir, size_bytes, plugin`

// PutBackup implements store.Tx. A backup needs an ID; a used one is store.ErrConflict,
// found without failing a statement.
func (t *tx) PutBackup(b store.Backup) error {
	const op = "put backup"
	if err := t.use(op, true); err != nil {
		return err
	}
	if b.ID == "" {
		return fmt.Errorf("storepg: %s: empty id", op)
	}
	createdAt, err := timeValue(b.CreatedAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: created at: %w", op, b.ID, err)
	}
	doc, err := pluginDocValue(b.Plugin)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: plugin: %w", op, b.ID, err)
	}
	n, err := t.exec(op, `INSERT INTO backups (`+backupColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
	ON CONFLICT DO NOTHING`,
		b.ID, b.PluginID, b.Version, b.Reason, createdAt, b.Dir, b.SizeBytes, doc)
	if err != nil {
		return err
	}
	if n == 0 {
		return conflict("backup", b.ID)
	}
	return nil
}

// Backup implements store.Tx.
func (t *tx) Backup(id string) (store.Backup, error) {
	const op = "backup"
	if err := t.use(op, false); err != nil {
		return store.Backup{}, err
	}
	b, err := scanBackup(t.queryRow(`SELECT `+backupColumns+` FROM backups WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	return list(t, op, `SELECT `+backupColumns+` FROM backups
	WHERE plugin_id = $1 ORDER BY created_at DESC NULLS LAST, seq DESC`, []any{pluginID}, scanBackup)
}

// DeleteBackup implements store.Tx.
func (t *tx) DeleteBackup(id string) error {
	const op = "delete backup"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM backups WHERE id = $1`, id)
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
		createdAt pgtype.Int8
		doc       []byte
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
