package storesqlite

import (
	"database/sql"
	"fmt"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const switchColumns = `plugin_id, old, new_version, new_dir, backup_id, started_at`

// PutVersionSwitch implements store.Tx. A switch needs a plugin id.
func (t *tx) PutVersionSwitch(s store.VersionSwitch) error {
	const op = "put version switch"
	if err := t.use(op, true); err != nil {
		return err
	}
	if s.PluginID == "" {
		return fmt.Errorf("storesqlite: %s: empty plugin id", op)
	}
	startedAt, err := timeValue(s.StartedAt)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: started at: %w", op, s.PluginID, err)
	}
	doc, err := pluginDocValue(s.Old)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: old record: %w", op, s.PluginID, err)
	}
	_, err = t.exec(op, `INSERT INTO version_switches (`+switchColumns+`) VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (plugin_id) DO UPDATE SET old = excluded.old, new_version = excluded.new_version,
		new_dir = excluded.new_dir, backup_id = excluded.backup_id, started_at = excluded.started_at`,
		s.PluginID, doc, s.NewVersion, s.NewDir, s.BackupID, startedAt)
	return err
}

// VersionSwitches implements store.Tx.
func (t *tx) VersionSwitches() ([]store.VersionSwitch, error) {
	const op = "version switches"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	rows, err := t.sqlTx.QueryContext(t.ctx, `SELECT `+switchColumns+` FROM version_switches ORDER BY plugin_id`)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.VersionSwitch
	for rows.Next() {
		var (
			s         store.VersionSwitch
			doc       string
			startedAt sql.NullInt64
		)
		if err := rows.Scan(&s.PluginID, &doc, &s.NewVersion, &s.NewDir, &s.BackupID, &startedAt); err != nil {
			return nil, wrap(op, err)
		}
		s.StartedAt = timeFrom(startedAt)
		if s.Old, err = pluginFromDoc(doc); err != nil {
			return nil, fmt.Errorf("storesqlite: %s: plugin %q: %w", op, s.PluginID, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// DeleteVersionSwitch implements store.Tx.
func (t *tx) DeleteVersionSwitch(pluginID string) error {
	const op = "delete version switch"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM version_switches WHERE plugin_id = ?`, pluginID)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("version switch", pluginID)
	}
	return nil
}
