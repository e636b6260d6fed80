package audit_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/audit"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// countingStore counts the store writes.
type countingStore struct {
	store.Store
	mu     sync.Mutex
	writes int
}

func (c *countingStore) Write(ctx context.Context, fn func(store.Tx) error) error {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Store.Write(ctx, fn)
}

func open(t *testing.T) *countingStore {
	t.Helper()
	st, err := storesqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &countingStore{Store: st}
}

func entries(t *testing.T, st store.Store) []store.AuditEntry {
	t.Helper()
	var out []store.AuditEntry
	if err := st.Read(t.Context(), func(tx store.Tx) error {
		var err error
		out, err = tx.Audit(store.AuditFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// Entries added from many callers while the writer runs are all stored, in far fewer store
// writes than entries; what is queued when it stops is stored before Run returns; an entry
// added before Run or after it is written at once.
func TestWriterBatchesAndLosesNothingOnStop(t *testing.T) {
	st := open(t)
	w := audit.New(st, nil)
	if err := w.Add(t.Context(), store.AuditEntry{Action: "before"}); err != nil {
		t.Fatal(err)
	}
	if n := len(entries(t, st)); n != 1 {
		t.Fatalf("an entry added before Run: %d stored, want 1 at once", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	const callers, each = 8, 250
	st.mu.Lock()
	before := st.writes
	st.mu.Unlock()
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := w.Add(t.Context(), store.AuditEntry{Action: fmt.Sprintf("call-%d-%d", c, i), Outcome: "OK"}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cancel() // stops with entries still queued
	<-done
	got := entries(t, st)
	if len(got) != 1+callers*each {
		t.Fatalf("%d entries stored, want %d", len(got), 1+callers*each)
	}
	seen := map[string]bool{}
	for _, e := range got {
		if e.ID == "" || e.Time.IsZero() || seen[e.ID] {
			t.Fatalf("entry without an id or a time, or a repeated id: %+v", e)
		}
		seen[e.ID] = true
	}
	st.mu.Lock()
	writes := st.writes - before
	st.mu.Unlock()
	if writes >= callers*each/10 {
		t.Errorf("%d store writes for %d entries: not batched", writes, callers*each)
	}
	t.Logf("%d entries in %d store writes", callers*each, writes)
	if err := w.Add(t.Context(), store.AuditEntry{Action: "after"}); err != nil {
		t.Fatal(err)
	}
	if n := len(entries(t, st)); n != 2+callers*each {
		t.Fatalf("an entry added after Run: %d stored, want %d at once", n, 2+callers*each)
	}
}

// A caller that must wait for room in a full queue gives up when its context ends.
func TestWriterAddWaitsForRoomUntilItsContextEnds(t *testing.T) {
	block := make(chan struct{})
	w := audit.New(&blockingStore{Store: open(t), block: block}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	// Once Run runs, an entry is queued (an Add before that writes at once, into the stuck
	// store, and gives up with its context).
	deadline := time.Now().Add(10 * time.Second)
	for {
		actx, acancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := w.Add(actx, store.AuditEntry{Action: "probe"})
		acancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no entry was queued")
		}
	}
	// The first batch's write blocks; the queue fills behind it.
	var err error
	for range 10000 {
		actx, acancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err = w.Add(actx, store.AuditEntry{Action: "x"})
		acancel()
		if err != nil {
			break
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("10000 entries queued behind a stuck store: the last Add = %v, want it to wait until its context ends", err)
	}
	close(block)
	cancel()
	<-done
}

// blockingStore blocks every write until block is closed.
type blockingStore struct {
	store.Store
	block chan struct{}
}

func (b *blockingStore) Write(ctx context.Context, fn func(store.Tx) error) error {
	select {
	case <-b.block:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Store.Write(ctx, fn)
}
