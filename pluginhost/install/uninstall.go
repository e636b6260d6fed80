package install

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Uninstall removes a plugin.
func (h *Installer) Uninstall(ctx context.Context, id string, opts UninstallOptions) (UninstallResult, error) {
	unlock, dependents := h.rt.LockWithDependents(id)
	defer unlock()
	all, g, err := h.loadAll(ctx)
	if err != nil {
		return UninstallResult{}, err
	}
	idx := slices.IndexFunc(all, func(p loaded) bool { return p.rec.ID == id })
	if idx < 0 {
		return UninstallResult{}, errs.New(errs.PluginNotFound, "plugin %q is not installed", id)
	}
	p := all[idx]
	if deps := g.Dependents(id); len(deps) > 0 && !opts.Force {
		return UninstallResult{}, errs.New(errs.PluginDependencyError,
			"plugins %s depend on %s; uninstall them first or pass force", strings.Join(deps, ", "), id).
			WithDetail("dependents", deps)
	}
	// Its dependents (uninstalled by force) and the plugin itself are stopped first,
	// gracefully.
	h.rt.StopDependents(ctx, id, dependents, "uninstalled")
	h.rt.StopLocked(ctx, id, runtime.DisableOptions{Reason: "uninstalled", Graceful: true, Timeout: uninstallGrace})
	now := h.now()
	res := UninstallResult{PluginID: id, UninstalledAt: now, DataRemoved: opts.CleanupData}
	var backup *store.Backup
	if opts.Backup {
		b, err := h.copyToBackup(p.rec, "uninstall", now)
		if err != nil {
			return UninstallResult{}, err
		}
		backup = &b
		res.BackupCreated, res.BackupID = true, b.ID
	}
	err = h.write(ctx, func(tx store.Tx) error {
		if err := tx.DeletePlugin(id); err != nil {
			return err
		}
		if err := prunePackages(tx); err != nil {
			return err
		}
		if err := tx.DeletePluginTokens(id); err != nil {
			return err
		}
		if err := runtime.ForgetInstances(tx, id); err != nil {
			return err
		}
		if backup != nil {
			if err := tx.PutBackup(*backup); err != nil {
				return err
			}
		}
		if opts.CleanupData {
			return tx.DeleteLogs(id)
		}
		return h.logs.AppendIn(tx, []store.LogRecord{{PluginID: id, Time: now, Level: "INFO", Message: "Plugin uninstalled (version " + p.rec.Version + ")"}})
	})
	if err != nil {
		if backup != nil {
			_ = os.RemoveAll(h.abs(backup.Dir))
		}
		return UninstallResult{}, errs.Wrap(errs.Internal, err, "could not record the uninstallation")
	}
	if err := os.RemoveAll(h.abs(p.rec.Dir)); err != nil {
		h.log.Warn("could not remove the plugin directory; it is removed at the next start", "dir", p.rec.Dir, "error", err)
	}
	_ = os.Remove(filepath.Dir(h.abs(p.rec.Dir)))
	h.metrics.Forget(id)
	h.rt.Forget(id)
	if opts.CleanupData {
		// Lines the plugin wrote last may still be queued: they go too.
		if err := h.logs.Purge(context.WithoutCancel(ctx), id); err != nil {
			h.log.Warn("could not remove the plugin's logs", "plugin_id", id, "error", err)
		}
		if err := h.kv.DeleteAll(ctx, id); err != nil {
			h.log.Warn("could not remove the plugin's key-value data", "plugin_id", id, "error", err)
		}
		if err := h.router.Bus().Purge(ctx, id); err != nil {
			h.log.Warn("could not remove the plugin's inbox and dead letters", "plugin_id", id, "error", err)
		}
	}
	h.log.Info("plugin uninstalled", "plugin_id", id, "backup_id", res.BackupID, "data_removed", opts.CleanupData)
	h.router.System(ctx, "plugin.uninstalled", map[string]any{"plugin_id": id, "version": p.rec.Version, "data_removed": opts.CleanupData})
	return res, nil
}

// uninstallGrace is how long an uninstalled plugin's instances may take to shut down after
// the shutdown frame, before their process is signalled and their sessions are ended.
const uninstallGrace = 10 * time.Second

// copyToBackup copies a plugin's package directory into a new backup directory.
func (h *Installer) copyToBackup(rec store.Plugin, reason string, now time.Time) (store.Backup, error) {
	id := "backup_" + now.Format("20060102T150405") + "_" + randomHex(4)
	dir := filepath.Join(h.backupsDir(), rec.ID, id)
	tmp := dir + ".tmp"
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return store.Backup{}, errs.Wrap(errs.Internal, err, "could not create the backup")
	}
	size, err := copyTree(h.abs(rec.Dir), tmp)
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		_ = os.Remove(filepath.Dir(dir)) // the plugin's first backup leaves no empty backups/<id>/
		return store.Backup{}, errs.Wrap(errs.Internal, err, "could not create the backup")
	}
	return store.Backup{ID: id, PluginID: rec.ID, Version: rec.Version, Reason: reason, CreatedAt: now, Dir: h.rel(dir), SizeBytes: size, Plugin: rec}, nil
}

// syncTree flushes every file and directory of dir, and dir's entry in its parent, to disk.
func syncTree(dir string) error {
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink != 0 {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
	if err != nil {
		return err
	}
	parent, err := os.Open(filepath.Dir(dir))
	if err != nil {
		return err
	}
	defer parent.Close()
	return parent.Sync()
}

// copyTree copies regular files, directories and symlinks from src to a new dst.
func copyTree(src, dst string) (int64, error) {
	var total int64
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, info.Mode().Perm())
			if err != nil {
				return err
			}
			n, err := io.Copy(out, in)
			total += n
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			return err
		}
		return nil
	})
	return total, err
}
