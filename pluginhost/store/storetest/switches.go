package storetest

import (
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func testVersionSwitches(t *testing.T, s store.Store) {
	at := base()
	s1 := store.VersionSwitch{PluginID: "p2", Old: samplePlugin("p2", at.Add(-time.Hour)), NewVersion: "2.0.0",
		NewDir: "plugins/p2/2.0.0-abc", BackupID: "bk-1", StartedAt: at}
	s2 := store.VersionSwitch{PluginID: "p1", Old: store.Plugin{ID: "p1", Version: "0.1.0"}, NewVersion: "0.2.0",
		NewDir: "plugins/p1/0.2.0-def", StartedAt: at.Add(time.Minute)}
	write(t, s, func(tx store.Tx) error {
		if err := tx.PutVersionSwitch(s1); err != nil {
			return err
		}
		return tx.PutVersionSwitch(s2)
	})
	read(t, s, func(tx store.Tx) error {
		got, err := tx.VersionSwitches()
		checkAll(t, "VersionSwitches ordered by plugin id", got, []store.VersionSwitch{s2, s1}, normSwitch)
		return err
	})

	// A second switch of a plugin replaces its first.
	s1b := s1
	s1b.NewVersion, s1b.NewDir, s1b.BackupID = "3.0.0", "plugins/p2/3.0.0-123", ""
	write(t, s, func(tx store.Tx) error { return tx.PutVersionSwitch(s1b) })
	write(t, s, func(tx store.Tx) error { return tx.DeleteVersionSwitch("p1") })
	err := s.Write(t.Context(), func(tx store.Tx) error { return tx.DeleteVersionSwitch("p1") })
	wantErr(t, "DeleteVersionSwitch of a deleted switch", err, store.ErrNotFound)
	read(t, s, func(tx store.Tx) error {
		got, err := tx.VersionSwitches()
		checkAll(t, "VersionSwitches after replace and delete", got, []store.VersionSwitch{s1b}, normSwitch)
		return err
	})
}
