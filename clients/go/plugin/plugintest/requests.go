package plugintest

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file serves the plugin's own requests besides key-value operations: messages to
// other plugins, events, broadcasts, subscriptions and discovery. Each is checked against
// the plugin's grants and recorded, refused or not.

// The bounds of a message's timeout, as the real host sets them.
const (
	defaultSendTimeout = 30 * time.Second
	maxSendTimeout     = 300 * time.Second
)

// PluginHandler answers the messages that the plugin under test sends (Session.Send) to
// one other plugin, as that plugin's OnMessage would. Its data is the reply's data. An
// error becomes a reply with status "error" and the error's text, as a failing handler's
// does; an *plugin.Error instead makes the send fail with its code, as a refusal by the
// host would (e.g. &plugin.Error{Code: "PLUGIN_UNAVAILABLE"}). Handlers run on a
// goroutine of their own, one per message, and must return by the end of the test.
type PluginHandler func(messageType string, data map[string]any) (map[string]any, error)

// HandlePlugin makes target an installed, connected plugin whose messages handler
// answers (nil removes it). A message to a plugin without a handler fails with
// PLUGIN_NOT_FOUND, or PLUGIN_UNAVAILABLE when target is one of Options.Providers.
func (h *Host) HandlePlugin(target string, handler PluginHandler) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if handler == nil {
		delete(h.handlers, target)
		return
	}
	h.handlers[target] = handler
}

// onSend serves the plugin's message to another plugin.
func (h *Host) onSend(s *session, f *pluginhostv1.Send) {
	reqID, target, typ := f.GetRequestId(), f.GetTargetPlugin(), f.GetMessageType()
	rec := SentMessage{Target: target, Type: typ, Data: fromStruct(f.GetData())}
	h.mu.Lock()
	handler := h.handlers[target]
	h.mu.Unlock()
	provider, listed := h.provider(target)
	var refused *plugin.Error
	switch {
	case !h.can("messages:send"):
		refused = hostError(codePermissionDenied, "plugin %s may not send messages: it lacks the permission messages:send", h.opts.PluginID)
	case handler == nil && !listed:
		refused = hostError(codeNotFound, "plugin %s is not installed", target)
	case listed && requiredPermission(provider, typ) != "" && !h.can(requiredPermission(provider, typ)):
		refused = hostError(codePermissionDenied, "plugin %s requires the permission %s of senders of %s messages; %s lacks it",
			target, requiredPermission(provider, typ), typ, h.opts.PluginID)
	case handler == nil:
		refused = hostError(codeUnavailable, "no instance of plugin %s is connected", target)
	}
	if refused != nil {
		rec.Err = refused
		h.record(func() { h.sent = append(h.sent, rec) })
		s.replyTo(reqID, nil, refused)
		return
	}
	rec.ID = h.newID("msg")
	h.record(func() { h.sent = append(h.sent, rec) })
	timeout := time.Duration(f.GetTimeoutSeconds()) * time.Second
	if timeout <= 0 {
		timeout = defaultSendTimeout
	}
	timeout = min(timeout, maxSendTimeout)
	withdrawn := make(chan struct{})
	s.mu.Lock()
	s.sends[reqID] = withdrawn
	s.mu.Unlock()
	started := h.track(func() {
		defer func() {
			s.mu.Lock()
			delete(s.sends, reqID)
			s.mu.Unlock()
		}()
		results := make(chan *pluginhostv1.RequestReply, 1)
		if !h.track(func() { results <- h.callHandler(handler, rec) }) {
			return
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case r := <-results:
			s.replyTo(reqID, r, nil)
		case <-t.C:
			s.replyTo(reqID, nil, hostError(codeTimeout, "plugin %s did not answer within %s", target, timeout))
		case <-withdrawn:
			s.replyTo(reqID, nil, hostError(codeTimeout, "the message was cancelled by its sender"))
		case <-s.done:
		}
	})
	if !started {
		s.replyTo(reqID, nil, hostError(codeUnavailable, "the host is shutting down"))
	}
}

// callHandler runs a test's handler for a message and returns the reply to send.
func (h *Host) callHandler(handler PluginHandler, m SentMessage) (r *pluginhostv1.RequestReply) {
	defer func() {
		if p := recover(); p != nil {
			h.t.Errorf("plugintest: the HandlePlugin handler of %s panicked on %s: %v", m.Target, m.Type, p)
			r = &pluginhostv1.RequestReply{MessageId: m.ID, Status: "error", ErrorMessage: "the handler panicked"}
		}
	}()
	data, err := handler(m.Type, cloneMap(m.Data))
	var pe *plugin.Error
	switch {
	case errors.As(err, &pe):
		return &pluginhostv1.RequestReply{ErrorCode: pe.Code, ErrorMessage: pe.Message}
	case err != nil:
		return &pluginhostv1.RequestReply{MessageId: m.ID, Status: "error", ErrorMessage: err.Error()}
	}
	payload, err := toStruct(data)
	if err != nil {
		h.t.Errorf("plugintest: the HandlePlugin handler of %s returned data that is not JSON: %v", m.Target, err)
		return &pluginhostv1.RequestReply{MessageId: m.ID, Status: "error", ErrorMessage: "the reply could not be encoded"}
	}
	return &pluginhostv1.RequestReply{MessageId: m.ID, Status: "success", Data: payload}
}

// withdraw ends the wait for a message the plugin gave up on (cancel_send).
func (s *session) withdraw(requestID string) {
	s.mu.Lock()
	ch, ok := s.sends[requestID]
	delete(s.sends, requestID)
	s.mu.Unlock()
	if ok {
		close(ch)
	}
}

// onEmit serves an event the plugin emits. The test host has no other plugin to deliver
// it to: its recipients are none.
func (h *Host) onEmit(s *session, e *pluginhostv1.Emit) {
	rec := EmittedEvent{Type: e.GetType(), Data: fromStruct(e.GetData())}
	var refused *plugin.Error
	switch {
	case strings.HasPrefix(rec.Type, "plugin.") || strings.HasPrefix(rec.Type, "system."):
		refused = hostError(codeValidation, "this event type is reserved for the host: type: types starting with plugin. or system. are reserved for the host")
	case !h.can("events:emit"):
		refused = hostError(codePermissionDenied, "plugin %s may not emit events: it lacks the permission events:emit", h.opts.PluginID)
	default:
		rec.ID = h.newID("evt")
	}
	if refused != nil {
		rec.Err = refused
	}
	h.record(func() { h.emitted = append(h.emitted, rec) })
	s.replyTo(e.GetRequestId(), &pluginhostv1.RequestReply{Id: rec.ID, Recipients: []string{}}, refused)
}

// onBroadcast serves a broadcast the plugin sends. The test host has no other plugin to
// deliver it to: its recipients are none.
func (h *Host) onBroadcast(s *session, b *pluginhostv1.BroadcastSend) {
	rec := SentBroadcast{
		Type: b.GetMessageType(), Data: fromStruct(b.GetData()),
		Categories: slices.Clone(b.GetTargetCategories()), Exclude: slices.Clone(b.GetExcludePlugins()),
	}
	var refused *plugin.Error
	if !h.can("messages:send") {
		refused = hostError(codePermissionDenied, "plugin %s may not broadcast: it lacks the permission messages:send", h.opts.PluginID)
	} else {
		rec.ID = h.newID("bcast")
	}
	if refused != nil {
		rec.Err = refused
	}
	h.record(func() { h.broadcasts = append(h.broadcasts, rec) })
	s.replyTo(b.GetRequestId(), &pluginhostv1.RequestReply{Id: rec.ID, Recipients: []string{}}, refused)
}

// onSubscribe changes the plugin's run-time subscriptions; adding needs events:subscribe.
func (h *Host) onSubscribe(s *session, sub *pluginhostv1.Subscribe) {
	if len(sub.GetAdd()) > 0 && !h.can("events:subscribe") {
		s.replyTo(sub.GetRequestId(), nil, hostError(codePermissionDenied,
			"plugin %s may not subscribe to events: it lacks the permission events:subscribe", h.opts.PluginID))
		return
	}
	h.record(func() {
		for _, p := range sub.GetAdd() {
			h.subs[p] = true
		}
		for _, p := range sub.GetRemove() {
			delete(h.subs, p)
		}
	})
	s.replyTo(sub.GetRequestId(), &pluginhostv1.RequestReply{}, nil)
}

// onDiscover answers with the providers that match: Options.Providers and the plugin
// itself, as its hello describes it, ordered by plugin id.
func (h *Host) onDiscover(s *session, d *pluginhostv1.Discover) {
	self := plugin.Provider{
		PluginID: h.opts.PluginID, Name: h.opts.PluginID, Version: s.hello.GetVersion(), Status: "active",
		Services: slices.Clone(s.hello.GetServices()), Instances: 1,
	}
	for _, t := range s.hello.GetMessageTypes() {
		self.MessageTypes = append(self.MessageTypes, plugin.MessageTypeInfo{Type: t})
	}
	all := append([]plugin.Provider{self}, h.opts.Providers...)
	slices.SortStableFunc(all, func(a, b plugin.Provider) int { return strings.Compare(a.PluginID, b.PluginID) })
	var out []*pluginv1.ServiceProvider
	for _, p := range all {
		if d.GetService() != "" && !slices.Contains(p.Services, d.GetService()) {
			continue
		}
		if d.GetMessageType() != "" &&
			!slices.ContainsFunc(p.MessageTypes, func(m plugin.MessageTypeInfo) bool { return m.Type == d.GetMessageType() }) {
			continue
		}
		out = append(out, providerToProto(p))
	}
	s.replyTo(d.GetRequestId(), &pluginhostv1.RequestReply{Providers: out}, nil)
}

// provider returns the provider of Options.Providers with id.
func (h *Host) provider(id string) (plugin.Provider, bool) {
	i := slices.IndexFunc(h.opts.Providers, func(p plugin.Provider) bool { return p.PluginID == id })
	if i < 0 {
		return plugin.Provider{}, false
	}
	return h.opts.Providers[i], true
}

// requiredPermission returns the permission p requires of senders of messages of type
// typ; "" when none.
func requiredPermission(p plugin.Provider, typ string) string {
	for _, m := range p.MessageTypes {
		if m.Type == typ {
			return m.RequiredPermission
		}
	}
	return ""
}
