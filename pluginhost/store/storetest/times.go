package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func testTimeRoundTrip(t *testing.T, s store.Store) {
	tests := []struct {
		name string
		at   time.Time
	}{
		{"zero", time.Time{}},
		{"UTC with nanoseconds", time.Date(2026, 11, 24, 23, 59, 59, 999999999, time.UTC)},
		{"other location", time.Date(2026, 3, 29, 2, 30, 0, 1, time.FixedZone("UTC-9:30", -(9*3600+30*60)))},
		{"local monotonic", time.Now()},
		{"one nanosecond before the epoch", time.Unix(0, -1)},
		{"the epoch", time.Unix(0, 0)},
		{"1901", time.Date(1901, 1, 1, 0, 0, 0, 1, time.UTC)},
		{"2199", time.Date(2199, 12, 31, 23, 59, 59, 999999999, time.UTC)},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("t%d", i)
			p := store.Plugin{ID: id, ConfigUpdatedAt: tc.at, InstalledAt: tc.at, UpdatedAt: tc.at}
			tok := store.Token{ID: id, Role: store.RoleUser, Hash: []byte(id), CreatedAt: tc.at, RevokedAt: tc.at, ExpiresAt: tc.at}
			e := store.AuditEntry{ID: id, Time: tc.at, Target: id}
			rec := store.LogRecord{PluginID: id, Time: tc.at, Level: "INFO", Message: id}
			bk := store.Backup{ID: id, PluginID: id, CreatedAt: tc.at, Plugin: p}
			kv := store.KVEntry{PluginID: id, Key: id, Version: 1, ExpiresAt: tc.at, UpdatedAt: tc.at}
			rep := store.Replica{ID: id, StartedAt: tc.at, HeartbeatAt: tc.at}
			write(t, s, func(tx store.Tx) error {
				if err := tx.PutPlugin(p); err != nil {
					return err
				}
				if err := tx.PutToken(tok); err != nil {
					return err
				}
				if err := tx.AppendAudit(e); err != nil {
					return err
				}
				if err := tx.AppendLogs([]store.LogRecord{rec}); err != nil {
					return err
				}
				if err := tx.PutBackup(bk); err != nil {
					return err
				}
				if err := tx.PutKV(kv); err != nil {
					return err
				}
				return tx.PutReplica(rep)
			})

			var got []time.Time
			read(t, s, func(tx store.Tx) error {
				gp, err := tx.Plugin(id)
				if err != nil {
					return err
				}
				gt, err := tx.TokenByHash(tok.Hash)
				if err != nil {
					return err
				}
				ge, err := tx.Audit(store.AuditFilter{Target: id})
				if err != nil {
					return err
				}
				if len(ge) != 1 {
					return fmt.Errorf("Audit: %d entries, want 1", len(ge))
				}
				gl, _, err := tx.Logs(store.LogFilter{PluginID: id, Page: 1, PerPage: 10})
				if err != nil {
					return err
				}
				if len(gl) != 1 {
					return fmt.Errorf("Logs: %d records, want 1", len(gl))
				}
				gb, err := tx.Backup(id)
				if err != nil {
					return err
				}
				gk, err := tx.KV(id, id)
				if err != nil {
					return err
				}
				reps, err := tx.Replicas()
				if err != nil {
					return err
				}
				var gr store.Replica
				for _, r := range reps {
					if r.ID == id {
						gr = r
					}
				}
				got = []time.Time{
					gp.ConfigUpdatedAt, gp.InstalledAt, gp.UpdatedAt, gt.CreatedAt, gt.RevokedAt, gt.ExpiresAt,
					ge[0].Time, gl[0].Time, gb.CreatedAt, gb.Plugin.ConfigUpdatedAt,
					gb.Plugin.InstalledAt, gb.Plugin.UpdatedAt, gk.ExpiresAt, gk.UpdatedAt, gr.StartedAt, gr.HeartbeatAt,
				}
				return nil
			})
			names := []string{
				"Plugin.ConfigUpdatedAt", "Plugin.InstalledAt", "Plugin.UpdatedAt",
				"Token.CreatedAt", "Token.RevokedAt", "Token.ExpiresAt", "AuditEntry.Time", "LogRecord.Time",
				"Backup.CreatedAt", "Backup.Plugin.ConfigUpdatedAt", "Backup.Plugin.InstalledAt",
				"Backup.Plugin.UpdatedAt", "KVEntry.ExpiresAt", "KVEntry.UpdatedAt", "Replica.StartedAt", "Replica.HeartbeatAt",
			}
			for i, g := range got {
				if !g.Equal(tc.at) || g.IsZero() != tc.at.IsZero() {
					t.Errorf("%s = %s, want %s", names[i], g.Format(time.RFC3339Nano), tc.at.Format(time.RFC3339Nano))
				}
			}
		})
	}
}
