package kv_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/kv"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// clock is a settable time source. Safe for concurrent use: now is guarded by mu.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// openStore opens a SQLite store in the test's temporary directory and closes it when the
// test ends.
func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := storesqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

// newKV returns a kv.Store on a new database with the test clock (opts.Now is replaced).
func newKV(t *testing.T, opts kv.Options) (*kv.Store, *clock) {
	t.Helper()
	c := newClock()
	opts.Now = c.Now
	return kv.New(openStore(t), opts), c
}

// wantViolation fails the test unless err is a VALIDATION_ERROR naming field.
func wantViolation(t *testing.T, what string, err error, field string) {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.ValidationError {
		t.Errorf("%s: error %v, want a %s", what, err, errs.ValidationError)
		return
	}
	for _, f := range e.Fields {
		if f.Field == field {
			return
		}
	}
	t.Errorf("%s: violations %v do not name %s", what, e.Fields, field)
}

func mustPut(t *testing.T, s *kv.Store, owner, key, value string, ttl time.Duration) kv.Entry {
	t.Helper()
	e, err := s.Put(t.Context(), owner, key, []byte(value), ttl)
	if err != nil {
		t.Fatalf("Put(%s, %s): %v", owner, key, err)
	}
	return e
}

// mustGet returns the entry, or the zero entry when it is absent.
func mustGet(t *testing.T, s *kv.Store, owner, key string) (kv.Entry, bool) {
	t.Helper()
	e, ok, err := s.Get(t.Context(), owner, key)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", owner, key, err)
	}
	if !ok && !isZero(e) {
		t.Errorf("Get(%s, %s) reported absent but returned %+v", owner, key, e)
	}
	return e, ok
}

func isZero(e kv.Entry) bool {
	return e.Key == "" && e.Value == nil && e.Version == 0 && e.ExpiresAt.IsZero() && e.UpdatedAt.IsZero()
}

// keys lists every key of owner, through all pages.
func keys(t *testing.T, s *kv.Store, owner, prefix string) []string {
	t.Helper()
	var out []string
	after := ""
	for {
		es, next, err := s.List(t.Context(), owner, prefix, after, kv.MaxListLimit)
		if err != nil {
			t.Fatalf("List(%s, %q): %v", owner, prefix, err)
		}
		for _, e := range es {
			out = append(out, e.Key)
		}
		if next == "" {
			return out
		}
		after = next
	}
}

func TestPutGet(t *testing.T) {
	t.Parallel()
	s, c := newKV(t, kv.Options{})
	if _, ok := mustGet(t, s, "alpha", "absent"); ok {
		t.Error("Get of a key never written found an entry")
	}

	e := mustPut(t, s, "alpha", "config/theme", `{"dark": true}`, 0)
	want := kv.Entry{Key: "config/theme", Value: []byte(`{"dark": true}`), Version: 1, UpdatedAt: c.Now()}
	if !equalEntry(e, want) {
		t.Errorf("Put = %+v, want %+v", e, want)
	}
	if got, ok := mustGet(t, s, "alpha", "config/theme"); !ok || !equalEntry(got, want) {
		t.Errorf("Get = %+v, %v; want %+v", got, ok, want)
	}

	c.Advance(time.Minute)
	for v := int64(2); v <= 4; v++ {
		e = mustPut(t, s, "alpha", "config/theme", strconv.FormatInt(v, 10), 0)
		if e.Version != v || !e.UpdatedAt.Equal(c.Now()) {
			t.Errorf("Put #%d = %+v, want version %d updated at %s", v, e, v, c.Now())
		}
	}
	if got, _ := mustGet(t, s, "alpha", "config/theme"); string(got.Value) != "4" || got.Version != 4 {
		t.Errorf("Get after overwrites = %+v", got)
	}

	// Another plugin's key of the same name is another entry.
	if _, ok := mustGet(t, s, "beta", "config/theme"); ok {
		t.Error("beta sees alpha's entry")
	}
	if e := mustPut(t, s, "beta", "config/theme", `"light"`, 0); e.Version != 1 {
		t.Errorf("beta's first Put has version %d", e.Version)
	}
	if got, _ := mustGet(t, s, "alpha", "config/theme"); string(got.Value) != "4" {
		t.Errorf("beta's Put changed alpha's entry: %+v", got)
	}

	// Every JSON value is a value.
	for _, v := range []string{`null`, `0`, `-1.5e3`, `"s"`, `[]`, `{"a":[1,{"b":null}]}`, " \n true \t"} {
		if got := mustPut(t, s, "alpha", "json", v, 0); string(got.Value) != v {
			t.Errorf("Put(%q) stored %q", v, got.Value)
		}
	}
}

func TestTTL(t *testing.T) {
	t.Parallel()
	s, c := newKV(t, kv.Options{})
	e := mustPut(t, s, "alpha", "session", `"s1"`, 10*time.Second)
	if want := c.Now().Add(10 * time.Second); !e.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %s, want %s", e.ExpiresAt, want)
	}
	mustPut(t, s, "alpha", "session-2", `"s2"`, 10*time.Second)
	mustPut(t, s, "alpha", "sessions-forever", `"f"`, 0)

	c.Advance(10*time.Second - time.Nanosecond)
	if _, ok := mustGet(t, s, "alpha", "session"); !ok {
		t.Error("entry gone before its TTL passed")
	}
	c.Advance(time.Nanosecond)
	if _, ok := mustGet(t, s, "alpha", "session"); ok {
		t.Error("entry still there when its TTL passed")
	}
	if got := keys(t, s, "alpha", "session"); !slices.Equal(got, []string{"sessions-forever"}) {
		t.Errorf("List after expiry = %q", got)
	}

	// An expired key starts over at version 1 ...
	if e := mustPut(t, s, "alpha", "session", `"s1b"`, 0); e.Version != 1 || !e.ExpiresAt.IsZero() {
		t.Errorf("Put of an expired key = %+v, want version 1 without expiry", e)
	}
	// ... is absent for CompareAndSet ...
	if _, ok, err := s.CompareAndSet(t.Context(), "alpha", "session-2", []byte(`1`), 0, 1); err != nil || ok {
		t.Errorf("CompareAndSet(expired, version 1) = %v, %v; want a mismatch", ok, err)
	}
	if e, ok, err := s.CompareAndSet(t.Context(), "alpha", "session-2", []byte(`2`), time.Hour, 0); err != nil || !ok || e.Version != 1 {
		t.Errorf("CompareAndSet(expired, absent) = %+v, %v, %v; want version 1", e, ok, err)
	}
	// ... and for Delete.
	mustPut(t, s, "alpha", "short", `1`, time.Second)
	c.Advance(time.Second)
	if deleted, err := s.Delete(t.Context(), "alpha", "short", 0); err != nil || deleted {
		t.Errorf("Delete(expired) = %v, %v; want false", deleted, err)
	}
	if deleted, err := s.Delete(t.Context(), "alpha", "short", 7); err != nil || deleted {
		t.Errorf("Delete(absent, version 7) = %v, %v; want false", deleted, err)
	}

	// The longest TTL is accepted, one nanosecond more is not.
	if _, err := s.Put(t.Context(), "alpha", "max", []byte(`1`), kv.DefaultMaxTTL); err != nil {
		t.Errorf("Put with the maximum TTL: %v", err)
	}
	_, err := s.Put(t.Context(), "alpha", "max", []byte(`1`), kv.DefaultMaxTTL+time.Nanosecond)
	wantViolation(t, "Put with a TTL over the maximum", err, "ttl_seconds")
}

func TestCompareAndSet(t *testing.T) {
	t.Parallel()
	s, c := newKV(t, kv.Options{})
	ctx := t.Context()

	e, ok, err := s.CompareAndSet(ctx, "alpha", "k", []byte(`"a"`), 0, 0)
	if err != nil || !ok || e.Version != 1 || string(e.Value) != `"a"` {
		t.Fatalf("CompareAndSet(absent, 0) = %+v, %v, %v", e, ok, err)
	}
	created := e

	c.Advance(time.Second)
	// Only if absent, but it exists: the current entry comes back.
	e, ok, err = s.CompareAndSet(ctx, "alpha", "k", []byte(`"b"`), 0, 0)
	if err != nil || ok || !equalEntry(e, created) {
		t.Errorf("CompareAndSet(exists, 0) = %+v, %v, %v; want %+v, false", e, ok, err, created)
	}
	// Wrong version.
	e, ok, err = s.CompareAndSet(ctx, "alpha", "k", []byte(`"b"`), 0, 2)
	if err != nil || ok || !equalEntry(e, created) {
		t.Errorf("CompareAndSet(version 1, expect 2) = %+v, %v, %v; want %+v, false", e, ok, err, created)
	}
	// Right version.
	e, ok, err = s.CompareAndSet(ctx, "alpha", "k", []byte(`"b"`), time.Minute, 1)
	want := kv.Entry{Key: "k", Value: []byte(`"b"`), Version: 2, ExpiresAt: c.Now().Add(time.Minute), UpdatedAt: c.Now()}
	if err != nil || !ok || !equalEntry(e, want) {
		t.Errorf("CompareAndSet(version 1, expect 1) = %+v, %v, %v; want %+v, true", e, ok, err, want)
	}
	if got, _ := mustGet(t, s, "alpha", "k"); !equalEntry(got, want) {
		t.Errorf("Get after CompareAndSet = %+v, want %+v", got, want)
	}
	// Absent, expecting a version: the zero entry comes back.
	e, ok, err = s.CompareAndSet(ctx, "alpha", "other", []byte(`1`), 0, 3)
	if err != nil || ok || !isZero(e) {
		t.Errorf("CompareAndSet(absent, 3) = %+v, %v, %v; want the zero entry, false", e, ok, err)
	}
	if _, found := mustGet(t, s, "alpha", "other"); found {
		t.Error("a failed CompareAndSet created the key")
	}
	_, _, err = s.CompareAndSet(ctx, "alpha", "k", []byte(`1`), 0, -1)
	wantViolation(t, "CompareAndSet with a negative version", err, "expected_version")
}

// TestCompareAndSetRace increments one counter from many goroutines with CompareAndSet
// retry loops: lost updates would show in the total.
func TestCompareAndSetRace(t *testing.T) {
	t.Parallel()
	const (
		workers = 8
		each    = 50
	)
	s, _ := newKV(t, kv.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []error
	)
	for w := range workers {
		wg.Go(func() {
			for range each {
				if err := increment(ctx, s); err != nil {
					mu.Lock()
					failures = append(failures, fmt.Errorf("worker %d: %w", w, err))
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	e, ok := mustGet(t, s, "alpha", "counter")
	if !ok || string(e.Value) != strconv.Itoa(workers*each) || e.Version != workers*each {
		t.Errorf("counter = %+v, want value and version %d", e, workers*each)
	}
}

// increment adds one to alpha's counter, retrying until its CompareAndSet wins.
func increment(ctx context.Context, s *kv.Store) error {
	for {
		cur, _, err := s.Get(ctx, "alpha", "counter")
		if err != nil {
			return err
		}
		n := 0
		if cur.Version != 0 {
			if n, err = strconv.Atoi(string(cur.Value)); err != nil {
				return err
			}
		}
		_, ok, err := s.CompareAndSet(ctx, "alpha", "counter", []byte(strconv.Itoa(n+1)), 0, cur.Version)
		if err != nil || ok {
			return err
		}
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	s, _ := newKV(t, kv.Options{})
	ctx := t.Context()
	if deleted, err := s.Delete(ctx, "alpha", "absent", 0); err != nil || deleted {
		t.Errorf("Delete(absent) = %v, %v; want false", deleted, err)
	}

	mustPut(t, s, "alpha", "a", `1`, 0)
	mustPut(t, s, "beta", "a", `1`, 0)
	if deleted, err := s.Delete(ctx, "alpha", "a", 0); err != nil || !deleted {
		t.Errorf("Delete(a) = %v, %v; want true", deleted, err)
	}
	if _, ok := mustGet(t, s, "alpha", "a"); ok {
		t.Error("entry still there after Delete")
	}
	if _, ok := mustGet(t, s, "beta", "a"); !ok {
		t.Error("Delete of alpha's key removed beta's")
	}

	mustPut(t, s, "alpha", "b", `1`, 0)
	mustPut(t, s, "alpha", "b", `2`, 0)
	_, err := s.Delete(ctx, "alpha", "b", 1)
	wantViolation(t, "Delete at the wrong version", err, "expected_version")
	var e *errs.Error
	if errors.As(err, &e) {
		if !strings.Contains(e.Message, "current version is 2") || e.Details["current_version"] != int64(2) {
			t.Errorf("conflict error %+v does not give the current version 2", e)
		}
	}
	if got, ok := mustGet(t, s, "alpha", "b"); !ok || got.Version != 2 {
		t.Errorf("entry after a conflicting Delete = %+v, %v", got, ok)
	}
	if deleted, err := s.Delete(ctx, "alpha", "b", 2); err != nil || !deleted {
		t.Errorf("Delete at the right version = %v, %v; want true", deleted, err)
	}
	_, err = s.Delete(ctx, "alpha", "b", -1)
	wantViolation(t, "Delete with a negative version", err, "expected_version")

	// A deleted key starts over.
	if e := mustPut(t, s, "alpha", "b", `3`, 0); e.Version != 1 {
		t.Errorf("Put after Delete has version %d, want 1", e.Version)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	s, c := newKV(t, kv.Options{})
	ctx := t.Context()
	all := []string{"a", "a%", "a%b", "a_b", "aXb", "ab", "aB", "A", "a/b", "b", "é", "éa", "ê", "日本", "日本語"}
	for _, k := range all {
		mustPut(t, s, "alpha", k, strconv.Quote(k), 0)
	}
	mustPut(t, s, "beta", "a", `0`, 0)
	mustPut(t, s, "beta", "a%z", `0`, 0)
	// Entries expiring in the middle of the order, so pages must skip them.
	for i := range 5 {
		mustPut(t, s, "alpha", fmt.Sprintf("a%%%d", i), `0`, time.Second)
	}
	c.Advance(time.Second)
	sorted := slices.Sorted(slices.Values(all))

	tests := []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"a%", []string{"a%", "a%b"}},
		{"a_", []string{"a_b"}},
		{"aB", []string{"aB"}},
		{"A", []string{"A"}},
		{"é", []string{"é", "éa"}},
		{"日本", []string{"日本", "日本語"}},
		{"z", nil},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			if got := keys(t, s, "alpha", tc.prefix); !slices.Equal(got, tc.want) {
				t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
		})
	}

	t.Run("pages", func(t *testing.T) {
		var got []string
		after := ""
		for page := 0; ; page++ {
			es, next, err := s.List(ctx, "alpha", "", after, 2)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if next != "" && (len(es) != 2 || next != es[1].Key) {
				t.Fatalf("page %d: %d entries, next %q", page, len(es), next)
			}
			for _, e := range es {
				got = append(got, e.Key)
				if string(e.Value) != strconv.Quote(e.Key) || e.Version != 1 {
					t.Errorf("entry %+v", e)
				}
			}
			if next == "" {
				break
			}
			after = next
		}
		if !slices.Equal(got, sorted) {
			t.Errorf("pages = %q, want %q", got, sorted)
		}
	})

	t.Run("last page exactly full", func(t *testing.T) {
		es, next, err := s.List(ctx, "alpha", "a%", "", 2)
		if err != nil || len(es) != 2 || next != "" {
			t.Errorf("List(a%%, 2) = %d entries, next %q, %v; want 2, no next", len(es), next, err)
		}
	})

	t.Run("default limit", func(t *testing.T) {
		s, _ := newKV(t, kv.Options{})
		for i := range kv.DefaultListLimit + 1 {
			mustPut(t, s, "alpha", fmt.Sprintf("k%03d", i), `0`, 0)
		}
		es, next, err := s.List(ctx, "alpha", "", "", 0)
		if err != nil || len(es) != kv.DefaultListLimit || next != fmt.Sprintf("k%03d", kv.DefaultListLimit-1) {
			t.Errorf("List(limit 0) = %d entries, next %q, %v", len(es), next, err)
		}
		es, next, err = s.List(ctx, "alpha", "", next, 0)
		if err != nil || len(es) != 1 || next != "" {
			t.Errorf("second page = %d entries, next %q, %v", len(es), next, err)
		}
	})

	for _, limit := range []int{-1, kv.MaxListLimit + 1} {
		_, _, err := s.List(ctx, "alpha", "", "", limit)
		wantViolation(t, fmt.Sprintf("List(limit %d)", limit), err, "limit")
	}
	_, _, err := s.List(ctx, "alpha", "a\x00", "", 10)
	wantViolation(t, "List with a control character in the prefix", err, "prefix")
	_, _, err = s.List(ctx, "alpha", "", "\xff", 10)
	wantViolation(t, "List after invalid UTF-8", err, "after")
}

func TestQuota(t *testing.T) {
	t.Parallel()
	s, c := newKV(t, kv.Options{MaxKeysPerPlugin: 3})
	ctx := t.Context()
	for _, k := range []string{"a", "b", "c"} {
		mustPut(t, s, "alpha", k, `1`, 0)
	}
	_, err := s.Put(ctx, "alpha", "d", []byte(`1`), 0)
	wantErrCode(t, "Put of a fourth key", err, errs.ValidationError)
	if err != nil && !strings.Contains(err.Error(), "maximum of 3 keys") {
		t.Errorf("quota error %q does not say the maximum", err)
	}
	_, _, err = s.CompareAndSet(ctx, "alpha", "d", []byte(`1`), 0, 0)
	wantErrCode(t, "CompareAndSet of a fourth key", err, errs.ValidationError)
	if got := keys(t, s, "alpha", ""); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("keys after the refused Puts = %q", got)
	}

	// Existing keys can still be written, and other plugins have their own quota.
	mustPut(t, s, "alpha", "a", `2`, 0)
	if _, ok, err := s.CompareAndSet(ctx, "alpha", "b", []byte(`2`), 0, 1); err != nil || !ok {
		t.Errorf("CompareAndSet of an existing key at the quota = %v, %v", ok, err)
	}
	mustPut(t, s, "beta", "d", `1`, 0)

	// Deleting frees a place.
	if _, err := s.Delete(ctx, "alpha", "c", 0); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "alpha", "d", `1`, time.Minute)
	// So does expiry, before any Sweep.
	c.Advance(time.Minute)
	mustPut(t, s, "alpha", "e", `1`, 0)
	if got := keys(t, s, "alpha", ""); !slices.Equal(got, []string{"a", "b", "e"}) {
		t.Errorf("keys = %q, want a b e", got)
	}
	// An expired key can be written again while at the quota.
	mustPut(t, s, "alpha", "e", `2`, time.Second)
	c.Advance(time.Second)
	if e := mustPut(t, s, "alpha", "e", `3`, 0); e.Version != 1 {
		t.Errorf("rewrite of an expired key at the quota = %+v", e)
	}
	if got := keys(t, s, "alpha", ""); !slices.Equal(got, []string{"a", "b", "e"}) {
		t.Errorf("keys = %q, want a b e", got)
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	s, _ := newKV(t, kv.Options{MaxKeyBytes: 8, MaxValueBytes: 16})
	ctx := t.Context()
	mustPut(t, s, "alpha", "k", `"original"`, 0)
	if err := s.Share(ctx, "alpha", []string{"beta"}); err != nil {
		t.Fatal(err)
	}

	put := func(owner, key, value string, ttl time.Duration) func() error {
		return func() error {
			_, err := s.Put(ctx, owner, key, []byte(value), ttl)
			return err
		}
	}
	cas := func(key, value string, version int64) func() error {
		return func() error {
			_, _, err := s.CompareAndSet(ctx, "alpha", key, []byte(value), 0, version)
			return err
		}
	}
	tests := []struct {
		name  string
		fn    func() error
		field string
	}{
		{"empty key", put("alpha", "", `1`, 0), "key"},
		{"key too long", put("alpha", "123456789", `1`, 0), "key"},
		{"key not UTF-8", put("alpha", "k\xff", `1`, 0), "key"},
		{"key with NUL", put("alpha", "k\x00", `1`, 0), "key"},
		{"key with newline", put("alpha", "k\n", `1`, 0), "key"},
		{"key with DEL", put("alpha", "k\x7f", `1`, 0), "key"},
		{"key with C1 control", put("alpha", "k\u0085", `1`, 0), "key"},
		{"empty value", put("alpha", "k", ``, 0), "value"},
		{"value not JSON", put("alpha", "k", `{"a":`, 0), "value"},
		{"two JSON values", put("alpha", "k", `1 2`, 0), "value"},
		{"value too long", put("alpha", "k", `"0123456789abcde"`, 0), "value"},
		{"negative ttl", put("alpha", "k", `1`, -time.Second), "ttl_seconds"},
		{"ttl too long", put("alpha", "k", `1`, 31*24*time.Hour), "ttl_seconds"},
		{"bad owner", put("Alpha", "k", `1`, 0), "plugin_id"},
		{"empty owner", put("", "k", `1`, 0), "plugin_id"},
		{"cas bad value", cas("k", `nope`, 1), "value"},
		{"cas bad key", cas("", `1`, 1), "key"},
		{"cas negative version", cas("k", `1`, -3), "expected_version"},
		{"get bad key", func() error { _, _, err := s.Get(ctx, "alpha", "k\t"); return err }, "key"},
		{"delete bad key", func() error { _, err := s.Delete(ctx, "alpha", "", 0); return err }, "key"},
		{"delete bad owner", func() error { _, err := s.Delete(ctx, "a", "k", 0); return err }, "plugin_id"},
		{"delete all bad owner", func() error { return s.DeleteAll(ctx, "-alpha") }, "plugin_id"},
		{"readers bad owner", func() error { _, err := s.Readers(ctx, "alpha-"); return err }, "plugin_id"},
		{"can read bad reader", func() error { _, err := s.CanRead(ctx, "Beta", "alpha"); return err }, "reader"},
		{"share with self", func() error { return s.Share(ctx, "alpha", []string{"alpha"}) }, "readers[0]"},
		{"share with a bad id", func() error { return s.Share(ctx, "alpha", []string{"gamma", "no"}) }, "readers[1]"},
		{"share with too many", func() error { return s.Share(ctx, "alpha", manyReaders(kv.MaxReaders+1)) }, "readers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantViolation(t, tc.name, tc.fn(), tc.field)
		})
	}

	// Several problems are reported together.
	_, err := s.Put(ctx, "alpha", "", []byte(`x`), -1)
	for _, f := range []string{"key", "value", "ttl_seconds"} {
		wantViolation(t, "Put with three problems", err, f)
	}

	// Nothing changed.
	if got := keys(t, s, "alpha", ""); !slices.Equal(got, []string{"k"}) {
		t.Errorf("keys after the invalid calls = %q", got)
	}
	if got, _ := mustGet(t, s, "alpha", "k"); string(got.Value) != `"original"` || got.Version != 1 {
		t.Errorf("entry after the invalid calls = %+v", got)
	}
	if rs, err := s.Readers(ctx, "alpha"); err != nil || !slices.Equal(rs, []string{"beta"}) {
		t.Errorf("readers after the invalid calls = %q, %v", rs, err)
	}
}

func TestShare(t *testing.T) {
	t.Parallel()
	s, _ := newKV(t, kv.Options{})
	ctx := t.Context()
	canRead := func(reader, owner string) bool {
		t.Helper()
		ok, err := s.CanRead(ctx, reader, owner)
		if err != nil {
			t.Fatalf("CanRead(%s, %s): %v", reader, owner, err)
		}
		return ok
	}
	readers := func(owner string) []string {
		t.Helper()
		rs, err := s.Readers(ctx, owner)
		if err != nil {
			t.Fatalf("Readers(%s): %v", owner, err)
		}
		if rs == nil {
			t.Errorf("Readers(%s) = nil, want an empty list", owner)
		}
		return rs
	}

	if rs := readers("alpha"); len(rs) != 0 {
		t.Errorf("Readers before Share = %q", rs)
	}
	if !canRead("alpha", "alpha") || canRead("beta", "alpha") {
		t.Error("before Share: an owner must read its own entries and no one else")
	}

	if err := s.Share(ctx, "alpha", []string{"gamma", "beta", "gamma"}); err != nil {
		t.Fatalf("Share: %v", err)
	}
	if rs := readers("alpha"); !slices.Equal(rs, []string{"beta", "gamma"}) {
		t.Errorf("Readers = %q, want beta gamma", rs)
	}
	if !canRead("beta", "alpha") || !canRead("gamma", "alpha") || canRead("delta", "alpha") {
		t.Error("CanRead does not follow the reader list")
	}
	if canRead("alpha", "beta") {
		t.Error("sharing is not symmetric")
	}

	if err := s.Share(ctx, "alpha", []string{"delta"}); err != nil {
		t.Fatalf("Share: %v", err)
	}
	if canRead("beta", "alpha") || !canRead("delta", "alpha") {
		t.Error("Share does not replace the reader list")
	}
	if err := s.Share(ctx, "alpha", manyReaders(kv.MaxReaders)); err != nil {
		t.Errorf("Share with %d readers: %v", kv.MaxReaders, err)
	}
	if err := s.Share(ctx, "alpha", nil); err != nil {
		t.Fatalf("Share(nil): %v", err)
	}
	if rs := readers("alpha"); len(rs) != 0 || canRead("delta", "alpha") {
		t.Errorf("Share(nil) left readers %q", rs)
	}
}

func TestDeleteAll(t *testing.T) {
	t.Parallel()
	s, _ := newKV(t, kv.Options{})
	ctx := t.Context()
	for _, owner := range []string{"alpha", "beta"} {
		for i := range 5 {
			mustPut(t, s, owner, fmt.Sprintf("k%d", i), `1`, 0)
		}
	}
	for owner, rs := range map[string][]string{"alpha": {"beta", "gamma"}, "beta": {"alpha", "gamma"}, "gamma": {"alpha"}} {
		if err := s.Share(ctx, owner, rs); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteAll(ctx, "alpha"); err != nil {
		t.Fatalf("DeleteAll: %v", err)
	}
	if got := keys(t, s, "alpha", ""); len(got) != 0 {
		t.Errorf("alpha's keys after DeleteAll = %q", got)
	}
	if got := keys(t, s, "beta", ""); len(got) != 5 {
		t.Errorf("beta's keys after DeleteAll(alpha) = %q", got)
	}
	for owner, want := range map[string][]string{"alpha": {}, "beta": {"gamma"}, "gamma": {}} {
		if rs, err := s.Readers(ctx, owner); err != nil || !slices.Equal(rs, want) {
			t.Errorf("Readers(%s) after DeleteAll(alpha) = %q, %v; want %q", owner, rs, err, want)
		}
	}
	// A reinstalled plugin of the same id starts empty, at version 1.
	if e := mustPut(t, s, "alpha", "k0", `1`, 0); e.Version != 1 {
		t.Errorf("Put after DeleteAll has version %d", e.Version)
	}
	if err := s.DeleteAll(ctx, "never-used"); err != nil {
		t.Errorf("DeleteAll of a plugin without data: %v", err)
	}
}

func TestSweep(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	c := newClock()
	s := kv.New(st, kv.Options{Now: c.Now})
	ctx := t.Context()

	// More expired entries than one batch, so Sweep takes several transactions.
	const expired = 2345
	err := st.Write(ctx, func(tx store.Tx) error {
		for i := range expired {
			owner := []string{"alpha", "beta"}[i%2]
			e := store.KVEntry{PluginID: owner, Key: fmt.Sprintf("x%05d", i), Value: []byte(`1`), Version: 1,
				ExpiresAt: c.Now().Add(time.Duration(i%7+1) * time.Second), UpdatedAt: c.Now()}
			if err := tx.PutKV(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	mustPut(t, s, "alpha", "forever", `1`, 0)
	mustPut(t, s, "alpha", "later", `1`, time.Hour)

	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("Sweep before anything expired = %d, %v", n, err)
	}
	c.Advance(time.Minute)
	if n, err := s.Sweep(ctx); err != nil || n != expired {
		t.Errorf("Sweep = %d, %v; want %d", n, err, expired)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("second Sweep = %d, %v; want 0", n, err)
	}
	err = st.Read(ctx, func(tx store.Tx) error {
		for owner, want := range map[string]int{"alpha": 2, "beta": 0} {
			n, err := tx.KVCount(owner)
			if err != nil {
				return err
			}
			if n != want {
				t.Errorf("%s holds %d entries after Sweep, want %d", owner, n, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStoreFailure(t *testing.T) {
	t.Parallel()
	st, err := storesqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	s := kv.New(st, kv.Options{})
	ctx := t.Context()
	calls := map[string]func() error{
		"Get":           func() error { _, _, err := s.Get(ctx, "alpha", "k"); return err },
		"Put":           func() error { _, err := s.Put(ctx, "alpha", "k", []byte(`1`), 0); return err },
		"CompareAndSet": func() error { _, _, err := s.CompareAndSet(ctx, "alpha", "k", []byte(`1`), 0, 0); return err },
		"Delete":        func() error { _, err := s.Delete(ctx, "alpha", "k", 0); return err },
		"List":          func() error { _, _, err := s.List(ctx, "alpha", "", "", 0); return err },
		"Share":         func() error { return s.Share(ctx, "alpha", []string{"beta"}) },
		"Readers":       func() error { _, err := s.Readers(ctx, "alpha"); return err },
		"CanRead":       func() error { _, err := s.CanRead(ctx, "beta", "alpha"); return err },
		"DeleteAll":     func() error { return s.DeleteAll(ctx, "alpha") },
		"Sweep":         func() error { _, err := s.Sweep(ctx); return err },
	}
	for name, call := range calls {
		err := call()
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.Internal || e.Message != "internal error" || e.Err == nil {
			t.Errorf("%s on a closed store: error %#v, want INTERNAL_ERROR with the cause kept for logs", name, err)
		}
	}
}

func TestContextCancelled(t *testing.T) {
	t.Parallel()
	s, _ := newKV(t, kv.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Put(ctx, "alpha", "k", []byte(`1`), 0)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: error %v, want it to wrap context.Canceled", err)
	}
	if _, ok := mustGet(t, s, "alpha", "k"); ok {
		t.Error("Put with a cancelled context wrote the entry")
	}
}

func wantErrCode(t *testing.T, what string, err error, code errs.Code) {
	t.Helper()
	if !errs.Is(err, code) || err == nil {
		t.Errorf("%s: error %v, want %s", what, err, code)
	}
}

func manyReaders(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("reader-%03d", i)
	}
	return out
}

func equalEntry(a, b kv.Entry) bool {
	return a.Key == b.Key && string(a.Value) == string(b.Value) && a.Version == b.Version &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.UpdatedAt.Equal(b.UpdatedAt)
}
