package router_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busmem"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

type holdKey struct{}

// slowStore returns from a Write whose ctx carries holdKey only when that channel closes:
// the goroutine is descheduled between the commit and what follows it.
type slowStore struct{ store.Store }

func (s slowStore) Write(ctx context.Context, fn func(store.Tx) error) error {
	err := s.Store.Write(ctx, fn)
	if ch, ok := ctx.Value(holdKey{}).(chan struct{}); ok {
		<-ch
	}
	return err
}

// Two Subscribe calls of one plugin (two instances of it, on one server), the first
// descheduled between its commit and its copy to memory: memory must end as the store does
// (the first must not set its older set over the second's).
func TestSubscribeOrderMatchesTheStore(t *testing.T) {
	ctx := context.Background()
	sq, err := storesqlite.Open(ctx, filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, _ := secrets.New(key)
	reg := registry.New(slowStore{sq}, box, nil)
	if err := reg.Load(ctx); err != nil {
		t.Fatal(err)
	}
	r := router.New(router.Options{Registry: reg, Presence: presence.New(), Bus: busmem.New(bus.Options{})})

	hold := make(chan struct{})
	first := make(chan error, 1)
	go func() { first <- r.Subscribe(context.WithValue(ctx, holdKey{}, hold), "p", []string{"a.*"}, nil) }()
	// Wait until the first Subscribe committed.
	for {
		var raw []byte
		_ = sq.Read(ctx, func(tx store.Tx) error { raw, _ = tx.Setting("event-subscriptions/p"); return nil })
		if raw != nil {
			break
		}
	}
	// A second Subscribe meanwhile (the first has committed, not yet copied to memory).
	second := make(chan error, 1)
	go func() { second <- r.Subscribe(ctx, "p", []string{"b.*"}, nil) }()
	time.Sleep(100 * time.Millisecond)
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	var raw []byte
	_ = sq.Read(ctx, func(tx store.Tx) error { raw, _ = tx.Setting("event-subscriptions/p"); return nil })
	t.Logf("stored %s; in memory a.*=%v b.*=%v", raw, r.Subscribed("p", "a.x"), r.Subscribed("p", "b.x"))
	if !r.Subscribed("p", "b.x") {
		t.Error("the router lost the subscription b.* that the store keeps")
	}
}
