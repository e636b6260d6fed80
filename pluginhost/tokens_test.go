package pluginhost_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// A server that crashed left its plugins' launch tokens valid in the store; the next Start on
// the same data directory revokes them, and only them.
func TestStartRevokesLaunchTokensOfThePreviousRun(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	dbPath := filepath.Join(dir, "nexus.db")

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	// The previous run, as its crash left it: a plugin with the token of its launch (the
	// runtime names it "runtime:<plugin id>"), still valid.
	st, err := storesqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	ids := identity.New(st)
	h, err := pluginhost.New(pluginhost.Options{Store: st, DataDir: dir, Secrets: box, Tokens: ids})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Installer().Install(ctx, pluginhost.InstallRequest{Source: "file", PackageData: externalPackage(t, "crashed-plugin", nil)}); err != nil {
		t.Fatal(err)
	}
	h.Shutdown(ctx, time.Second) // no plugin runs: the tokens below are left as they are
	launch, _, err := ids.Create(ctx, "runtime:crashed-plugin", store.RolePlugin, "crashed-plugin")
	if err != nil {
		t.Fatal(err)
	}
	external, _, err := ids.Create(ctx, "crashed-plugin elsewhere", store.RolePlugin, "crashed-plugin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ids.Authenticate(ctx, launch); err != nil {
		t.Fatalf("the launch token before the restart: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The restart.
	st, err = storesqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ids = identity.New(st)
	h, err = pluginhost.New(pluginhost.Options{Store: st, DataDir: dir, Secrets: box, Tokens: ids})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(ctx, time.Second)
	if _, err := ids.Authenticate(ctx, launch); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("the launch token of the previous run after the restart: %v, want UNAUTHENTICATED", err)
	}
	if _, err := ids.Authenticate(ctx, external); err != nil {
		t.Errorf("a plugin token made by an admin was revoked by the restart: %v", err)
	}
}
