package pluginhost_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// After Shutdown no goroutine of the host is left: every background loop has one owner and
// is waited for. New starts none.
func TestShutdownLeavesNoGoroutine(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := storesqlite.Open(ctx, filepath.Join(dir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// The store's own goroutines (database/sql) are the test's, not the host's.
	before := goleak.IgnoreCurrent()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := pluginhost.New(pluginhost.Options{Store: st, DataDir: dir, Secrets: box})
	if err != nil {
		t.Fatal(err)
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("New started goroutines: %v", err)
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Installer().Install(ctx, pluginhost.InstallRequest{Source: "file", PackageData: externalPackage(t, "leak-plugin", nil)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Runtime().Enable(ctx, "leak-plugin", pluginhost.EnableOptions{}); err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatching := context.WithCancel(ctx)
	events, _ := h.Router().WatchEvents(watchCtx, nil)
	tail, err := h.TailLogs(watchCtx, pluginhost.TailQuery{PluginID: "leak-plugin", Backlog: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Router().EmitEvent(ctx, pluginhost.EventRequest{From: pluginhost.Origin{Role: "admin"}, Type: "test.done"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-events:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher got no event")
	}
	stopWatching()
	for range events {
	}
	for range tail {
	}
	h.Shutdown(ctx, time.Second)
	if err := goleak.Find(before); err != nil {
		t.Fatalf("goroutines left after Shutdown: %v", err)
	}
}
