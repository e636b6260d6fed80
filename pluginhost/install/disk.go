package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func (h *Installer) pluginsDir() string { return filepath.Join(h.dataDir, "plugins") }
func (h *Installer) backupsDir() string { return filepath.Join(h.dataDir, "backups") }

// Sweep finishes or undoes what a server stopped in the middle of a pipeline left: it runs
// as the server starts, after the registry is loaded and before any plugin starts. First it
// undoes the updates still in flight (their new version had not proven itself: the old
// record is put back, see switchVersion); then it creates the package and backup
// directories and removes package and backup directories that no record references, and
// unfinished ".extract-*" and ".tmp" directories. When a record points outside the data
// directory (an older layout), no directory is removed.
func (h *Installer) Sweep(ctx context.Context) error {
	if err := h.undoSwitches(ctx); err != nil {
		return err
	}
	for _, d := range []string{h.pluginsDir(), h.backupsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("install: create %s: %w", d, err)
		}
	}
	referenced := map[string]bool{}
	outside := ""
	for _, p := range h.reg.Snapshot().All() {
		dir := h.abs(p.Record().Dir)
		referenced[dir] = true
		if !h.inDataDir(dir) {
			outside = dir
		}
	}
	if outside != "" {
		h.log.Warn("a plugin record points outside the data directory; leftover directories are not removed", "dir", outside)
		return nil
	}
	isBackup := func(dir string) bool {
		var found bool
		_ = h.reg.Store().Read(ctx, func(tx store.Tx) error {
			b, err := tx.Backup(filepath.Base(dir))
			found = err == nil && h.abs(b.Dir) == dir
			return nil
		})
		return found
	}
	for _, root := range []struct {
		dir  string
		keep func(string) bool
	}{
		{h.pluginsDir(), func(d string) bool { return referenced[d] }},
		{h.backupsDir(), isBackup},
	} {
		if err := h.sweepDir(root.dir, root.keep); err != nil {
			return fmt.Errorf("pluginhost: sweep: %w", err)
		}
	}
	return nil
}

// sweepDir removes the entries of root/<id>/ that keep rejects, and empty <id> directories.
func (h *Installer) sweepDir(root string, keep func(string) bool) error {
	ids, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !id.IsDir() {
			continue
		}
		idDir := filepath.Join(root, id.Name())
		entries, err := os.ReadDir(idDir)
		if err != nil {
			return err
		}
		left := 0
		for _, e := range entries {
			dir := filepath.Join(idDir, e.Name())
			if keep(dir) {
				left++
				continue
			}
			h.log.Warn("removing a directory left by an interrupted operation", "dir", dir)
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
		if left == 0 {
			_ = os.Remove(idDir)
		}
	}
	return nil
}

// abs resolves a directory recorded relative to the data directory (records keep relative
// paths, so the data directory can move).
func (h *Installer) abs(dir string) string {
	if filepath.IsAbs(dir) {
		return filepath.Clean(dir)
	}
	return filepath.Join(h.dataDir, dir)
}

// rel is the recorded form of a directory inside the data directory.
func (h *Installer) rel(dir string) string {
	if r, err := filepath.Rel(h.dataDir, dir); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return dir
}

func (h *Installer) inDataDir(dir string) bool {
	r, err := filepath.Rel(h.dataDir, dir)
	return err == nil && r != "." && !strings.HasPrefix(r, "..")
}
