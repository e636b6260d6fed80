package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func testAudit(t *testing.T, s store.Store) {
	at := base()
	entry := func(i int, target string) store.AuditEntry {
		return store.AuditEntry{
			ID:        fmt.Sprintf("audit-%d", i),
			Time:      at.Add(time.Duration(i) * time.Second),
			Actor:     "tok-admin",
			ActorName: "root",
			Role:      store.RoleAdmin,
			Action:    "nexus.plugin.v1.PluginService/InstallPlugin",
			Target:    target,
			Outcome:   "ok",
			RequestID: fmt.Sprintf("req-%d", i),
			Details:   []byte(fmt.Sprintf(`{"step":%d}`, i)),
		}
	}
	es := []store.AuditEntry{
		entry(0, "p1"),
		entry(1, "p2"),
		entry(2, "p1"),
		entry(3, ""),
		entry(4, "p1"),
		entry(5, "p2"),
	}
	es[3].Actor, es[3].ActorName, es[3].Role, es[3].Outcome, es[3].Details = "", "", "", "unauthenticated", nil
	// Appended out of time order: the result is ordered by time, not by append.
	write(t, s, func(tx store.Tx) error {
		for _, i := range []int{2, 0, 1, 5, 3, 4} {
			if err := tx.AppendAudit(es[i]); err != nil {
				return err
			}
		}
		return nil
	})

	pick := func(idx ...int) []store.AuditEntry {
		out := make([]store.AuditEntry, len(idx))
		for i, j := range idx {
			out[i] = es[j]
		}
		return out
	}
	tests := []struct {
		name   string
		filter store.AuditFilter
		want   []store.AuditEntry
	}{
		{"all", store.AuditFilter{}, pick(5, 4, 3, 2, 1, 0)},
		{"target", store.AuditFilter{Target: "p1"}, pick(4, 2, 0)},
		{"unknown target", store.AuditFilter{Target: "p9"}, nil},
		{"since is inclusive", store.AuditFilter{Since: es[2].Time}, pick(5, 4, 3, 2)},
		{"since in UTC", store.AuditFilter{Since: es[2].Time.UTC()}, pick(5, 4, 3, 2)},
		{"since after all", store.AuditFilter{Since: at.Add(time.Hour)}, nil},
		{"limit", store.AuditFilter{Limit: 2}, pick(5, 4)},
		{"limit above count", store.AuditFilter{Limit: 100}, pick(5, 4, 3, 2, 1, 0)},
		{"target and since", store.AuditFilter{Target: "p1", Since: es[1].Time}, pick(4, 2)},
		{"target, since and limit", store.AuditFilter{Target: "p2", Since: es[0].Time, Limit: 1}, pick(5)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			read(t, s, func(tx store.Tx) error {
				got, err := tx.Audit(tc.filter)
				if err != nil {
					return fmt.Errorf("Audit(%+v): %w", tc.filter, err)
				}
				checkAll(t, fmt.Sprintf("Audit(%+v)", tc.filter), got, tc.want, normAudit)
				return nil
			})
		})
	}
}
