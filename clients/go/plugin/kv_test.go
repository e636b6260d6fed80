package plugin_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// memKV is the host's side of a key-value namespace, in memory: enough of its semantics to
// check the SDK's conversions both ways. It is used by the host script's goroutine only.
type memKV struct {
	now     time.Time
	entries map[string]*pluginhostv1.KvEntry
	readers []string
}

func newMemKV(now time.Time) *memKV {
	return &memKV{now: now, entries: map[string]*pluginhostv1.KvEntry{}}
}

func (m *memKV) handle(r *pluginhostv1.KvRequest) *pluginhostv1.RequestReply {
	res := &pluginhostv1.KvResult{}
	switch op := r.GetOp().(type) {
	case *pluginhostv1.KvRequest_Get:
		if e, ok := m.entries[op.Get.GetKey()]; ok {
			res.Found, res.Entries = true, []*pluginhostv1.KvEntry{e}
		}
	case *pluginhostv1.KvRequest_Put:
		p := op.Put
		cur, exists := m.entries[p.GetKey()]
		if p.ExpectedVersion != nil && cur.GetVersion() != p.GetExpectedVersion() {
			if exists {
				res.Entries = []*pluginhostv1.KvEntry{cur}
			}
			break
		}
		e := &pluginhostv1.KvEntry{Key: p.GetKey(), Value: p.GetValue(), Version: cur.GetVersion() + 1, UpdatedAt: timestamppb.New(m.now)}
		if ttl := p.GetTtlSeconds(); ttl > 0 {
			e.ExpiresAt = timestamppb.New(m.now.Add(time.Duration(ttl) * time.Second))
		}
		m.entries[p.GetKey()] = e
		res.Swapped, res.Entries = true, []*pluginhostv1.KvEntry{e}
	case *pluginhostv1.KvRequest_Delete:
		d := op.Delete
		if cur, ok := m.entries[d.GetKey()]; ok && (d.GetExpectedVersion() == 0 || cur.GetVersion() == d.GetExpectedVersion()) {
			delete(m.entries, d.GetKey())
			res.Found = true
		}
	case *pluginhostv1.KvRequest_List:
		l := op.List
		var keys []string
		for k := range m.entries {
			if strings.HasPrefix(k, l.GetPrefix()) && k > l.GetAfter() {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		limit := int(l.GetLimit())
		if limit == 0 {
			limit = 100
		}
		if len(keys) > limit {
			keys = keys[:limit]
			res.Next = keys[limit-1]
		}
		for _, k := range keys {
			res.Entries = append(res.Entries, m.entries[k])
		}
	case *pluginhostv1.KvRequest_Share:
		m.readers = op.Share.GetReaders()
		res.Readers = m.readers
	}
	return &pluginhostv1.RequestReply{Kv: res}
}

func TestKV(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	own, billing := newMemKV(now), newMemKV(now)
	billing.handle(&pluginhostv1.KvRequest{Op: &pluginhostv1.KvRequest_Put{Put: &pluginhostv1.KvPut{Key: "rate", Value: structpb.NewNumberValue(0.2)}}})
	frames := make(chan []*pluginhostv1.ConnectRequest, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil, "database:read", "database:write")
		frames <- s.serveRequests(func(f *pluginhostv1.ConnectRequest) *pluginhostv1.RequestReply {
			switch f.GetKv().GetOwner() {
			case "":
				return own.handle(f.GetKv())
			case "billing":
				return billing.handle(f.GetKv())
			}
			return &pluginhostv1.RequestReply{ErrorCode: "PLUGIN_PERMISSION_DENIED", ErrorMessage: "not shared with analytics-plugin"}
		})
		return nil
	})
	s, run := startSession(t, h, plugin.Plugin{})
	ctx := testContext(t)
	kv := s.KV()

	t.Run("nested values and TTL", func(t *testing.T) {
		type profile struct {
			Name   string         `json:"name"`
			Tags   []string       `json:"tags"`
			Limits map[string]int `json:"limits"`
		}
		e, err := kv.Put(ctx, "user:1", profile{Name: "Ada", Tags: []string{"admin"}, Limits: map[string]int{"daily": 5}}, plugin.WithTTL(1500*time.Millisecond))
		want := map[string]any{"name": "Ada", "tags": []any{"admin"}, "limits": map[string]any{"daily": 5.0}}
		if err != nil || e.Key != "user:1" || e.Version != 1 || !equalJSON(e.Value, want) {
			t.Errorf("Put = %+v, %v", e, err)
		}
		if !e.ExpiresAt.Equal(now.Add(2*time.Second)) || !e.UpdatedAt.Equal(now) {
			t.Errorf("Put times = %v, %v; want expiry 2s (1.5s rounded up) after %v", e.ExpiresAt, e.UpdatedAt, now)
		}
		got, found, err := kv.Get(ctx, "user:1")
		if err != nil || !found || !equalJSON(got.Value, want) || got.Version != 1 {
			t.Errorf("Get = %+v, %v, %v", got, found, err)
		}
		if _, found, err := kv.Get(ctx, "user:2"); err != nil || found {
			t.Errorf("Get of a missing key = %v, %v", found, err)
		}
	})
	t.Run("JSON values", func(t *testing.T) {
		for _, v := range []any{nil, true, 3.5, 7, "text", []any{1, "a", map[string]any{"b": nil}}, map[string]any{}} {
			if _, err := kv.Put(ctx, "value", v); err != nil {
				t.Fatalf("Put %v: %v", v, err)
			}
			e, found, err := kv.Get(ctx, "value")
			if err != nil || !found || !equalJSON(e.Value, v) {
				t.Errorf("Put %#v, Get = %#v, %v, %v", v, e.Value, found, err)
			}
			if !e.ExpiresAt.IsZero() {
				t.Errorf("an entry without TTL expires at %v", e.ExpiresAt)
			}
		}
		if e, _, _ := kv.Get(ctx, "value"); e.Version != 7 {
			t.Errorf("version after 7 writes = %d", e.Version)
		}
	})
	t.Run("compare and set", func(t *testing.T) {
		e, ok, err := kv.CompareAndSet(ctx, "counter", 1, 0)
		if err != nil || !ok || e.Version != 1 || e.Value != 1.0 {
			t.Errorf("CompareAndSet if absent = %+v, %v, %v", e, ok, err)
		}
		e, ok, err = kv.CompareAndSet(ctx, "counter", 5, 0)
		if err != nil || ok || e.Version != 1 || e.Value != 1.0 {
			t.Errorf("CompareAndSet if absent, present = %+v, %v, %v; want the current entry", e, ok, err)
		}
		e, ok, err = kv.CompareAndSet(ctx, "counter", 2, e.Version, plugin.WithTTL(time.Minute))
		if err != nil || !ok || e.Version != 2 || e.Value != 2.0 || !e.ExpiresAt.Equal(now.Add(time.Minute)) {
			t.Errorf("CompareAndSet at version 1 = %+v, %v, %v", e, ok, err)
		}
		e, ok, err = kv.CompareAndSet(ctx, "missing", 1, 3)
		if err != nil || ok || e.Key != "" {
			t.Errorf("CompareAndSet of a missing key at version 3 = %+v, %v, %v", e, ok, err)
		}
		if ok, err := kv.DeleteIf(ctx, "counter", 1); err != nil || ok {
			t.Errorf("DeleteIf at a stale version = %v, %v", ok, err)
		}
		if ok, err := kv.DeleteIf(ctx, "counter", 2); err != nil || !ok {
			t.Errorf("DeleteIf at the current version = %v, %v", ok, err)
		}
		if ok, err := kv.Delete(ctx, "counter"); err != nil || ok {
			t.Errorf("Delete of a deleted key = %v, %v", ok, err)
		}
		if ok, err := kv.Delete(ctx, "value"); err != nil || !ok {
			t.Errorf("Delete = %v, %v", ok, err)
		}
	})
	t.Run("list", func(t *testing.T) {
		for _, k := range []string{"item:3", "item:1", "item:2", "other"} {
			if _, err := kv.Put(ctx, k, k); err != nil {
				t.Fatal(err)
			}
		}
		var keys []string
		after, pages := "", 0
		for {
			entries, next, err := kv.List(ctx, "item:", after, 2)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, e := range entries {
				if e.Value != e.Key {
					t.Errorf("entry %+v", e)
				}
				keys = append(keys, e.Key)
			}
			if next == "" || pages > 3 {
				break
			}
			after = next
		}
		if !slices.Equal(keys, []string{"item:1", "item:2", "item:3"}) || pages != 2 {
			t.Errorf("listed %v in %d pages", keys, pages)
		}
		if all, next, err := kv.List(ctx, "", "", 5000); err != nil || len(all) != 5 || next != "" {
			t.Errorf("List all = %d entries, %q, %v", len(all), next, err)
		}
	})
	t.Run("share", func(t *testing.T) {
		readers, err := kv.Share(ctx, "report-plugin", "billing")
		if err != nil || !slices.Equal(readers, []string{"report-plugin", "billing"}) {
			t.Errorf("Share = %v, %v", readers, err)
		}
	})
	t.Run("shared namespace", func(t *testing.T) {
		shared := s.SharedKV("billing")
		e, found, err := shared.Get(ctx, "rate")
		if err != nil || !found || e.Value != 0.2 {
			t.Errorf("Get = %+v, %v, %v", e, found, err)
		}
		if entries, _, err := shared.List(ctx, "", "", 0); err != nil || len(entries) != 1 {
			t.Errorf("List = %v, %v", entries, err)
		}
		writes := map[string]func() error{
			"Put":           func() error { _, err := shared.Put(ctx, "rate", 0.3); return err },
			"CompareAndSet": func() error { _, _, err := shared.CompareAndSet(ctx, "rate", 0.3, 1); return err },
			"Delete":        func() error { _, err := shared.Delete(ctx, "rate"); return err },
			"DeleteIf":      func() error { _, err := shared.DeleteIf(ctx, "rate", 1); return err },
			"Share":         func() error { _, err := shared.Share(ctx); return err },
		}
		for name, write := range writes {
			wantCode(t, name, write(), "PLUGIN_PERMISSION_DENIED")
		}
		_, _, err = s.SharedKV("secretive").Get(ctx, "k")
		wantCode(t, "Get from an unshared namespace", err, "PLUGIN_PERMISSION_DENIED")
	})

	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
	var puts []*pluginhostv1.KvPut
	var lists []*pluginhostv1.KvList
	for _, f := range receive(t, frames, "requests") {
		r := f.GetKv()
		if r.GetOwner() != "" && (r.GetGet() == nil && r.GetList() == nil) {
			t.Errorf("a write reached another plugin's namespace: %v", r)
		}
		if p := r.GetPut(); p != nil {
			puts = append(puts, p)
		}
		if l := r.GetList(); l != nil {
			lists = append(lists, l)
		}
	}
	if p := puts[0]; p.GetTtlSeconds() != 2 || p.ExpectedVersion != nil {
		t.Errorf("first put = %v, want ttl_seconds 2 and no expected version", p)
	}
	var cas []int64
	for _, p := range puts {
		if p.ExpectedVersion != nil {
			cas = append(cas, p.GetExpectedVersion())
		}
	}
	if !slices.Equal(cas, []int64{0, 0, 1, 3}) {
		t.Errorf("expected versions sent = %v, want 0 0 1 3", cas)
	}
	var limits []int32
	for _, l := range lists {
		limits = append(limits, l.GetLimit())
	}
	if !slices.Equal(limits, []int32{2, 2, 1000, 0}) {
		t.Errorf("list limits sent = %v, want 2 2 1000 0", limits)
	}
}
