// Package storetest is the conformance suite of store.Store: every implementation runs
// Run in its own tests, so they all behave alike.
//
// Besides the behaviour documented on store.Store and store.Tx, the suite holds
// implementations to these rules:
//   - times round-trip exactly (time.Equal) from 1901 to 2199, with nanoseconds, in any
//     location; the zero time round-trips as the zero time;
//   - nil and empty byte slices and string lists may come back as each other;
//   - write methods of a Read transaction fail, and so does every method of a Tx used
//     after its function returned;
//   - a Write whose function returns an error leaves nothing behind and returns that error;
//     a Write whose context ends before it commits leaves nothing behind and returns an
//     error wrapping the context's error;
//   - a failed call (ErrConflict, ErrNotFound) inside a Write does not spoil the other
//     changes of the transaction if the function goes on and returns nil;
//   - writes are serialisable: concurrent Write calls never fail because of each other;
//   - Read does not wait for an open write transaction, does not see its uncommitted
//     changes, and sees one snapshot throughout (a commit during a Read is not visible
//     inside it).
//
// Ordering assertions never depend on how records with equal times are ordered.
package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Run runs the conformance suite. open must return a new, empty store each time it is
// called; Run closes it when the test that opened it ends, so open must not. Subtests run
// in parallel.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Plugins", testPlugins},
		{"DeletePluginKeepsRelated", testDeletePluginKeepsRelated},
		{"Tokens", testTokens},
		{"TokenConflicts", testTokenConflicts},
		{"Audit", testAudit},
		{"Logs", testLogs},
		{"TrimAndDeleteLogs", testTrimAndDeleteLogs},
		{"Backups", testBackups},
		{"VersionSwitches", testVersionSwitches},
		{"Settings", testSettings},
		{"KV", testKV},
		{"KVList", testKVList},
		{"KVExpired", testKVExpired},
		{"KVReaders", testKVReaders},
		{"DeletePluginKV", testDeletePluginKV},
		{"Replicas", testReplicas},
		{"TimeRoundTrip", testTimeRoundTrip},
		{"Rollback", testRollback},
		{"FailedCallKeepsTransaction", testFailedCallKeepsTransaction},
		{"ReadOnly", testReadOnly},
		{"TxAfterReturn", testTxAfterReturn},
		{"Context", testContext},
		{"ConcurrentWriters", testConcurrentWriters},
		{"ReadDuringWrite", testReadDuringWrite},
		{"ReadSnapshot", testReadSnapshot},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// base is the reference time of the suite's records: not UTC and with nanoseconds, so
// round trips are checked for both.
func base() time.Time {
	return time.Date(2026, 11, 24, 10, 30, 15, 123456789, time.FixedZone("UTC+5:30", 5*3600+30*60))
}

// write runs fn in a Write and fails the test if it returns an error.
func write(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Write(t.Context(), fn); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

// read runs fn in a Read and fails the test if it returns an error.
func read(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Read(t.Context(), fn); err != nil {
		t.Fatalf("Read: %v", err)
	}
}

// wantErr fails the test unless errors.Is(err, target).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want %v", what, err, target)
	}
}

// samplePlugin returns a plugin with every field set.
func samplePlugin(id string, at time.Time) store.Plugin {
	return store.Plugin{
		ID:              id,
		Version:         "1.2.3",
		Manifest:        []byte(`{"id":"` + id + `","version":"1.2.3"}`),
		Dir:             "/var/lib/nexus/plugins/" + id,
		Source:          "repository",
		PackageSHA256:   "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Enabled:         true,
		Status:          "active",
		StatusReason:    "started",
		Config:          []byte(`{"endpoint":"https://example.test","token":"sealed:AAAA"}`),
		ConfigUpdatedAt: at.Add(time.Minute),
		Requested:       []string{"storage.read", "storage.write", "net.http"},
		Granted:         []string{"storage.read", "storage.write"},
		Denied:          []string{"net.http"},
		SecurityLevel:   "medium",
		SandboxEnabled:  true,
		Limits:          store.ResourceLimits{MemoryMB: 256, CPUPercent: 50, FileHandles: 128},
		InstalledAt:     at,
		UpdatedAt:       at.Add(2 * time.Minute),
	}
}

// normTime drops the location and monotonic reading, keeping the instant.
func normTime(t time.Time) time.Time { return t.UTC() }

// normBytes maps empty to nil.
func normBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// normStrings maps empty to nil.
func normStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func normPlugin(p store.Plugin) store.Plugin {
	p.Manifest = normBytes(p.Manifest)
	p.Config = normBytes(p.Config)
	p.ConfigUpdatedAt = normTime(p.ConfigUpdatedAt)
	p.Requested = normStrings(p.Requested)
	p.Granted = normStrings(p.Granted)
	p.Denied = normStrings(p.Denied)
	p.InstalledAt = normTime(p.InstalledAt)
	p.UpdatedAt = normTime(p.UpdatedAt)
	return p
}

func normToken(tok store.Token) store.Token {
	tok.Hash = normBytes(tok.Hash)
	tok.CreatedAt = normTime(tok.CreatedAt)
	tok.RevokedAt = normTime(tok.RevokedAt)
	tok.ExpiresAt = normTime(tok.ExpiresAt)
	return tok
}

func normAudit(e store.AuditEntry) store.AuditEntry {
	e.Time = normTime(e.Time)
	e.Details = normBytes(e.Details)
	return e
}

func normLog(r store.LogRecord) store.LogRecord {
	r.Time = normTime(r.Time)
	r.Metadata = normBytes(r.Metadata)
	return r
}

func normBackup(b store.Backup) store.Backup {
	b.CreatedAt = normTime(b.CreatedAt)
	b.Plugin = normPlugin(b.Plugin)
	return b
}

func normSwitch(s store.VersionSwitch) store.VersionSwitch {
	s.StartedAt = normTime(s.StartedAt)
	s.Old = normPlugin(s.Old)
	return s
}

// normAll applies norm to every element.
func normAll[T any](in []T, norm func(T) T) []T {
	out := make([]T, len(in))
	for i, v := range in {
		out[i] = norm(v)
	}
	return out
}

// check fails the test unless got and want are equal once normalised by norm.
func check[T any](t *testing.T, what string, got, want T, norm func(T) T) {
	t.Helper()
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

// checkAll is check for slices; nil and empty slices are equal.
func checkAll[T any](t *testing.T, what string, got, want []T, norm func(T) T) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	g, w := normAll(got, norm), normAll(want, norm)
	if reflect.DeepEqual(g, w) {
		return
	}
	t.Errorf("%s: got %d records, want %d", what, len(g), len(w))
	for i := range max(len(g), len(w)) {
		switch {
		case i >= len(g):
			t.Errorf("  [%d] missing, want %+v", i, w[i])
		case i >= len(w):
			t.Errorf("  [%d] unexpected %+v", i, g[i])
		case !reflect.DeepEqual(g[i], w[i]):
			t.Errorf("  [%d]\n   got %+v\n  want %+v", i, g[i], w[i])
		}
	}
}

// withTimeout returns a context that ends after d or with the test.
func withTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
