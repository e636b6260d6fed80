package stream

import (
	"context"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/router"
)

// This file serves the requests a plugin makes over its stream besides messages: emits,
// broadcasts, subscriptions and discovery. Each is checked against the plugin's grants.

func (h *Sessions) onEmit(ctx context.Context, sess *session, e *pluginhostv1.Emit) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, e.GetRequestId(), err)
		return
	}
	data, err := requestPayload("emit.data", e.GetData())
	if err != nil {
		sess.replyError(ctx, e.GetRequestId(), err)
		return
	}
	res, err := h.router.EmitEvent(ctx, router.EventRequest{From: router.Origin{Plugin: sess.pluginID}, Type: e.GetType(), Data: data})
	if err != nil {
		sess.replyError(ctx, e.GetRequestId(), err)
		return
	}
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: e.GetRequestId(), Id: res.ID, Recipients: res.Recipients}}})
}

func (h *Sessions) onBroadcast(ctx context.Context, sess *session, b *pluginhostv1.BroadcastSend) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, b.GetRequestId(), err)
		return
	}
	data, err := requestPayload("broadcast.data", b.GetData())
	if err != nil {
		sess.replyError(ctx, b.GetRequestId(), err)
		return
	}
	res, err := h.router.Broadcast(ctx, router.BroadcastRequest{From: router.Origin{Plugin: sess.pluginID}, Type: b.GetMessageType(), Data: data,
		Categories: b.GetTargetCategories(), Exclude: b.GetExcludePlugins()})
	if err != nil {
		sess.replyError(ctx, b.GetRequestId(), err)
		return
	}
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: b.GetRequestId(), Id: res.ID, Recipients: res.Recipients}}})
}

func (h *Sessions) onSubscribe(ctx context.Context, sess *session, s *pluginhostv1.Subscribe) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, s.GetRequestId(), err)
		return
	}
	if len(s.GetAdd()) > 0 {
		r, err := h.reg.Get(sess.pluginID)
		if err != nil {
			sess.replyError(ctx, s.GetRequestId(), err)
			return
		}
		if !r.Can("events:subscribe") {
			sess.replyError(ctx, s.GetRequestId(), errs.New(errs.PluginPermissionDenied,
				"plugin %s may not subscribe to events: it lacks the permission events:subscribe", sess.pluginID))
			return
		}
	}
	if err := h.router.Subscribe(ctx, sess.pluginID, s.GetAdd(), s.GetRemove()); err != nil {
		sess.replyError(ctx, s.GetRequestId(), err)
		return
	}
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: s.GetRequestId()}}})
}

func (h *Sessions) onDiscover(ctx context.Context, sess *session, d *pluginhostv1.Discover) {
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, d.GetRequestId(), err)
		return
	}
	providers, err := h.router.ListServices(ctx, d.GetService(), d.GetMessageType())
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

// ProviderToProto converts a service provider for the wire: the stream protocol's discovery
// reply carries the public API's ServiceProvider message.
func ProviderToProto(p router.ServiceProvider) *pluginv1.ServiceProvider {
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
