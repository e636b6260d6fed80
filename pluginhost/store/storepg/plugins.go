package storepg

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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
	p, err := scanPlugin(t.queryRow(`SELECT `+pluginColumns+` FROM plugins WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	return list(t, op, `SELECT `+pluginColumns+` FROM plugins ORDER BY id`, nil, scanPlugin)
}

// PutPlugin implements store.Tx. The status reason is stored as cleanText makes it.
func (t *tx) PutPlugin(p store.Plugin) error {
	const op = "put plugin"
	if err := t.use(op, true); err != nil {
		return err
	}
	if p.ID == "" {
		return fmt.Errorf("storepg: %s: empty id", op)
	}
	args, err := pluginArgs(cleanPlugin(p))
	if err != nil {
		return fmt.Errorf("storepg: %s %q: %w", op, p.ID, err)
	}
	_, err = t.exec(op, `INSERT INTO plugins (`+pluginColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
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
	if err == nil {
		t.notify(noticePlugin + p.ID)
	}
	return err
}

// DeletePlugin implements store.Tx.
func (t *tx) DeletePlugin(id string) error {
	const op = "delete plugin"
	if err := t.use(op, true); err != nil {
		return err
	}
	n, err := t.exec(op, `DELETE FROM plugins WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound("plugin", id)
	}
	t.notify(noticePlugin + id)
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
	return []any{
		p.ID, p.Version, p.Manifest, p.Dir, p.Source, p.PackageSHA256, p.Enabled, p.Status,
		p.StatusReason, p.Config, configUpdatedAt, stringsValue(p.Requested), stringsValue(p.Granted),
		stringsValue(p.Denied), p.SecurityLevel, p.SandboxEnabled, p.Limits.MemoryMB, p.Limits.CPUPercent,
		p.Limits.FileHandles, installedAt, updatedAt,
	}, nil
}

// scanPlugin reads one row of pluginColumns.
func scanPlugin(r rowScanner) (store.Plugin, error) {
	var (
		p                                       store.Plugin
		configUpdatedAt, installedAt, updatedAt pgtype.Int8
	)
	err := r.Scan(&p.ID, &p.Version, &p.Manifest, &p.Dir, &p.Source, &p.PackageSHA256,
		&p.Enabled, &p.Status, &p.StatusReason, &p.Config, &configUpdatedAt, &p.Requested,
		&p.Granted, &p.Denied, &p.SecurityLevel, &p.SandboxEnabled, &p.Limits.MemoryMB,
		&p.Limits.CPUPercent, &p.Limits.FileHandles, &installedAt, &updatedAt)
	if err != nil {
		return store.Plugin{}, err
	}
	p.ConfigUpdatedAt = timeFrom(configUpdatedAt)
	p.InstalledAt = timeFrom(installedAt)
	p.UpdatedAt = timeFrom(updatedAt)
	return p, nil
}
