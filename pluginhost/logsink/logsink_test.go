package logsink_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

func newSink(t *testing.T) (*logsink.Sink, store.Store) {
	t.Helper()
	st, err := storesqlite.Open(context.Background(), filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	s := logsink.New(st, nil, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	return s, st
}

func stored(t *testing.T, st store.Store, id string) []store.LogRecord {
	t.Helper()
	var recs []store.LogRecord
	err := st.Read(context.Background(), func(tx store.Tx) error {
		var err error
		recs, _, err = tx.Logs(store.LogFilter{PluginID: id, Page: 1, PerPage: 1000})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// Purge removes a plugin's logs, those still queued included: nothing of the plugin is
// stored after it returns, not even by a later flush (the uninstall with cleanup_data left
// 2 to 14 records behind before).
func TestPurgeLeavesNothingBehind(t *testing.T) {
	s, st := newSink(t)
	for i := range 300 {
		s.Add(store.LogRecord{PluginID: "gone-plugin", Level: "INFO", Message: fmt.Sprint("line ", i)})
		s.Add(store.LogRecord{PluginID: "kept-plugin", Level: "INFO", Message: fmt.Sprint("line ", i)})
	}
	if err := s.Purge(context.Background(), "gone-plugin"); err != nil {
		t.Fatal(err)
	}
	if recs := stored(t, st, "gone-plugin"); len(recs) != 0 {
		t.Fatalf("%d records left right after the purge", len(recs))
	}
	// Past the flush interval: a late flush must not bring any back.
	s.Add(store.LogRecord{PluginID: "kept-plugin", Level: "INFO", Message: "after"})
	deadline := time.Now().Add(10 * time.Second)
	for len(stored(t, st, "kept-plugin")) != 301 {
		if time.Now().After(deadline) {
			t.Fatalf("kept-plugin has %d records, want 301", len(stored(t, st, "kept-plugin")))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if recs := stored(t, st, "gone-plugin"); len(recs) != 0 {
		t.Fatalf("%d records came back after the purge", len(recs))
	}
	if r := s.Recent("gone-plugin"); len(r) != 0 {
		t.Fatalf("recent records kept after the purge: %v", r)
	}
}

// Recent holds the newest stored records in memory, newest first, also those stored by
// another writer (Stored) and those loaded at start (Prime).
func TestRecentIsServedFromMemory(t *testing.T) {
	s, st := newSink(t)
	base := time.Now().UTC().Add(-time.Hour)
	old := []store.LogRecord{}
	for i := range 15 {
		old = append(old, store.LogRecord{PluginID: "p-plugin", Time: base.Add(time.Duration(i) * time.Second), Level: "INFO", Message: fmt.Sprint("old ", i)})
	}
	if err := st.Write(context.Background(), func(tx store.Tx) error { return logsink.Append(tx, old, 1000) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Prime(context.Background(), []string{"p-plugin"}); err != nil {
		t.Fatal(err)
	}
	r := s.Recent("p-plugin")
	if len(r) != logsink.RecentKept || r[0].Message != "old 14" {
		t.Fatalf("after Prime: %d records, first %q", len(r), r[0].Message)
	}
	s.Stored([]store.LogRecord{{PluginID: "p-plugin", Time: time.Now().UTC(), Level: "INFO", Message: "lifecycle"}})
	if r := s.Recent("p-plugin"); r[0].Message != "lifecycle" || len(r) != logsink.RecentKept {
		t.Fatalf("after Stored: %v", r[0])
	}
	s.Add(store.LogRecord{PluginID: "p-plugin", Level: "ERROR", Message: "newest"})
	deadline := time.Now().Add(10 * time.Second)
	for s.Recent("p-plugin")[0].Message != "newest" {
		if time.Now().After(deadline) {
			t.Fatal("the added record never reached Recent")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A tail gets the backlog oldest first, then the matching new records, and its goroutine
// ends with its context.
func TestTail(t *testing.T) {
	s, _ := newSink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		s.Add(store.LogRecord{PluginID: "t-plugin", Level: "INFO", Message: fmt.Sprint("before ", i)})
	}
	if err := s.Purge(ctx, "other"); err != nil { // a barrier: what was queued is stored
		t.Fatal(err)
	}
	tailCtx, stop := context.WithCancel(ctx)
	ch, err := s.Tail(tailCtx, logsink.TailQuery{PluginID: "t-plugin", MinLevel: "WARNING", Backlog: 2})
	if err != nil {
		t.Fatal(err)
	}
	s.Add(store.LogRecord{PluginID: "t-plugin", Level: "INFO", Message: "skipped"})
	s.Add(store.LogRecord{PluginID: "t-plugin", Level: "ERROR", Message: "wanted"})
	var got []string
	for len(got) < 1 {
		select {
		case r := <-ch:
			got = append(got, r.Message)
		case <-ctx.Done():
			t.Fatalf("tail got %v", got)
		}
	}
	if got[0] != "wanted" {
		t.Fatalf("tail got %v (backlog below WARNING must be filtered, live INFO skipped)", got)
	}
	stop()
	for range ch {
	}
}

// A record whose plugin-given time the stores cannot keep is stored at its time of receipt,
// and does not fail the batch it is in.
func TestImplausibleTimesDoNotFailTheBatch(t *testing.T) {
	s, st := newSink(t)
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	s.Add(store.LogRecord{PluginID: "p-plugin", Time: far, Level: "INFO", Message: "from the future"})
	s.Add(store.LogRecord{PluginID: "q-plugin", Level: "INFO", Message: "ordinary"})
	deadline := time.Now().Add(10 * time.Second)
	for len(stored(t, st, "p-plugin")) == 0 || len(stored(t, st, "q-plugin")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the batch was not stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := stored(t, st, "p-plugin")[0].Time; got.Year() != time.Now().Year() {
		t.Fatalf("stored at %v", got)
	}
}
