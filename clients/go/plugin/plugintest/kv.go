package plugintest

import (
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file is the host's key-value store, in memory, with the real store's rules: every
// write makes a new version (1 when the key is created, or written again after it
// expired); compare-and-set writes only at the expected version (0: only if absent);
// deleting at another version than expected is a VALIDATION_ERROR; an expired entry does
// not exist for any operation; a plugin reads another's namespace only when shared with
// it, and never writes it; reads need database:read, writes database:write.

// The real store's default limits.
const (
	maxKeyBytes      = 256
	maxValueBytes    = 64 << 10
	maxKeysPerPlugin = 10000
	defaultListLimit = 100
	maxReaders       = 64
)

// KV is a key-value namespace of the host: the plugin's own (Session.KV), or another
// plugin's that the plugin reads through Session.SharedKV once that plugin shared it. A
// test seeds it and looks into it; the plugin sees the changes at once. Its methods are
// safe for concurrent use.
type KV struct {
	// h and owner are assigned once, by Host.KV.
	h     *Host
	owner string
}

// namespace is one plugin's entries and readers; the host's mu guards it.
type namespace struct {
	entries map[string]kvEntry
	// readers are the plugins it is shared with, sorted.
	readers []string
}

type kvEntry struct {
	key       string
	value     *structpb.Value
	version   int64
	expiresAt time.Time // zero: never
	updatedAt time.Time
}

// KV returns the namespace of plugin owner; "" (or the plugin's own id) is the plugin
// under test's.
func (h *Host) KV(owner string) *KV {
	if owner == "" {
		owner = h.opts.PluginID
	}
	return &KV{h: h, owner: owner}
}

// Get returns the entry with key, and false when there is none (or it expired).
func (kv *KV) Get(key string) (plugin.Entry, bool) {
	kv.h.mu.Lock()
	defer kv.h.mu.Unlock()
	e, ok := kv.h.namespace(kv.owner).get(key, kv.h.opts.Now())
	if !ok {
		return plugin.Entry{}, false
	}
	return e.public(), true
}

// Put writes value (anything encoding/json encodes) under key, as the plugin's KV.Put
// would, without expiry, and returns the stored entry. It fails with a VALIDATION_ERROR
// for a key or value the store refuses.
func (kv *KV) Put(key string, value any) (plugin.Entry, error) {
	v, err := toValue(value)
	if err != nil {
		return plugin.Entry{}, hostError(codeValidation, "value: %v", err)
	}
	var e kvEntry
	var perr *plugin.Error
	kv.h.record(func() {
		e, _, perr = kv.h.namespace(kv.owner).put(key, v, 0, nil, kv.h.opts.Now())
	})
	if perr != nil {
		return plugin.Entry{}, perr
	}
	return e.public(), nil
}

// Delete removes key, and reports whether it existed.
func (kv *KV) Delete(key string) bool {
	var found bool
	kv.h.record(func() {
		found, _ = kv.h.namespace(kv.owner).delete(key, 0, kv.h.opts.Now())
	})
	return found
}

// Entries returns the namespace's entries, in key order.
func (kv *KV) Entries() []plugin.Entry {
	kv.h.mu.Lock()
	defer kv.h.mu.Unlock()
	entries, _ := kv.h.namespace(kv.owner).list("", "", maxKeysPerPlugin, kv.h.opts.Now())
	out := make([]plugin.Entry, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.public())
	}
	return out
}

// Share sets the plugins that may read the namespace (SharedKV), replacing the list, as
// its owner's KV.Share would.
func (kv *KV) Share(readers ...string) {
	kv.h.record(func() {
		kv.h.namespace(kv.owner).readers = slices.Compact(slices.Sorted(slices.Values(readers)))
	})
}

// Readers returns the plugins the namespace is shared with, sorted.
func (kv *KV) Readers() []string {
	kv.h.mu.Lock()
	defer kv.h.mu.Unlock()
	return slices.Clone(kv.h.namespace(kv.owner).readers)
}

// onKV serves a key-value operation of the plugin.
func (h *Host) onKV(s *session, req *pluginhostv1.KvRequest) {
	var (
		res  *pluginhostv1.KvResult
		perr *plugin.Error
	)
	h.record(func() { res, perr = h.kvOpLocked(req) })
	s.replyTo(req.GetRequestId(), &pluginhostv1.RequestReply{Kv: res}, perr)
}

// kvOpLocked runs a key-value operation; h.mu is held.
func (h *Host) kvOpLocked(req *pluginhostv1.KvRequest) (*pluginhostv1.KvResult, *plugin.Error) {
	caller, owner := h.opts.PluginID, req.GetOwner()
	if owner == "" {
		owner = caller
	}
	write := req.GetGet() == nil && req.GetList() == nil
	need := "database:read"
	if write {
		need = "database:write"
	}
	if !h.can(need) {
		return nil, hostError(codePermissionDenied, "plugin %s lacks the permission %s", caller, need)
	}
	ns := h.namespace(owner)
	if owner != caller {
		if write {
			return nil, hostError(codePermissionDenied, "plugin %s may only read the namespace of %s, never write it", caller, owner)
		}
		if _, shared := slices.BinarySearch(ns.readers, caller); !shared {
			return nil, hostError(codePermissionDenied, "plugin %s has not shared its key-value namespace with %s", owner, caller)
		}
	}
	now := h.opts.Now()
	switch op := req.GetOp().(type) {
	case *pluginhostv1.KvRequest_Get:
		if err := checkKey("key", op.Get.GetKey(), true); err != nil {
			return nil, err
		}
		e, ok := ns.get(op.Get.GetKey(), now)
		if !ok {
			return &pluginhostv1.KvResult{}, nil
		}
		return &pluginhostv1.KvResult{Found: true, Entries: []*pluginhostv1.KvEntry{e.proto()}}, nil
	case *pluginhostv1.KvRequest_Put:
		p := op.Put
		e, swapped, err := ns.put(p.GetKey(), p.GetValue(), time.Duration(p.GetTtlSeconds())*time.Second, p.ExpectedVersion, now)
		if err != nil {
			return nil, err
		}
		res := &pluginhostv1.KvResult{Found: e.version > 0, Swapped: swapped}
		if e.version > 0 {
			res.Entries = []*pluginhostv1.KvEntry{e.proto()}
		}
		return res, nil
	case *pluginhostv1.KvRequest_Delete:
		found, err := ns.delete(op.Delete.GetKey(), op.Delete.GetExpectedVersion(), now)
		if err != nil {
			return nil, err
		}
		return &pluginhostv1.KvResult{Found: found}, nil
	case *pluginhostv1.KvRequest_List:
		l := op.List
		for _, c := range [][2]string{{"prefix", l.GetPrefix()}, {"after", l.GetAfter()}} {
			if err := checkKey(c[0], c[1], false); err != nil {
				return nil, err
			}
		}
		limit := int(l.GetLimit())
		if limit == 0 {
			limit = defaultListLimit
		}
		entries, next := ns.list(l.GetPrefix(), l.GetAfter(), limit, now)
		res := &pluginhostv1.KvResult{Found: len(entries) > 0, Next: next}
		for _, e := range entries {
			res.Entries = append(res.Entries, e.proto())
		}
		return res, nil
	case *pluginhostv1.KvRequest_Share:
		readers := op.Share.GetReaders()
		if len(readers) > maxReaders {
			return nil, hostError(codeValidation, "invalid input: readers: must list at most %d plugins", maxReaders)
		}
		if slices.Contains(readers, owner) {
			return nil, hostError(codeValidation, "invalid input: readers: must not be the owner itself")
		}
		ns.readers = slices.Compact(slices.Sorted(slices.Values(readers)))
		return &pluginhostv1.KvResult{Readers: slices.Clone(ns.readers)}, nil
	}
	return nil, hostError(codeValidation, "kv: an operation (get, put, delete, list or share) is required")
}

// namespace returns owner's namespace, made on first use; h.mu is held.
func (h *Host) namespace(owner string) *namespace {
	ns := h.kv[owner]
	if ns == nil {
		ns = &namespace{entries: map[string]kvEntry{}}
		h.kv[owner] = ns
	}
	return ns
}

// get returns the live entry with key.
func (ns *namespace) get(key string, now time.Time) (kvEntry, bool) {
	e, ok := ns.entries[key]
	if !ok || !e.alive(now) {
		return kvEntry{}, false
	}
	return e, true
}

// put writes value under key, at the expected version when expected is not nil, and
// returns the entry written and true. When the expected version does not match, it
// writes nothing and returns the current entry (zero when there is none) and false.
func (ns *namespace) put(key string, value *structpb.Value, ttl time.Duration, expected *int64, now time.Time) (kvEntry, bool, *plugin.Error) {
	if err := checkKey("key", key, true); err != nil {
		return kvEntry{}, false, err
	}
	if b, err := protojson.Marshal(value); err != nil || len(b) > maxValueBytes {
		return kvEntry{}, false, hostError(codeValidation, "invalid input: value: must be a JSON value of at most %d bytes", maxValueBytes)
	}
	cur, stored := ns.entries[key]
	live := stored && cur.alive(now)
	version := int64(1)
	switch {
	case expected != nil && !live && *expected != 0:
		return kvEntry{}, false, nil
	case expected != nil && live && cur.version != *expected:
		return cur, false, nil
	case live:
		version = cur.version + 1
	}
	if !stored && len(ns.entries) >= maxKeysPerPlugin {
		ns.sweep(now)
		if len(ns.entries) >= maxKeysPerPlugin {
			return kvEntry{}, false, hostError(codeValidation, "the plugin already holds the maximum of %d keys: delete keys or let them expire before adding new ones", maxKeysPerPlugin)
		}
	}
	e := kvEntry{key: key, value: value, version: version, updatedAt: now}
	if ttl > 0 {
		e.expiresAt = now.Add(ttl)
	}
	ns.entries[key] = e
	return e, true, nil
}

// delete removes key, at the expected version when it is not 0, and reports whether a
// live entry was removed.
func (ns *namespace) delete(key string, expected int64, now time.Time) (bool, *plugin.Error) {
	if err := checkKey("key", key, true); err != nil {
		return false, err
	}
	cur, stored := ns.entries[key]
	if !stored {
		return false, nil
	}
	live := cur.alive(now)
	if live && expected != 0 && cur.version != expected {
		return false, hostError(codeValidation, "version conflict: expected version %d, but the current version is %d", expected, cur.version)
	}
	delete(ns.entries, key)
	return live, nil
}

// list returns the live entries whose keys start with prefix and sort after after, in key
// order, at most limit; next is the last key returned when more remain.
func (ns *namespace) list(prefix, after string, limit int, now time.Time) (entries []kvEntry, next string) {
	keys := make([]string, 0, len(ns.entries))
	for k, e := range ns.entries {
		if strings.HasPrefix(k, prefix) && k > after && e.alive(now) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if len(keys) > limit {
		keys = keys[:limit]
		next = keys[limit-1]
	}
	for _, k := range keys {
		entries = append(entries, ns.entries[k])
	}
	return entries, next
}

// sweep removes the expired entries.
func (ns *namespace) sweep(now time.Time) {
	for k, e := range ns.entries {
		if !e.alive(now) {
			delete(ns.entries, k)
		}
	}
}

func (e kvEntry) alive(now time.Time) bool { return e.expiresAt.IsZero() || now.Before(e.expiresAt) }

func (e kvEntry) proto() *pluginhostv1.KvEntry {
	out := &pluginhostv1.KvEntry{Key: e.key, Value: e.value, Version: e.version, UpdatedAt: timestamppb.New(e.updatedAt)}
	if !e.expiresAt.IsZero() {
		out.ExpiresAt = timestamppb.New(e.expiresAt)
	}
	return out
}

func (e kvEntry) public() plugin.Entry {
	return plugin.Entry{Key: e.key, Value: e.value.AsInterface(), Version: e.version, ExpiresAt: e.expiresAt, UpdatedAt: e.updatedAt}
}

// checkKey checks a key, or with required unset a prefix or cursor, as the store does.
func checkKey(field, key string, required bool) *plugin.Error {
	switch {
	case key == "" && required:
		return hostError(codeValidation, "invalid input: %s: must not be empty", field)
	case len(key) > maxKeyBytes:
		return hostError(codeValidation, "invalid input: %s: must be at most %d bytes long", field, maxKeyBytes)
	case !utf8.ValidString(key):
		return hostError(codeValidation, "invalid input: %s: must be valid UTF-8", field)
	case strings.ContainsFunc(key, unicode.IsControl):
		return hostError(codeValidation, "invalid input: %s: must not contain control characters", field)
	}
	return nil
}
