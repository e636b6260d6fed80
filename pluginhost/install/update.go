package install

import (
	"context"
	"fmt"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// UpdateRequest asks for a plugin to move to another version.
type UpdateRequest struct {
	PluginID string
	// Source is "repository" (the default: Version is `latest` or a constraint), "file" or
	// "url", with the fields of InstallRequest.
	Source, Version, FilePath, DownloadURL, SHA256 string
	PackageData                                    []byte
	// BackupCurrent keeps the current package and configuration as a backup.
	BackupCurrent bool
	// RestartPlugin switches a running plugin to the new version, kept only if it becomes
	// active; otherwise the old version is restored and running again.
	RestartPlugin bool
	// UpdateConfig merges the new version's defaults into the configuration; without it
	// the current configuration must be valid for the new version as it is.
	UpdateConfig bool
}

// UpdateResult reports an update or a rollback.
type UpdateResult struct {
	PluginID, OldVersion, NewVersion, BackupID string
	At                                         time.Time
}

// Update stages the new version beside the running one and switches to it safely: fetch,
// inspect, plan, stage, then commit and activate in switchVersion (see pipeline.go).
func (h *Installer) Update(ctx context.Context, req UpdateRequest) (UpdateResult, error) {
	if req.Source == "" {
		req.Source = "repository"
	}
	data, err := h.fetchPackage(ctx, req.Source, req.PluginID, InstallRequest{
		Version: req.Version, FilePath: req.FilePath, PackageData: req.PackageData, DownloadURL: req.DownloadURL, SHA256: req.SHA256,
	})
	if err != nil {
		return UpdateResult{}, err
	}
	p, err := h.inspect(data)
	if err != nil {
		return UpdateResult{}, err
	}
	m := p.man
	if m.ID != req.PluginID {
		return UpdateResult{}, errs.New(errs.ValidationError, "the package is plugin %s, not %s", m.ID, req.PluginID)
	}
	defer h.rt.Lock(append(m.DependencyIDs(), req.PluginID)...)()
	rec, old, running, err := h.planUpdate(ctx, p, req)
	if err != nil {
		return UpdateResult{}, err
	}
	dir, err := h.stage(ctx, p)
	if err != nil {
		return UpdateResult{}, err
	}
	rec.Dir = h.rel(dir)
	res := UpdateResult{PluginID: m.ID, OldVersion: old.Version, NewVersion: m.Version, At: rec.UpdatedAt}
	var backup *store.Backup
	if req.BackupCurrent {
		b, err := h.copyToBackup(old, "update", rec.UpdatedAt)
		if err != nil {
			h.discard(dir, nil)
			return UpdateResult{}, err
		}
		backup, res.BackupID = &b, b.ID
	}
	line := store.LogRecord{Level: "INFO", Message: fmt.Sprintf("Plugin updated from %s to %s", old.Version, rec.Version),
		Metadata: mustJSON(map[string]any{"source": req.Source})}
	if err := h.switchVersion(ctx, old, rec, backup, running, line); err != nil {
		return UpdateResult{}, err
	}
	h.removeReplaced(old.Dir, rec.Dir)
	h.router.System(ctx, "plugin.updated", map[string]any{"plugin_id": rec.ID, "old_version": old.Version, "version": rec.Version})
	return res, nil
}

// planUpdate checks an update against the installed plugins (the caller holds the locks) and
// returns the new record (without its directory), the current one, and whether the plugin
// runs now.
func (h *Installer) planUpdate(ctx context.Context, p *pkg, req UpdateRequest) (store.Plugin, store.Plugin, bool, error) {
	m := p.man
	all, _, err := h.loadAll(ctx)
	if err != nil {
		return store.Plugin{}, store.Plugin{}, false, err
	}
	var old *loaded
	for i := range all {
		if all[i].rec.ID == req.PluginID {
			old = &all[i]
		}
	}
	if old == nil {
		return store.Plugin{}, store.Plugin{}, false, errs.New(errs.PluginNotFound, "plugin %q is not installed", req.PluginID)
	}
	if err := checkDependencies(m, all); err != nil {
		return store.Plugin{}, store.Plugin{}, false, err
	}
	if err := checkDependents(m, all); err != nil {
		return store.Plugin{}, store.Plugin{}, false, err
	}
	running := h.rt.Info(req.PluginID).Running
	if running && !req.RestartPlugin {
		return store.Plugin{}, store.Plugin{}, false, errs.New(errs.ValidationError,
			"plugin %s is running: pass restart_plugin to switch it to the new version, or disable it first", req.PluginID)
	}
	schema := m.Schema()
	var cfg map[string]any
	if req.UpdateConfig {
		cfg, err = h.carryConfig(*old, schema, nil)
	} else {
		cfg, _, _, err = registry.ApplyConfig(schema, map[string]any{}, old.p.Config())
	}
	if err != nil {
		return store.Plugin{}, store.Plugin{}, false, err
	}
	sealed, err := h.sealConfig(schema, cfg)
	if err != nil {
		return store.Plugin{}, store.Plugin{}, false, err
	}
	granted, denied := h.policy.Decide(m.Permissions)
	granted, denied = keepDecisions(granted, denied, old.rec, m.Permissions)
	now := h.now()
	rec := old.rec
	rec.Version, rec.Manifest, rec.PackageSHA256 = m.Version, p.raw, p.sha
	rec.Config, rec.ConfigUpdatedAt, rec.UpdatedAt = sealed, now, now
	rec.Requested, rec.Granted, rec.Denied = sortedCopy(m.Permissions), granted, denied
	return rec, old.rec, running, nil
}

// switchVersion commits rec in place of old and, when the plugin was running, restarts it on
// the new version; if that fails, the old record is restored and started again, and the
// failure is returned with its reason. On failure the new version's files are removed.
func (h *Installer) switchVersion(ctx context.Context, old, rec store.Plugin, backup *store.Backup, running bool, line store.LogRecord) error {
	if running {
		h.rt.StopLocked(ctx, rec.ID, runtime.DisableOptions{Reason: "updating to " + rec.Version, Graceful: true, Timeout: 30 * time.Second})
	}
	if err := h.commit(ctx, rec, backup, line, "update"); err != nil {
		if running {
			// The old version is still the one on record: it runs again.
			if _, serr := h.rt.StartLocked(context.WithoutCancel(ctx), rec.ID); serr != nil {
				h.log.Error("the current version did not start again after a failed update", "plugin_id", rec.ID, "error", serr)
			}
		}
		return err
	}
	if !running {
		return nil
	}
	if _, startErr := h.rt.StartLocked(ctx, rec.ID); startErr != nil {
		// Back to the old version, running again.
		_ = h.write(context.WithoutCancel(ctx), func(tx store.Tx) error {
			if backup != nil {
				_ = tx.DeleteBackup(backup.ID)
			}
			return tx.PutPlugin(old)
		})
		h.discard(h.abs(rec.Dir), backup)
		h.logs.Add(store.LogRecord{PluginID: rec.ID, Level: "ERROR",
			Message: fmt.Sprintf("Update to %s failed; version %s restored: %s", rec.Version, old.Version, errs.MessageOf(startErr))})
		if _, err := h.rt.StartLocked(context.WithoutCancel(ctx), rec.ID); err != nil {
			h.log.Error("the restored version did not start", "plugin_id", rec.ID, "error", err)
		}
		e := errs.New(errs.PluginStartupFailed, "version %s did not start, so version %s was restored and is running: %s", rec.Version, old.Version, errs.MessageOf(startErr))
		return e.WithDetail("restored_version", old.Version)
	}
	return nil
}

// Rollback restores a plugin's package and configuration from one of its backups (also
// after an uninstall that kept one). A running plugin is switched with the guarantees of
// Update: if the restored version does not start, the current one is kept.
func (h *Installer) Rollback(ctx context.Context, id, backupID string) (UpdateResult, error) {
	var b store.Backup
	err := h.reg.Store().Read(ctx, func(tx store.Tx) error {
		var err error
		b, err = tx.Backup(backupID)
		return err
	})
	if err != nil || b.PluginID != id {
		return UpdateResult{}, errs.New(errs.PluginNotFound, "plugin %s has no backup %q", id, backupID)
	}
	defer h.rt.Lock(id)()
	dir, err := h.stageCopy(b)
	if err != nil {
		return UpdateResult{}, err
	}
	now := h.now()
	rec := b.Plugin
	rec.Dir, rec.UpdatedAt = h.rel(dir), now
	current, err := h.load(ctx, id)
	if errs.Is(err, errs.PluginNotFound) {
		// Reinstalled from the backup, stopped.
		rec.Enabled, rec.Status, rec.StatusReason = false, registry.StatusInactive, "restored from "+backupID
		line := store.LogRecord{Level: "INFO", Message: fmt.Sprintf("Plugin reinstalled from backup %s (version %s)", backupID, rec.Version)}
		if err := h.commit(ctx, rec, nil, line, "rollback"); err != nil {
			return UpdateResult{}, err
		}
		h.router.System(ctx, "plugin.updated", map[string]any{"plugin_id": id, "version": rec.Version, "rollback": true})
		return UpdateResult{PluginID: id, NewVersion: rec.Version, BackupID: backupID, At: now}, nil
	}
	if err != nil {
		h.discard(dir, nil)
		return UpdateResult{}, err
	}
	rec.Enabled, rec.Status, rec.StatusReason = current.rec.Enabled, current.rec.Status, current.rec.StatusReason
	line := store.LogRecord{Level: "INFO", Message: fmt.Sprintf("Plugin updated from %s to %s", current.rec.Version, rec.Version),
		Metadata: mustJSON(map[string]any{"source": "backup " + backupID})}
	if err := h.switchVersion(ctx, current.rec, rec, nil, h.rt.Info(id).Running, line); err != nil {
		return UpdateResult{}, err
	}
	h.removeReplaced(current.rec.Dir, rec.Dir)
	h.router.System(ctx, "plugin.updated", map[string]any{"plugin_id": id, "old_version": current.rec.Version, "version": rec.Version})
	return UpdateResult{PluginID: id, OldVersion: current.rec.Version, NewVersion: rec.Version, BackupID: backupID, At: now}, nil
}
