package registry_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
)

// Two servers (two registries, two storepg stores) on one database. Server 2 starts a
// Modify (a status change) while server 1's Update (a new configuration) holds the write
// lock: server 2's Modify must work on the record as committed, read from the store once it
// has the lock, not on its in-memory copy (which would write the old configuration back).
func TestNoLostUpdateAcrossServers(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t, pgtest.Options{})
	url := srv.NewDatabase(t)
	st1, err := storepg.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st1.Close()
	st2, err := storepg.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, _ := secrets.New(key)
	r1 := registry.New(st1, box, nil)
	r2 := registry.New(st2, box, nil)
	if err := r1.Load(ctx); err != nil {
		t.Fatal(err)
	}
	rec := store.Plugin{ID: "alpha-plugin", Version: "1.0.0", Manifest: manifestJSON("alpha-plugin", nil), Dir: "plugins/alpha-plugin",
		Status: "inactive", Config: []byte(`{"level":"info"}`), Enabled: true}
	if err := r1.Update(ctx, func(tx *registry.Tx) error { _, err := tx.Put(rec); return err }); err != nil {
		t.Fatal(err)
	}
	if err := r2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go st2.Follow(fctx, func(c store.Change) { _ = r2.Refresh(fctx) })

	locked, release := make(chan struct{}), make(chan struct{})
	done1 := make(chan error, 1)
	go func() {
		done1 <- r1.Update(ctx, func(tx *registry.Tx) error {
			p, err := tx.Get("alpha-plugin")
			if err != nil {
				return err
			}
			r := p.Record()
			r.Config = []byte(`{"level":"debug"}`) // the admin's new configuration, through server 1
			if _, err := tx.Put(r); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	done2 := make(chan error, 1)
	go func() {
		_, err := r2.Modify(ctx, "alpha-plugin", func(r *store.Plugin) error { r.Status = "active"; return nil })
		done2 <- err
	}()
	time.Sleep(300 * time.Millisecond) // server 2's Modify waits for the write lock
	close(release)
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	var got store.Plugin
	_ = st1.Read(ctx, func(tx store.Tx) error { got, err = tx.Plugin("alpha-plugin"); return err })
	t.Logf("stored: status %q config %s", got.Status, got.Config)
	if string(got.Config) != `{"level":"debug"}` {
		t.Errorf("the configuration committed through server 1 was lost: stored %s", got.Config)
	}
	if got.Status != "active" {
		t.Errorf("server 2's status change was lost: stored %q", got.Status)
	}
	if p2, _ := r2.Get("alpha-plugin"); string(p2.Record().Config) != `{"level":"debug"}` {
		t.Errorf("server 2's view after its write: config %s", p2.Record().Config)
	}
}
