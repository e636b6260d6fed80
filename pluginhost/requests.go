package pluginhost

import (
	"context"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// This file serves the requests a plugin makes over its stream besides messages: emits,
// broadcasts, subscriptions and discovery. Each is checked against the plugin's grants.

func (h *Host) onEmit(ctx context.Context, sess *session, e *pluginhostv1.Emit) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, e.GetRequestId(), err)
		return
	}
	data, err := encodeStruct(e.GetData())
	if err != nil {
		sess.replyError(ctx, e.GetRequestId(), errs.New(errs.ValidationError, "data: %v", err))
		return
	}
	res, err := h.EmitEvent(ctx, EventRequest{From: Origin{Plugin: sess.pluginID}, Type: e.GetType(), Data: data})
	if err != nil {
		sess.replyError(ctx, e.GetRequestId(), err)
		return
	}
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: e.GetRequestId(), Id: res.ID, Recipients: res.Recipients}}})
}

func (h *Host) onBroadcast(ctx context.Context, sess *session, b *pluginhostv1.BroadcastSend) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, b.GetRequestId(), err)
		return
	}
	data, err := encodeStruct(b.GetData())
	if err != nil {
		sess.replyError(ctx, b.GetRequestId(), errs.New(errs.ValidationError, "data: %v", err))
		return
	}
	res, err := h.Broadcast(ctx, BroadcastRequest{From: Origin{Plugin: sess.pluginID}, Type: b.GetMessageType(), Data: data,
		Categories: b.GetTargetCategories(), Exclude: b.GetExcludePlugins()})
	if err != nil {
		sess.replyError(ctx, b.GetRequestId(), err)
		return
	}
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: b.GetRequestId(), Id: res.ID, Recipients: res.Recipients}}})
}

func (h *Host) onSubscribe(ctx context.Context, sess *session, s *pluginhostv1.Subscribe) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, s.GetRequestId(), err)
		return
	}
	if len(s.GetAdd()) > 0 {
		r, err := h.dir.get(ctx, sess.pluginID)
		if err != nil {
			sess.replyError(ctx, s.GetRequestId(), err)
			return
		}
		if !r.can("events:subscribe") {
			sess.replyError(ctx, s.GetRequestId(), errs.New(errs.PluginPermissionDenied,
				"plugin %s may not subscribe to events: it lacks the permission events:subscribe", sess.pluginID))
			return
		}
	}
	h.msg.subscribe(sess.pluginID, s.GetAdd(), s.GetRemove())
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: s.GetRequestId()}}})
}

func (h *Host) onDiscover(ctx context.Context, sess *session, d *pluginhostv1.Discover) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, d.GetRequestId(), err)
		return
	}
	providers, err := h.ListServices(ctx, d.GetService(), d.GetMessageType())
	if err != nil {
		sess.replyError(ctx, d.GetRequestId(), err)
		return
	}
	reply := &pluginhostv1.RequestReply{RequestId: d.GetRequestId()}
	for _, p := range providers {
		reply.Providers = append(reply.Providers, ProviderToProto(p))
	}
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: reply}})
}

// ProviderToProto converts a service provider for the wire (the API edge uses it too).
func ProviderToProto(p ServiceProvider) *pluginv1.ServiceProvider {
	out := &pluginv1.ServiceProvider{PluginId: p.PluginID, Name: p.Name, Version: p.Version, Category: p.Category,
		Status: p.Status, Services: p.Services, Instances: int32(p.Instances)}
	if out.Services == nil {
		out.Services = []string{}
	}
	for _, m := range p.MessageTypes {
		out.MessageTypes = append(out.MessageTypes, &pluginv1.MessageTypeInfo{Type: m.Type, Description: m.Description, RequiredPermission: m.RequiredPermission})
	}
	for _, e := range p.Endpoints {
		out.Endpoints = append(out.Endpoints, &pluginv1.ApiEndpoint{Path: e.Path, Methods: e.Methods, Description: e.Description})
	}
	return out
}

// isReservedEventType reports whether an event type belongs to the host.
func isReservedEventType(t string) bool {
	return len(t) >= 7 && (t[:7] == "plugin." || t[:7] == "system.")
}
