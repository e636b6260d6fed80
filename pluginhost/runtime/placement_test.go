package runtime_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

func readLeaseT(t *testing.T, f *fixture, key string) runtime.Lease {
	var l runtime.Lease
	err := f.st.Read(context.Background(), func(tx store.Tx) error {
		b, err := tx.Setting(key)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &l)
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A restart whose start is refused (a dependency not active) gives up the lease slot the
// restart kept: no slot stays held and renewed with no copy running.
func TestRestartRefusedReleasesTheSlot(t *testing.T) {
	f := newFixtureP(t, runtime.Config{Replica: "r1", LeaseTTL: 600 * time.Millisecond}, true)
	f.install(spec{id: "base-plugin", mode: "serve"})
	f.install(spec{id: "app-plugin", mode: "serve", deps: []string{"base-plugin"}})
	f.mustEnable("base-plugin")
	f.mustEnable("app-plugin")
	// the dependency is, for a moment, not active (e.g. crashed and restarting)
	if err := f.rt.SetStatus(context.Background(), "base-plugin", registry.StatusLoading, "crashed", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.rt.Restart(context.Background(), "app-plugin", "test", 5*time.Second); err == nil {
		t.Fatal("Restart succeeded with its dependency loading")
	}
	time.Sleep(2 * time.Second) // > 3 TTLs
	l := readLeaseT(t, f, runtime.LeaseKey("app-plugin"))
	t.Logf("lease after 3 TTLs: %+v, running=%v, status=%q", l, f.rt.Info("app-plugin").Running, f.record("app-plugin").Status)
	if l.Replica == "r1" && time.Until(l.ExpiresAt) > 0 && !f.rt.Info("app-plugin").Running {
		t.Errorf("slot leaked: held and renewed by r1 with no copy running")
	}
	if st := f.record("app-plugin").Status; st == registry.StatusActive {
		t.Errorf("status on record after a refused restart: %s", st)
	}
}

// RestartHere (a restart or an update through another replica) whose start is refused
// gives up the slot too.
func TestRestartHereRefusedReleasesTheSlot(t *testing.T) {
	f := newFixtureP(t, runtime.Config{Replica: "r1", LeaseTTL: 600 * time.Millisecond}, true)
	f.install(spec{id: "base-plugin", mode: "serve"})
	f.install(spec{id: "app-plugin", mode: "serve", deps: []string{"base-plugin"}})
	f.mustEnable("base-plugin")
	f.mustEnable("app-plugin")
	if err := f.rt.SetStatus(context.Background(), "base-plugin", registry.StatusLoading, "crashed", nil); err != nil {
		t.Fatal(err)
	}
	f.rt.RestartHere(context.Background(), "app-plugin", "version 2 installed through another server")
	time.Sleep(2 * time.Second)
	l := readLeaseT(t, f, runtime.LeaseKey("app-plugin"))
	t.Logf("lease: %+v running=%v status=%q", l, f.rt.Info("app-plugin").Running, f.record("app-plugin").Status)
	if l.Replica == "r1" && time.Until(l.ExpiresAt) > 0 && !f.rt.Info("app-plugin").Running {
		t.Errorf("slot leaked: held and renewed by r1 with no copy running; status on record %q", f.record("app-plugin").Status)
	}
}

// A disable recorded (through another replica) while RestartHere is stopping the copy
// stands: the copy is not started again over it.
func TestRestartHereKeepsADisableMadeMeanwhile(t *testing.T) {
	f := newFixtureP(t, runtime.Config{Replica: "r1", LeaseTTL: 3 * time.Second, KillGrace: time.Second}, true)
	f.install(spec{id: "slow-plugin", mode: "stubborn"})
	f.mustEnable("slow-plugin")
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.rt.RestartHere(context.Background(), "slow-plugin", "restart through r2")
	}()
	time.Sleep(300 * time.Millisecond)
	// what the registry holds once another replica's disable is read
	if err := f.reg.Update(context.Background(), func(tx *registry.Tx) error {
		p, err := tx.Get("slow-plugin")
		if err != nil {
			return err
		}
		rec := p.Record()
		rec.Enabled, rec.Status = false, registry.StatusInactive
		_, err = tx.Put(rec)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	<-done
	rec := f.record("slow-plugin")
	t.Logf("after RestartHere: enabled=%v status=%q running=%v", rec.Enabled, rec.Status, f.rt.Info("slow-plugin").Running)
	if rec.Enabled || f.rt.Info("slow-plugin").Running {
		t.Errorf("the disable recorded meanwhile was undone")
	}
}

// putLease writes a lease slot as another replica would.
func putLease(t *testing.T, f *fixture, key string, l runtime.Lease) {
	t.Helper()
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.Write(context.Background(), func(tx store.Tx) error { return tx.PutSetting(key, b) }); err != nil {
		t.Fatal(err)
	}
}

// A copy whose slot a lowered count drops moves to a free slot below it, and goes on
// running (same process), rather than stopping while a slot it could take is free; the
// launch token the dead replica's lease on that slot records is revoked.
func TestLoweredCountMovesACopyToAFreeSlot(t *testing.T) {
	f := newFixtureP(t, runtime.Config{Replica: "r1", LeaseTTL: 600 * time.Millisecond}, true)
	f.install(spec{id: "app-plugin", mode: "serve"})
	ctx := context.Background()
	if err := f.rt.SetInstances(ctx, "app-plugin", 3); err != nil {
		t.Fatal(err)
	}
	// Slots 0 and 1 are held by replicas that are about to die.
	soon := time.Now().Add(time.Second).UTC()
	putLease(t, f, runtime.LeaseKey("app-plugin"), runtime.Lease{Replica: "r2", ExpiresAt: soon, Token: "tok-of-r2"})
	putLease(t, f, runtime.LeaseKey("app-plugin")+"/1", runtime.Lease{Replica: "r3", ExpiresAt: soon})
	f.mustEnable("app-plugin")
	if l := readLeaseT(t, f, runtime.LeaseKey("app-plugin")+"/2"); l.Replica != "r1" {
		t.Fatalf("slot 2: %+v, want r1's", l)
	}
	pid := f.rt.Info("app-plugin").PID
	time.Sleep(time.Until(soon) + 100*time.Millisecond) // r2's and r3's leases run out
	if err := f.rt.SetInstances(ctx, "app-plugin", 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for readLeaseT(t, f, runtime.LeaseKey("app-plugin")).Replica != "r1" {
		if time.Now().After(deadline) {
			t.Fatalf("slot 0 not taken over by r1: %+v", readLeaseT(t, f, runtime.LeaseKey("app-plugin")))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l := readLeaseT(t, f, runtime.LeaseKey("app-plugin")+"/2"); l.Replica != "" {
		t.Errorf("slot 2 after the move: %+v, want released", l)
	}
	f.tokens.mu.Lock()
	revoked := slices.Contains(f.tokens.revoked, "tok-of-r2")
	f.tokens.mu.Unlock()
	if !revoked {
		t.Error("the launch token r2's lease recorded was not revoked")
	}
	// Over several renewals the same process runs, on slot 0.
	time.Sleep(2 * time.Second)
	if info := f.rt.Info("app-plugin"); !info.Running || info.PID != pid {
		t.Errorf("after the move: running %v, pid %d; want the same process (%d)", info.Running, info.PID, pid)
	}
	if l := readLeaseT(t, f, runtime.LeaseKey("app-plugin")); l.Replica != "r1" || time.Until(l.ExpiresAt) <= 0 {
		t.Errorf("slot 0 after renewals: %+v", l)
	}
}
