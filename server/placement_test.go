package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/server"
)

// TestPlacementOneReplicaRunsAPlugin runs three servers on one PostgreSQL and one Redis:
// alpha and gamma in this process, beta as a process of its own (so that it can be killed).
// A host-launched plugin enabled through beta runs there alone, while beta renews its lease;
// beta killed, the plugin runs again on exactly one of alpha and gamma within the lease TTL
// plus its start time, and beta's launch token for it is revoked; disabled through the replica that does not run it, it stops; enabled
// again, it runs on exactly one replica; its lease taken by another replica, it stops there,
// and comes back once that lease runs out.
func TestPlacementOneReplicaRunsAPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	const ttl = 2 * time.Second
	set := newReplicaSet(t, "test-placement:", func(c *server.Config) {
		c.LeaseTTL, c.HealthInterval = ttl, 300*time.Millisecond
	}, "NEXUS_LEASE_TTL="+ttl.String(), "NEXUS_HEALTH_INTERVAL=300ms")
	dbURL := set.DBURL
	a, c := set.inProcess("alpha"), set.inProcess("gamma")
	b, cmd := set.process("beta")
	all := map[string]*env{"alpha": a, "beta": b, "gamma": c}

	// runsOn is the replicas whose launched instance of the plugin is connected to them.
	runsOn := func(names ...string) []string {
		var on []string
		for _, name := range names {
			for _, rep := range connectedInstances(all[name], "placed-plugin", name) {
				if rep != name {
					t.Errorf("an instance connected to %s says replica %s", name, rep)
				}
				on = append(on, name)
			}
		}
		return on
	}
	// holdsFor checks cond at every poll for d: placement must stay put, not only reach a
	// state once.
	holdsFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); {
			if !cond() {
				t.Fatalf("%s stopped holding", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	installTestPlugin(a, "placed-plugin", "healthy", nil, nil)
	waitFor(t, "the install on beta", 5*time.Second, func() bool {
		return b.rest("GET", "/api/v1/plugins/placed-plugin", b.Admin, nil).Status == http.StatusOK
	})
	b.mustREST(http.MethodPost, "/api/v1/plugins/placed-plugin/enable", b.Admin, nil)
	waitFor(t, "the plugin on beta", 10*time.Second, func() bool { on := runsOn("beta"); return len(on) == 1 })
	// Over several renewals, beta alone runs it; every replica says it is active.
	holdsFor("the plugin on beta alone", 2*ttl, func() bool {
		on := runsOn("alpha", "beta", "gamma")
		return len(on) == 1 && on[0] == "beta"
	})
	for name, e := range all {
		if st, _ := status(e, "placed-plugin"); st != "active" {
			t.Errorf("status as %s says: %s", name, st)
		}
	}

	// beta's lease records the launch token of its copy (the one to revoke if beta dies).
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var leaseToken, tokenName string
	if err := conn.QueryRow(t.Context(), `SELECT convert_from(value, 'UTF8')::json->>'token' FROM settings WHERE key = 'lease/placed-plugin'`).Scan(&leaseToken); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(t.Context(), `SELECT name FROM tokens WHERE id = $1 AND revoked_at IS NULL`, leaseToken).Scan(&tokenName); err != nil || tokenName != "runtime:beta:placed-plugin" {
		t.Errorf("the lease records token %q (%q, %v); want beta's valid launch token", leaseToken, tokenName, err)
	}

	// beta dies without a word: its lease runs out and alpha or gamma starts the plugin.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	var holder string
	waitFor(t, "the plugin on alpha or gamma", ttl+20*time.Second, func() bool {
		on := runsOn("alpha", "gamma")
		if len(on) == 1 {
			holder = on[0]
		}
		return len(on) > 0
	})
	moved := time.Since(killed)
	t.Logf("the plugin runs on %s %s after beta was killed (lease TTL %s)", holder, moved.Round(time.Millisecond), ttl)
	if holder == "" {
		t.Fatalf("the plugin runs on %v after beta was killed; want one replica", runsOn("alpha", "gamma"))
	}
	if moved > ttl+10*time.Second {
		t.Errorf("the plugin took %s to move; want within the lease TTL (%s) plus its start time", moved, ttl)
	}
	waitFor(t, "the plugin active", 10*time.Second, func() bool { st, _ := status(a, "placed-plugin"); return st == "active" })
	// beta could not revoke its copy's launch token; the replica that took the lease did.
	var valid, revoked int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE revoked_at IS NULL), count(*) FILTER (WHERE revoked_at IS NOT NULL)
		FROM tokens WHERE name = 'runtime:beta:placed-plugin'`).Scan(&valid, &revoked); err != nil {
		t.Fatal(err)
	}
	if valid != 0 || revoked == 0 {
		t.Errorf("beta's launch tokens for the plugin: %d valid, %d revoked; want none valid", valid, revoked)
	}
	holdsFor("the plugin on "+holder+" alone", 2*ttl, func() bool {
		on := runsOn("alpha", "gamma")
		return len(on) == 1 && on[0] == holder
	})

	// Disabled through the replica that does not run it: stopped on the one that does.
	other := map[string]string{"alpha": "gamma", "gamma": "alpha"}[holder]
	all[other].mustREST(http.MethodPost, "/api/v1/plugins/placed-plugin/disable", all[other].Admin, nil)
	waitFor(t, "the plugin stopped on "+holder, 15*time.Second, func() bool { return len(runsOn("alpha", "gamma")) == 0 })
	holdsFor("the plugin stopped", ttl, func() bool { return len(runsOn("alpha", "gamma")) == 0 })
	if st, _ := status(all[holder], "placed-plugin"); st != "inactive" {
		t.Errorf("status after the disable: %s", st)
	}

	// Enabled again through the replica that ran it last: it runs on one replica.
	all[holder].mustREST(http.MethodPost, "/api/v1/plugins/placed-plugin/enable", all[holder].Admin, nil)
	holdsFor("the plugin on one replica", ttl, func() bool { return len(runsOn("alpha", "gamma")) == 1 })

	// Another replica's lease written over this one's: the next renewal finds it and stops
	// the plugin here; once that lease runs out, alpha or gamma takes the plugin back.
	lease, err := json.Marshal(map[string]any{"replica": "elsewhere", "expires_at": time.Now().Add(2 * ttl).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if tag, err := conn.Exec(t.Context(), `UPDATE settings SET value = $1 WHERE key = 'lease/placed-plugin'`, lease); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("write another replica's lease: %v, %v", tag, err)
	}
	waitFor(t, "the plugin stopped where its lease was lost", ttl, func() bool { return len(runsOn("alpha", "gamma")) == 0 })
	waitFor(t, "the plugin taken back once the other lease ran out", 2*ttl+15*time.Second, func() bool {
		return len(runsOn("alpha", "gamma")) == 1
	})
}
