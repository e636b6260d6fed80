package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Package files in a store that several servers share (store.PackageTx): an install or an
// update keeps the package file it unpacked, so that another server, whose data directory
// does not have the plugin's files, can unpack the same bytes (EnsurePackage) before it
// starts the plugin. A store without PackageTx (SQLite, one server) keeps none.

// packageGrace is how long a stored package file is kept before it may be pruned while no
// record refers to it: the time between its install's stage and commit.
const packageGrace = time.Hour

// packageTx is the store's PackageTx behind tx, if it has one.
func packageTx(tx store.Tx) (store.PackageTx, bool) {
	if rt, ok := tx.(*registry.Tx); ok {
		tx = rt.Tx
	}
	pt, ok := tx.(store.PackageTx)
	return pt, ok
}

// keepPackage stores a staged package's file in the store, when the store keeps them.
func (h *Installer) keepPackage(ctx context.Context, p *pkg) error {
	err := h.reg.Store().Write(ctx, func(tx store.Tx) error {
		pt, ok := packageTx(tx)
		if !ok {
			return nil
		}
		_, err := pt.PutPackage(p.data)
		return err
	})
	if err != nil {
		return errs.Wrap(errs.PluginInstallationFailed, err, "could not keep the package in the store for the other servers")
	}
	return nil
}

// prunePackages removes, in tx, the package files that no record refers to any more.
func prunePackages(tx store.Tx) error {
	pt, ok := packageTx(tx)
	if !ok {
		return nil
	}
	_, err := pt.PrunePackages(time.Now().Add(-packageGrace))
	return err
}

// EnsurePackage makes sure the plugin's files are in this server's data directory before it
// starts: when they are not (the plugin was installed or updated through another server),
// it unpacks the package file the store keeps, after checking it against the record's
// sha256, with the limits of an install.
func (h *Installer) EnsurePackage(ctx context.Context, rec store.Plugin) error {
	dir := h.abs(rec.Dir)
	if _, err := os.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return errs.Wrap(errs.PluginStartupFailed, err, "the files of plugin %s cannot be read", rec.ID)
	}
	var data []byte
	err := h.reg.Store().Read(ctx, func(tx store.Tx) error {
		pt, ok := packageTx(tx)
		if !ok {
			return errors.New("its files are not in this server's data directory, and the store keeps no package files")
		}
		var err error
		data, err = pt.Package(rec.PackageSHA256)
		if errors.Is(err, store.ErrNotFound) {
			return errors.New("its files are not in this server's data directory, and the store has no package file with its sha256")
		}
		return err
	})
	if err != nil {
		return errs.Wrap(errs.PluginStartupFailed, err, "plugin %s cannot start here: %v", rec.ID, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != rec.PackageSHA256 {
		return errs.New(errs.PluginStartupFailed, "plugin %s cannot start here: the stored package file has sha256 %s, not %s as installed", rec.ID, got, rec.PackageSHA256)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return errs.Wrap(errs.PluginStartupFailed, err, "could not prepare the directory of plugin %s", rec.ID)
	}
	tmp := dir + ".fetch"
	_ = os.RemoveAll(tmp)
	if _, err := archive.Extract(ctx, bytes.NewReader(data), tmp, h.limits); err != nil {
		_ = os.RemoveAll(tmp)
		return errs.Wrap(errs.PluginStartupFailed, err, "could not unpack the package of plugin %s", rec.ID)
	}
	if err := syncTree(tmp); err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return errs.Wrap(errs.PluginStartupFailed, err, "could not unpack the package of plugin %s", rec.ID)
	}
	h.log.Info("unpacked a plugin installed through another server", "plugin_id", rec.ID, "version", rec.Version, "dir", rec.Dir)
	return nil
}
