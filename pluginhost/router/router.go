// Package router carries messages, broadcasts and events between plugins over the bus: it
// checks each against the plugins' grants and declared message types, matches replies to the
// senders waiting for them, fans broadcasts and events out to their recipients, feeds the
// event watchers, and answers service discovery. It reads plugins from the registry and
// connected instances from presence, and never the store.
package router

import (
	"log/slog"
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

// MaxPayloadBytes bounds a payload (encoded) on every path one takes into the host: the
// API's messages, broadcasts and events, and a plugin's sends, emits, broadcasts and
// replies on its stream.
const MaxPayloadBytes = 1 << 20

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
	// endpoints serves the active plugins' HTTP endpoints, rebuilt for each new snapshot.
	endpoints atomic.Pointer[endpointTable]
	// closing is set when Close begins.
	closing atomic.Bool

	mu sync.Mutex // guards waiters and subs
	// waiters are the messages sent from this replica that wait for a reply, by message id.
	waiters map[string]*waiter
	// subs are the event patterns plugins subscribed to at run time, per plugin; they last
	// until the plugin is disabled or uninstalled (the SDK subscribes again on reconnect).
	subs map[string]map[string]bool
	// subsMu orders the changes of subs with the store's (Subscribe, ReloadSubscriptions,
	// Forget); it is taken before mu.
	subsMu sync.Mutex
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
	if c.Disabled() || c.Removed() {
		m.Forget(c.ID, !c.Remote)
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
