package plugintest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file delivers to the plugin what a test sends it: messages, events and broadcasts.

// Outcome is what the plugin did with an event or a broadcast.
type Outcome string

// The outcomes of a delivery.
const (
	// Acked: the handler succeeded (or there is none), and the plugin acknowledged it.
	Acked Outcome = "acked"
	// DeadLettered: the handler returned an error marked with plugin.Permanent, and the
	// plugin asked the host to dead-letter the delivery.
	DeadLettered Outcome = "dead_lettered"
	// Unacked: the handler returned any other error (or panicked), and the plugin left the
	// delivery unacknowledged for the host to deliver again after its processing timeout.
	// The test host does not deliver it again: emit it again to test a retry.
	Unacked Outcome = "unacked"
)

// Delivery is the outcome of an event or broadcast delivered to the plugin.
type Delivery struct {
	// ID is the event or broadcast id, as the plugin saw it (Event.ID).
	ID string
	// Outcome is what the plugin did with it.
	Outcome Outcome
	// Reason is why: the plugin's dead-letter reason, or the error of a handler that left
	// the delivery Unacked.
	Reason string
}

// errHandlerPanicked is the failure of an event handler that panicked.
var errHandlerPanicked = errors.New("plugintest: the handler panicked")

// Send delivers a message of type messageType from from (the sending plugin's id, or
// "admin", "user" or "system": Message.Source) to the plugin, and returns its reply, as
// the sender would get it from the host.
//
// A reply is returned with a nil error even when the plugin's handler failed: Status is
// then "error" and Error says why. An error is returned only when no reply came: an
// *plugin.Error with code PLUGIN_UNAVAILABLE when the plugin is not connected (or
// disconnects), PLUGIN_COMMUNICATION_TIMEOUT when ctx's deadline (or, without one,
// Options.Timeout) passes first, or ctx.Err() when ctx is canceled. In these last two
// cases the host tells the plugin that the sender gave up, as the real host does, and the
// handler's context is canceled.
func (h *Host) Send(ctx context.Context, from, messageType string, data map[string]any) (plugin.Reply, error) {
	s, err := h.current()
	if err != nil {
		return plugin.Reply{}, err
	}
	payload, err := toStruct(data)
	if err != nil {
		return plugin.Reply{}, hostError(codeValidation, "data: %v", err)
	}
	ctx, cancel := h.bound(ctx)
	defer cancel()
	deadline, _ := ctx.Deadline()
	did, mid := h.newID("dlv"), h.newID("msg")
	answers := h.expect(did)
	defer h.forget(did)
	err = s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{
		DeliveryId: did, Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: mid, Source: from,
		Type: messageType, Data: payload, Deadline: timestamppb.New(deadline), Attempt: 1,
	}}})
	if err != nil {
		return plugin.Reply{}, hostError(codeUnavailable, "plugin %s disconnected", h.opts.PluginID)
	}
	select {
	case a := <-answers:
		if !time.Now().Before(deadline) {
			// The handler's context has the same deadline: an answer that comes once it
			// passed is the handler giving up, not a reply (as the real host sees it).
			return plugin.Reply{}, timeoutError(h.opts.PluginID)
		}
		r := plugin.Reply{MessageID: mid, Status: "error", Data: map[string]any{}}
		switch {
		case a.frame.GetReply() != nil:
			rep := a.frame.GetReply()
			r.Status, r.Data = rep.GetStatus(), fromStruct(rep.GetData())
			if r.Status == "error" {
				r.Error = rep.GetErrorMessage()
			}
		case a.frame.GetAck().GetAction() == pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER:
			r.Error = "the target could not process the message: " + a.frame.GetAck().GetReason()
		default:
			r.Error = "the target acknowledged the message without replying"
		}
		return r, nil
	case <-s.done:
		return plugin.Reply{}, hostError(codeUnavailable, "plugin %s disconnected before it replied", h.opts.PluginID)
	case <-ctx.Done():
		reason := "cancelled"
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			reason = "deadline_exceeded"
		}
		_ = s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Cancel{Cancel: &pluginhostv1.Cancel{
			DeliveryId: did, Id: mid, Reason: reason,
		}}})
		if reason == "cancelled" {
			return plugin.Reply{}, ctx.Err()
		}
		return plugin.Reply{}, timeoutError(h.opts.PluginID)
	}
}

func timeoutError(pluginID string) error {
	return hostError(codeTimeout, "plugin %s did not answer within the message's deadline", pluginID)
}

// Emit delivers an event of type eventType, emitted by from (a plugin id, or "admin",
// "user" or "system": Event.Source), to the plugin's OnEvent, and returns what the plugin
// did with it. As the real host, it delivers only an event the plugin is subscribed to
// (Options.Subscriptions, Plugin.Subscriptions, Session.Subscribe), holding the permission
// events:subscribe; otherwise it returns ErrNotSubscribed.
//
// It returns once the plugin has settled the delivery (see Outcome). Errors: an
// *plugin.Error with code PLUGIN_UNAVAILABLE when the plugin is not connected (or
// disconnects), or the end of ctx (or of Options.Timeout, when ctx has no deadline).
func (h *Host) Emit(ctx context.Context, from, eventType string, data map[string]any) (Delivery, error) {
	if !h.subscribed(eventType) {
		return Delivery{}, fmt.Errorf("%w: %s", ErrNotSubscribed, eventType)
	}
	return h.deliver(ctx, pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT, h.newID("evt"), from, eventType, data)
}

// Broadcast delivers a broadcast of type messageType from from (Event.Source) to the
// plugin's OnBroadcast, and returns what the plugin did with it, as Emit does. Every
// plugin receives broadcasts; no permission is needed.
func (h *Host) Broadcast(ctx context.Context, from, messageType string, data map[string]any) (Delivery, error) {
	return h.deliver(ctx, pluginhostv1.DeliveryKind_DELIVERY_KIND_BROADCAST, h.newID("bcast"), from, messageType, data)
}

// deliver sends an event or broadcast with id to the plugin and waits for its outcome.
func (h *Host) deliver(ctx context.Context, kind pluginhostv1.DeliveryKind, id, from, typ string, data map[string]any) (Delivery, error) {
	s, err := h.current()
	if err != nil {
		return Delivery{}, err
	}
	payload, err := toStruct(data)
	if err != nil {
		return Delivery{}, hostError(codeValidation, "data: %v", err)
	}
	ctx, cancel := h.bound(ctx)
	defer cancel()
	did := h.newID("dlv")
	answers := h.expect(did)
	h.mu.Lock()
	h.events[id] = did
	h.mu.Unlock()
	defer func() {
		h.forget(did)
		h.mu.Lock()
		delete(h.events, id)
		h.mu.Unlock()
	}()
	err = s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{
		DeliveryId: did, Kind: kind, Id: id, Source: from, Type: typ, Data: payload, Attempt: 1,
	}}})
	if err != nil {
		return Delivery{}, hostError(codeUnavailable, "plugin %s disconnected", h.opts.PluginID)
	}
	select {
	case a := <-answers:
		d := Delivery{ID: id, Outcome: Acked}
		switch {
		case a.failed != nil:
			d.Outcome, d.Reason = Unacked, a.failed.Error()
		case a.frame.GetAck().GetAction() == pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER:
			d.Outcome, d.Reason = DeadLettered, a.frame.GetAck().GetReason()
		}
		return d, nil
	case <-s.done:
		return Delivery{}, hostError(codeUnavailable, "plugin %s disconnected before it settled %s", h.opts.PluginID, id)
	case <-ctx.Done():
		return Delivery{}, fmt.Errorf("plugintest: %s was not settled: %w", id, ctx.Err())
	}
}

// subscribed reports whether the plugin receives events of type typ.
func (h *Host) subscribed(typ string) bool {
	if !h.can("events:subscribe") {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.ContainsFunc(h.opts.Subscriptions, func(p string) bool { return matchEvent(p, typ) }) ||
		slices.ContainsFunc(h.subscriptionsLocked(), func(p string) bool { return matchEvent(p, typ) })
}

// instrument wraps p's handlers so that the host learns what the stream does not say:
// that OnStart has returned (the plugin is ready), and that an event or broadcast handler
// failed (the SDK then leaves the delivery unanswered).
func (h *Host) instrument(p plugin.Plugin) plugin.Plugin {
	onStart := p.OnStart
	p.OnStart = func(ctx context.Context, s *plugin.Session) error {
		if onStart != nil {
			if err := onStart(ctx, s); err != nil {
				return err
			}
		}
		h.readyOnce.Do(func() { close(h.ready) })
		return nil
	}
	if p.OnEvent != nil {
		p.OnEvent = h.watch(p.OnEvent)
	}
	if p.OnBroadcast != nil {
		p.OnBroadcast = h.watch(p.OnBroadcast)
	}
	return p
}

// watch wraps an event or broadcast handler to report its failures. It does not recover a
// panic: the SDK does, and logs where it came from.
func (h *Host) watch(handler func(context.Context, plugin.Event) error) func(context.Context, plugin.Event) error {
	return func(ctx context.Context, e plugin.Event) (err error) {
		returned := false
		defer func() {
			switch {
			case !returned:
				h.handlerFailed(e.ID, errHandlerPanicked)
			case err != nil && !plugin.IsPermanent(err):
				h.handlerFailed(e.ID, err)
			}
		}()
		err = handler(ctx, e)
		returned = true
		return err
	}
}

// handlerFailed reports the failure of the handler of event or broadcast id to the
// delivery waiting for it.
func (h *Host) handlerFailed(id string, err error) {
	h.mu.Lock()
	did, ok := h.events[id]
	h.mu.Unlock()
	if ok {
		h.answered(did, answer{failed: err})
	}
}

// deadlineIn returns the whole seconds left before ctx's deadline, at least 1.
func deadlineIn(ctx context.Context) int32 {
	dl, _ := ctx.Deadline()
	secs := int32((time.Until(dl) + time.Second - 1) / time.Second)
	return max(secs, 1)
}
