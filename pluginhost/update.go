package pluginhost

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
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

// Update stages the new version beside the running one and switches to it safely.
func (h *Host) Update(ctx context.Context, req UpdateRequest) (UpdateResult, error) {
	if req.Source == "" {
		req.Source = "repository"
	}
	data, err := h.fetchPackage(ctx, req.Source, req.PluginID, InstallRequest{
		Version: req.Version, FilePath: req.FilePath, PackageData: req.PackageData, DownloadURL: req.DownloadURL, SHA256: req.SHA256,
	})
	if err != nil {
		return UpdateResult{}, err
	}
	rawManifest, sha, err := archive.ReadManifest(bytes.NewReader(data), h.limits)
	if err != nil {
		return UpdateResult{}, packageError(err)
	}
	m, err := manifest.Parse(rawManifest)
	if err != nil {
		return UpdateResult{}, err
	}
	if m.ID != req.PluginID {
		return UpdateResult{}, errs.New(errs.ValidationError, "the package is plugin %s, not %s", m.ID, req.PluginID)
	}
	if err := m.CheckCompatible(Version); err != nil {
		return UpdateResult{}, err
	}
	if err := checkPlatform(m); err != nil {
		return UpdateResult{}, err
	}

	defer h.locks.lock(append(m.DependencyIDs(), req.PluginID)...)()
	all, _, err := h.loadAll(ctx)
	if err != nil {
		return UpdateResult{}, err
	}
	var old *loaded
	for i := range all {
		if all[i].rec.ID == req.PluginID {
			old = &all[i]
		}
	}
	if old == nil {
		return UpdateResult{}, errs.New(errs.PluginNotFound, "plugin %q is not installed", req.PluginID)
	}
	if err := checkDependencies(m, all); err != nil {
		return UpdateResult{}, err
	}
	if err := checkDependents(m, all); err != nil {
		return UpdateResult{}, err
	}
	running := h.Runtime(req.PluginID).Running
	if running && !req.RestartPlugin {
		return UpdateResult{}, errs.New(errs.ValidationError, "plugin %s is running: pass restart_plugin to switch it to the new version, or disable it first", req.PluginID)
	}
	schema := m.Schema()
	var cfg map[string]any
	if req.UpdateConfig {
		cfg, err = h.carryConfig(*old, schema, nil)
	} else {
		var current map[string]any
		if current, err = h.openConfig(*old); err == nil {
			cfg, _, _, err = applyConfig(schema, map[string]any{}, current)
		}
	}
	if err != nil {
		return UpdateResult{}, err
	}
	sealed, err := h.sealConfig(schema, cfg)
	if err != nil {
		return UpdateResult{}, err
	}
	// Stage the new version beside the old one.
	dir := filepath.Join(h.pluginsDir(), m.ID, m.Version+"-"+randomHex(6))
	if _, err := archive.Extract(ctx, bytes.NewReader(data), dir, h.limits); err != nil {
		return UpdateResult{}, packageError(err)
	}
	if err := checkEntryPoint(dir, m); err == nil {
		err = syncTree(dir)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return UpdateResult{}, err
	}
	now := h.now()
	res := UpdateResult{PluginID: m.ID, OldVersion: old.rec.Version, NewVersion: m.Version, At: now}
	var backup *store.Backup
	if req.BackupCurrent {
		b, err := h.copyToBackup(old.rec, "update", now)
		if err != nil {
			_ = os.RemoveAll(dir)
			return UpdateResult{}, err
		}
		backup, res.BackupID = &b, b.ID
	}
	granted, denied := h.policy.Decide(m.Permissions)
	granted, denied = keepDecisions(granted, denied, old.rec, m.Permissions)
	rec := old.rec
	rec.Version, rec.Manifest, rec.Dir, rec.PackageSHA256 = m.Version, rawManifest, h.rel(dir), sha
	rec.Config, rec.ConfigUpdatedAt, rec.UpdatedAt = sealed, now, now
	rec.Requested, rec.Granted, rec.Denied = sortedCopy(m.Permissions), granted, denied
	if err := h.switchVersion(ctx, old.rec, rec, backup, running, req.Source); err != nil {
		_ = os.RemoveAll(dir)
		if backup != nil {
			_ = os.RemoveAll(h.abs(backup.Dir))
		}
		return UpdateResult{}, err
	}
	_ = os.RemoveAll(h.abs(old.rec.Dir))
	h.system(ctx, "plugin.updated", map[string]any{"plugin_id": rec.ID, "old_version": old.rec.Version, "version": rec.Version})
	return res, nil
}

// switchVersion records rec in place of old and, when the plugin was running, restarts it on
// the new version; if that fails, the old record is restored and started again, and the
// failure is returned with its reason.
func (h *Host) switchVersion(ctx context.Context, old, rec store.Plugin, backup *store.Backup, running bool, source string) error {
	if running {
		h.rt.stop(ctx, h.rt.get(rec.ID), DisableOptions{Reason: "updating to " + rec.Version, Graceful: true, Timeout: 30 * time.Second})
	}
	err := h.write(ctx, func(tx store.Tx) error {
		if err := tx.PutPlugin(rec); err != nil {
			return err
		}
		if backup != nil {
			if err := tx.PutBackup(*backup); err != nil {
				return err
			}
		}
		return h.appendLogs(tx, []store.LogRecord{{PluginID: rec.ID, Time: rec.UpdatedAt, Level: "INFO",
			Message: fmt.Sprintf("Plugin updated from %s to %s", old.Version, rec.Version), Metadata: mustJSON(map[string]any{"source": source})}})
	})
	if err != nil {
		return errs.Wrap(errs.PluginInstallationFailed, err, "could not record the update")
	}
	if !running {
		return nil
	}
	if _, startErr := h.startLocked(ctx, rec.ID); startErr != nil {
		// Back to the old version, running again.
		_ = h.write(context.WithoutCancel(ctx), func(tx store.Tx) error {
			if backup != nil {
				_ = tx.DeleteBackup(backup.ID)
			}
			return tx.PutPlugin(old)
		})
		h.logs.Add(store.LogRecord{PluginID: rec.ID, Level: "ERROR",
			Message: fmt.Sprintf("Update to %s failed; version %s restored: %s", rec.Version, old.Version, errorMessage(startErr))})
		if _, err := h.startLocked(context.WithoutCancel(ctx), rec.ID); err != nil {
			h.log.Error("the restored version did not start", "plugin_id", rec.ID, "error", err)
		}
		e := errs.New(errs.PluginStartupFailed, "version %s did not start, so version %s was restored and is running: %s", rec.Version, old.Version, errorMessage(startErr))
		return e.WithDetail("restored_version", old.Version)
	}
	return nil
}

// Rollback restores a plugin's package and configuration from one of its backups (also
// after an uninstall that kept one). A running plugin is switched with the guarantees of
// Update: if the restored version does not start, the current one is kept.
func (h *Host) Rollback(ctx context.Context, id, backupID string) (UpdateResult, error) {
	var b store.Backup
	err := h.st.Read(ctx, func(tx store.Tx) error {
		var err error
		b, err = tx.Backup(backupID)
		return err
	})
	if err != nil || b.PluginID != id {
		return UpdateResult{}, errs.New(errs.PluginNotFound, "plugin %s has no backup %q", id, backupID)
	}
	defer h.locks.lock(id)()
	dir := filepath.Join(h.pluginsDir(), id, b.Version+"-"+randomHex(6))
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return UpdateResult{}, errs.Wrap(errs.Internal, err, "could not restore the backup")
	}
	tmp := dir + ".tmp"
	if _, err := copyTree(h.abs(b.Dir), tmp); err == nil {
		err = os.Rename(tmp, dir)
	}
	if err == nil {
		err = syncTree(dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		_ = os.RemoveAll(dir)
		return UpdateResult{}, errs.Wrap(errs.Internal, err, "could not restore the backup")
	}
	now := h.now()
	rec := b.Plugin
	rec.Dir, rec.UpdatedAt = h.rel(dir), now
	current, err := h.load(ctx, id)
	if errs.Is(err, errs.PluginNotFound) {
		// Reinstalled from the backup, stopped.
		rec.Enabled, rec.Status, rec.StatusReason = false, StatusInactive, "restored from "+backupID
		err = h.write(ctx, func(tx store.Tx) error {
			if err := tx.PutPlugin(rec); err != nil {
				return err
			}
			return h.appendLogs(tx, []store.LogRecord{{PluginID: id, Time: now, Level: "INFO",
				Message: fmt.Sprintf("Plugin reinstalled from backup %s (version %s)", backupID, rec.Version)}})
		})
		if err != nil {
			_ = os.RemoveAll(dir)
			return UpdateResult{}, errs.Wrap(errs.Internal, err, "could not record the rollback")
		}
		h.system(ctx, "plugin.updated", map[string]any{"plugin_id": id, "version": rec.Version, "rollback": true})
		return UpdateResult{PluginID: id, NewVersion: rec.Version, BackupID: backupID, At: now}, nil
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return UpdateResult{}, err
	}
	rec.Enabled, rec.Status, rec.StatusReason = current.rec.Enabled, current.rec.Status, current.rec.StatusReason
	running := h.Runtime(id).Running
	if err := h.switchVersion(ctx, current.rec, rec, nil, running, "backup "+backupID); err != nil {
		_ = os.RemoveAll(dir)
		return UpdateResult{}, err
	}
	_ = os.RemoveAll(h.abs(current.rec.Dir))
	h.system(ctx, "plugin.updated", map[string]any{"plugin_id": id, "old_version": current.rec.Version, "version": rec.Version})
	return UpdateResult{PluginID: id, OldVersion: current.rec.Version, NewVersion: rec.Version, BackupID: backupID, At: now}, nil
}
