package router

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// The route cache keeps one route per installed plugin, built from the plugin the registry
// holds now, however reads and changes interleave (it used to keep a route for every replaced
// plugin a racing reader had built from, with its opened secrets).
func TestRouteCacheKeepsOneCurrentRoutePerPlugin(t *testing.T) {
	ctx := context.Background()
	st, err := storesqlite.Open(ctx, filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, _ := secrets.New(key)
	reg := registry.New(st, box, nil)
	if err := reg.Load(ctx); err != nil {
		t.Fatal(err)
	}
	c := newRouteCache()
	reg.Subscribe(c.forget)
	ids := []string{"alpha-plugin", "beta-plugin"}
	err = reg.Update(ctx, func(tx *registry.Tx) error {
		for _, id := range ids {
			m := fmt.Sprintf(`{"id": %q, "name": "P", "version": "1.0.0", "description": "d", "author": "a", "category": "c",
				"external": true, "nexus_version": ">=1.0.0"}`, id)
			if _, err := tx.Put(store.Plugin{ID: id, Version: "1.0.0", Manifest: []byte(m), Enabled: true, Status: "active"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					c.all(reg)
				}
			}
		})
	}
	for i := range 300 {
		if _, err := reg.Modify(ctx, ids[i%2], func(r *store.Plugin) error { r.StatusReason = fmt.Sprint(i); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	c.all(reg)
	routes := func() map[string]*route {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return maps.Clone(c.routes)
	}
	kept := routes()
	if len(kept) != len(ids) {
		t.Fatalf("%d routes kept for %d plugins", len(kept), len(ids))
	}
	for _, id := range ids {
		if p, _ := reg.Get(id); kept[id].p != p {
			t.Fatalf("the route of %s is not built from the plugin the registry holds", id)
		}
	}
	if err := reg.Update(ctx, func(tx *registry.Tx) error { return tx.Delete("alpha-plugin") }); err != nil {
		t.Fatal(err)
	}
	if _, ok := routes()["alpha-plugin"]; ok {
		t.Fatal("the route of an uninstalled plugin is kept")
	}
}
