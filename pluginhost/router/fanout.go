package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

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
	return m.Subscribed(r.id, typ)
}

// maxSubscriptions bounds a plugin's run-time subscriptions.
const maxSubscriptions = 1024

// subscriptionsKey is the store setting that keeps a plugin's run-time subscriptions (a JSON
// array of patterns), so that every server sharing the store routes events by them.
func subscriptionsKey(plugin string) string { return "event-subscriptions/" + plugin }

// Subscribe changes a plugin's run-time subscriptions (at most maxSubscriptions; more are
// ignored). They are kept in the store, so that every server sharing it delivers the
// plugin's events (see ReloadSubscriptions), in one write that reads the current set first:
// changes made through two servers at once both count.
func (m *Router) Subscribe(ctx context.Context, plugin string, add, remove []string) error {
	// The store's order is memory's: a reload or another Subscribe does not set memory
	// between this write and its copy.
	m.subsMu.Lock()
	defer m.subsMu.Unlock()
	var patterns []string
	err := m.reg.Store().Write(ctx, func(tx store.Tx) error {
		cur, err := readSubscriptions(tx, plugin)
		if err != nil {
			return err
		}
		set := map[string]bool{}
		for _, p := range cur {
			set[p] = true
		}
		for _, p := range add {
			if len(set) >= maxSubscriptions {
				break
			}
			set[p] = true
		}
		for _, p := range remove {
			delete(set, p)
		}
		patterns = slices.Sorted(maps.Keys(set))
		raw, err := json.Marshal(patterns)
		if err != nil {
			return err
		}
		return tx.PutSetting(subscriptionsKey(plugin), raw)
	})
	if err != nil {
		return errs.Wrap(errs.Internal, err, "could not store the subscriptions of plugin %s", plugin)
	}
	m.setSubscriptions(plugin, patterns)
	return nil
}

// readSubscriptions reads a plugin's run-time subscriptions from the store.
func readSubscriptions(tx store.Tx, plugin string) ([]string, error) {
	raw, err := tx.Setting(subscriptionsKey(plugin))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	var patterns []string
	if err := json.Unmarshal(raw, &patterns); err != nil {
		return nil, fmt.Errorf("the stored subscriptions of plugin %s are unreadable: %w", plugin, err)
	}
	return patterns, nil
}

func (m *Router) setSubscriptions(plugin string, patterns []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(patterns) == 0 {
		delete(m.subs, plugin)
		return
	}
	set := make(map[string]bool, len(patterns))
	for _, p := range patterns {
		set[p] = true
	}
	m.subs[plugin] = set
}

// ReloadSubscriptions reads the run-time subscriptions of the plugins (every installed one
// when none is named) from the store again: when the server starts, and when another server
// sharing the store changed them.
func (m *Router) ReloadSubscriptions(ctx context.Context, plugins ...string) error {
	if len(plugins) == 0 {
		for _, p := range m.reg.Snapshot().All() {
			plugins = append(plugins, p.ID())
		}
	}
	m.subsMu.Lock()
	defer m.subsMu.Unlock()
	found := make(map[string][]string, len(plugins))
	err := m.reg.Store().Read(ctx, func(tx store.Tx) error {
		for _, id := range plugins {
			patterns, err := readSubscriptions(tx, id)
			if err != nil {
				return err
			}
			found[id] = patterns
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("router: read the event subscriptions: %w", err)
	}
	for id, patterns := range found {
		m.setSubscriptions(id, patterns)
	}
	return nil
}

// Subscribed reports whether one of a plugin's run-time subscriptions matches an event type.
func (m *Router) Subscribed(plugin, typ string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.subs[plugin] {
		if MatchEvent(p, typ) {
			return true
		}
	}
	return false
}

// SubscriptionsPlugin returns the plugin whose run-time subscriptions a store setting
// keeps, if key is such a setting.
func SubscriptionsPlugin(key string) (string, bool) {
	return strings.CutPrefix(key, subscriptionsKey(""))
}

// Forget drops a plugin's run-time subscriptions (it was disabled or uninstalled). When the
// change was made on this server (local), it drops them from the store too, before a new
// Subscribe can store new ones; the servers that hear of the change from the store only
// drop their copies.
func (m *Router) Forget(plugin string, local bool) {
	m.subsMu.Lock()
	defer m.subsMu.Unlock()
	m.setSubscriptions(plugin, nil)
	if !local {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := m.reg.Store().Write(ctx, func(tx store.Tx) error {
		if _, err := tx.Setting(subscriptionsKey(plugin)); errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return tx.PutSetting(subscriptionsKey(plugin), []byte("[]"))
	})
	if err != nil {
		m.log.Warn("could not drop the stored event subscriptions of a disabled plugin", "plugin_id", plugin, "error", err)
	}
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
