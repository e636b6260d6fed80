package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func testPlugins(t *testing.T, s store.Store) {
	at := base()
	read(t, s, func(tx store.Tx) error {
		ps, err := tx.Plugins()
		if err != nil {
			t.Errorf("Plugins of an empty store: %v", err)
		}
		if len(ps) != 0 {
			t.Errorf("Plugins of an empty store: %d records", len(ps))
		}
		_, err = tx.Plugin("absent")
		wantErr(t, "Plugin(absent)", err, store.ErrNotFound)
		return nil
	})

	a, b, c := samplePlugin("alpha", at), samplePlugin("bravo", at.Add(time.Hour)), samplePlugin("charlie", at)
	write(t, s, func(tx store.Tx) error {
		for _, p := range []store.Plugin{c, a, b} {
			if err := tx.PutPlugin(p); err != nil {
				return err
			}
		}
		return nil
	})
	read(t, s, func(tx store.Tx) error {
		got, err := tx.Plugin("bravo")
		if err != nil {
			return fmt.Errorf("Plugin(bravo): %w", err)
		}
		check(t, "Plugin(bravo)", got, b, normPlugin)
		all, err := tx.Plugins()
		if err != nil {
			return fmt.Errorf("Plugins: %w", err)
		}
		checkAll(t, "Plugins ordered by id", all, []store.Plugin{a, b, c}, normPlugin)
		return nil
	})

	// PutPlugin replaces every field, including with zero values.
	b2 := store.Plugin{
		ID:            "bravo",
		Version:       "2.0.0",
		Dir:           "/var/lib/nexus/plugins/bravo-2",
		Source:        "file",
		Status:        "error",
		StatusReason:  "exited with status 1",
		Granted:       []string{},
		SecurityLevel: "critical",
		InstalledAt:   b.InstalledAt,
		UpdatedAt:     at.Add(3 * time.Hour),
	}
	write(t, s, func(tx store.Tx) error { return tx.PutPlugin(b2) })
	read(t, s, func(tx store.Tx) error {
		got, err := tx.Plugin("bravo")
		if err != nil {
			return fmt.Errorf("Plugin(bravo) after replace: %w", err)
		}
		check(t, "Plugin(bravo) after replace", got, b2, normPlugin)
		return nil
	})

	write(t, s, func(tx store.Tx) error { return tx.DeletePlugin("alpha") })
	err := s.Write(t.Context(), func(tx store.Tx) error { return tx.DeletePlugin("alpha") })
	wantErr(t, "DeletePlugin of a deleted plugin", err, store.ErrNotFound)
	read(t, s, func(tx store.Tx) error {
		_, err := tx.Plugin("alpha")
		wantErr(t, "Plugin(alpha) after delete", err, store.ErrNotFound)
		all, err := tx.Plugins()
		if err != nil {
			return fmt.Errorf("Plugins: %w", err)
		}
		checkAll(t, "Plugins after delete", all, []store.Plugin{b2, c}, normPlugin)
		return nil
	})
}

func testDeletePluginKeepsRelated(t *testing.T, s store.Store) {
	at := base()
	p := samplePlugin("p1", at)
	tok := store.Token{ID: "tok1", Name: "p1", Role: store.RolePlugin, PluginID: "p1", Hash: []byte{1, 2, 3}, CreatedAt: at}
	bk := store.Backup{ID: "bk1", PluginID: "p1", Version: "1.2.3", Reason: "manual", CreatedAt: at, Dir: "/b/bk1", SizeBytes: 10, Plugin: p}
	write(t, s, func(tx store.Tx) error {
		if err := tx.PutPlugin(p); err != nil {
			return err
		}
		if err := tx.PutToken(tok); err != nil {
			return err
		}
		if err := tx.PutBackup(bk); err != nil {
			return err
		}
		return tx.AppendLogs([]store.LogRecord{{PluginID: "p1", Time: at, Level: "INFO", Message: "hello"}})
	})
	write(t, s, func(tx store.Tx) error { return tx.DeletePlugin("p1") })
	read(t, s, func(tx store.Tx) error {
		if _, err := tx.TokenByHash(tok.Hash); err != nil {
			t.Errorf("token after DeletePlugin: %v", err)
		}
		if _, err := tx.Backup("bk1"); err != nil {
			t.Errorf("backup after DeletePlugin: %v", err)
		}
		_, total, err := tx.Logs(store.LogFilter{PluginID: "p1", Page: 1, PerPage: 10})
		if err != nil || total != 1 {
			t.Errorf("logs after DeletePlugin: total %d, error %v; want 1 record", total, err)
		}
		return nil
	})
}
