package storepg

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

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
		return fmt.Errorf("storepg: %s: empty plugin id", op)
	}
	startedAt, err := timeValue(s.StartedAt)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: started at: %w", op, s.PluginID, err)
	}
	doc, err := pluginDocValue(s.Old)
	if err != nil {
		return fmt.Errorf("storepg: %s %q: old record: %w", op, s.PluginID, err)
	}
	_, err = t.exec(op, `INSERT INTO version_switches (`+switchColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
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
	return list(t, op, `SELECT `+switchColumns+` FROM version_switches ORDER BY plugin_id`, nil,
		func(r rowScanner) (store.VersionSwitch, error) {
			var (
				s         store.VersionSwitch
				doc       []byte
				startedAt pgtype.Int8
			)
			if err := r.Scan(&s.PluginID, &doc, &s.NewVersion, &s.NewDir, &s.BackupID, &startedAt); err != nil {
				return store.VersionSwitch{}, err
			}
			s.StartedAt = timeFrom(startedAt)
			old, err := pluginFromDoc(doc)
			if err != nil {
				return store.VersionSwitch{}, fmt.Errorf("plugin %q: %w", s.PluginID, err)
			}
			s.Old = old
			return s, nil
		})
}

// DeleteVersionSwitch implements store.Tx.
func (t *tx) DeleteVersionSwitch(pluginID string) error {
	const op = "delete version switch"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM version_switches WHERE plugin_id = $1`, pluginID)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("version switch", pluginID)
	}
	return nil
}
