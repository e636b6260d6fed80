// Package router carries messages, broadcasts and events between plugins over the bus: it
// checks each against the plugins' grants and declared message types, matches replies to the
// senders waiting for them, fans broadcasts and events out to their recipients, feeds the
// event watchers, and answers service discovery. It reads plugins from the registry and
// connected instances from presence, and never the store.
package router

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
)

// Payload is the body of a message, broadcast, event or reply: the protobuf encoding of a
// google.protobuf.Struct. The domain passes it along untouched; only the stream session and
// the API edge encode and decode it, so a payload is copied as bytes, never re-encoded.
type Payload = []byte

// Origin says who sends a broadcast or an event.
type Origin struct {
	// Plugin is the sending plugin; empty when an administrator, a user or the host sends.
	Plugin string
	// Role is "admin", "user" or "system" when Plugin is empty.
	Role string
}

func (o Origin) source() string {
	if o.Plugin != "" {
		return o.Plugin
	}
	return o.Role
}

// The bounds of a message's timeout.
const (
	DefaultMessageTimeout = 30 * time.Second
	MaxMessageTimeout     = 300 * time.Second
)

// MessageRequest is a message from one plugin to another.
type MessageRequest struct {
	// From is the sending plugin (required: messages always come from a plugin).
	From    string
	Target  string
	Type    string
	Data    Payload
	Timeout time.Duration // 0 means DefaultMessageTimeout
}

// MessageResult is the target's reply.
type MessageResult struct {
	MessageID string
	// Status is "success" or "error" (the target's handler failed; ErrorMessage says why).
	Status       string
	Data         Payload
	ErrorMessage string
	ResponseTime time.Duration
}

// BroadcastRequest is a message for many plugins.
type BroadcastRequest struct {
	From       Origin
	Type       string
	Data       Payload
	Categories []string // only these categories; all when empty
	Exclude    []string
}

// BroadcastResult says where a broadcast went.
type BroadcastResult struct {
	ID, Type   string
	Recipients []string
	SentAt     time.Time
}

// EventRequest is an event to publish.
type EventRequest struct {
	From Origin
	Type string
	Data Payload
}

// EventResult says where an event went.
type EventResult struct {
	ID, Type   string
	Recipients []string
	At         time.Time
}

// Event is an event as watchers see it.
type Event struct {
	ID, Type, Source string
	Data             Payload
	Time             time.Time
}

// Options configures a Router. Registry, Presence and Bus are required.
type Options struct {
	Registry *registry.Registry
	Presence *presence.Presence
	// Bus carries the deliveries; Close closes it.
	Bus bus.Bus
	// BusOptions are the options the bus was built with.
	BusOptions bus.Options
	Logger     *slog.Logger
}

// Router routes messages, broadcasts and events over the bus, and matches replies to the
// senders waiting for them. It is safe for concurrent use.
type Router struct {
	reg  *registry.Registry
	pres *presence.Presence
	log  *slog.Logger
	bus  bus.Bus
	opts bus.Options
	wg   sync.WaitGroup // the reply reader
	// routes are built from the registry's plugins, and rebuilt when one is replaced.
	routes routeCache
	// closing is set when the host shuts the messenger down.
	closing atomic.Bool

	mu sync.Mutex // guards waiters and subs
	// waiters are the messages sent from this replica that wait for a reply, by message id.
	waiters map[string]*waiter
	// subs are the event patterns plugins subscribed to at run time, per plugin; they last
	// until the plugin is disabled or uninstalled (the SDK subscribes again on reconnect).
	subs map[string]map[string]bool
}

// waiter is a message waiting for its reply. Whoever removes it from messenger.waiters
// calls done, exactly once.
type waiter struct {
	target   string
	sent     time.Time
	deadline time.Time
	timer    *time.Timer
	done     func(MessageResult, error)
}

// New returns a Router; Start starts its reply reader.
func New(opts Options) *Router {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Router{reg: opts.Registry, pres: opts.Presence, log: opts.Logger, bus: opts.Bus, opts: opts.BusOptions.WithDefaults(),
		waiters: map[string]*waiter{}, subs: map[string]map[string]bool{}, routes: newRouteCache()}
	opts.Registry.Subscribe(m.onChange)
	return m
}

// Start starts reading replies; Close stops it.
func (m *Router) Start() {
	if d, ok := m.bus.(bus.ReplyDispatcher); ok {
		d.DispatchReplies(m.onReply)
	}
	m.wg.Add(1)
	go m.readReplies()
}

// BusOptions are the bus's options, with defaults applied.
func (m *Router) BusOptions() bus.Options { return m.opts }

// Bus is the bus the router publishes to (sessions consume their inboxes from it).
func (m *Router) Bus() bus.Bus { return m.bus }

// onChange forgets what the router keeps of a plugin that was disabled or removed.
func (m *Router) onChange(c registry.Change) {
	m.routes.forget(c)
	if c.Disabled() {
		m.Forget(c.ID)
	}
}

// Close closes the bus, waits for the reply reader and fails the messages still waiting.
func (m *Router) Close() {
	m.closing.Store(true)
	if err := m.bus.Close(); err != nil {
		m.log.Warn("closing the message bus", "error", err)
	}
	m.wg.Wait()
	m.mu.Lock()
	ids := make([]string, 0, len(m.waiters))
	for id := range m.waiters {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.settle(id, func(*waiter) (MessageResult, error) {
			return MessageResult{}, errs.New(errs.PluginUnavailable, "the host is shutting down")
		})
	}
}

func (m *Router) readReplies() {
	defer m.wg.Done()
	for r := range m.bus.Replies() {
		m.onReply(r)
	}
}

// onReply hands a reply to the sender waiting for it. It never blocks (it may run on a
// replying plugin's receive loop).
func (m *Router) onReply(r bus.Reply) {
	m.settle(r.MessageID, func(w *waiter) (MessageResult, error) {
		if !time.Now().Before(w.deadline) {
			// The handler's context carries the same deadline: an answer that comes
			// only once it passed is the handler giving up, not a reply.
			return MessageResult{}, timeoutError(w)
		}
		if r.ErrorCode != "" {
			return MessageResult{}, errs.New(errs.Code(r.ErrorCode), "%s", r.ErrorMessage)
		}
		return MessageResult{MessageID: r.MessageID, Status: r.Status, Data: r.Data, ErrorMessage: r.ErrorMessage,
			ResponseTime: time.Since(w.sent)}, nil
	})
}

// settle finishes a waiting message with the outcome of result, if it still waits.
func (m *Router) settle(id string, result func(*waiter) (MessageResult, error)) *waiter {
	m.mu.Lock()
	w := m.waiters[id]
	delete(m.waiters, id)
	m.mu.Unlock()
	if w == nil {
		return nil
	}
	w.timer.Stop()
	w.done(result(w))
	return w
}

// Send checks and publishes a message; done is called once with the reply or the failure
// (a timeout, a cancellation), and never when Send returns an error. The returned id can be
// passed to cancel.
func (m *Router) Send(ctx context.Context, req MessageRequest, done func(MessageResult, error)) (string, error) {
	from, err := m.routes.get(m.reg, req.From)
	if err != nil {
		return "", err
	}
	if !from.can("messages:send") {
		return "", errs.New(errs.PluginPermissionDenied, "plugin %s may not send messages: it lacks the permission messages:send", req.From)
	}
	to, err := m.routes.get(m.reg, req.Target)
	if err != nil {
		return "", err
	}
	if mt, ok := to.messageTypes[req.Type]; ok && mt.requiredPermission != "" && !from.can(mt.requiredPermission) {
		return "", errs.New(errs.PluginPermissionDenied, "plugin %s requires the permission %s of senders of %s messages; %s lacks it",
			req.Target, mt.requiredPermission, req.Type, req.From)
	}
	if err := m.reachable(ctx, to); err != nil {
		return "", err
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultMessageTimeout
	}
	timeout = min(timeout, MaxMessageTimeout)
	now := time.Now()
	id := "msg_" + newID()
	w := &waiter{target: req.Target, sent: now, deadline: now.Add(timeout), done: done}
	// The timer is armed once the waiter is registered (and under the same lock, so that
	// whoever settles it sees the timer): a timer that fired before could not expire it,
	// and the sender would wait for good.
	m.mu.Lock()
	m.waiters[id] = w
	w.timer = time.AfterFunc(timeout, func() { m.expire(id) })
	m.mu.Unlock()
	err = m.bus.Publish(ctx, bus.Envelope{
		ID: id, Kind: bus.KindMessage, Source: req.From, Target: req.Target, Type: req.Type, Data: req.Data,
		Deadline: w.deadline, ReplyTo: m.bus.Replica(), SentAt: now,
	})
	if err != nil {
		m.mu.Lock()
		_, waiting := m.waiters[id]
		delete(m.waiters, id)
		m.mu.Unlock()
		if !waiting {
			// The timeout (or Close) settled it during the publish and told done: that
			// is its one outcome.
			return id, nil
		}
		w.timer.Stop()
		return "", busError(err, req.Target)
	}
	return id, nil
}

// reachable checks that a plugin is enabled and has an instance connected somewhere.
func (m *Router) reachable(ctx context.Context, to *route) error {
	if !to.enabled {
		return errs.New(errs.PluginUnavailable, "plugin %s is disabled", to.id)
	}
	if m.pres.Count(to.id) > 0 {
		return nil
	}
	live, err := m.bus.Live(ctx, to.id)
	if err != nil {
		return busError(err, to.id)
	}
	if !live {
		return errs.New(errs.PluginUnavailable, "no instance of plugin %s is connected", to.id)
	}
	return nil
}

// expire ends a message whose deadline passed: the sender gets a timeout and the target's
// handler, if it has the message, is told to stop.
func (m *Router) expire(id string) {
	w := m.settle(id, func(w *waiter) (MessageResult, error) { return MessageResult{}, timeoutError(w) })
	if w != nil {
		m.withdraw(w, id)
	}
}

func timeoutError(w *waiter) error {
	return errs.New(errs.PluginCommunicationTimeout, "plugin %s did not answer within %s", w.target, w.deadline.Sub(w.sent).Round(time.Millisecond))
}

// Cancel ends a message whose sender gave up.
func (m *Router) Cancel(id string, cause error) {
	w := m.settle(id, func(*waiter) (MessageResult, error) { return MessageResult{}, cause })
	if w != nil {
		m.withdraw(w, id)
	}
}

func (m *Router) withdraw(w *waiter, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.bus.Cancel(ctx, w.target, id, w.deadline.Add(time.Minute)); err != nil {
		m.log.Warn("could not withdraw a message", "message_id", id, "target", w.target, "error", err)
	}
}

// SendMessage sends a message from one plugin to another and waits for the reply, the
// timeout (PLUGIN_COMMUNICATION_TIMEOUT) or the end of ctx (which withdraws the message and
// cancels the target's handler).
func (m *Router) SendMessage(ctx context.Context, req MessageRequest) (MessageResult, error) {
	type outcome struct {
		res MessageResult
		err error
	}
	ch := make(chan outcome, 1)
	id, err := m.Send(ctx, req, func(res MessageResult, err error) { ch <- outcome{res, err} })
	if err != nil {
		return MessageResult{}, err
	}
	select {
	case o := <-ch:
		return o.res, o.err
	case <-ctx.Done():
		m.Cancel(id, ctx.Err())
		o := <-ch // settled by cancel, or by the reply that won the race
		return o.res, o.err
	}
}

// Broadcast delivers a message to every active plugin (or those of some categories), except
// the excluded ones and the sender. A recipient whose inbox cannot take it is left out of
// the recipients.
func (m *Router) Broadcast(ctx context.Context, req BroadcastRequest) (BroadcastResult, error) {
	if req.From.Plugin != "" {
		from, err := m.routes.get(m.reg, req.From.Plugin)
		if err != nil {
			return BroadcastResult{}, err
		}
		if !from.can("messages:send") {
			return BroadcastResult{}, errs.New(errs.PluginPermissionDenied,
				"plugin %s may not broadcast: it lacks the permission messages:send", req.From.Plugin)
		}
	}
	routes := m.routes.all(m.reg)
	now := time.Now().UTC()
	res := BroadcastResult{ID: "bcast_" + newID(), Type: req.Type, SentAt: now, Recipients: []string{}}
	var envs []bus.Envelope
	for _, r := range routes {
		if !r.enabled || r.status != registry.StatusActive || r.id == req.From.Plugin || slices.Contains(req.Exclude, r.id) {
			continue
		}
		if len(req.Categories) > 0 && !slices.Contains(req.Categories, r.category) {
			continue
		}
		envs = append(envs, bus.Envelope{ID: res.ID, Kind: bus.KindBroadcast, Source: req.From.source(), Target: r.id,
			Type: req.Type, Data: req.Data, SentAt: now})
	}
	var err error
	if res.Recipients, err = m.fanOut(ctx, envs); err != nil {
		return BroadcastResult{}, err
	}
	return res, nil
}

// fanOut publishes envelopes and returns the targets that took them. When the bus itself is
// unavailable (nothing could be queued), it fails with PLUGIN_UNAVAILABLE.
func (m *Router) fanOut(ctx context.Context, envs []bus.Envelope) ([]string, error) {
	out := []string{}
	if len(envs) == 0 {
		return out, nil
	}
	var down error
	for i, err := range m.bus.PublishAll(ctx, envs) {
		if err != nil {
			if errors.Is(err, bus.ErrUnavailable) || errors.Is(err, bus.ErrClosed) {
				down = err
			}
			m.log.Warn("delivery not queued", "target", envs[i].Target, "kind", envs[i].Kind.String(), "id", envs[i].ID, "error", err)
			continue
		}
		out = append(out, envs[i].Target)
	}
	if len(out) == 0 && down != nil {
		return nil, busError(down, "")
	}
	return out, nil
}

// EmitEvent publishes an event (whose type is not one of the host's, plugin.* and system.*)
// into the inbox of every enabled plugin subscribed to its type
// (holding events:subscribe), except its source, and to the watchers.
func (m *Router) EmitEvent(ctx context.Context, req EventRequest) (EventResult, error) {
	if IsReservedEventType(req.Type) {
		return EventResult{}, errs.WithFields(errs.ValidationError, "this event type is reserved for the host",
			[]errs.FieldViolation{{Field: "type", Description: "types starting with plugin. or system. are reserved for the host"}})
	}
	if req.From.Plugin != "" {
		from, err := m.routes.get(m.reg, req.From.Plugin)
		if err != nil {
			return EventResult{}, err
		}
		if !from.can("events:emit") {
			return EventResult{}, errs.New(errs.PluginPermissionDenied,
				"plugin %s may not emit events: it lacks the permission events:emit", req.From.Plugin)
		}
	}
	return m.emit(ctx, req)
}

func (m *Router) emit(ctx context.Context, req EventRequest) (EventResult, error) {
	routes := m.routes.all(m.reg)
	now := time.Now().UTC()
	ev := bus.Envelope{ID: "evt_" + newID(), Kind: bus.KindEvent, Source: req.From.source(), Type: req.Type, Data: req.Data, SentAt: now}
	var envs []bus.Envelope
	for _, r := range routes {
		if !r.enabled || r.id == req.From.Plugin || !r.can("events:subscribe") || !m.subscribed(r, req.Type) {
			continue
		}
		e := ev
		e.Target = r.id
		envs = append(envs, e)
	}
	recipients, err := m.fanOut(ctx, envs)
	if err != nil {
		return EventResult{}, err
	}
	res := EventResult{ID: ev.ID, Type: ev.Type, At: now, Recipients: recipients}
	if err := m.bus.Announce(ctx, ev); err != nil {
		m.log.Warn("event not announced to watchers", "event_id", ev.ID, "type", ev.Type, "error", err)
	}
	return res, nil
}

// subscribed reports whether a plugin's manifest or run-time subscriptions match typ.
func (m *Router) subscribed(r *route, typ string) bool {
	for _, p := range r.subscriptions {
		if MatchEvent(p, typ) {
			return true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.subs[r.id] {
		if MatchEvent(p, typ) {
			return true
		}
	}
	return false
}

// maxSubscriptions bounds a plugin's run-time subscriptions.
const maxSubscriptions = 1024

// Subscribe changes a plugin's run-time subscriptions (at most maxSubscriptions; more are
// ignored).
func (m *Router) Subscribe(plugin string, add, remove []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.subs[plugin]
	if s == nil {
		s = map[string]bool{}
		m.subs[plugin] = s
	}
	for _, p := range add {
		if len(s) >= maxSubscriptions {
			break
		}
		s[p] = true
	}
	for _, p := range remove {
		delete(s, p)
	}
}

// Forget drops a plugin's run-time subscriptions (it was disabled or uninstalled).
func (m *Router) Forget(plugin string) {
	m.mu.Lock()
	delete(m.subs, plugin)
	m.mu.Unlock()
}

// System emits a host event (plugin lifecycle, startup, shutdown). It never fails the
// operation that caused it.
func (m *Router) System(ctx context.Context, typ string, data map[string]any) {
	payload, err := EncodeMap(data)
	if err == nil {
		_, err = m.emit(context.WithoutCancel(ctx), EventRequest{From: Origin{Role: "system"}, Type: typ, Data: payload})
	}
	if err != nil {
		m.log.Warn("system event not emitted", "type", typ, "error", err)
	}
}

// WatchEvents returns the events whose types match one of patterns (all when none) from
// now on. The channel closes when ctx ends or when the watcher falls too far behind; the
// second result then says which (nil when ctx ended).
func (m *Router) WatchEvents(ctx context.Context, patterns []string) (<-chan Event, func() error) {
	ctx, cancel := context.WithCancel(ctx)
	in := m.bus.Watch(ctx)
	out := make(chan Event, 64)
	var lagged error
	var mu sync.Mutex
	go func() {
		defer close(out)
		defer cancel()
		for e := range in {
			if !matchAny(patterns, e.Type) {
				continue
			}
			select {
			case out <- Event{ID: e.ID, Type: e.Type, Source: e.Source, Data: e.Data, Time: e.SentAt}:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() == nil {
			mu.Lock()
			lagged = errs.New(errs.PluginUnavailable, "the event feed fell too far behind and was closed; watch again")
			if m.closing.Load() {
				lagged = errs.New(errs.PluginUnavailable, "the host is shutting down")
			}
			mu.Unlock()
		}
	}()
	return out, func() error {
		mu.Lock()
		defer mu.Unlock()
		return lagged
	}
}

func matchAny(patterns []string, typ string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if MatchEvent(p, typ) {
			return true
		}
	}
	return false
}

// ServiceProvider is an active plugin and what it serves.
type ServiceProvider struct {
	PluginID, Name, Version, Category, Status string
	Services                                  []string
	MessageTypes                              []MessageTypeInfo
	Endpoints                                 []registry.Endpoint
	Instances                                 int
}

// MessageTypeInfo is a message type a plugin handles.
type MessageTypeInfo struct {
	Type, Description, RequiredPermission string
}

// ListServices returns the active plugins serving service and handling messageType (either
// empty matches all), ordered by plugin id. Services and message types come from the
// manifest and from the hello of the connected instances.
func (m *Router) ListServices(ctx context.Context, service, messageType string) ([]ServiceProvider, error) {
	routes := m.routes.all(m.reg)
	out := []ServiceProvider{}
	for _, r := range routes {
		if !r.enabled || r.status != registry.StatusActive {
			continue
		}
		p := ServiceProvider{PluginID: r.id, Name: r.name, Version: r.version, Category: r.category, Status: r.status,
			Services: slices.Clone(r.services), Endpoints: r.endpoints}
		for _, t := range r.typeOrder {
			mt := r.messageTypes[t]
			p.MessageTypes = append(p.MessageTypes, MessageTypeInfo{Type: t, Description: mt.description, RequiredPermission: mt.requiredPermission})
		}
		services, types, n := m.pres.Announced(r.id)
		p.Instances = n
		for _, s := range services {
			if !slices.Contains(p.Services, s) {
				p.Services = append(p.Services, s)
			}
		}
		for _, t := range types {
			if _, ok := r.messageTypes[t]; !ok {
				p.MessageTypes = append(p.MessageTypes, MessageTypeInfo{Type: t})
			}
		}
		if service != "" && !slices.Contains(p.Services, service) {
			continue
		}
		if messageType != "" && !slices.ContainsFunc(p.MessageTypes, func(m MessageTypeInfo) bool { return m.Type == messageType }) {
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PluginID < out[j].PluginID })
	return out, nil
}

// DeadLetter is a delivery the host gave up on.
type DeadLetter struct {
	ID, Kind, Source, Type string
	Data                   Payload
	Attempts               int
	Reason                 string
	SentAt, At             time.Time
}

// DeadLetters returns up to limit of an installed plugin's dead letters, newest first.
func (m *Router) DeadLetters(ctx context.Context, id string, limit int) ([]DeadLetter, error) {
	if _, err := m.reg.Get(id); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	dls, err := m.bus.DeadLetters(ctx, id, limit)
	if err != nil {
		return nil, busError(err, id)
	}
	out := make([]DeadLetter, 0, len(dls))
	for _, d := range dls {
		out = append(out, DeadLetter{ID: d.ID, Kind: d.Kind.String(), Source: d.Source, Type: d.Type, Data: d.Data,
			Attempts: d.Attempts, Reason: d.Reason, SentAt: d.SentAt, At: d.At})
	}
	return out, nil
}

// busError turns a bus failure into the API's error.
func busError(err error, target string) error {
	switch {
	case errors.Is(err, bus.ErrInboxFull):
		return errs.New(errs.PluginUnavailable, "plugin %s is not keeping up: its inbox is full", target)
	case errors.Is(err, bus.ErrUnavailable), errors.Is(err, bus.ErrClosed):
		return errs.New(errs.PluginUnavailable, "the message bus is unavailable; try again shortly")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return errs.Wrap(errs.Internal, err, "internal error")
}
