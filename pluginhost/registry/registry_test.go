package registry_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// countingStore counts the transactions that reach the store.
type countingStore struct {
	store.Store
	reads, writes atomic.Int64
}

func (s *countingStore) Read(ctx context.Context, fn func(store.Tx) error) error {
	s.reads.Add(1)
	return s.Store.Read(ctx, fn)
}

func (s *countingStore) Write(ctx context.Context, fn func(store.Tx) error) error {
	s.writes.Add(1)
	return s.Store.Write(ctx, fn)
}

type fixture struct {
	st  *countingStore
	box *secrets.Box
	reg *registry.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	sq, err := storesqlite.Open(ctx, filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: &countingStore{Store: sq}, box: box}
	f.reg = registry.New(f.st, box, nil)
	if err := f.reg.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

func manifestJSON(id string, deps map[string]string) []byte {
	depJSON := "{}"
	if len(deps) > 0 {
		depJSON = "{"
		first := true
		for k, v := range deps {
			if !first {
				depJSON += ","
			}
			first = false
			depJSON += fmt.Sprintf("%q:%q", k, v)
		}
		depJSON += "}"
	}
	return fmt.Appendf(nil, `{
  "id": %q, "name": %q, "version": "1.0.0", "description": "test plugin", "author": "t",
  "category": "utility", "entry_point": "bin/p", "nexus_version": ">=1.0.0",
  "dependencies": {"plugins": %s},
  "configuration": {"token": {"type": "string", "secret": true}, "level": {"type": "string", "default": "info"}}
}`, id, id, depJSON)
}

func (f *fixture) record(t *testing.T, id string, deps map[string]string, cfg map[string]any) store.Plugin {
	t.Helper()
	schema, problems := configschema.Parse([]byte(`{"token": {"type": "string", "secret": true}, "level": {"type": "string", "default": "info"}}`))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	sealed, err := f.reg.SealConfig(schema, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return store.Plugin{ID: id, Version: "1.0.0", Manifest: manifestJSON(id, deps), Dir: "plugins/" + id,
		Status: "inactive", Config: sealed, Granted: []string{"messages:send"}}
}

func (f *fixture) put(t *testing.T, recs ...store.Plugin) {
	t.Helper()
	err := f.reg.Update(context.Background(), func(tx *registry.Tx) error {
		for _, r := range recs {
			if _, err := tx.Put(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadsComeFromMemory(t *testing.T) {
	f := newFixture(t)
	f.put(t, f.record(t, "alpha-plugin", nil, map[string]any{"token": "s3cret"}))
	reads := f.st.reads.Load()
	for range 100 {
		p, err := f.reg.Get("alpha-plugin")
		if err != nil {
			t.Fatal(err)
		}
		if p.Config()["token"] != "s3cret" || p.MaskedConfig()["token"] != configschema.Hidden {
			t.Fatalf("config %v, masked %v", p.Config(), p.MaskedConfig())
		}
		if len(f.reg.Snapshot().All()) != 1 {
			t.Fatal("one plugin expected")
		}
	}
	if n := f.st.reads.Load() - reads; n != 0 {
		t.Fatalf("reads reached the store %d times", n)
	}
}

func TestLoadRestoresWhatWasCommitted(t *testing.T) {
	f := newFixture(t)
	f.put(t, f.record(t, "alpha-plugin", nil, map[string]any{"token": "s3cret"}),
		f.record(t, "beta-plugin", map[string]string{"alpha-plugin": ">=1.0.0"}, nil))
	again := registry.New(f.st, f.box, nil)
	if err := again.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := again.Snapshot()
	if len(snap.All()) != 2 || snap.Order("alpha-plugin") != 1 || snap.Order("beta-plugin") != 2 {
		t.Fatalf("plugins %d, order alpha %d beta %d", len(snap.All()), snap.Order("alpha-plugin"), snap.Order("beta-plugin"))
	}
	if d := snap.Dependents("alpha-plugin"); len(d) != 1 || d[0] != "beta-plugin" {
		t.Fatalf("dependents of alpha: %v", d)
	}
	p, _ := snap.Get("alpha-plugin")
	if p.Config()["token"] != "s3cret" {
		t.Fatalf("secret not opened after a reload: %v", p.Config())
	}
}

func TestFailedWriteChangesNothing(t *testing.T) {
	f := newFixture(t)
	f.put(t, f.record(t, "alpha-plugin", nil, nil))
	var heard atomic.Int64
	f.reg.Subscribe(func(registry.Change) { heard.Add(1) })
	before := f.reg.Snapshot()
	boom := errors.New("boom")
	err := f.reg.Update(context.Background(), func(tx *registry.Tx) error {
		rec := f.record(t, "beta-plugin", nil, nil)
		if _, err := tx.Put(rec); err != nil {
			return err
		}
		if err := tx.Delete("alpha-plugin"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if f.reg.Snapshot() != before || heard.Load() != 0 {
		t.Fatal("a failed write changed the registry or was announced")
	}
	if _, err := f.reg.Get("beta-plugin"); !errs.Is(err, errs.PluginNotFound) {
		t.Fatalf("beta-plugin: %v", err)
	}
}

func TestUnreadableRecordIsRefused(t *testing.T) {
	f := newFixture(t)
	rec := f.record(t, "alpha-plugin", nil, nil)
	rec.Manifest = []byte(`{"id": 1}`)
	err := f.reg.Update(context.Background(), func(tx *registry.Tx) error {
		_, err := tx.Put(rec)
		return err
	})
	if err == nil {
		t.Fatal("a record with an unreadable manifest was stored")
	}
	again := registry.New(f.st, f.box, nil)
	if err := again.Load(context.Background()); err != nil || len(again.Snapshot().All()) != 0 {
		t.Fatalf("load after the refused write: %v, %d plugins", err, len(again.Snapshot().All()))
	}
}

func TestChangesAreAnnouncedInCommitOrder(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	var got []string
	f.reg.Subscribe(func(c registry.Change) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case c.Installed():
			got = append(got, "installed "+c.ID)
		case c.Removed():
			got = append(got, "removed "+c.ID)
		case c.Disabled():
			got = append(got, "disabled "+c.ID)
		case c.GrantsChanged():
			got = append(got, "grants "+c.ID)
		default:
			got = append(got, "changed "+c.ID)
		}
	})
	rec := f.record(t, "alpha-plugin", nil, nil)
	rec.Enabled = true
	f.put(t, rec)
	ctx := context.Background()
	if _, err := f.reg.Modify(ctx, "alpha-plugin", func(r *store.Plugin) error { r.Granted = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Modify(ctx, "alpha-plugin", func(r *store.Plugin) error { r.Enabled = false; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Modify(ctx, "alpha-plugin", func(r *store.Plugin) error { r.Status = "error"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.Update(ctx, func(tx *registry.Tx) error { return tx.Delete("alpha-plugin") }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Modify(ctx, "alpha-plugin", func(*store.Plugin) error { return nil }); !errs.Is(err, errs.PluginNotFound) {
		t.Fatalf("modify of a removed plugin: %v", err)
	}
	want := []string{"installed alpha-plugin", "grants alpha-plugin", "disabled alpha-plugin", "changed alpha-plugin", "removed alpha-plugin"}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
}

func TestConcurrentWritesKeepTheLastCommitted(t *testing.T) {
	f := newFixture(t)
	f.put(t, f.record(t, "alpha-plugin", nil, nil))
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, err := f.reg.Modify(ctx, "alpha-plugin", func(r *store.Plugin) error {
				r.StatusReason = fmt.Sprint(i)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	again := registry.New(f.st, f.box, nil)
	if err := again.Load(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ := again.Get("alpha-plugin")
	b, _ := f.reg.Get("alpha-plugin")
	if a.StatusReason() != b.StatusReason() {
		t.Fatalf("memory says %q, the store %q", b.StatusReason(), a.StatusReason())
	}
}

func TestTransactionSeesItsOwnWrites(t *testing.T) {
	f := newFixture(t)
	err := f.reg.Update(context.Background(), func(tx *registry.Tx) error {
		if _, err := tx.Put(f.record(t, "alpha-plugin", nil, nil)); err != nil {
			return err
		}
		if _, err := tx.Get("alpha-plugin"); err != nil {
			return fmt.Errorf("own write not seen: %w", err)
		}
		if err := tx.Delete("alpha-plugin"); err != nil {
			return err
		}
		if _, err := tx.Plugin("alpha-plugin"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("own delete not seen: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.reg.Snapshot().All()) != 0 {
		t.Fatal("put then delete left the plugin")
	}
}

// Two registries over one store stand for two servers sharing it: Refresh brings what the
// other committed (an install, a change, an uninstall) and announces it as remote; a
// record that did not change is not announced, nor is a server's own write seen again.
func TestRefreshFollowsAnotherServer(t *testing.T) {
	f := newFixture(t)
	other := registry.New(f.st, f.box, nil)
	if err := other.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	var heard []registry.Change
	other.Subscribe(func(c registry.Change) { heard = append(heard, c) })
	ctx := context.Background()

	f.put(t, f.record(t, "alpha-plugin", nil, map[string]any{"token": "s3cret"}), f.record(t, "beta-plugin", nil, nil))
	if err := other.Refresh(ctx, "alpha-plugin"); err != nil {
		t.Fatal(err)
	}
	if p, err := other.Get("alpha-plugin"); err != nil || p.Config()["token"] != "s3cret" {
		t.Fatalf("alpha after refresh: %v %v", p, err)
	}
	if _, err := other.Get("beta-plugin"); err == nil {
		t.Fatal("beta seen before its refresh")
	}
	if len(heard) != 1 || !heard[0].Installed() || !heard[0].Remote {
		t.Fatalf("heard %+v", heard)
	}

	// Nothing new: nothing announced, for one plugin or for all.
	heard = nil
	if err := other.Refresh(ctx, "alpha-plugin"); err != nil {
		t.Fatal(err)
	}
	if len(heard) != 0 {
		t.Fatalf("an unchanged record announced: %+v", heard)
	}
	if err := f.reg.Refresh(ctx); err != nil || len(f.reg.Snapshot().All()) != 2 {
		t.Fatalf("the writer's own refresh: %v", err)
	}

	// Enabled on one, deleted on one: all of it found by a refresh of everything.
	if _, err := f.reg.Modify(ctx, "alpha-plugin", func(rec *store.Plugin) error { rec.Enabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := other.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := other.Get("alpha-plugin"); !p.Enabled() {
		t.Fatal("enable not seen")
	}
	heard = nil
	if err := f.reg.Update(ctx, func(tx *registry.Tx) error { return tx.Delete("alpha-plugin") }); err != nil {
		t.Fatal(err)
	}
	if err := other.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Get("alpha-plugin"); err == nil {
		t.Fatal("the uninstall not seen")
	}
	if len(heard) != 1 || !heard[0].Removed() || !heard[0].Disabled() || !heard[0].Remote {
		t.Fatalf("heard %+v", heard)
	}
}
