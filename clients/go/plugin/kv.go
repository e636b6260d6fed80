package plugin

import (
	"context"
	"math"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// KV is a key-value namespace kept by the host: the plugin's own (Session.KV), shared by
// every instance of the plugin and kept across restarts, or another plugin's that it shared
// with this one (Session.SharedKV), which can only be read. Reading needs the database:read
// permission, writing database:write.
//
// Values are JSON values: nil, bool, float64, string, []any and map[string]any when read;
// anything encoding/json can encode when written. Every entry has a version that grows by
// one with every write, for CompareAndSet and DeleteIf. Keys are 1 to 256 characters.
//
// Errors are *Error values with the host's code (PLUGIN_PERMISSION_DENIED,
// VALIDATION_ERROR, PLUGIN_UNAVAILABLE, ...), or the context's error. A KV is safe for
// concurrent use.
type KV struct {
	// s, owner and shared are assigned once, by Session.KV or Session.SharedKV.
	s *Session
	// owner is the plugin whose namespace this is; "" for the plugin's own.
	owner  string
	shared bool
}

// Entry is one key-value entry.
type Entry struct {
	// Key is the entry's key.
	Key string
	// Value is the entry's JSON value. Numbers are float64, as in JSON.
	Value any
	// Version grows by one with every write of the key.
	Version int64
	// ExpiresAt is when the entry expires; zero when it does not.
	ExpiresAt time.Time
	// UpdatedAt is when the entry was last written.
	UpdatedAt time.Time
}

// PutOption configures KV.Put and KV.CompareAndSet.
type PutOption interface{ applyPut(*putOptions) }

type putOptions struct {
	ttl time.Duration
}

type putOptionFunc func(*putOptions)

func (f putOptionFunc) applyPut(o *putOptions) { f(o) }

// WithTTL makes the written entry expire after d, rounded up to whole seconds (at most 30
// days). Without it, or with d <= 0, the entry is kept until deleted; every write sets the
// expiry anew.
func WithTTL(d time.Duration) PutOption { return putOptionFunc(func(o *putOptions) { o.ttl = d }) }

// KV returns the plugin's own key-value namespace.
func (s *Session) KV() *KV { return &KV{s: s} }

// SharedKV returns a read-only view of plugin owner's namespace, which the owner shared with
// this plugin (see KV.Share). Its writes fail at once with PLUGIN_PERMISSION_DENIED; its
// reads fail with the host's PLUGIN_PERMISSION_DENIED while the owner does not share it.
func (s *Session) SharedKV(owner string) *KV { return &KV{s: s, owner: owner, shared: true} }

// Get reads key. It reports false, with a zero Entry, when the key does not exist (or has
// expired).
func (kv *KV) Get(ctx context.Context, key string) (Entry, bool, error) {
	if err := checkText("key", key, 1, maxKeyChars); err != nil {
		return Entry{}, false, err
	}
	res, err := kv.do(ctx, func(r *pluginhostv1.KvRequest) {
		r.Op = &pluginhostv1.KvRequest_Get{Get: &pluginhostv1.KvGet{Key: key}}
	})
	if err != nil || !res.GetFound() {
		return Entry{}, false, err
	}
	if len(res.GetEntries()) == 0 {
		return Entry{Key: key}, true, nil
	}
	return entryFromProto(res.GetEntries()[0]), true, nil
}

// Put writes value under key, whatever is there, and returns the stored entry.
func (kv *KV) Put(ctx context.Context, key string, value any, opts ...PutOption) (Entry, error) {
	e, _, err := kv.put(ctx, key, value, nil, opts)
	return e, err
}

// CompareAndSet writes value under key only if the entry's current version is
// expectedVersion; 0 writes only if the key does not exist. It reports whether it wrote:
// true with the stored entry; false with the current entry (a zero Entry when the key does
// not exist), so that the caller can retry from it. Losing the race is not an error.
func (kv *KV) CompareAndSet(ctx context.Context, key string, value any, expectedVersion int64, opts ...PutOption) (Entry, bool, error) {
	if expectedVersion < 0 {
		return Entry{}, false, invalid("the expected version must be 0 or more, not %d", expectedVersion)
	}
	return kv.put(ctx, key, value, &expectedVersion, opts)
}

// Delete removes key, and reports whether there was something to remove.
func (kv *KV) Delete(ctx context.Context, key string) (bool, error) {
	return kv.delete(ctx, key, 0)
}

// DeleteIf removes key only if its current version is version (1 or more), and reports
// whether it did.
func (kv *KV) DeleteIf(ctx context.Context, key string, version int64) (bool, error) {
	if version <= 0 {
		return false, invalid("the version to delete must be 1 or more, not %d", version)
	}
	return kv.delete(ctx, key, version)
}

// List returns the entries whose keys start with prefix, in key order, starting after the
// key after ("" for the first page), at most limit of them (100 when limit <= 0, at most
// 1000). It also returns the after of the next page: "" on the last page.
func (kv *KV) List(ctx context.Context, prefix, after string, limit int) ([]Entry, string, error) {
	if err := checkText("prefix", prefix, 0, maxKeyChars); err != nil {
		return nil, "", err
	}
	if err := checkText("after", after, 0, maxKeyChars); err != nil {
		return nil, "", err
	}
	limit = min(max(limit, 0), maxListLimit)
	res, err := kv.do(ctx, func(r *pluginhostv1.KvRequest) {
		r.Op = &pluginhostv1.KvRequest_List{List: &pluginhostv1.KvList{Prefix: prefix, After: after, Limit: int32(limit)}}
	})
	if err != nil {
		return nil, "", err
	}
	entries := make([]Entry, 0, len(res.GetEntries()))
	for _, e := range res.GetEntries() {
		entries = append(entries, entryFromProto(e))
	}
	return entries, res.GetNext(), nil
}

// Share sets the plugins that may read this namespace through their SharedKV, replacing
// the previous list (no readers: shared with none), and returns the readers now set. Only
// the plugin's own namespace can be shared.
func (kv *KV) Share(ctx context.Context, readers ...string) ([]string, error) {
	if err := kv.writable(); err != nil {
		return nil, err
	}
	if len(readers) > maxReaders {
		return nil, invalid("at most %d readers, not %d", maxReaders, len(readers))
	}
	for _, r := range readers {
		if err := checkPluginID("reader", r); err != nil {
			return nil, err
		}
	}
	res, err := kv.do(ctx, func(r *pluginhostv1.KvRequest) {
		r.Op = &pluginhostv1.KvRequest_Share{Share: &pluginhostv1.KvShare{Readers: readers}}
	})
	if err != nil {
		return nil, err
	}
	return res.GetReaders(), nil
}

func (kv *KV) put(ctx context.Context, key string, value any, expected *int64, opts []PutOption) (Entry, bool, error) {
	if err := kv.writable(); err != nil {
		return Entry{}, false, err
	}
	if err := checkText("key", key, 1, maxKeyChars); err != nil {
		return Entry{}, false, err
	}
	var o putOptions
	for _, opt := range opts {
		opt.applyPut(&o)
	}
	var ttl int32
	if o.ttl > 0 {
		secs := math.Ceil(o.ttl.Seconds())
		if secs > maxTTLSeconds {
			return Entry{}, false, invalid("the time to live must be at most 30 days, not %s", o.ttl)
		}
		ttl = int32(secs)
	}
	v, err := valueToProto(value)
	if err != nil {
		return Entry{}, false, invalid("the value cannot be encoded as JSON: %v", err)
	}
	res, err := kv.do(ctx, func(r *pluginhostv1.KvRequest) {
		r.Op = &pluginhostv1.KvRequest_Put{Put: &pluginhostv1.KvPut{Key: key, Value: v, TtlSeconds: ttl, ExpectedVersion: expected}}
	})
	if err != nil {
		return Entry{}, false, err
	}
	var e Entry
	if len(res.GetEntries()) > 0 {
		e = entryFromProto(res.GetEntries()[0])
	}
	swapped := expected == nil || res.GetSwapped()
	return e, swapped, nil
}

func (kv *KV) delete(ctx context.Context, key string, version int64) (bool, error) {
	if err := kv.writable(); err != nil {
		return false, err
	}
	if err := checkText("key", key, 1, maxKeyChars); err != nil {
		return false, err
	}
	res, err := kv.do(ctx, func(r *pluginhostv1.KvRequest) {
		r.Op = &pluginhostv1.KvRequest_Delete{Delete: &pluginhostv1.KvDelete{Key: key, ExpectedVersion: version}}
	})
	if err != nil {
		return false, err
	}
	return res.GetFound(), nil
}

// writable refuses writes on another plugin's namespace: the host would refuse them too.
func (kv *KV) writable() error {
	if kv.shared {
		return &Error{Code: codePermissionDenied, Message: "the key-value namespace of plugin " + kv.owner + " is read-only for this plugin; only its owner writes to it"}
	}
	return nil
}

// do sends a key-value request and returns the host's result.
func (kv *KV) do(ctx context.Context, op func(*pluginhostv1.KvRequest)) (*pluginhostv1.KvResult, error) {
	if kv.shared {
		if err := checkPluginID("owner", kv.owner); err != nil {
			return nil, err
		}
	}
	rep, err := kv.s.call(ctx, func(id string) *pluginhostv1.ConnectRequest {
		r := &pluginhostv1.KvRequest{RequestId: id, Owner: kv.owner}
		op(r)
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Kv{Kv: r}}
	}, nil)
	if err != nil {
		return nil, err
	}
	return rep.GetKv(), nil
}
