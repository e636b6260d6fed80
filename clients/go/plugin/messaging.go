package plugin

import (
	"context"
	"math"
	"slices"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// Reply is another plugin's answer to a message sent with Session.Send.
type Reply struct {
	// MessageID identifies the message the host delivered.
	MessageID string
	// Status is "success", or "error" when the target's handler failed.
	Status string
	// Data is the target's reply data; never nil. Numbers are float64, as in JSON.
	Data map[string]any
	// Error is the target's error message when Status is "error".
	Error string
}

// BroadcastOptions narrows the recipients of a broadcast.
type BroadcastOptions struct {
	// Categories limits the broadcast to plugins of these categories (at most 64); all
	// plugins when empty.
	Categories []string
	// Exclude names plugins that must not receive it (at most 256).
	Exclude []string
}

// BroadcastResult says where a broadcast went.
type BroadcastResult struct {
	// ID identifies the broadcast; recipients see it as Event.ID.
	ID string
	// Recipients are the plugins it was delivered to.
	Recipients []string
}

// EmitResult says where an event went.
type EmitResult struct {
	// ID identifies the event; subscribers see it as Event.ID.
	ID string
	// Recipients are the subscribing plugins it was delivered to.
	Recipients []string
}

// Send sends a message of type messageType to the plugin target and waits for its reply.
// It needs the messages:send permission.
//
// The host waits for the reply until ctx's deadline, rounded up to whole seconds and held
// between 1 and 300 seconds; 30 seconds when ctx has none. When ctx ends first, Send
// returns ctx.Err() and withdraws the message: the host stops waiting and cancels the
// target's handler.
//
// A reply from the target is returned with a nil error even when its Status is "error" (the
// target's handler failed): Reply.Error and Reply.Data say why, and the caller decides. An
// error is returned only when no reply came: an *Error with the host's code (e.g.
// PLUGIN_NOT_FOUND, PLUGIN_UNAVAILABLE, PLUGIN_PERMISSION_DENIED,
// PLUGIN_COMMUNICATION_TIMEOUT, VALIDATION_ERROR), or ctx.Err(). A message whose connection
// broke before its reply came fails with PLUGIN_UNAVAILABLE; it may have been handled.
func (s *Session) Send(ctx context.Context, target, messageType string, data map[string]any) (Reply, error) {
	if err := checkPluginID("target", target); err != nil {
		return Reply{}, err
	}
	if err := checkMessageType(messageType); err != nil {
		return Reply{}, err
	}
	payload, err := mapToStruct(data)
	if err != nil {
		return Reply{}, invalid("the message data cannot be encoded as JSON: %v", err)
	}
	timeout := sendTimeout(ctx)
	rep, err := s.call(ctx, func(id string) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{
			RequestId:      id,
			TargetPlugin:   target,
			MessageType:    messageType,
			Data:           payload,
			TimeoutSeconds: timeout,
		}}}
	}, cancelSend)
	if err != nil {
		return Reply{}, err
	}
	r := Reply{
		MessageID: rep.GetMessageId(),
		Status:    rep.GetStatus(),
		Data:      structToMap(rep.GetData()),
	}
	if r.Status == "error" {
		r.Error = rep.GetErrorMessage()
	}
	return r, nil
}

// Broadcast sends a message of type messageType to every active plugin (or those opts
// selects), without waiting for their handlers. It needs the messages:send permission.
// Errors are *Error values with the host's code, or ctx.Err().
func (s *Session) Broadcast(ctx context.Context, messageType string, data map[string]any, opts BroadcastOptions) (BroadcastResult, error) {
	if err := checkMessageType(messageType); err != nil {
		return BroadcastResult{}, err
	}
	if len(opts.Categories) > maxCategories {
		return BroadcastResult{}, invalid("at most %d categories, not %d", maxCategories, len(opts.Categories))
	}
	if len(opts.Exclude) > maxExcluded {
		return BroadcastResult{}, invalid("at most %d excluded plugins, not %d", maxExcluded, len(opts.Exclude))
	}
	for _, c := range opts.Categories {
		if err := checkText("category", c, 1, 64); err != nil {
			return BroadcastResult{}, err
		}
	}
	for _, p := range opts.Exclude {
		if err := checkText("excluded plugin", p, 1, 64); err != nil {
			return BroadcastResult{}, err
		}
	}
	payload, err := mapToStruct(data)
	if err != nil {
		return BroadcastResult{}, invalid("the broadcast data cannot be encoded as JSON: %v", err)
	}
	rep, err := s.call(ctx, func(id string) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Broadcast{Broadcast: &pluginhostv1.BroadcastSend{
			RequestId:        id,
			MessageType:      messageType,
			Data:             payload,
			TargetCategories: opts.Categories,
			ExcludePlugins:   opts.Exclude,
		}}}
	}, nil)
	if err != nil {
		return BroadcastResult{}, err
	}
	return BroadcastResult{ID: rep.GetId(), Recipients: rep.GetRecipients()}, nil
}

// Emit publishes an event of type eventType, delivered at least once to every plugin
// subscribed to it. It needs the events:emit permission. Errors are *Error values with the
// host's code, or ctx.Err().
func (s *Session) Emit(ctx context.Context, eventType string, data map[string]any) (EmitResult, error) {
	if err := checkEventType(eventType); err != nil {
		return EmitResult{}, err
	}
	payload, err := mapToStruct(data)
	if err != nil {
		return EmitResult{}, invalid("the event data cannot be encoded as JSON: %v", err)
	}
	rep, err := s.call(ctx, func(id string) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Emit{Emit: &pluginhostv1.Emit{
			RequestId: id,
			Type:      eventType,
			Data:      payload,
		}}}
	}, nil)
	if err != nil {
		return EmitResult{}, err
	}
	return EmitResult{ID: rep.GetId(), Recipients: rep.GetRecipients()}, nil
}

// Subscribe subscribes the plugin to the events whose types match patterns (e.g.
// "user.*", "*.error"), which OnEvent then receives. It needs the events:subscribe
// permission. Once the host has accepted them, the patterns are remembered and sent again
// in the hello of every reconnection, with Plugin.Subscriptions; at most 256 patterns in
// all. Subscribe and Unsubscribe calls are applied one at a time, in order.
func (s *Session) Subscribe(ctx context.Context, patterns ...string) error {
	return s.changeSubscriptions(ctx, patterns, true)
}

// Unsubscribe removes subscriptions added by Subscribe or Plugin.Subscriptions; the hello
// of later reconnections leaves them out. Subscriptions from the plugin's manifest are the
// host's to keep.
func (s *Session) Unsubscribe(ctx context.Context, patterns ...string) error {
	return s.changeSubscriptions(ctx, patterns, false)
}

func (s *Session) changeSubscriptions(ctx context.Context, patterns []string, add bool) error {
	patterns = slices.Compact(slices.Sorted(slices.Values(patterns)))
	if len(patterns) == 0 {
		return nil
	}
	if err := checkPatterns(patterns); err != nil {
		return err
	}
	select {
	case s.subscribing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.subscribing }()
	s.mu.RLock()
	next := mergeSubscriptions(s.subscriptions, patterns, add)
	s.mu.RUnlock()
	if len(next) > maxSubscriptions {
		return invalid("a plugin may hold at most %d subscriptions beyond its manifest's; this would make %d", maxSubscriptions, len(next))
	}
	_, err := s.call(ctx, func(id string) *pluginhostv1.ConnectRequest {
		sub := &pluginhostv1.Subscribe{RequestId: id}
		if add {
			sub.Add = patterns
		} else {
			sub.Remove = patterns
		}
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Subscribe{Subscribe: sub}}
	}, nil)
	if err != nil {
		return err
	}
	// No other change ran since next was computed: s.subscribing is held.
	s.mu.Lock()
	s.subscriptions = next
	s.mu.Unlock()
	return nil
}

// mergeSubscriptions returns a new slice: cur with patterns added (at the end, in order) or
// removed.
func mergeSubscriptions(cur, patterns []string, add bool) []string {
	if !add {
		return slices.DeleteFunc(slices.Clone(cur), func(p string) bool { return slices.Contains(patterns, p) })
	}
	next := slices.Clone(cur)
	for _, p := range patterns {
		if !slices.Contains(next, p) {
			next = append(next, p)
		}
	}
	return next
}

// sendTimeout turns ctx's deadline into the host's timeout of a send, in seconds.
func sendTimeout(ctx context.Context) int32 {
	dl, ok := ctx.Deadline()
	if !ok {
		return defaultSendTimeout
	}
	secs := math.Ceil(time.Until(dl).Seconds())
	return int32(min(max(secs, 1), maxSendTimeout))
}

// cancelSend withdraws an abandoned send, so that the host stops waiting for its reply and
// cancels the target's handler. It is best effort: on a broken connection there is nothing
// left to withdraw.
func cancelSend(c *conn, requestID string) {
	_ = c.send(c.ctx, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_CancelSend{
		CancelSend: &pluginhostv1.CancelSend{RequestId: requestID},
	}})
}
