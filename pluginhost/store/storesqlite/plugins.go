package storesqlite

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

const pluginColumns = `id, version, manifest, dir, source, package_sha256, enabled, status,
	status_reason, config, config_updated_at, requested, granted, denied, security_level,
	sandbox_enabled, limit_memory_mb, limit_cpu_percent, limit_file_handles, installed_at,
	updated_at`

// Plugin implements store.Tx.
func (t *tx) Plugin(id string) (store.Plugin, error) {
	const op = "plugin"
	if err := t.use(op, false); err != nil {
		return store.Plugin{}, err
	}
	row := t.sqlTx.QueryRowContext(t.ctx, `SELECT `+pluginColumns+` FROM plugins WHERE id = ?`, id)
	p, err := scanPlugin(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Plugin{}, notFound("plugin", id)
	}
	if err != nil {
		return store.Plugin{}, wrap(op, err)
	}
	return p, nil
}

// Plugins implements store.Tx.
func (t *tx) Plugins() ([]store.Plugin, error) {
	const op = "plugins"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	rows, err := t.sqlTx.QueryContext(t.ctx, `SELECT `+pluginColumns+` FROM plugins ORDER BY id`)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []store.Plugin
	for rows.Next() {
		p, err := scanPlugin(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// PutPlugin implements store.Tx.
func (t *tx) PutPlugin(p store.Plugin) error {
	const op = "put plugin"
	if err := t.use(op, true); err != nil {
		return err
	}
	if p.ID == "" {
		return fmt.Errorf("storesqlite: %s: empty id", op)
	}
	args, err := pluginArgs(p)
	if err != nil {
		return fmt.Errorf("storesqlite: %s %q: %w", op, p.ID, err)
	}
	_, err = t.exec(op, `INSERT INTO plugins (`+pluginColumns+`)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
	version = excluded.version,
	manifest = excluded.manifest,
	dir = excluded.dir,
	source = excluded.source,
	package_sha256 = excluded.package_sha256,
	enabled = excluded.enabled,
	status = excluded.status,
	status_reason = excluded.status_reason,
	config = excluded.config,
	config_updated_at = excluded.config_updated_at,
	requested = excluded.requested,
	granted = excluded.granted,
	denied = excluded.denied,
	security_level = excluded.security_level,
	sandbox_enabled = excluded.sandbox_enabled,
	limit_memory_mb = excluded.limit_memory_mb,
	limit_cpu_percent = excluded.limit_cpu_percent,
	limit_file_handles = excluded.limit_file_handles,
	installed_at = excluded.installed_at,
	updated_at = excluded.updated_at`, args...)
	return err
}

// DeletePlugin implements store.Tx.
func (t *tx) DeletePlugin(id string) error {
	const op = "delete plugin"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM plugins WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("plugin", id)
	}
	return nil
}

// pluginArgs returns the values of pluginColumns for p.
func pluginArgs(p store.Plugin) ([]any, error) {
	configUpdatedAt, err := timeValue(p.ConfigUpdatedAt)
	if err != nil {
		return nil, fmt.Errorf("config updated at: %w", err)
	}
	installedAt, err := timeValue(p.InstalledAt)
	if err != nil {
		return nil, fmt.Errorf("installed at: %w", err)
	}
	updatedAt, err := timeValue(p.UpdatedAt)
	if err != nil {
		return nil, fmt.Errorf("updated at: %w", err)
	}
	requested, err := stringsValue(p.Requested)
	if err != nil {
		return nil, fmt.Errorf("requested: %w", err)
	}
	granted, err := stringsValue(p.Granted)
	if err != nil {
		return nil, fmt.Errorf("granted: %w", err)
	}
	denied, err := stringsValue(p.Denied)
	if err != nil {
		return nil, fmt.Errorf("denied: %w", err)
	}
	return []any{
		p.ID, p.Version, p.Manifest, p.Dir, p.Source, p.PackageSHA256, p.Enabled, p.Status,
		p.StatusReason, p.Config, configUpdatedAt, requested, granted, denied, p.SecurityLevel,
		p.SandboxEnabled, p.Limits.MemoryMB, p.Limits.CPUPercent, p.Limits.FileHandles,
		installedAt, updatedAt,
	}, nil
}

// scanPlugin reads one row of pluginColumns.
func scanPlugin(r rowScanner) (store.Plugin, error) {
	var (
		p                                       store.Plugin
		configUpdatedAt, installedAt, updatedAt sql.NullInt64
		requested, granted, denied              string
	)
	err := r.Scan(&p.ID, &p.Version, &p.Manifest, &p.Dir, &p.Source, &p.PackageSHA256,
		&p.Enabled, &p.Status, &p.StatusReason, &p.Config, &configUpdatedAt, &requested,
		&granted, &denied, &p.SecurityLevel, &p.SandboxEnabled, &p.Limits.MemoryMB,
		&p.Limits.CPUPercent, &p.Limits.FileHandles, &installedAt, &updatedAt)
	if err != nil {
		return store.Plugin{}, err
	}
	p.ConfigUpdatedAt = timeFrom(configUpdatedAt)
	p.InstalledAt = timeFrom(installedAt)
	p.UpdatedAt = timeFrom(updatedAt)
	if p.Requested, err = stringsFrom(requested); err != nil {
		return store.Plugin{}, fmt.Errorf("plugin %q requested: %w", p.ID, err)
	}
	if p.Granted, err = stringsFrom(granted); err != nil {
		return store.Plugin{}, fmt.Errorf("plugin %q granted: %w", p.ID, err)
	}
	if p.Denied, err = stringsFrom(denied); err != nil {
		return store.Plugin{}, fmt.Errorf("plugin %q denied: %w", p.ID, err)
	}
	return p, nil
}
