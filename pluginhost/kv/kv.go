// Package kv gives every plugin a key-value store of its own (the "shared resources" of the
// plugin API): get, put with an optional time to live, compare-and-set, delete and listing by
// prefix. A plugin may let named plugins read its entries; removing a plugin's data removes
// its entries and its shares.
//
// Values are JSON values. Every entry carries a version, 1 when the key is created and one
// more on each write, which CompareAndSet and Delete compare against. An entry whose time to
// live has passed no longer exists for any method, even before Sweep removes it from the
// store; a key written again after it expired starts over at version 1.
//
// Store does not check permissions: its caller decides who may read or write a plugin's
// entries (CanRead answers whether the owner shared them with a reader). Every error is an
// *errs.Error: VALIDATION_ERROR for bad input, an exceeded quota and a version conflict,
// INTERNAL_ERROR for a failure of the underlying store.
package kv

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// The defaults of Options.
const (
	DefaultMaxKeyBytes      = 256
	DefaultMaxValueBytes    = 64 << 10
	DefaultMaxKeysPerPlugin = 10000
	DefaultMaxTTL           = 30 * 24 * time.Hour
)

// The bounds of List's limit, and of Share's reader list.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
	MaxReaders       = 64
)

// sweepBatch is how many expired entries one transaction of Sweep removes, and how many a
// Put that hits the quota clears before counting again.
const sweepBatch = 1000

// Options configures a Store. A zero or negative field takes its default.
type Options struct {
	// MaxKeyBytes bounds the length of a key, in bytes of UTF-8 (default 256).
	MaxKeyBytes int
	// MaxValueBytes bounds the length of a value, in bytes (default 64 KiB).
	MaxValueBytes int
	// MaxKeysPerPlugin bounds how many entries a plugin may hold (default 10000).
	MaxKeysPerPlugin int
	// MaxTTL bounds the time to live of an entry (default 30 days).
	MaxTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Store is the key-value service of the plugins. It is safe for concurrent use: its fields
// are assigned once by New and only read afterwards, and every change runs in one
// transaction of the underlying store.
type Store struct {
	st   store.Store
	opts Options
}

// Entry is one key-value entry.
type Entry struct {
	Key string
	// Value is a JSON value.
	Value []byte
	// Version is 1 when the key was created and grows by one with every write.
	Version int64
	// ExpiresAt is when the entry stops existing; zero means never.
	ExpiresAt time.Time
	// UpdatedAt is when the entry was last written.
	UpdatedAt time.Time
}

// New returns a Store keeping its entries in st, with opts' zero fields set to defaults.
func New(st store.Store, opts Options) *Store {
	if opts.MaxKeyBytes <= 0 {
		opts.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if opts.MaxValueBytes <= 0 {
		opts.MaxValueBytes = DefaultMaxValueBytes
	}
	if opts.MaxKeysPerPlugin <= 0 {
		opts.MaxKeysPerPlugin = DefaultMaxKeysPerPlugin
	}
	if opts.MaxTTL <= 0 {
		opts.MaxTTL = DefaultMaxTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{st: st, opts: opts}
}

// Get returns owner's entry with the key, and false when there is none (or it expired).
func (s *Store) Get(ctx context.Context, owner, key string) (Entry, bool, error) {
	var v violations
	v.owner(owner)
	v.key("key", key, s.opts.MaxKeyBytes, true)
	if err := v.err(); err != nil {
		return Entry{}, false, err
	}
	var (
		e  Entry
		ok bool
	)
	err := s.st.Read(ctx, func(tx store.Tx) error {
		cur, found, err := current(tx, owner, key)
		e, ok = fromStore(cur), found && alive(cur, s.opts.Now())
		return err
	})
	if err != nil {
		return Entry{}, false, storeError(err)
	}
	if !ok {
		return Entry{}, false, nil
	}
	return e, true, nil
}

// Put sets owner's entry with the key to value, a JSON value, whatever it was before, and
// returns the entry written. A ttl of 0 keeps the entry until it is deleted; otherwise it
// expires ttl from now (at most Options.MaxTTL). Creating a key fails when owner already
// holds Options.MaxKeysPerPlugin entries.
func (s *Store) Put(ctx context.Context, owner, key string, value []byte, ttl time.Duration) (Entry, error) {
	if err := s.validateWrite(owner, key, value, ttl, 0); err != nil {
		return Entry{}, err
	}
	var e Entry
	err := s.st.Write(ctx, func(tx store.Tx) error {
		now := s.opts.Now()
		cur, found, err := current(tx, owner, key)
		if err != nil {
			return err
		}
		version := int64(1)
		if found && alive(cur, now) {
			version = cur.Version + 1
		}
		e, err = s.write(tx, owner, key, value, ttl, version, found, now)
		return err
	})
	if err != nil {
		return Entry{}, storeError(err)
	}
	return e, nil
}

// CompareAndSet is Put on the condition that the entry is at expectedVersion, 0 meaning
// that the key does not exist (or expired). The check and the write are atomic. When the
// condition does not hold it writes nothing and returns the current entry (the zero Entry
// when there is none) and false, without an error.
func (s *Store) CompareAndSet(ctx context.Context, owner, key string, value []byte, ttl time.Duration, expectedVersion int64) (Entry, bool, error) {
	if err := s.validateWrite(owner, key, value, ttl, expectedVersion); err != nil {
		return Entry{}, false, err
	}
	var (
		e  Entry
		ok bool
	)
	err := s.st.Write(ctx, func(tx store.Tx) error {
		now := s.opts.Now()
		cur, found, err := current(tx, owner, key)
		if err != nil {
			return err
		}
		live := found && alive(cur, now)
		switch {
		case !live && expectedVersion != 0:
			return nil
		case live && cur.Version != expectedVersion:
			e = fromStore(cur)
			return nil
		}
		ok = true
		e, err = s.write(tx, owner, key, value, ttl, expectedVersion+1, found, now)
		return err
	})
	if err != nil {
		return Entry{}, false, storeError(err)
	}
	return e, ok, nil
}

// Delete removes owner's entry with the key and reports whether there was one. With an
// expectedVersion other than 0 it removes the entry only at that version: an entry at
// another version is left alone and Delete fails with a VALIDATION_ERROR about the field
// expected_version that gives the current version (also in the detail current_version).
// A key that does not exist is not a conflict: Delete returns false.
func (s *Store) Delete(ctx context.Context, owner, key string, expectedVersion int64) (bool, error) {
	var v violations
	v.owner(owner)
	v.key("key", key, s.opts.MaxKeyBytes, true)
	v.expectedVersion(expectedVersion)
	if err := v.err(); err != nil {
		return false, err
	}
	deleted := false
	err := s.st.Write(ctx, func(tx store.Tx) error {
		cur, found, err := current(tx, owner, key)
		live := found && alive(cur, s.opts.Now())
		switch {
		case err != nil:
			return err
		case !found:
			return nil
		case live && expectedVersion != 0 && cur.Version != expectedVersion:
			return versionConflict(cur.Version, expectedVersion)
		}
		// An expired entry is removed too, but it did not exist for the caller.
		deleted = live
		return tx.DeleteKV(owner, key)
	})
	if err != nil {
		return false, storeError(err)
	}
	return deleted, nil
}

// List returns owner's entries whose keys start with prefix (byte-wise: no character is a
// wildcard) and sort after after, ordered by key, at most limit of them (1 to 1000; 0 means
// 100). When more remain, next is the key of the last entry returned, to pass as after for
// the following page; otherwise next is empty.
func (s *Store) List(ctx context.Context, owner, prefix, after string, limit int) (entries []Entry, next string, err error) {
	var v violations
	v.owner(owner)
	v.key("prefix", prefix, s.opts.MaxKeyBytes, false)
	v.key("after", after, s.opts.MaxKeyBytes, false)
	v.limit(limit)
	if err := v.err(); err != nil {
		return nil, "", err
	}
	if limit == 0 {
		limit = DefaultListLimit
	}
	err = s.st.Read(ctx, func(tx store.Tx) error {
		now := s.opts.Now()
		cursor := after
		// Expired entries not yet swept are skipped, so a page may take more than one query.
		for {
			batch, err := tx.KVList(owner, prefix, cursor, limit+1)
			if err != nil {
				return err
			}
			for _, e := range batch {
				if alive(e, now) {
					entries = append(entries, fromStore(e))
				}
			}
			if len(entries) > limit || len(batch) <= limit {
				return nil
			}
			cursor = batch[len(batch)-1].Key
		}
	})
	if err != nil {
		return nil, "", storeError(err)
	}
	if len(entries) > limit {
		entries = entries[:limit]
		next = entries[limit-1].Key
	}
	return entries, next, nil
}

// Share replaces the list of plugins that may read owner's entries; an empty list shares
// with no one. Readers are plugin ids, at most 64, not owner itself; one listed twice counts
// once. The readers need not be installed.
func (s *Store) Share(ctx context.Context, owner string, readers []string) error {
	var v violations
	v.owner(owner)
	v.readers(owner, readers)
	if err := v.err(); err != nil {
		return err
	}
	readers = slices.Compact(slices.Sorted(slices.Values(readers)))
	if err := s.st.Write(ctx, func(tx store.Tx) error { return tx.PutKVReaders(owner, readers) }); err != nil {
		return storeError(err)
	}
	return nil
}

// Readers returns the plugins owner shares its entries with, ordered by id (empty, not nil,
// when there are none).
func (s *Store) Readers(ctx context.Context, owner string) ([]string, error) {
	var v violations
	v.owner(owner)
	if err := v.err(); err != nil {
		return nil, err
	}
	var readers []string
	err := s.st.Read(ctx, func(tx store.Tx) error {
		var err error
		readers, err = tx.KVReaders(owner)
		return err
	})
	if err != nil {
		return nil, storeError(err)
	}
	if readers == nil {
		readers = []string{}
	}
	return readers, nil
}

// CanRead reports whether reader may read owner's entries: it is owner, or owner shares
// them with it.
func (s *Store) CanRead(ctx context.Context, reader, owner string) (bool, error) {
	var v violations
	v.owner(owner)
	v.pluginID("reader", reader)
	if err := v.err(); err != nil {
		return false, err
	}
	if reader == owner {
		return true, nil
	}
	readers, err := s.Readers(ctx, owner)
	if err != nil {
		return false, err
	}
	_, found := slices.BinarySearch(readers, reader)
	return found, nil
}

// DeleteAll removes owner's entries, its reader list, and owner from the reader lists of
// other plugins, in one transaction.
func (s *Store) DeleteAll(ctx context.Context, owner string) error {
	var v violations
	v.owner(owner)
	if err := v.err(); err != nil {
		return err
	}
	if err := s.st.Write(ctx, func(tx store.Tx) error { return tx.DeletePluginKV(owner) }); err != nil {
		return storeError(err)
	}
	return nil
}

// Sweep removes expired entries from the store, in transactions of at most 1000 entries so
// that other writers are not held up, until none is left or ctx ends. It returns how many
// it removed, also when it fails part way. Expired entries are invisible whether swept or
// not: Sweep only reclaims their space.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	total := 0
	for {
		n := 0
		err := s.st.Write(ctx, func(tx store.Tx) error {
			var err error
			n, err = tx.DeleteKVExpired(expiredBy(s.opts.Now()), sweepBatch)
			return err
		})
		if err != nil {
			return total, storeError(err)
		}
		total += n
		if n < sweepBatch {
			return total, nil
		}
	}
}

// validateWrite checks the input of Put and CompareAndSet.
func (s *Store) validateWrite(owner, key string, value []byte, ttl time.Duration, expectedVersion int64) error {
	var v violations
	v.owner(owner)
	v.key("key", key, s.opts.MaxKeyBytes, true)
	v.value(value, s.opts.MaxValueBytes)
	v.ttl(ttl, s.opts.MaxTTL)
	v.expectedVersion(expectedVersion)
	return v.err()
}

// write stores the entry at version; stored says whether a row for the key exists, live or
// not (if not, the entry is new and counts against the quota).
func (s *Store) write(tx store.Tx, owner, key string, value []byte, ttl time.Duration, version int64, stored bool, now time.Time) (Entry, error) {
	if !stored {
		if err := s.checkQuota(tx, owner, now); err != nil {
			return Entry{}, err
		}
	}
	e := store.KVEntry{PluginID: owner, Key: key, Value: slices.Clone(value), Version: version, UpdatedAt: now}
	if ttl > 0 {
		e.ExpiresAt = now.Add(ttl)
	}
	if err := tx.PutKV(e); err != nil {
		return Entry{}, err
	}
	return fromStore(e), nil
}

// checkQuota fails when owner holds the maximum number of entries. Expired entries count
// until they are swept, so at the maximum it first sweeps a batch (of any plugin, soonest
// expired first) and counts again; should the write fail, the sweep is rolled back with it.
func (s *Store) checkQuota(tx store.Tx, owner string, now time.Time) error {
	n, err := tx.KVCount(owner)
	if err != nil || n < s.opts.MaxKeysPerPlugin {
		return err
	}
	if _, err := tx.DeleteKVExpired(expiredBy(now), sweepBatch); err != nil {
		return err
	}
	if n, err = tx.KVCount(owner); err != nil || n < s.opts.MaxKeysPerPlugin {
		return err
	}
	return quotaExceeded(owner, s.opts.MaxKeysPerPlugin)
}

// current returns owner's stored entry with the key, expired or not, and whether there is
// one.
func current(tx store.Tx, owner, key string) (store.KVEntry, bool, error) {
	e, err := tx.KV(owner, key)
	if errors.Is(err, store.ErrNotFound) {
		return store.KVEntry{}, false, nil
	}
	if err != nil {
		return store.KVEntry{}, false, err
	}
	return e, true, nil
}

// alive reports whether e has not expired at now.
func alive(e store.KVEntry, now time.Time) bool {
	return e.ExpiresAt.IsZero() || now.Before(e.ExpiresAt)
}

// expiredBy returns the time to pass to DeleteKVExpired, which removes entries expiring
// strictly before it, to remove the entries that are not alive at now.
func expiredBy(now time.Time) time.Time { return now.Add(time.Nanosecond) }

func fromStore(e store.KVEntry) Entry {
	return Entry{Key: e.Key, Value: e.Value, Version: e.Version, ExpiresAt: e.ExpiresAt, UpdatedAt: e.UpdatedAt}
}

// storeError returns the error of a Read or Write: a domain error that the transaction's
// function returned passes unchanged; anything else (including a domain error joined with a
// failed rollback) is a fault of the store.
func storeError(err error) error {
	if e, ok := err.(*errs.Error); ok { //nolint:errorlint // only fn's own, unjoined domain errors pass.
		return e
	}
	return errs.Wrap(errs.Internal, err, "internal error")
}
