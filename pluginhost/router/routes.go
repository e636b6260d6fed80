package router

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
	"github.com/nexus-platform/nexus/pluginhost/registry"
)

// route is what messaging needs to know about one installed plugin, read from its record and
// manifest. Routes are immutable; a change to the plugin's record replaces its route.
type route struct {
	id, name, version, category, status string
	enabled                             bool
	p                                   *registry.Plugin
	// messageTypes maps each declared message type to what its senders need.
	messageTypes map[string]messageTypeInfo
	typeOrder    []string
	services     []string
	// subscriptions are the manifest's event patterns.
	subscriptions []string
	endpoints     []registry.Endpoint
}

type messageTypeInfo struct {
	description, requiredPermission string
}

// can reports whether the plugin holds permission perm.
func (r *route) can(perm string) bool { return r.p.Can(perm) }

func newRoute(p *registry.Plugin) *route {
	m := p.Manifest()
	r := &route{
		id: p.ID(), name: m.Name, version: p.Version(), category: m.Category, status: p.Status(),
		enabled: p.Enabled(), p: p,
		messageTypes: map[string]messageTypeInfo{}, services: slices.Clone(m.Services),
		endpoints: p.Endpoints(),
	}
	for _, mt := range m.MessageTypes {
		r.messageTypes[mt.Type] = messageTypeInfo{description: mt.Description, requiredPermission: mt.RequiredPermission}
		r.typeOrder = append(r.typeOrder, mt.Type)
	}
	for _, e := range m.Events.Subscribes {
		r.subscriptions = append(r.subscriptions, e.Type)
	}
	return r
}

// routeCache keeps the route of each installed plugin, built once per version of the plugin
// (the registry replaces a plugin on every change): a route is used only while it was built
// from the plugin the registry holds now.
type routeCache struct {
	mu     sync.RWMutex // guards routes
	routes map[string]*route
}

func newRouteCache() routeCache { return routeCache{routes: map[string]*route{}} }

// get returns a plugin's route, or PLUGIN_NOT_FOUND.
func (c *routeCache) get(reg *registry.Registry, id string) (*route, error) {
	p, err := reg.Get(id)
	if err != nil {
		return nil, err
	}
	return c.of(reg, p), nil
}

// all returns the routes of every installed plugin, ordered by id.
func (c *routeCache) all(reg *registry.Registry) []*route {
	ps := reg.Snapshot().All()
	out := make([]*route, 0, len(ps))
	for _, p := range ps {
		out = append(out, c.of(reg, p))
	}
	return out
}

func (c *routeCache) of(reg *registry.Registry, p *registry.Plugin) *route {
	c.mu.RLock()
	r := c.routes[p.ID()]
	c.mu.RUnlock()
	if r != nil && r.p == p {
		return r
	}
	r = newRoute(p)
	// Kept only while p is the plugin the registry holds (a reader holding an older or a
	// removed plugin must not store its route), one entry per id.
	c.mu.Lock()
	if cur, err := reg.Get(p.ID()); err == nil && cur == p {
		c.routes[p.ID()] = r
	}
	c.mu.Unlock()
	return r
}

// forget drops the route of a plugin the registry removed (a replaced one is rebuilt when
// next used).
func (c *routeCache) forget(ch registry.Change) {
	if !ch.Removed() {
		return
	}
	c.mu.Lock()
	delete(c.routes, ch.ID)
	c.mu.Unlock()
}

// MatchEvent reports whether an event type matches a subscription pattern. Patterns are
// dot-separated; `*` alone matches every type, a `*` segment matches exactly one segment,
// and a final `*` segment matches one or more (`user.*` matches `user.login` and
// `user.profile.updated`; `*.error` matches `db.error`).
func MatchEvent(pattern, typ string) bool {
	if pattern == "*" {
		return true
	}
	for {
		pseg, prest, pmore := strings.Cut(pattern, ".")
		tseg, trest, tmore := strings.Cut(typ, ".")
		if pseg == "*" && !pmore {
			return tseg != ""
		}
		if pseg != "*" && pseg != tseg {
			return false
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		pattern, typ = prest, trest
	}
}

// IsReservedEventType reports whether an event type belongs to the host (plugin.* and
// system.*).
func IsReservedEventType(t string) bool {
	return strings.HasPrefix(t, "plugin.") || strings.HasPrefix(t, "system.")
}

// EncodeMap encodes a JSON-compatible map as a payload.
func EncodeMap(m map[string]any) (Payload, error) {
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil, err
	}
	return rawstruct.Bytes(s)
}

// newID returns a random id for a message, broadcast or event.
func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}
