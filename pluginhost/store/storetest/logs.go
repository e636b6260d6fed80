package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// sampleLogs returns ten records of plugin p1 one second apart (index i at base+i s) and
// three of p2 at the same times, all matching "connection".
func sampleLogs(at time.Time) (p1, p2 []store.LogRecord) {
	msgs := []struct{ level, msg string }{
		{"DEBUG", "starting up"},
		{"INFO", "listening on :8080"},
		{"WARNING", "disk usage at 91%"},
		{"ERROR", "Connection FAILED: timeout"},
		{"INFO", "connection restored"},
		{"DEBUG", "cache_hit ratio 0.9"},
		{"ERROR", "ÉCHEC de la requête"},
		{"WARNING", "slow request"},
		{"INFO", "shutting down"},
		{"NOTICE", "a level the store does not know"},
	}
	for i, m := range msgs {
		r := store.LogRecord{PluginID: "p1", Time: at.Add(time.Duration(i) * time.Second), Level: m.level, Message: m.msg}
		if i%2 == 0 {
			r.Metadata = []byte(fmt.Sprintf(`{"i":%d}`, i))
		}
		p1 = append(p1, r)
	}
	for i := range 3 {
		p2 = append(p2, store.LogRecord{PluginID: "p2", Time: at.Add(time.Duration(i) * time.Second), Level: "ERROR", Message: "connection lost"})
	}
	return p1, p2
}

func testLogs(t *testing.T, s store.Store) {
	at := base()
	p1, p2 := sampleLogs(at)
	write(t, s, func(tx store.Tx) error {
		// Appended in two batches, the second out of time order.
		if err := tx.AppendLogs(append(p1[:5:5], p2...)); err != nil {
			return err
		}
		if err := tx.AppendLogs(nil); err != nil {
			return fmt.Errorf("AppendLogs(nil): %w", err)
		}
		return tx.AppendLogs([]store.LogRecord{p1[9], p1[7], p1[8], p1[5], p1[6]})
	})

	pick := func(idx ...int) []store.LogRecord {
		out := make([]store.LogRecord, len(idx))
		for i, j := range idx {
			out[i] = p1[j]
		}
		return out
	}
	sec := func(i int) time.Time { return at.Add(time.Duration(i) * time.Second) }
	all := store.LogFilter{PluginID: "p1", Page: 1, PerPage: 100}
	with := func(mod func(f *store.LogFilter)) store.LogFilter {
		f := all
		mod(&f)
		return f
	}
	tests := []struct {
		name   string
		filter store.LogFilter
		want   []store.LogRecord
		total  int
	}{
		{"all", all, pick(9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 10},
		{"other plugin", with(func(f *store.LogFilter) { f.PluginID = "p2" }), []store.LogRecord{p2[2], p2[1], p2[0]}, 3},
		{"unknown plugin", with(func(f *store.LogFilter) { f.PluginID = "p9" }), nil, 0},
		{"min level DEBUG drops unknown levels", with(func(f *store.LogFilter) { f.MinLevel = "DEBUG" }), pick(8, 7, 6, 5, 4, 3, 2, 1, 0), 9},
		{"min level INFO", with(func(f *store.LogFilter) { f.MinLevel = "INFO" }), pick(8, 7, 6, 4, 3, 2, 1), 7},
		{"min level WARNING", with(func(f *store.LogFilter) { f.MinLevel = "WARNING" }), pick(7, 6, 3, 2), 4},
		{"min level ERROR", with(func(f *store.LogFilter) { f.MinLevel = "ERROR" }), pick(6, 3), 2},
		{"search is case-insensitive", with(func(f *store.LogFilter) { f.Search = "CONNECTION" }), pick(4, 3), 2},
		{"search lower case", with(func(f *store.LogFilter) { f.Search = "failed" }), pick(3), 1},
		{"search unicode case", with(func(f *store.LogFilter) { f.Search = "échec" }), pick(6), 1},
		{"search percent is literal", with(func(f *store.LogFilter) { f.Search = "91%" }), pick(2), 1},
		{"search underscore is literal", with(func(f *store.LogFilter) { f.Search = "_" }), pick(5), 1},
		{"search no match", with(func(f *store.LogFilter) { f.Search = "nothing like this" }), nil, 0},
		{"start and end are inclusive", with(func(f *store.LogFilter) { f.Start, f.End = sec(3), sec(6) }), pick(6, 5, 4, 3), 4},
		{"start and end in UTC", with(func(f *store.LogFilter) { f.Start, f.End = sec(3).UTC(), sec(6).UTC() }), pick(6, 5, 4, 3), 4},
		{"start only", with(func(f *store.LogFilter) { f.Start = sec(8) }), pick(9, 8), 2},
		{"end only", with(func(f *store.LogFilter) { f.End = sec(1) }), pick(1, 0), 2},
		{"between records", with(func(f *store.LogFilter) { f.Start, f.End = sec(3).Add(time.Nanosecond), sec(4).Add(-time.Nanosecond) }), nil, 0},
		{"every filter", with(func(f *store.LogFilter) {
			f.MinLevel, f.Search, f.Start, f.End = "INFO", "conn", sec(4), sec(9)
		}), pick(4), 1},
		{"page 1", with(func(f *store.LogFilter) { f.PerPage = 3 }), pick(9, 8, 7), 10},
		{"page 2", with(func(f *store.LogFilter) { f.Page, f.PerPage = 2, 3 }), pick(6, 5, 4), 10},
		{"last page", with(func(f *store.LogFilter) { f.Page, f.PerPage = 4, 3 }), pick(0), 10},
		{"past the last page", with(func(f *store.LogFilter) { f.Page, f.PerPage = 5, 3 }), nil, 10},
		{"page of a filter", with(func(f *store.LogFilter) { f.MinLevel, f.Page, f.PerPage = "INFO", 2, 2 }), pick(6, 4), 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			read(t, s, func(tx store.Tx) error {
				got, total, err := tx.Logs(tc.filter)
				if err != nil {
					return fmt.Errorf("Logs(%+v): %w", tc.filter, err)
				}
				if total != tc.total {
					t.Errorf("Logs(%+v): total %d, want %d", tc.filter, total, tc.total)
				}
				checkAll(t, fmt.Sprintf("Logs(%+v)", tc.filter), got, tc.want, normLog)
				return nil
			})
		})
	}
}

func testTrimAndDeleteLogs(t *testing.T, s store.Store) {
	at := base()
	p1, p2 := sampleLogs(at)
	write(t, s, func(tx store.Tx) error { return tx.AppendLogs(append(p1, p2...)) })

	logs := func(pluginID string) []store.LogRecord {
		t.Helper()
		var out []store.LogRecord
		read(t, s, func(tx store.Tx) error {
			recs, total, err := tx.Logs(store.LogFilter{PluginID: pluginID, Page: 1, PerPage: 100})
			if err != nil {
				return err
			}
			if total != len(recs) {
				t.Errorf("Logs(%s): total %d, %d records", pluginID, total, len(recs))
			}
			out = recs
			return nil
		})
		return out
	}

	steps := []struct {
		name     string
		pluginID string
		keep     int
		want     []store.LogRecord
	}{
		{"keep more than there are", "p1", 100, []store.LogRecord{p1[9], p1[8], p1[7], p1[6], p1[5], p1[4], p1[3], p1[2], p1[1], p1[0]}},
		{"keep newest four", "p1", 4, []store.LogRecord{p1[9], p1[8], p1[7], p1[6]}},
		{"keep as many as there are", "p1", 4, []store.LogRecord{p1[9], p1[8], p1[7], p1[6]}},
		{"keep one", "p1", 1, []store.LogRecord{p1[9]}},
		{"keep none", "p1", 0, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			write(t, s, func(tx store.Tx) error { return tx.TrimLogs(st.pluginID, st.keep) })
			checkAll(t, "p1 after TrimLogs", logs("p1"), st.want, normLog)
			checkAll(t, "p2 after trimming p1", logs("p2"), []store.LogRecord{p2[2], p2[1], p2[0]}, normLog)
		})
	}

	write(t, s, func(tx store.Tx) error { return tx.AppendLogs(p1[:2]) })
	write(t, s, func(tx store.Tx) error { return tx.DeleteLogs("p2") })
	checkAll(t, "p2 after DeleteLogs", logs("p2"), nil, normLog)
	checkAll(t, "p1 after DeleteLogs(p2)", logs("p1"), []store.LogRecord{p1[1], p1[0]}, normLog)
	write(t, s, func(tx store.Tx) error { return tx.DeleteLogs("no-such-plugin") })
}
