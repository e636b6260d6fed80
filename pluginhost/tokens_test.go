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
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// A server that crashed left its plugins' launch tokens valid in the store; the next Start on
// the same data directory revokes them, and only them: not the launch tokens of another
// replica sharing the store, nor tokens made by an admin.
func TestStartRevokesLaunchTokensOfThePreviousRun(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	dbPath := filepath.Join(dir, "nexus.db")
	box := newBox(t)
	runtimeConfig := pluginhost.RuntimeConfig{Replica: "node-a"}

	// The previous run, as its crash left it: a plugin with the token of its launch (the
	// runtime names it "runtime:<replica id>:<plugin id>"), still valid.
	st, err := storesqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	ids := identity.New(st)
	h, err := pluginhost.New(pluginhost.Options{Store: st, DataDir: dir, Secrets: box, Tokens: ids, Runtime: runtimeConfig})
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
	create := func(name string) string {
		t.Helper()
		plain, _, err := ids.Create(ctx, name, store.RolePlugin, "crashed-plugin")
		if err != nil {
			t.Fatal(err)
		}
		return plain
	}
	launch := create(runtime.LaunchTokenName("node-a", "crashed-plugin"))
	// Named by a server of before replicas, which ran alone on the store.
	unscoped := create("runtime:crashed-plugin")
	// Another replica's plugin process, still running.
	otherReplica := create(runtime.LaunchTokenName("node-b", "crashed-plugin"))
	// Another replica whose id starts with this one's.
	longerReplica := create(runtime.LaunchTokenName("node-a2", "crashed-plugin"))
	external := create("crashed-plugin elsewhere")
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
	h, err = pluginhost.New(pluginhost.Options{Store: st, DataDir: dir, Secrets: box, Tokens: ids, Runtime: runtimeConfig})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(ctx, time.Second)
	for name, tok := range map[string]string{"the launch token of the previous run": launch, "an unscoped launch token": unscoped} {
		if _, err := ids.Authenticate(ctx, tok); !errs.Is(err, errs.Unauthenticated) {
			t.Errorf("%s after the restart: %v, want UNAUTHENTICATED", name, err)
		}
	}
	for name, tok := range map[string]string{"another replica's launch token": otherReplica,
		"the launch token of a replica whose id extends this one's": longerReplica, "a plugin token made by an admin": external} {
		if _, err := ids.Authenticate(ctx, tok); err != nil {
			t.Errorf("%s was revoked by the restart: %v", name, err)
		}
	}
}

// Two hosts share one store, as replicas do: the second's Start does not revoke the launch
// token of a plugin the first runs.
func TestStartKeepsTheLaunchTokensOfOtherReplicas(t *testing.T) {
	ctx := context.Background()
	st, err := storesqlite.Open(ctx, filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	box := newBox(t)
	start := func(replica string) (*pluginhost.Host, *identity.Service) {
		t.Helper()
		ids := identity.New(st)
		h, err := pluginhost.New(pluginhost.Options{Store: st, DataDir: t.TempDir(), Secrets: box, Tokens: ids,
			Runtime: pluginhost.RuntimeConfig{Replica: replica}})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Shutdown(ctx, time.Second) })
		return h, ids
	}
	a, idsA := start("node-a")
	if a.Runtime().Replica() != "node-a" {
		t.Fatalf("Replica() = %q", a.Runtime().Replica())
	}
	if _, err := a.Installer().Install(ctx, pluginhost.InstallRequest{Source: "file", PackageData: externalPackage(t, "busy-plugin", nil)}); err != nil {
		t.Fatal(err)
	}
	// The token the runtime of A issues when it launches the plugin.
	launch, _, err := idsA.Create(ctx, runtime.LaunchTokenName("node-a", "busy-plugin"), store.RolePlugin, "busy-plugin")
	if err != nil {
		t.Fatal(err)
	}
	_, idsB := start("node-b")
	for name, ids := range map[string]*identity.Service{"A": idsA, "B": idsB} {
		if _, err := ids.Authenticate(ctx, launch); err != nil {
			t.Errorf("A's launch token on %s after B started: %v", name, err)
		}
	}
}

func newBox(t *testing.T) *secrets.Box {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return box
}

func TestLaunchTokenNames(t *testing.T) {
	if got := runtime.LaunchTokenName("node-a", "my-plugin"); got != "runtime:node-a:my-plugin" {
		t.Errorf("LaunchTokenName = %q", got)
	}
	for name, want := range map[string]bool{
		"runtime:my-plugin": true, "runtime:node-a:my-plugin": false, "runtime:": false, "my-plugin": false, "runtimes:x": false,
	} {
		if got := runtime.IsUnscopedLaunchToken(name); got != want {
			t.Errorf("IsUnscopedLaunchToken(%q) = %v, want %v", name, got, want)
		}
	}
}
