package pluginhost

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/registry"
)

// route is what messaging needs to know about one installed plugin, read from its record and
// manifest. Routes are immutable; a change to the plugin's record replaces its route.
type route struct {
	id, name, version, category, status string
	enabled                             bool
	granted                             []string
	// messageTypes maps each declared message type to the permission its senders need
	// ("" for none).
	messageTypes map[string]messageTypeInfo
	typeOrder    []string
	services     []string
	// subscriptions are the manifest's event patterns.
	subscriptions []string
	endpoints     []EndpointInfo
}

type messageTypeInfo struct {
	description, requiredPermission string
}

// can reports whether the plugin holds permission perm.
func (r *route) can(perm string) bool { return permission.Allowed(r.granted, perm) }

// directory keeps the routes of the installed plugins, built from the registry's plugins
// and rebuilt when the registry replaces a plugin, so that the message path reads only
// memory.
type directory struct {
	h *Host

	mu     sync.RWMutex // guards routes
	routes map[*registry.Plugin]*route
}

func newDirectory(h *Host) *directory { return &directory{h: h, routes: map[*registry.Plugin]*route{}} }

// get returns the plugin's route, or an errs PLUGIN_NOT_FOUND error.
func (d *directory) get(_ context.Context, id string) (*route, error) {
	p, err := d.h.reg.Get(id)
	if err != nil {
		return nil, err
	}
	return d.routeOf(p), nil
}

// all returns the routes of every installed plugin, ordered by id.
func (d *directory) all(context.Context) ([]*route, error) {
	ps := d.h.reg.Snapshot().All()
	out := make([]*route, 0, len(ps))
	for _, p := range ps {
		out = append(out, d.routeOf(p))
	}
	return out, nil
}

func (d *directory) routeOf(p *registry.Plugin) *route {
	d.mu.RLock()
	r := d.routes[p]
	d.mu.RUnlock()
	if r != nil {
		return r
	}
	r = newRoute(loadedOf(p))
	d.mu.Lock()
	d.routes[p] = r
	d.mu.Unlock()
	return r
}

// forget drops the route of a plugin the registry replaced or removed.
func (d *directory) forget(c registry.Change) {
	if c.Old == nil {
		return
	}
	d.mu.Lock()
	delete(d.routes, c.Old)
	d.mu.Unlock()
}

func newRoute(p loaded) *route {
	m := p.man
	r := &route{
		id: p.rec.ID, name: m.Name, version: p.rec.Version, category: m.Category, status: p.rec.Status,
		enabled: p.rec.Enabled, granted: slices.Clone(p.rec.Granted),
		messageTypes: map[string]messageTypeInfo{}, services: slices.Clone(m.Services),
	}
	for _, mt := range m.MessageTypes {
		r.messageTypes[mt.Type] = messageTypeInfo{description: mt.Description, requiredPermission: mt.RequiredPermission}
		r.typeOrder = append(r.typeOrder, mt.Type)
	}
	for _, e := range m.Events.Subscribes {
		r.subscriptions = append(r.subscriptions, e.Type)
	}
	for _, e := range m.APIEndpoints {
		r.endpoints = append(r.endpoints, EndpointInfo{Path: e.Path, Methods: slices.Clone(e.Methods), Description: e.Description})
	}
	return r
}

// matchEvent reports whether an event type matches a subscription pattern. Patterns are
// dot-separated; `*` alone matches every type, a `*` segment matches exactly one segment,
// and a final `*` segment matches one or more (`user.*` matches `user.login` and
// `user.profile.updated`; `*.error` matches `db.error`).
func matchEvent(pattern, typ string) bool {
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
