package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// emptyStore fails the test unless s holds no record of any kind, except plugins listed
// in keep.
func emptyStore(t *testing.T, s store.Store, keep ...string) {
	t.Helper()
	read(t, s, func(tx store.Tx) error {
		ps, err := tx.Plugins()
		if err != nil {
			return fmt.Errorf("Plugins: %w", err)
		}
		if len(ps) != len(keep) {
			t.Errorf("store holds %d plugins, want %d", len(ps), len(keep))
		}
		for i := range min(len(ps), len(keep)) {
			if ps[i].ID != keep[i] {
				t.Errorf("plugin %d is %q, want %q", i, ps[i].ID, keep[i])
			}
		}
		toks, err := tx.Tokens()
		if err != nil {
			return fmt.Errorf("Tokens: %w", err)
		}
		if len(toks) != 0 {
			t.Errorf("store holds %d tokens, want none", len(toks))
		}
		es, err := tx.Audit(store.AuditFilter{})
		if err != nil {
			return fmt.Errorf("Audit: %w", err)
		}
		if len(es) != 0 {
			t.Errorf("store holds %d audit entries, want none", len(es))
		}
		_, total, err := tx.Logs(store.LogFilter{PluginID: "p1", Page: 1, PerPage: 10})
		if err != nil {
			return fmt.Errorf("Logs: %w", err)
		}
		if total != 0 {
			t.Errorf("store holds %d log records of p1, want none", total)
		}
		bs, err := tx.Backups("p1")
		if err != nil {
			return fmt.Errorf("Backups: %w", err)
		}
		if len(bs) != 0 {
			t.Errorf("store holds %d backups of p1, want none", len(bs))
		}
		if _, err := tx.Setting("k"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Setting(k): error %v, want ErrNotFound", err)
		}
		n, err := tx.KVCount("p1")
		if err != nil {
			return fmt.Errorf("KVCount: %w", err)
		}
		if n != 0 {
			t.Errorf("store holds %d kv entries of p1, want none", n)
		}
		rs, err := tx.KVReaders("p1")
		if err != nil {
			return fmt.Errorf("KVReaders: %w", err)
		}
		if len(rs) != 0 {
			t.Errorf("p1 shares its kv entries with %q, want no one", rs)
		}
		reps, err := tx.Replicas()
		if err != nil {
			return fmt.Errorf("Replicas: %w", err)
		}
		if len(reps) != 0 {
			t.Errorf("store holds %d replicas, want none", len(reps))
		}
		return nil
	})
}

// putEverything writes one record of every kind.
func putEverything(tx store.Tx, at time.Time) error {
	if err := tx.PutPlugin(samplePlugin("p1", at)); err != nil {
		return err
	}
	if err := tx.PutToken(store.Token{ID: "tok", Role: store.RolePlugin, PluginID: "p1", Hash: []byte("h"), CreatedAt: at}); err != nil {
		return err
	}
	if err := tx.AppendAudit(store.AuditEntry{ID: "a1", Time: at, Target: "p1", Outcome: "ok"}); err != nil {
		return err
	}
	if err := tx.AppendLogs([]store.LogRecord{{PluginID: "p1", Time: at, Level: "INFO", Message: "m"}}); err != nil {
		return err
	}
	if err := tx.PutBackup(store.Backup{ID: "b1", PluginID: "p1", CreatedAt: at}); err != nil {
		return err
	}
	if err := tx.PutSetting("k", []byte("v")); err != nil {
		return err
	}
	if err := tx.PutKV(store.KVEntry{PluginID: "p1", Key: "k", Value: []byte(`1`), Version: 1, UpdatedAt: at}); err != nil {
		return err
	}
	if err := tx.PutKVReaders("p1", []string{"p2"}); err != nil {
		return err
	}
	return tx.PutReplica(store.Replica{ID: "r1", StartedAt: at, HeartbeatAt: at, HeartbeatInterval: time.Second})
}

func testRollback(t *testing.T, s store.Store) {
	at := base()
	errAbort := errors.New("storetest: abort")
	err := s.Write(t.Context(), func(tx store.Tx) error {
		if err := putEverything(tx, at); err != nil {
			return err
		}
		return fmt.Errorf("wrapped: %w", errAbort)
	})
	wantErr(t, "Write returning an error", err, errAbort)
	emptyStore(t, s)

	// Deletes and replacements roll back too.
	keep := samplePlugin("keep", at)
	write(t, s, func(tx store.Tx) error { return tx.PutPlugin(keep) })
	err = s.Write(t.Context(), func(tx store.Tx) error {
		if err := tx.DeletePlugin("keep"); err != nil {
			return err
		}
		changed := keep
		changed.Version = "9.9.9"
		if err := tx.PutPlugin(changed); err != nil {
			return err
		}
		return errAbort
	})
	if err != errAbort { //nolint:errorlint // Write must return fn's error itself.
		t.Errorf("Write returned %v, want errAbort itself", err)
	}
	read(t, s, func(tx store.Tx) error {
		got, err := tx.Plugin("keep")
		if err != nil {
			return fmt.Errorf("Plugin(keep) after a rolled back replace: %w", err)
		}
		check(t, "Plugin(keep) after a rolled back replace", got, keep, normPlugin)
		return nil
	})
	emptyStore(t, s, "keep")

	// A Read's error is returned too.
	err = s.Read(t.Context(), func(store.Tx) error { return errAbort })
	wantErr(t, "Read returning an error", err, errAbort)
}

func testFailedCallKeepsTransaction(t *testing.T, s store.Store) {
	at := base()
	tok := store.Token{ID: "tok-1", Role: store.RoleUser, Hash: []byte("h1"), CreatedAt: at}
	write(t, s, func(tx store.Tx) error {
		if err := tx.PutToken(tok); err != nil {
			return err
		}
		err := tx.PutToken(tok)
		wantErr(t, "PutToken twice in one transaction", err, store.ErrConflict)
		err = tx.DeletePlugin("absent")
		wantErr(t, "DeletePlugin(absent)", err, store.ErrNotFound)
		return tx.PutSetting("after", []byte("failures"))
	})
	read(t, s, func(tx store.Tx) error {
		if _, err := tx.TokenByHash(tok.Hash); err != nil {
			t.Errorf("token written before the failed calls: %v", err)
		}
		if _, err := tx.Setting("after"); err != nil {
			t.Errorf("setting written after the failed calls: %v", err)
		}
		return nil
	})
}

func testReadOnly(t *testing.T, s store.Store) {
	at := base()
	writes := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"PutPlugin", func(tx store.Tx) error { return tx.PutPlugin(samplePlugin("p1", at)) }},
		{"PutToken", func(tx store.Tx) error {
			return tx.PutToken(store.Token{ID: "tok", Role: store.RoleUser, Hash: []byte("h"), CreatedAt: at})
		}},
		{"AppendAudit", func(tx store.Tx) error { return tx.AppendAudit(store.AuditEntry{ID: "a1", Time: at}) }},
		{"AppendLogs", func(tx store.Tx) error {
			return tx.AppendLogs([]store.LogRecord{{PluginID: "p1", Time: at, Level: "INFO", Message: "m"}})
		}},
		{"PutBackup", func(tx store.Tx) error { return tx.PutBackup(store.Backup{ID: "b1", PluginID: "p1", CreatedAt: at}) }},
		{"PutSetting", func(tx store.Tx) error { return tx.PutSetting("k", []byte("v")) }},
		{"PutVersionSwitch", func(tx store.Tx) error {
			return tx.PutVersionSwitch(store.VersionSwitch{PluginID: "p1", StartedAt: at})
		}},
		{"PutKV", func(tx store.Tx) error {
			return tx.PutKV(store.KVEntry{PluginID: "p1", Key: "k", Value: []byte(`1`), Version: 1, UpdatedAt: at})
		}},
		{"DeleteKV", func(tx store.Tx) error { return tx.DeleteKV("p1", "k") }},
		{"DeleteKVExpired", func(tx store.Tx) error {
			_, err := tx.DeleteKVExpired(at, 10)
			return err
		}},
		{"DeletePluginKV", func(tx store.Tx) error { return tx.DeletePluginKV("p1") }},
		{"PutKVReaders", func(tx store.Tx) error { return tx.PutKVReaders("p1", []string{"p2"}) }},
		{"PutReplica", func(tx store.Tx) error { return tx.PutReplica(store.Replica{ID: "r1", HeartbeatAt: at}) }},
		{"DeleteReplica", func(tx store.Tx) error { return tx.DeleteReplica("r1") }},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			read(t, s, func(tx store.Tx) error {
				if err := w.fn(tx); err == nil {
					t.Errorf("%s in a Read succeeded", w.name)
				}
				return nil
			})
		})
	}
	emptyStore(t, s)
}

func testTxAfterReturn(t *testing.T, s store.Store) {
	at := base()
	errAbort := errors.New("storetest: abort")
	var leaked []store.Tx
	write(t, s, func(tx store.Tx) error {
		leaked = append(leaked, tx)
		return nil
	})
	_ = s.Write(t.Context(), func(tx store.Tx) error {
		leaked = append(leaked, tx)
		return errAbort
	})
	read(t, s, func(tx store.Tx) error {
		leaked = append(leaked, tx)
		return nil
	})
	for i, tx := range leaked {
		if err := putEverything(tx, at); err == nil {
			t.Errorf("tx %d: writing after the function returned succeeded", i)
		}
		if _, err := tx.Plugins(); err == nil {
			t.Errorf("tx %d: Plugins after the function returned succeeded", i)
		}
		if _, err := tx.Setting("k"); err == nil {
			t.Errorf("tx %d: Setting after the function returned succeeded", i)
		}
	}
	emptyStore(t, s)
}

func testContext(t *testing.T, s store.Store) {
	at := base()
	t.Run("cancelled before Write", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := s.Write(ctx, func(tx store.Tx) error { return putEverything(tx, at) })
		wantErr(t, "Write with a cancelled context", err, context.Canceled)
		emptyStore(t, s)
	})
	t.Run("cancelled before Read", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := s.Read(ctx, func(tx store.Tx) error { return nil })
		wantErr(t, "Read with a cancelled context", err, context.Canceled)
	})
	t.Run("cancelled during Write", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		err := s.Write(ctx, func(tx store.Tx) error {
			if err := putEverything(tx, at); err != nil {
				return err
			}
			cancel()
			return nil
		})
		wantErr(t, "Write whose context ended before commit", err, context.Canceled)
		emptyStore(t, s)
	})
	t.Run("deadline during Write", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		err := s.Write(ctx, func(tx store.Tx) error {
			if err := putEverything(tx, at); err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		})
		wantErr(t, "Write whose deadline passed before commit", err, context.DeadlineExceeded)
		emptyStore(t, s)
	})
	// The store still works.
	write(t, s, func(tx store.Tx) error { return putEverything(tx, at) })
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	const (
		writers = 8
		each    = 50
	)
	ctx := withTimeout(t, 60*time.Second)
	at := base()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		errs     []error
		done     = make(chan struct{})
		readerWG sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 10 {
			errs = append(errs, err)
		}
	}
	// Readers run alongside the writers and must not fail either.
	for r := range 2 {
		readerWG.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				err := s.Read(ctx, func(tx store.Tx) error {
					_, err := tx.Plugins()
					return err
				})
				if err != nil {
					fail(fmt.Errorf("reader %d: %w", r, err))
					return
				}
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%03d", w, i)
				err := s.Write(ctx, func(tx store.Tx) error {
					// Read-modify-write of one counter: lost updates would show in the total.
					n := 0
					v, err := tx.Setting("counter")
					switch {
					case errors.Is(err, store.ErrNotFound):
					case err != nil:
						return err
					default:
						if n, err = strconv.Atoi(string(v)); err != nil {
							return err
						}
					}
					if err := tx.PutPlugin(samplePlugin(id, at)); err != nil {
						return err
					}
					if err := tx.AppendAudit(store.AuditEntry{ID: id, Time: at, Target: id, Outcome: "ok"}); err != nil {
						return err
					}
					return tx.PutSetting("counter", []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					fail(fmt.Errorf("writer %d, write %d: %w", w, i, err))
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	readerWG.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	read(t, s, func(tx store.Tx) error {
		ps, err := tx.Plugins()
		if err != nil {
			return err
		}
		if len(ps) != writers*each {
			t.Errorf("%d plugins, want %d", len(ps), writers*each)
		}
		es, err := tx.Audit(store.AuditFilter{})
		if err != nil {
			return err
		}
		if len(es) != writers*each {
			t.Errorf("%d audit entries, want %d", len(es), writers*each)
		}
		v, err := tx.Setting("counter")
		if err != nil {
			return err
		}
		if string(v) != strconv.Itoa(writers*each) {
			t.Errorf("counter = %s, want %d (lost updates)", v, writers*each)
		}
		return nil
	})
}

func testReadDuringWrite(t *testing.T, s store.Store) {
	ctx := withTimeout(t, 20*time.Second)
	at := base()
	write(t, s, func(tx store.Tx) error { return tx.PutPlugin(samplePlugin("committed", at)) })

	inWrite := make(chan struct{})
	release := make(chan struct{})
	writeDone := make(chan struct{})
	var writeErr error // written by the goroutine, read after writeDone is closed
	go func() {
		defer close(writeDone)
		writeErr = s.Write(ctx, func(tx store.Tx) error {
			err := tx.PutPlugin(samplePlugin("pending", at))
			close(inWrite)
			if err != nil {
				return err
			}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	var releaseOnce sync.Once
	releaseWriter := func() { releaseOnce.Do(func() { close(release) }) }
	defer func() {
		releaseWriter()
		<-writeDone
	}()

	select {
	case <-inWrite:
	case <-writeDone:
		t.Fatalf("Write ended before its function ran: %v", writeErr)
	case <-ctx.Done():
		t.Fatal("the write transaction did not start")
	}

	// While the write is open, a Read completes and sees only committed state.
	readCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.Read(readCtx, func(tx store.Tx) error {
		if _, err := tx.Plugin("committed"); err != nil {
			return fmt.Errorf("Plugin(committed): %w", err)
		}
		_, err := tx.Plugin("pending")
		wantErr(t, "Plugin(pending) before commit", err, store.ErrNotFound)
		return nil
	})
	if err != nil {
		t.Fatalf("Read during an open Write: %v", err)
	}

	releaseWriter()
	<-writeDone
	if writeErr != nil {
		t.Fatalf("Write: %v", writeErr)
	}
	read(t, s, func(tx store.Tx) error {
		_, err := tx.Plugin("pending")
		return err
	})
}

func testReadSnapshot(t *testing.T, s store.Store) {
	ctx := withTimeout(t, 20*time.Second)
	at := base()
	write(t, s, func(tx store.Tx) error { return tx.PutPlugin(samplePlugin("p1", at)) })

	err := s.Read(ctx, func(tx store.Tx) error {
		before, err := tx.Plugins()
		if err != nil {
			return err
		}
		// A Write commits while this Read is open; it must not wait for the Read.
		if err := s.Write(ctx, func(tx store.Tx) error {
			if err := tx.PutPlugin(samplePlugin("p2", at)); err != nil {
				return err
			}
			return tx.DeletePlugin("p1")
		}); err != nil {
			return fmt.Errorf("Write during a Read: %w", err)
		}
		after, err := tx.Plugins()
		if err != nil {
			return err
		}
		checkAll(t, "Plugins after a concurrent commit", after, before, normPlugin)
		if _, err := tx.Plugin("p2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Plugin(p2) committed during the Read: error %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	read(t, s, func(tx store.Tx) error {
		ps, err := tx.Plugins()
		if err != nil {
			return err
		}
		if len(ps) != 1 || ps[0].ID != "p2" {
			t.Errorf("Plugins after the Read: %d plugins, want only p2", len(ps))
		}
		return nil
	})
}
