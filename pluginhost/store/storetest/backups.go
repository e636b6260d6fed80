package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func testBackups(t *testing.T, s store.Store) {
	at := base()
	b1 := store.Backup{
		ID: "bk-1", PluginID: "p1", Version: "1.0.0", Reason: "update", CreatedAt: at,
		Dir: "/var/lib/nexus/backups/bk-1", SizeBytes: 1 << 40, Plugin: samplePlugin("p1", at.Add(-time.Hour)),
	}
	b2 := store.Backup{
		ID: "bk-2", PluginID: "p1", Version: "1.1.0", Reason: "manual", CreatedAt: at.Add(time.Hour),
		Dir: "/var/lib/nexus/backups/bk-2", SizeBytes: 0, Plugin: store.Plugin{ID: "p1", Version: "1.1.0"},
	}
	b3 := store.Backup{
		ID: "bk-3", PluginID: "p2", Version: "0.1.0", Reason: "uninstall", CreatedAt: at.Add(30 * time.Minute),
		Dir: "/var/lib/nexus/backups/bk-3", SizeBytes: 42, Plugin: samplePlugin("p2", at),
	}
	b3.Plugin.Enabled, b3.Plugin.SandboxEnabled, b3.Plugin.Denied = false, false, nil
	write(t, s, func(tx store.Tx) error {
		for _, b := range []store.Backup{b1, b3, b2} {
			if err := tx.PutBackup(b); err != nil {
				return err
			}
		}
		return nil
	})

	read(t, s, func(tx store.Tx) error {
		for _, want := range []store.Backup{b1, b2, b3} {
			got, err := tx.Backup(want.ID)
			if err != nil {
				return fmt.Errorf("Backup(%s): %w", want.ID, err)
			}
			check(t, "Backup("+want.ID+")", got, want, normBackup)
		}
		_, err := tx.Backup("absent")
		wantErr(t, "Backup(absent)", err, store.ErrNotFound)
		return nil
	})

	lists := []struct {
		pluginID string
		want     []store.Backup
	}{
		{"p1", []store.Backup{b2, b1}},
		{"p2", []store.Backup{b3}},
		{"p9", nil},
	}
	for _, tc := range lists {
		t.Run("Backups("+tc.pluginID+")", func(t *testing.T) {
			read(t, s, func(tx store.Tx) error {
				got, err := tx.Backups(tc.pluginID)
				if err != nil {
					return fmt.Errorf("Backups(%s): %w", tc.pluginID, err)
				}
				checkAll(t, "Backups("+tc.pluginID+") newest first", got, tc.want, normBackup)
				return nil
			})
		})
	}

	dup := b3
	dup.PluginID = "p1"
	err := s.Write(t.Context(), func(tx store.Tx) error { return tx.PutBackup(dup) })
	wantErr(t, "PutBackup with a used id", err, store.ErrConflict)

	write(t, s, func(tx store.Tx) error { return tx.DeleteBackup("bk-1") })
	err = s.Write(t.Context(), func(tx store.Tx) error { return tx.DeleteBackup("bk-1") })
	wantErr(t, "DeleteBackup of a deleted backup", err, store.ErrNotFound)
	read(t, s, func(tx store.Tx) error {
		_, err := tx.Backup("bk-1")
		wantErr(t, "Backup after delete", err, store.ErrNotFound)
		got, err := tx.Backups("p1")
		if err != nil {
			return fmt.Errorf("Backups(p1): %w", err)
		}
		checkAll(t, "Backups(p1) after delete", got, []store.Backup{b2}, normBackup)
		return nil
	})
}
