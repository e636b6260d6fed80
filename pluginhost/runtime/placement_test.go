package runtime_test

import (
	"context"
	"encoding/json"
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
