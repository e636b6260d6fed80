package install

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/runtime"

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
	const op = "update"
	if req.Source == "" {
		req.Source = "repository"
	}
	data, err := h.fetchPackage(ctx, req.Source, req.PluginID, InstallRequest{
		Version: req.Version, FilePath: req.FilePath, PackageData: req.PackageData, DownloadURL: req.DownloadURL, SHA256: req.SHA256,
	})
	if err != nil {
		return UpdateResult{}, err
	}
	h.step(op, "fetched")
	p, err := h.inspect(data)
	if err != nil {
		return UpdateResult{}, err
	}
	h.step(op, "inspected")
	m := p.man
	if m.ID != req.PluginID {
		return UpdateResult{}, errs.New(errs.ValidationError, "the package is plugin %s, not %s", m.ID, req.PluginID)
	}
	defer h.rt.Lock(append(m.DependencyIDs(), req.PluginID)...)()
	rec, old, running, err := h.planUpdate(ctx, p, req)
	if err != nil {
		return UpdateResult{}, err
	}
	h.step(op, "planned")
	dir, err := h.stage(ctx, p)
	if err != nil {
		return UpdateResult{}, err
	}
	h.step(op, "staged")
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
		h.step(op, "backed-up")
	}
	line := store.LogRecord{Level: "INFO", Message: fmt.Sprintf("Plugin updated from %s to %s", old.Version, rec.Version),
		Metadata: mustJSON(map[string]any{"source": req.Source})}
	if err := h.switchVersion(ctx, op, old, rec, backup, running, line); err != nil {
		return UpdateResult{}, err
	}
	h.removeReplaced(old.Dir, rec.Dir)
	h.step(op, "cleaned")
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
	if err := h.router.EndpointConflict(req.PluginID, m.APIEndpoints); err != nil {
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
//
// The switch of a running plugin is durable. The new record is stored together with a
// version switch that names old (its version, directory and configuration) and the backup
// made for the update; the update is committed only once the new version is active, by
// deleting the switch. A server stopped before that finds the switch when it starts again
// and undoes the update (see Sweep). Old's directory is removed only after the commit, by
// the caller.
func (h *Installer) switchVersion(ctx context.Context, op string, old, rec store.Plugin, backup *store.Backup, running bool, line store.LogRecord) error {
	if !running {
		// Nothing has to prove itself: storing the record is the commit.
		if err := h.commit(ctx, rec, backup, nil, line, "update"); err != nil {
			return err
		}
		h.step(op, "committed")
		return nil
	}
	h.rt.StopLocked(ctx, rec.ID, runtime.DisableOptions{Reason: "updating to " + rec.Version, Graceful: true, Timeout: 30 * time.Second})
	h.step(op, "stopped")
	sw := store.VersionSwitch{PluginID: rec.ID, Old: old, NewVersion: rec.Version, NewDir: rec.Dir, StartedAt: rec.UpdatedAt}
	if backup != nil {
		sw.BackupID = backup.ID
	}
	if err := h.commit(ctx, rec, backup, &sw, line, "update"); err != nil {
		// The old version is still the one on record: it runs again.
		if _, serr := h.rt.StartLocked(context.WithoutCancel(ctx), rec.ID); serr != nil {
			h.log.Error("the current version did not start again after a failed update", "plugin_id", rec.ID, "error", serr)
		}
		return err
	}
	h.step(op, "switched")
	_, startErr := h.rt.StartLocked(ctx, rec.ID)
	var failure *errs.Error
	if startErr == nil {
		h.step(op, "started")
		err := h.write(context.WithoutCancel(ctx), func(tx store.Tx) error { return tx.DeleteVersionSwitch(rec.ID) })
		if err == nil {
			h.step(op, "committed")
			return nil
		}
		// Active, but not recorded as the version to keep: back to the old one now rather
		// than at the next start.
		h.log.Error("could not record the end of an update", "plugin_id", rec.ID, "error", err)
		h.rt.StopLocked(context.WithoutCancel(ctx), rec.ID, runtime.DisableOptions{Reason: "the update could not be recorded", Graceful: true, Timeout: 30 * time.Second})
		startErr = errs.Wrap(errs.PluginInstallationFailed, err, "the update could not be recorded")
		failure = errs.New(errs.PluginInstallationFailed, "the update to %s could not be recorded, so version %s was restored", rec.Version, old.Version)
	} else {
		failure = errs.New(errs.PluginStartupFailed, "version %s did not start, so version %s was restored and is running: %s", rec.Version, old.Version, errs.MessageOf(startErr))
	}
	h.step(op, "start-failed")
	// Back to the old version, running again.
	err := h.write(context.WithoutCancel(ctx), func(tx store.Tx) error {
		if backup != nil {
			if err := tx.DeleteBackup(backup.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		if err := tx.DeleteVersionSwitch(rec.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.PutPlugin(old)
	})
	if err != nil {
		// The switch is still stored: the next start restores the old version. Until then
		// both versions' files stay.
		h.log.Error("could not restore the previous version after a failed update; it is restored at the next start",
			"plugin_id", rec.ID, "version", old.Version, "error", err)
		return errs.Wrap(errs.PluginStartupFailed, err, "version %s did not start, and version %s could not be restored until the server restarts: %s",
			rec.Version, old.Version, errs.MessageOf(startErr))
	}
	h.step(op, "restored")
	h.discard(h.abs(rec.Dir), backup)
	h.logs.Add(store.LogRecord{PluginID: rec.ID, Level: "ERROR",
		Message: fmt.Sprintf("Update to %s failed; version %s restored: %s", rec.Version, old.Version, errs.MessageOf(startErr))})
	if _, err := h.rt.StartLocked(context.WithoutCancel(ctx), rec.ID); err != nil {
		h.log.Error("the restored version did not start", "plugin_id", rec.ID, "error", err)
	}
	return failure.WithDetail("restored_version", old.Version)
}

// undoSwitches undoes the updates a stopped server left in flight (see switchVersion): each
// plugin's old record is put back and the backup made for the update is dropped, in one
// transaction with a log line. The new version's files, and the backup's, are left for the
// sweep: no record refers to them any more.
func (h *Installer) undoSwitches(ctx context.Context) error {
	var switches []store.VersionSwitch
	if err := h.reg.Store().Read(ctx, func(tx store.Tx) error {
		var err error
		switches, err = tx.VersionSwitches()
		return err
	}); err != nil {
		return fmt.Errorf("install: read the updates in flight: %w", err)
	}
	for _, sw := range switches {
		err := h.write(ctx, func(tx store.Tx) error {
			if sw.BackupID != "" {
				if err := tx.DeleteBackup(sw.BackupID); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			if err := tx.DeleteVersionSwitch(sw.PluginID); err != nil {
				return err
			}
			if err := tx.PutPlugin(sw.Old); err != nil {
				return err
			}
			return h.logs.AppendIn(tx, []store.LogRecord{{PluginID: sw.PluginID, Time: h.now(), Level: "WARN",
				Message: fmt.Sprintf("The update to %s did not finish before the server stopped; version %s restored", sw.NewVersion, sw.Old.Version)}})
		})
		if err != nil {
			return fmt.Errorf("install: undo the interrupted update of %s: %w", sw.PluginID, err)
		}
		h.log.Warn("an update did not finish before the server stopped; the previous version is restored",
			"plugin_id", sw.PluginID, "version", sw.Old.Version, "interrupted_version", sw.NewVersion)
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
	h.step("rollback", "staged")
	now := h.now()
	rec := b.Plugin
	rec.Dir, rec.UpdatedAt = h.rel(dir), now
	current, err := h.load(ctx, id)
	if errs.Is(err, errs.PluginNotFound) {
		// Reinstalled from the backup, stopped.
		rec.Enabled, rec.Status, rec.StatusReason = false, registry.StatusInactive, "restored from "+backupID
		line := store.LogRecord{Level: "INFO", Message: fmt.Sprintf("Plugin reinstalled from backup %s (version %s)", backupID, rec.Version)}
		if err := h.commit(ctx, rec, nil, nil, line, "rollback"); err != nil {
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
	if err := h.switchVersion(ctx, "rollback", current.rec, rec, nil, h.rt.Info(id).Running, line); err != nil {
		return UpdateResult{}, err
	}
	h.removeReplaced(current.rec.Dir, rec.Dir)
	h.step("rollback", "cleaned")
	h.router.System(ctx, "plugin.updated", map[string]any{"plugin_id": id, "old_version": current.rec.Version, "version": rec.Version})
	return UpdateResult{PluginID: id, OldVersion: current.rec.Version, NewVersion: rec.Version, BackupID: backupID, At: now}, nil
}
