package stream

import (
	"context"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/kv"
)

// onKV serves a key-value operation. A plugin reads its own namespace with database:read
// and writes it with database:write; it reads another plugin's namespace with database:read
// when that plugin shared it, and never writes it.
func (h *Sessions) onKV(ctx context.Context, sess *session, req *pluginhostv1.KvRequest) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, req.GetRequestId(), err)
		return
	}
	res, err := h.kvOp(ctx, sess.pluginID, req)
	if err != nil {
		sess.replyError(ctx, req.GetRequestId(), err)
		return
	}
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: req.GetRequestId(), Kv: res}}})
}

// kvAccess checks that caller may run req and returns the namespace it acts on.
func (h *Sessions) kvAccess(ctx context.Context, caller string, req *pluginhostv1.KvRequest) (string, error) {
	r, err := h.reg.Get(caller)
	if err != nil {
		return "", err
	}
	owner := req.GetOwner()
	if owner == "" {
		owner = caller
	}
	write := req.GetGet() == nil && req.GetList() == nil
	need := "database:read"
	if write {
		need = "database:write"
	}
	if !r.Can(need) {
		return "", errs.New(errs.PluginPermissionDenied, "plugin %s lacks the permission %s", caller, need)
	}
	if owner == caller {
		return owner, nil
	}
	if write {
		return "", errs.New(errs.PluginPermissionDenied, "plugin %s may only read the namespace of %s, never write it", caller, owner)
	}
	ok, err := h.kv.CanRead(ctx, caller, owner)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errs.New(errs.PluginPermissionDenied, "plugin %s has not shared its key-value namespace with %s", owner, caller)
	}
	return owner, nil
}

func (h *Sessions) kvOp(ctx context.Context, caller string, req *pluginhostv1.KvRequest) (*pluginhostv1.KvResult, error) {
	owner, err := h.kvAccess(ctx, caller, req)
	if err != nil {
		return nil, err
	}
	switch op := req.GetOp().(type) {
	case *pluginhostv1.KvRequest_Get:
		e, found, err := h.kv.Get(ctx, owner, op.Get.GetKey())
		if err != nil || !found {
			return &pluginhostv1.KvResult{}, err
		}
		pe, err := kvEntryToProto(e)
		if err != nil {
			return nil, err
		}
		return &pluginhostv1.KvResult{Found: true, Entries: []*pluginhostv1.KvEntry{pe}}, nil
	case *pluginhostv1.KvRequest_Put:
		value, err := protojson.Marshal(op.Put.GetValue())
		if err != nil {
			return nil, errs.New(errs.ValidationError, "value: %v", err)
		}
		ttl := time.Duration(op.Put.GetTtlSeconds()) * time.Second
		var e kv.Entry
		swapped := true
		if op.Put.ExpectedVersion != nil {
			e, swapped, err = h.kv.CompareAndSet(ctx, owner, op.Put.GetKey(), value, ttl, op.Put.GetExpectedVersion())
		} else {
			e, err = h.kv.Put(ctx, owner, op.Put.GetKey(), value, ttl)
		}
		if err != nil {
			return nil, err
		}
		res := &pluginhostv1.KvResult{Found: e.Version > 0, Swapped: swapped}
		if e.Version > 0 {
			pe, err := kvEntryToProto(e)
			if err != nil {
				return nil, err
			}
			res.Entries = []*pluginhostv1.KvEntry{pe}
		}
		return res, nil
	case *pluginhostv1.KvRequest_Delete:
		deleted, err := h.kv.Delete(ctx, owner, op.Delete.GetKey(), op.Delete.GetExpectedVersion())
		if err != nil {
			return nil, err
		}
		return &pluginhostv1.KvResult{Found: deleted}, nil
	case *pluginhostv1.KvRequest_List:
		entries, next, err := h.kv.List(ctx, owner, op.List.GetPrefix(), op.List.GetAfter(), int(op.List.GetLimit()))
		if err != nil {
			return nil, err
		}
		res := &pluginhostv1.KvResult{Found: len(entries) > 0, Next: next}
		for _, e := range entries {
			pe, err := kvEntryToProto(e)
			if err != nil {
				return nil, err
			}
			res.Entries = append(res.Entries, pe)
		}
		return res, nil
	case *pluginhostv1.KvRequest_Share:
		if err := h.kv.Share(ctx, owner, op.Share.GetReaders()); err != nil {
			return nil, err
		}
		readers, err := h.kv.Readers(ctx, owner)
		if err != nil {
			return nil, err
		}
		return &pluginhostv1.KvResult{Readers: readers}, nil
	}
	return nil, errs.New(errs.ValidationError, "kv: an operation (get, put, delete, list or share) is required")
}

func kvEntryToProto(e kv.Entry) (*pluginhostv1.KvEntry, error) {
	v := &structpb.Value{}
	if err := protojson.Unmarshal(e.Value, v); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "a stored value is unreadable")
	}
	out := &pluginhostv1.KvEntry{Key: e.Key, Value: v, Version: e.Version, UpdatedAt: timestamppb.New(e.UpdatedAt)}
	if !e.ExpiresAt.IsZero() {
		out.ExpiresAt = timestamppb.New(e.ExpiresAt)
	}
	return out, nil
}
