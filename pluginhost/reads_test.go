package pluginhost_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/archive"
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

// newHost returns a host over a SQLite store in a temp dir, counting the store's use.
func newHost(t *testing.T) (*pluginhost.Host, *countingStore) {
	t.Helper()
	dir := t.TempDir()
	sq, err := storesqlite.Open(context.Background(), filepath.Join(dir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	st := &countingStore{Store: sq}
	h, err := pluginhost.New(pluginhost.Options{Store: st, DataDir: dir, Secrets: box})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Shutdown(context.Background(), time.Second)
		sq.Close()
	})
	return h, st
}

// externalPackage builds the package of an external plugin (no process to launch).
func externalPackage(t *testing.T, id string, deps map[string]string) []byte {
	t.Helper()
	m := map[string]any{
		"id": id, "name": "Plugin " + id, "version": "1.0.0", "description": "a test plugin", "author": "tests",
		"category": "testing", "external": true, "nexus_version": ">=1.0.0",
		"permissions":   []string{"messages:send", "events:emit", "events:subscribe"},
		"message_types": []map[string]any{{"type": "ping", "description": "answers pings"}},
		"events":        map[string]any{"subscribes": []map[string]any{{"type": "test.*", "description": "tests"}}},
		"api_endpoints": []map[string]any{{"path": "/api/v1/" + id + "/items", "methods": []string{"GET"}}},
		"configuration": map[string]any{"api_key": map[string]any{"type": "string", "secret": true}},
		"dependencies":  map[string]any{"plugins": deps},
	}
	dir := t.TempDir()
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, "plugin.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := archive.Create(&buf, dir); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// List, detail, services, broadcast and emit are served from memory: they reach the store not
// once, however many plugins are installed.
func TestReadsTouchNoStore(t *testing.T) {
	h, st := newHost(t)
	ctx := context.Background()
	for i := range 20 {
		id := fmt.Sprintf("read-plugin-%02d", i)
		var deps map[string]string
		if i > 0 {
			deps = map[string]string{"read-plugin-00": ">=1.0.0"}
		}
		_, err := h.Installer().Install(ctx, pluginhost.InstallRequest{Source: "file", PackageData: externalPackage(t, id, deps),
			Config: map[string]any{"api_key": "k-" + id}})
		if err != nil {
			t.Fatalf("install %s: %v", id, err)
		}
		if _, err := h.Runtime().Enable(ctx, id, pluginhost.EnableOptions{}); err != nil && i == 0 {
			t.Fatalf("enable %s: %v", id, err)
		}
	}
	reads := st.reads.Load()
	for range 50 {
		views, sum, err := h.List(ctx, pluginhost.ListFilter{IncludeDisabled: true})
		if err != nil || len(views) != 20 || sum.Total != 20 {
			t.Fatalf("list: %d plugins, %+v, %v", len(views), sum, err)
		}
		if views[0].ID != "read-plugin-00" || views[0].Config["api_key"] != "***hidden***" || len(views[0].Dependents) != 19 || views[0].Schema != nil {
			t.Fatalf("first view %s, config %v, dependents %d, schema %v (the list carries none)", views[0].ID, views[0].Config, len(views[0].Dependents), views[0].Schema)
		}
		v, err := h.Get(ctx, "read-plugin-07", true)
		if err != nil || v.LoadOrder < 2 || len(v.RecentLogs) == 0 || v.Schema["api_key"] == nil {
			t.Fatalf("detail: %+v, schema %v, %v", v.LoadOrder, v.Schema, err)
		}
		if _, err := h.Get(ctx, "not-installed", true); err == nil {
			t.Fatal("an unknown plugin was found")
		}
		if _, err := h.Router().ListServices(ctx, "", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Router().Broadcast(ctx, pluginhost.BroadcastRequest{From: pluginhost.Origin{Role: "admin"}, Type: "note"}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Router().EmitEvent(ctx, pluginhost.EventRequest{From: pluginhost.Origin{Role: "admin"}, Type: "test.happened"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := st.reads.Load() - reads; n != 0 {
		t.Fatalf("the reads reached the store %d times", n)
	}
}
