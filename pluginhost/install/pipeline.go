package install

import (
	"bytes"
	"context"
	"os"
	"path/filepath"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// The stages every pipeline (install, update, rollback) goes through, in order:
//
//  1. fetch: the package's bytes (fetchPackage), before any lock is taken;
//  2. inspect: its manifest, checked against this server and platform (inspect);
//  3. plan: against the installed plugins, under the lifecycle locks of the plugin and of
//     its dependencies (each pipeline's own checks);
//  4. stage: the files, extracted beside any installed version and flushed to disk (stage,
//     stageCopy), so a crash never leaves half a plugin;
//  5. commit: the record, its backup and a log line in one transaction (commit);
//  6. activate: start the plugin when asked, switching versions safely (switchVersion).
//
// Nothing is removed that a stored record refers to, and a failed pipeline leaves nothing
// behind: no record, no package directory (not even an empty plugins/<id>/), no backup.
// A server stopped in the middle of a pipeline leaves either the old state or the new one
// once it starts again: directories no record refers to are removed by Sweep, and an
// update whose new version had not proven itself yet is undone (see switchVersion).
//
// The steps reported to Options.OnStep, in order: "fetched", "inspected", "planned",
// "staged", "backed-up" (when a backup is made), then for an install or a switch that
// needs no start "committed"; for the switch of a running plugin "stopped", "switched"
// (the new record and its version switch stored), "started" (the new version active),
// "committed" (the switch deleted), or, when the new version failed, "start-failed" and
// "restored"; and last "cleaned" (the replaced version's files removed).

// pkg is a fetched and inspected package.
type pkg struct {
	data []byte
	// raw is the manifest as the package holds it, sha the package's sha256.
	raw []byte
	sha string
	man *manifest.Manifest
}

// inspect reads a package's manifest and checks that this server and platform can run it.
func (h *Installer) inspect(data []byte) (*pkg, error) {
	raw, sha, err := archive.ReadManifest(bytes.NewReader(data), h.limits)
	if err != nil {
		return nil, packageError(err)
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, err
	}
	if err := m.CheckCompatible(h.hostVersion); err != nil {
		return nil, err
	}
	if err := checkPlatform(m); err != nil {
		return nil, err
	}
	return &pkg{data: data, raw: raw, sha: sha, man: m}, nil
}

// stage extracts a package into a new directory beside any installed version, checks its
// entry point and flushes it to disk. On failure nothing is left.
func (h *Installer) stage(ctx context.Context, p *pkg) (string, error) {
	dir := h.newPackageDir(p.man.ID, p.man.Version)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", errs.Wrap(errs.PluginInstallationFailed, err, "could not prepare the plugin directory")
	}
	if _, err := archive.Extract(ctx, bytes.NewReader(p.data), dir, h.limits); err != nil {
		removeStaged(dir)
		return "", packageError(err)
	}
	if err := checkEntryPoint(dir, p.man); err != nil {
		removeStaged(dir)
		return "", err
	}
	// The package must be on disk before the registry says it is installed.
	if err := syncTree(dir); err != nil {
		removeStaged(dir)
		return "", errs.Wrap(errs.PluginInstallationFailed, err, "could not write the package to disk")
	}
	if err := h.keepPackage(ctx, p); err != nil {
		removeStaged(dir)
		return "", err
	}
	return dir, nil
}

// stageCopy copies a backup's package into a new directory, the way stage extracts one.
func (h *Installer) stageCopy(b store.Backup) (string, error) {
	dir := h.newPackageDir(b.PluginID, b.Version)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", errs.Wrap(errs.Internal, err, "could not restore the backup")
	}
	tmp := dir + ".tmp"
	_, err := copyTree(h.abs(b.Dir), tmp)
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err == nil {
		err = syncTree(dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		removeStaged(dir)
		return "", errs.Wrap(errs.Internal, err, "could not restore the backup")
	}
	return dir, nil
}

// removeStaged removes a staged directory, and the plugin's directory (plugins/<id>) when
// that is left empty: a first version that failed to stage leaves nothing.
func removeStaged(dir string) {
	_ = os.RemoveAll(dir)
	_ = os.Remove(filepath.Dir(dir)) // fails, harmlessly, while other versions are there
}

// newPackageDir is a new directory for a version of a plugin's package.
func (h *Installer) newPackageDir(id, version string) string {
	return filepath.Join(h.pluginsDir(), id, version+"-"+randomHex(6))
}

// commit records rec, its backup and its version switch (each when not nil) and a log line
// in one transaction. When it fails, the staged directory and the backup's files are
// removed: nothing refers to them.
func (h *Installer) commit(ctx context.Context, rec store.Plugin, backup *store.Backup, sw *store.VersionSwitch, line store.LogRecord, what string) error {
	err := h.write(ctx, func(tx store.Tx) error {
		if err := tx.PutPlugin(rec); err != nil {
			return err
		}
		if err := prunePackages(tx); err != nil {
			return err
		}
		if backup != nil {
			if err := tx.PutBackup(*backup); err != nil {
				return err
			}
		}
		if sw != nil {
			if err := tx.PutVersionSwitch(*sw); err != nil {
				return err
			}
		}
		line.PluginID = rec.ID
		if line.Time.IsZero() {
			line.Time = rec.UpdatedAt
		}
		return h.logs.AppendIn(tx, []store.LogRecord{line})
	})
	if err != nil {
		h.discard(h.abs(rec.Dir), backup)
		return errs.Wrap(errs.PluginInstallationFailed, err, "could not record the %s", what)
	}
	return nil
}

// discard removes a staged directory and a backup's files that no record refers to, and
// the plugin's directories under plugins/ and backups/ when that leaves them empty.
func (h *Installer) discard(dir string, backup *store.Backup) {
	removeStaged(dir)
	if backup != nil {
		removeStaged(h.abs(backup.Dir))
	}
}

// removeReplaced removes the package directory of a version that was replaced.
func (h *Installer) removeReplaced(old, current string) {
	if h.abs(old) == h.abs(current) {
		return
	}
	if err := os.RemoveAll(h.abs(old)); err != nil {
		h.log.Warn("could not remove the replaced plugin directory; it is removed at the next start", "dir", old, "error", err)
	}
}
