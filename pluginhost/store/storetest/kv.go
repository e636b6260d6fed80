package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func normKV(e store.KVEntry) store.KVEntry {
	e.Value = normBytes(e.Value)
	e.ExpiresAt = normTime(e.ExpiresAt)
	e.UpdatedAt = normTime(e.UpdatedAt)
	return e
}

func testKV(t *testing.T, s store.Store) {
	at := base()
	read(t, s, func(tx store.Tx) error {
		_, err := tx.KV("p1", "absent")
		wantErr(t, "KV(absent)", err, store.ErrNotFound)
		return nil
	})
	write(t, s, func(tx store.Tx) error {
		wantErr(t, "DeleteKV(absent)", tx.DeleteKV("p1", "absent"), store.ErrNotFound)
		return nil
	})

	e1 := store.KVEntry{
		PluginID: "p1", Key: "config/theme", Value: []byte(`{"dark":true}`), Version: 1,
		ExpiresAt: at.Add(time.Hour), UpdatedAt: at,
	}
	e2 := store.KVEntry{PluginID: "p1", Key: "blob", Value: []byte{0, 1, 0xfe, 0xff}, Version: 1<<62 + 3, UpdatedAt: at}
	// The same key in another plugin is another entry.
	e3 := store.KVEntry{PluginID: "p2", Key: "config/theme", Value: []byte(`"light"`), Version: 7, UpdatedAt: at.Add(time.Second)}
	write(t, s, func(tx store.Tx) error {
		for _, e := range []store.KVEntry{e1, e2, e3} {
			if err := tx.PutKV(e); err != nil {
				return err
			}
		}
		return nil
	})
	checkKV := func(t *testing.T, want ...store.KVEntry) {
		t.Helper()
		read(t, s, func(tx store.Tx) error {
			for _, w := range want {
				got, err := tx.KV(w.PluginID, w.Key)
				if err != nil {
					return fmt.Errorf("KV(%s, %s): %w", w.PluginID, w.Key, err)
				}
				check(t, "KV("+w.PluginID+", "+w.Key+")", got, w, normKV)
			}
			return nil
		})
	}
	checkKV(t, e1, e2, e3)
	wantCount(t, s, map[string]int{"p1": 2, "p2": 1, "p3": 0})

	t.Run("replace", func(t *testing.T) {
		e1b := e1
		e1b.Value, e1b.Version, e1b.ExpiresAt, e1b.UpdatedAt = []byte(`[]`), 2, time.Time{}, at.Add(time.Minute)
		write(t, s, func(tx store.Tx) error { return tx.PutKV(e1b) })
		checkKV(t, e1b, e2, e3)
		wantCount(t, s, map[string]int{"p1": 2, "p2": 1})
	})

	t.Run("delete", func(t *testing.T) {
		write(t, s, func(tx store.Tx) error { return tx.DeleteKV("p1", "config/theme") })
		read(t, s, func(tx store.Tx) error {
			_, err := tx.KV("p1", "config/theme")
			wantErr(t, "KV after DeleteKV", err, store.ErrNotFound)
			return nil
		})
		checkKV(t, e2, e3)
		wantCount(t, s, map[string]int{"p1": 1, "p2": 1})
		write(t, s, func(tx store.Tx) error {
			wantErr(t, "DeleteKV twice", tx.DeleteKV("p1", "config/theme"), store.ErrNotFound)
			return nil
		})
	})
}

func testKVList(t *testing.T, s store.Store) {
	at := base()
	// Keys that a LIKE or GLOB pattern, a case-insensitive or a character-wise comparison
	// would get wrong.
	keys := []string{
		"a", "a%", "a%b", "a_b", "axb", "ab", "aB", "A", "a/b", "a\x7f", "a\x7fz", "a\u0080",
		"b", "é", "éa", "ê", "z", "日本", "日本語",
	}
	write(t, s, func(tx store.Tx) error {
		for i, k := range keys {
			e := store.KVEntry{PluginID: "p1", Key: k, Value: []byte(fmt.Sprint(i)), Version: int64(i + 1), UpdatedAt: at}
			if i%3 == 0 {
				e.ExpiresAt = at.Add(-time.Hour) // expired entries are listed too
			}
			if err := tx.PutKV(e); err != nil {
				return err
			}
		}
		// Another plugin's keys never show.
		for _, k := range []string{"a", "a%c", "c"} {
			if err := tx.PutKV(store.KVEntry{PluginID: "p2", Key: k, Version: 1, UpdatedAt: at}); err != nil {
				return err
			}
		}
		return nil
	})
	sorted := slices.Clone(keys)
	slices.Sort(sorted) // byte-wise, as the store must order

	list := func(t *testing.T, prefix, after string, limit int) []string {
		t.Helper()
		var got []string
		read(t, s, func(tx store.Tx) error {
			es, err := tx.KVList("p1", prefix, after, limit)
			if err != nil {
				return fmt.Errorf("KVList(%q, %q, %d): %w", prefix, after, limit, err)
			}
			for _, e := range es {
				if e.PluginID != "p1" {
					t.Errorf("KVList(p1) returned an entry of %q", e.PluginID)
				}
				got = append(got, e.Key)
			}
			return nil
		})
		return got
	}
	want := func(prefix, after string, limit int) []string {
		var out []string
		for _, k := range sorted {
			if strings.HasPrefix(k, prefix) && k > after && len(out) < limit {
				out = append(out, k)
			}
		}
		return out
	}

	tests := []struct {
		name, prefix, after string
		limit               int
	}{
		{"everything", "", "", 100},
		{"limit", "", "", 3},
		{"after a key", "", "a_b", 100},
		{"after a non-key", "", "aa", 4},
		{"after everything", "", "\U0010ffff", 100},
		{"prefix a", "a", "", 100},
		{"percent is not a wildcard", "a%", "", 100},
		{"underscore is not a wildcard", "a_", "", 100},
		{"case matters", "aB", "", 100},
		{"upper case", "A", "", 100},
		{"prefix ending in 0x7f", "a\x7f", "", 100},
		{"two-byte prefix", "é", "", 100},
		{"three-byte prefix", "日本", "", 100},
		{"prefix and after", "a", "a%b", 3},
		{"after below the prefix", "b", "a", 100},
		{"after above the prefix", "a", "b", 100},
		{"no match", "q", "", 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := list(t, tc.prefix, tc.after, tc.limit)
			if w := want(tc.prefix, tc.after, tc.limit); !slices.Equal(got, w) {
				t.Errorf("KVList(%q, %q, %d) = %q, want %q", tc.prefix, tc.after, tc.limit, got, w)
			}
		})
	}

	t.Run("pages", func(t *testing.T) {
		var all []string
		after := ""
		for range len(keys) + 1 {
			page := list(t, "", after, 4)
			all = append(all, page...)
			if len(page) < 4 {
				break
			}
			after = page[len(page)-1]
		}
		if !slices.Equal(all, sorted) {
			t.Errorf("pages = %q, want %q", all, sorted)
		}
	})

	t.Run("entries", func(t *testing.T) {
		read(t, s, func(tx store.Tx) error {
			es, err := tx.KVList("p2", "", "", 10)
			if err != nil {
				return err
			}
			checkAll(t, "KVList(p2)", es, []store.KVEntry{
				{PluginID: "p2", Key: "a", Version: 1, UpdatedAt: at},
				{PluginID: "p2", Key: "a%c", Version: 1, UpdatedAt: at},
				{PluginID: "p2", Key: "c", Version: 1, UpdatedAt: at},
			}, normKV)
			return nil
		})
	})
}

func testKVExpired(t *testing.T, s store.Store) {
	at := base()
	entries := []store.KVEntry{
		{PluginID: "p1", Key: "minus-1h", ExpiresAt: at.Add(-time.Hour)},
		{PluginID: "p2", Key: "minus-2h", ExpiresAt: at.Add(-2 * time.Hour)},
		{PluginID: "p1", Key: "at", ExpiresAt: at},
		{PluginID: "p2", Key: "plus-1h", ExpiresAt: at.Add(time.Hour)},
		{PluginID: "p1", Key: "never"},
	}
	write(t, s, func(tx store.Tx) error {
		for _, e := range entries {
			e.Version, e.UpdatedAt = 1, at.Add(-3*time.Hour)
			if err := tx.PutKV(e); err != nil {
				return err
			}
		}
		return nil
	})
	steps := []struct {
		name   string
		before time.Time
		limit  int
		want   int
		left   []string
	}{
		{"soonest first", at, 1, 1, []string{"p1/at", "p1/minus-1h", "p1/never", "p2/plus-1h"}},
		{"strictly before", at, 10, 1, []string{"p1/at", "p1/never", "p2/plus-1h"}},
		{"nothing more", at, 10, 0, []string{"p1/at", "p1/never", "p2/plus-1h"}},
		{"one nanosecond later", at.Add(time.Nanosecond), 10, 1, []string{"p1/never", "p2/plus-1h"}},
		{"far future", at.AddDate(100, 0, 0), 10, 1, []string{"p1/never"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var n int
			write(t, s, func(tx store.Tx) error {
				var err error
				n, err = tx.DeleteKVExpired(st.before, st.limit)
				return err
			})
			if n != st.want {
				t.Errorf("DeleteKVExpired = %d, want %d", n, st.want)
			}
			var left []string
			read(t, s, func(tx store.Tx) error {
				for _, p := range []string{"p1", "p2"} {
					es, err := tx.KVList(p, "", "", 100)
					if err != nil {
						return err
					}
					for _, e := range es {
						left = append(left, e.PluginID+"/"+e.Key)
					}
				}
				return nil
			})
			if !slices.Equal(left, st.left) {
				t.Errorf("left %q, want %q", left, st.left)
			}
		})
	}
}

func testKVReaders(t *testing.T, s store.Store) {
	readers := func(t *testing.T, id string) []string {
		t.Helper()
		var got []string
		read(t, s, func(tx store.Tx) error {
			var err error
			got, err = tx.KVReaders(id)
			return err
		})
		return got
	}
	if got := readers(t, "p1"); len(got) != 0 {
		t.Errorf("KVReaders of a plugin that never shared = %q", got)
	}
	steps := []struct {
		name    string
		readers []string
		want    []string
	}{
		{"set, ordered, duplicates once", []string{"p4", "p2", "p3", "p2"}, []string{"p2", "p3", "p4"}},
		{"replace", []string{"p5"}, []string{"p5"}},
		{"empty", []string{}, nil},
		{"again", []string{"p3"}, []string{"p3"}},
		{"nil", nil, nil},
	}
	write(t, s, func(tx store.Tx) error { return tx.PutKVReaders("other", []string{"p1"}) })
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			write(t, s, func(tx store.Tx) error { return tx.PutKVReaders("p1", st.readers) })
			if got := readers(t, "p1"); !slices.Equal(normStrings(got), st.want) {
				t.Errorf("KVReaders(p1) = %q, want %q", got, st.want)
			}
			if got := readers(t, "other"); !slices.Equal(got, []string{"p1"}) {
				t.Errorf("KVReaders(other) = %q, changed by PutKVReaders(p1)", got)
			}
		})
	}
}

func testDeletePluginKV(t *testing.T, s store.Store) {
	at := base()
	write(t, s, func(tx store.Tx) error {
		for _, p := range []string{"p1", "p2"} {
			for _, k := range []string{"a", "b", "c"} {
				if err := tx.PutKV(store.KVEntry{PluginID: p, Key: k, Version: 1, UpdatedAt: at}); err != nil {
					return err
				}
			}
		}
		for owner, rs := range map[string][]string{"p1": {"p2", "p3"}, "p2": {"p1", "p3"}, "p3": {"p1"}} {
			if err := tx.PutKVReaders(owner, rs); err != nil {
				return err
			}
		}
		return nil
	})
	write(t, s, func(tx store.Tx) error { return tx.DeletePluginKV("p1") })
	wantCount(t, s, map[string]int{"p1": 0, "p2": 3})
	read(t, s, func(tx store.Tx) error {
		for owner, want := range map[string][]string{"p1": nil, "p2": {"p3"}, "p3": nil} {
			got, err := tx.KVReaders(owner)
			if err != nil {
				return err
			}
			if !slices.Equal(normStrings(got), want) {
				t.Errorf("KVReaders(%s) after DeletePluginKV(p1) = %q, want %q", owner, got, want)
			}
		}
		return nil
	})
	// A plugin without entries or shares.
	write(t, s, func(tx store.Tx) error { return tx.DeletePluginKV("p9") })
	wantCount(t, s, map[string]int{"p2": 3})
}

// wantCount fails the test unless KVCount of each plugin is as given.
func wantCount(t *testing.T, s store.Store, want map[string]int) {
	t.Helper()
	read(t, s, func(tx store.Tx) error {
		for id, w := range want {
			n, err := tx.KVCount(id)
			if err != nil {
				return fmt.Errorf("KVCount(%s): %w", id, err)
			}
			if n != w {
				t.Errorf("KVCount(%s) = %d, want %d", id, n, w)
			}
		}
		return nil
	})
}
