package storepg_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg"
)

// follow runs s.Follow until the test ends and returns the changes it tells.
func follow(t *testing.T, s store.Feed) <-chan store.Change {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan store.Change, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Follow(ctx, func(c store.Change) { got <- c })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return got
}

func expectChange(t *testing.T, got <-chan store.Change, want store.Change) {
	t.Helper()
	select {
	case c := <-got:
		if c != want {
			t.Fatalf("change %+v, want %+v", c, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no change; want %+v", want)
	}
}

func expectNoChange(t *testing.T, got <-chan store.Change) {
	t.Helper()
	select {
	case c := <-got:
		t.Fatalf("unexpected change %+v", c)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestFeed: a server hears, through its store's Follow, the plugin records written and
// deleted, the settings stored and the tokens revoked by another server on the same database, once committed;
// nothing of a rolled-back write, nor of another deployment's schema; and a lost
// connection is followed by ChangeAny once it listens again.
func TestFeed(t *testing.T) {
	url := shared.NewDatabase(t)
	if _, err := rawConn(t, url).Exec(t.Context(), `CREATE SCHEMA other`); err != nil {
		t.Fatal(err)
	}
	writer, reader := open(t, url), open(t, url)
	other := open(t, url+"&search_path=other")
	got, gotOther := follow(t, reader), follow(t, other)
	expectChange(t, got, store.Change{Kind: store.ChangeAny})
	expectChange(t, gotOther, store.Change{Kind: store.ChangeAny})

	ctx := t.Context()
	at := time.Now()
	if err := writer.Write(ctx, func(tx store.Tx) error {
		if err := tx.PutPlugin(store.Plugin{ID: "p1", Version: "1.0.0", Manifest: []byte(`{}`), InstalledAt: at, UpdatedAt: at}); err != nil {
			return err
		}
		if err := tx.PutSetting("k", []byte("v")); err != nil {
			return err
		}
		return tx.PutToken(store.Token{ID: "t1", Name: "n", Role: store.RoleUser, Hash: []byte("h1"), CreatedAt: at})
	}); err != nil {
		t.Fatal(err)
	}
	expectChange(t, got, store.Change{Kind: store.ChangePlugin, ID: "p1"})
	expectChange(t, got, store.Change{Kind: store.ChangeSetting, ID: "k"})

	boom := errors.New("boom")
	if err := writer.Write(ctx, func(tx store.Tx) error {
		if err := tx.DeletePlugin("p1"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("rolled-back write: %v", err)
	}
	expectNoChange(t, got)

	if err := writer.Write(ctx, func(tx store.Tx) error {
		if err := tx.RevokeToken("t1", at); err != nil {
			return err
		}
		return tx.DeletePlugin("p1")
	}); err != nil {
		t.Fatal(err)
	}
	expectChange(t, got, store.Change{Kind: store.ChangeTokenRevoked, ID: "t1"})
	expectChange(t, got, store.Change{Kind: store.ChangePlugin, ID: "p1"})
	expectNoChange(t, gotOther)

	// The listening connection is cut: Follow listens again and says it may have missed
	// changes.
	if _, err := rawConn(t, url).Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND datname = current_database()`); err != nil {
		t.Fatal(err)
	}
	expectChange(t, got, store.Change{Kind: store.ChangeAny})
}

// TestFeedOverQuietTimes: a feed with nothing to tell for longer than its ping interval
// checks its connection and keeps listening on it.
func TestFeedOverQuietTimes(t *testing.T) {
	storepg.SetFollowPing(t, 100*time.Millisecond)
	url := shared.NewDatabase(t)
	writer, reader := open(t, url), open(t, url)
	got := follow(t, reader)
	expectChange(t, got, store.Change{Kind: store.ChangeAny})
	time.Sleep(500 * time.Millisecond) // several pings
	if err := writer.Write(t.Context(), func(tx store.Tx) error { return tx.PutSetting("k", nil) }); err != nil {
		t.Fatal(err)
	}
	expectChange(t, got, store.Change{Kind: store.ChangeSetting, ID: "k"})
	expectNoChange(t, got) // no reconnection (it would say ChangeAny)
}
