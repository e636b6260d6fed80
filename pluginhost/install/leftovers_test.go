package install_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/install"
)

// A failed install, update or rollback leaves no directory behind, not even an empty
// plugins/<id>/ or backups/<id>/, and removes nothing of the installed version.
func TestFailuresLeaveNoDirectory(t *testing.T) {
	ctx := context.Background()
	notExecutable := func(m map[string]any) { m["entry_point"] = "bin/tool" }
	withTool := map[string]string{"bin/tool": "#!/bin/sh\n"} // written 0644

	t.Run("install: entry point not executable", func(t *testing.T) {
		f := newFixture(t)
		_, err := f.inst.Install(ctx, install.InstallRequest{Source: "file", PackageData: build(t, manifest("new-plugin", "1.0.0", notExecutable), withTool)})
		e := wantCode(t, err, errs.PluginInstallationFailed)
		if msg := errs.MessageOf(e); msg != "the entry point bin/tool is not executable" || len(e.Fields) != 1 || e.Fields[0].Field != "entry_point" {
			t.Fatalf("message %q, fields %+v; want the entry point named, and the field entry_point", msg, e.Fields)
		}
		f.wantAbsent(t, "plugins/new-plugin")
		f.wantContents(t)
	})

	t.Run("install: invalid manifest", func(t *testing.T) {
		f := newFixture(t)
		_, err := f.inst.Install(ctx, install.InstallRequest{Source: "file", PackageData: build(t, manifest("new-plugin", "1.0.0", func(m map[string]any) {
			m["permissions"] = []string{"not a permission"}
		}), nil)})
		wantCode(t, err, errs.ValidationError)
		f.wantAbsent(t, "plugins/new-plugin")
		f.wantContents(t)
	})

	t.Run("update: entry point not executable", func(t *testing.T) {
		f := newFixture(t)
		f.install(t, build(t, manifest("alpha-plugin", "1.0.0"), nil), nil)
		_, err := f.inst.Update(ctx, install.UpdateRequest{PluginID: "alpha-plugin", Source: "file", BackupCurrent: true,
			PackageData: build(t, manifest("alpha-plugin", "1.1.0", notExecutable), withTool)})
		wantCode(t, err, errs.PluginInstallationFailed)
		f.wantPackage(t, "alpha-plugin", "1.0.0")
		f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*")
	})

	t.Run("update: the backup cannot be made", func(t *testing.T) {
		f := newFixture(t)
		f.install(t, build(t, manifest("alpha-plugin", "1.0.0"), nil), nil)
		// The installed version's files are away while the update copies them.
		dir := filepath.Join(f.dataDir, f.get(t, "alpha-plugin").Record().Dir)
		away := filepath.Join(t.TempDir(), "away")
		if err := os.Rename(dir, away); err != nil {
			t.Fatal(err)
		}
		_, err := f.inst.Update(ctx, install.UpdateRequest{PluginID: "alpha-plugin", Source: "file", BackupCurrent: true,
			PackageData: build(t, manifest("alpha-plugin", "1.1.0"), nil)})
		wantCode(t, err, errs.Internal)
		// The failed update removed the plugin's emptied directory too: nothing was in it.
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(away, dir); err != nil {
			t.Fatal(err)
		}
		f.wantAbsent(t, "backups/alpha-plugin")
		f.wantPackage(t, "alpha-plugin", "1.0.0")
		f.wantContents(t, "plugins/alpha-plugin", "plugins/alpha-plugin/1.0.0-*")
	})

	t.Run("rollback after uninstall: the backup's files are gone", func(t *testing.T) {
		f := newFixture(t)
		f.install(t, build(t, manifest("alpha-plugin", "1.0.0"), nil), nil)
		un, err := f.inst.Uninstall(ctx, "alpha-plugin", install.UninstallOptions{Backup: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(f.dataDir, "backups", "alpha-plugin", un.BackupID)); err != nil {
			t.Fatal(err)
		}
		_, err = f.inst.Rollback(ctx, "alpha-plugin", un.BackupID)
		wantCode(t, err, errs.Internal)
		f.wantAbsent(t, "plugins/alpha-plugin")
		f.wantContents(t, "backups/alpha-plugin")
	})
}

// wantAbsent fails the test if path, relative to the data directory, exists.
func (f *fixture) wantAbsent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(f.dataDir, path)); !os.IsNotExist(err) {
		t.Fatalf("%s exists (%v)", path, err)
	}
}
