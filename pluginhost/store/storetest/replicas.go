package storetest

import (
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func normReplica(r store.Replica) store.Replica {
	r.StartedAt = normTime(r.StartedAt)
	r.HeartbeatAt = normTime(r.HeartbeatAt)
	return r
}

func testReplicas(t *testing.T, s store.Store) {
	at := base()
	b := store.Replica{ID: "replica-b", AdvertiseURL: "http://10.0.0.2:8080", Version: "1.0.0", StartedAt: at,
		HeartbeatAt: at.Add(5 * time.Second), HeartbeatInterval: 5 * time.Second, Instances: 3,
		Sessions: []store.ReplicaSession{{PluginID: "auth-plugin", InstanceID: "worker-1"}, {PluginID: "auth-plugin", InstanceID: "wörker-2"}, {PluginID: "billing", InstanceID: "b"}}}
	a := store.Replica{ID: "Replica_A", AdvertiseURL: "https://a.example.test", Version: "1.1.0",
		StartedAt: at.Add(-time.Hour), HeartbeatAt: at.Add(time.Nanosecond), HeartbeatInterval: 250 * time.Millisecond}
	read(t, s, func(tx store.Tx) error {
		got, err := tx.Replicas()
		checkAll(t, "Replicas of a new store", got, nil, normReplica)
		return err
	})
	write(t, s, func(tx store.Tx) error {
		if err := tx.PutReplica(b); err != nil {
			return err
		}
		return tx.PutReplica(a)
	})
	read(t, s, func(tx store.Tx) error {
		got, err := tx.Replicas()
		checkAll(t, "Replicas ordered by id (byte-wise)", got, []store.Replica{a, b}, normReplica)
		return err
	})

	// A heartbeat replaces the record; a zero start time round-trips.
	b2 := b
	b2.HeartbeatAt, b2.Instances, b2.AdvertiseURL, b2.StartedAt, b2.Sessions = at.Add(10*time.Second), 0, "http://10.0.0.2:9090", time.Time{}, nil
	write(t, s, func(tx store.Tx) error { return tx.PutReplica(b2) })
	write(t, s, func(tx store.Tx) error { return tx.DeleteReplica(a.ID) })
	err := s.Write(t.Context(), func(tx store.Tx) error { return tx.DeleteReplica(a.ID) })
	wantErr(t, "DeleteReplica of a deleted replica", err, store.ErrNotFound)
	read(t, s, func(tx store.Tx) error {
		got, err := tx.Replicas()
		checkAll(t, "Replicas after replace and delete", got, []store.Replica{b2}, normReplica)
		return err
	})

	if err := s.Write(t.Context(), func(tx store.Tx) error { return tx.PutReplica(store.Replica{}) }); err == nil {
		t.Error("PutReplica with an empty id succeeded")
	}
}
