package cluster_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/cluster"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := storesqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func member(t *testing.T, st store.Store, id string, instances *atomic.Int64, interval time.Duration) *cluster.Membership {
	t.Helper()
	m, err := cluster.New(cluster.Config{Store: st, ID: id, Version: "1.0.0", Interval: interval,
		AdvertiseURL: func() string { return "http://" + id + ".test:8080" },
		Instances:    func() int { return int(instances.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func byID(rs []cluster.Replica) map[string]cluster.Replica {
	out := map[string]cluster.Replica{}
	for _, r := range rs {
		out[r.ID] = r
	}
	return out
}

// Two replicas on one store see each other up, with their addresses and instance counts;
// one that leaves is no longer listed.
func TestReplicasSeeEachOther(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	var na, nb atomic.Int64
	na.Store(2)
	nb.Store(5)
	a, b := member(t, st, "node-a", &na, time.Second), member(t, st, "node-b", &nb, time.Second)
	if err := a.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	na.Store(3) // A sees its own count now, B sees the one of A's last heartbeat
	got, err := a.Replicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "node-a" || got[1].ID != "node-b" {
		t.Fatalf("Replicas = %+v, want node-a and node-b", got)
	}
	want := map[string]struct {
		self      bool
		instances int
	}{"node-a": {true, 3}, "node-b": {false, 5}}
	for _, r := range got {
		w := want[r.ID]
		if !r.Up || r.Self != w.self || r.Instances != w.instances || r.AdvertiseURL != "http://"+r.ID+".test:8080" ||
			r.Version != "1.0.0" || r.HeartbeatInterval != time.Second || r.HeartbeatAt.IsZero() || r.StartedAt.IsZero() {
			t.Errorf("replica %+v, want up, self %v, %d instances", r, w.self, w.instances)
		}
	}
	if fromB, err := b.Replicas(ctx); err != nil || byID(fromB)["node-a"].Instances != 2 || !byID(fromB)["node-b"].Self {
		t.Errorf("seen from B: %+v, %v", fromB, err)
	}
	others, err := a.LiveOthers(ctx)
	if err != nil || len(others) != 1 || others[0].ID != "node-b" {
		t.Errorf("LiveOthers = %+v, %v; want node-b", others, err)
	}
	if d := cluster.Describe(others); d != "node-b (http://node-b.test:8080)" {
		t.Errorf("Describe = %q", d)
	}

	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Leave(ctx); err != nil {
		t.Errorf("Leave twice: %v", err)
	}
	if got, err := a.Replicas(ctx); err != nil || len(got) != 1 || got[0].ID != "node-a" {
		t.Errorf("after B left: %+v, %v", got, err)
	}
}

// A replica silent for more than DownAfter of its own intervals is down, and no longer a
// live other; one silent for more than ForgetAfter is removed by the next heartbeat.
func TestSilentReplicas(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	var n atomic.Int64
	a := member(t, st, "node-a", &n, time.Second)
	now := time.Now()
	put := func(r store.Replica) {
		t.Helper()
		if err := st.Write(ctx, func(tx store.Tx) error { return tx.PutReplica(r) }); err != nil {
			t.Fatal(err)
		}
	}
	// A slow heartbeat: up for three of its own minutes, whatever A's interval.
	put(store.Replica{ID: "slow", HeartbeatAt: now.Add(-2 * time.Minute), HeartbeatInterval: time.Minute})
	put(store.Replica{ID: "killed", HeartbeatAt: now.Add(-4 * time.Second), HeartbeatInterval: time.Second})
	put(store.Replica{ID: "long-gone", HeartbeatAt: now.Add(-cluster.ForgetAfter - time.Minute), HeartbeatInterval: time.Second})
	got, err := a.Replicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := byID(got)
	if !m["slow"].Up || m["killed"].Up || m["long-gone"].Up || !m["node-a"].Up || !m["node-a"].Self || len(got) != 4 {
		t.Errorf("Replicas = %+v", got)
	}
	if !m["node-a"].HeartbeatAt.IsZero() {
		t.Errorf("self before its first heartbeat: %+v", m["node-a"])
	}
	if others, err := a.LiveOthers(ctx); err != nil || len(others) != 1 || others[0].ID != "slow" {
		t.Errorf("LiveOthers = %+v, %v; want slow", others, err)
	}
	if err := a.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Replicas(ctx); err != nil || len(got) != 3 || byID(got)["long-gone"].ID != "" {
		t.Errorf("after a heartbeat: %+v, %v; want long-gone forgotten", got, err)
	}
}

// Run heartbeats every interval until its context ends; Previous finds the record an
// earlier run with the same id left.
func TestRunAndPrevious(t *testing.T) {
	st := openStore(t)
	var n atomic.Int64
	a := member(t, st, "node-a", &n, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	heartbeat := func() time.Time {
		var at time.Time
		_ = st.Read(t.Context(), func(tx store.Tx) error {
			rs, err := tx.Replicas()
			if len(rs) == 1 {
				at = rs[0].HeartbeatAt
			}
			return err
		})
		return at
	}
	deadline := time.Now().Add(5 * time.Second)
	first := heartbeat()
	for first.IsZero() || !heartbeat().After(first) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not heartbeat twice")
		}
		time.Sleep(10 * time.Millisecond)
		if first.IsZero() {
			first = heartbeat()
		}
	}
	cancel()
	<-done

	again := member(t, st, "node-a", &n, 20*time.Millisecond)
	rec, up, found, err := again.Previous(t.Context())
	if err != nil || !found || !up || rec.ID != "node-a" {
		t.Errorf("Previous = %+v, up %v, found %v, %v; want the record of the run that just stopped, up", rec, up, found, err)
	}
	reps, err := again.Replicas(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	self := byID(reps)["node-a"]
	if !self.Self || !self.HeartbeatAt.IsZero() {
		t.Errorf("the new run lists the earlier run's record as its own: %+v", self)
	}
	if _, _, found, err := member(t, st, "node-b", &n, time.Second).Previous(t.Context()); err != nil || found {
		t.Errorf("Previous of a new id: found %v, %v", found, err)
	}
}

// A heartbeat records the instances connected to its replica; another replica lists them,
// for one plugin, from what its own last heartbeat read, and no longer once that replica is
// down.
func TestRemoteSessions(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	sessions := []store.ReplicaSession{{PluginID: "auth-plugin", InstanceID: "w1"}, {PluginID: "auth-plugin", InstanceID: "w2"}, {PluginID: "billing", InstanceID: "b1"}}
	a, err := cluster.New(cluster.Config{Store: st, ID: "node-a", Interval: 200 * time.Millisecond,
		Sessions: func() []store.ReplicaSession { return sessions }})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cluster.New(cluster.Config{Store: st, ID: "node-b", Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.RemoteSessions("auth-plugin"); len(got) != 0 {
		t.Fatalf("before any heartbeat: %v", got)
	}
	if err := a.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.RemoteSessions("auth-plugin"); len(got) != 0 {
		t.Fatalf("before B's heartbeat read A's record: %v", got)
	}
	if err := b.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	want := []cluster.Session{{InstanceID: "w1", Replica: "node-a"}, {InstanceID: "w2", Replica: "node-a"}}
	if got := b.RemoteSessions("auth-plugin"); !slices.Equal(got, want) {
		t.Errorf("auth-plugin's instances as B lists them: %v, want %v", got, want)
	}
	if got := a.RemoteSessions("auth-plugin"); len(got) != 0 {
		t.Errorf("A lists its own instances as remote: %v", got)
	}
	// A stops beating: three of its intervals later it is down, and its instances go.
	deadline := time.Now().Add(5 * time.Second)
	for len(b.RemoteSessions("auth-plugin")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the instances of a replica that is down are still listed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
