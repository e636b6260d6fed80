package pluginhost

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/store"
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

// directory caches routes, so that the message path does not read the store. The host's
// store is wrapped (notifyingStore) so that every committed write of a plugin record drops
// that plugin's cached route.
type directory struct {
	h *Host

	mu     sync.RWMutex // guards routes and gen
	routes map[string]*route
	// gen counts invalidations: a route loaded while an invalidation happened is not cached.
	gen uint64
}

func newDirectory(h *Host) *directory { return &directory{h: h, routes: map[string]*route{}} }

// get returns the plugin's route, or an errs PLUGIN_NOT_FOUND error.
func (d *directory) get(ctx context.Context, id string) (*route, error) {
	d.mu.RLock()
	r, gen := d.routes[id], d.gen
	d.mu.RUnlock()
	if r != nil {
		return r, nil
	}
	p, err := d.h.load(ctx, id)
	if err != nil {
		return nil, err
	}
	r = newRoute(p)
	d.mu.Lock()
	if d.gen == gen {
		d.routes[id] = r
	}
	d.mu.Unlock()
	return r, nil
}

// all returns the routes of every installed plugin, ordered by id.
func (d *directory) all(ctx context.Context) ([]*route, error) {
	ps, err := d.h.loadAll(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*route, 0, len(ps))
	for _, p := range ps {
		out = append(out, newRoute(p))
	}
	slices.SortFunc(out, func(a, b *route) int { return strings.Compare(a.id, b.id) })
	return out, nil
}

// invalidate drops cached routes (all of them when ids is empty).
func (d *directory) invalidate(ids ...string) {
	d.mu.Lock()
	d.gen++
	if len(ids) == 0 {
		clear(d.routes)
	}
	for _, id := range ids {
		delete(d.routes, id)
	}
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

// notifyingStore wraps the host's store and tells the directory which plugin records each
// committed write changed.
type notifyingStore struct {
	store.Store
	changed func(ids ...string)
}

func (s *notifyingStore) Write(ctx context.Context, fn func(store.Tx) error) error {
	var ids []string
	err := s.Store.Write(ctx, func(tx store.Tx) error {
		ids = ids[:0]
		return fn(&notifyingTx{Tx: tx, ids: &ids})
	})
	if len(ids) > 0 {
		// Also after a failed write: a rolled-back change costs one reload, never a stale route.
		s.changed(ids...)
	}
	return err
}

type notifyingTx struct {
	store.Tx
	ids *[]string
}

func (t *notifyingTx) PutPlugin(p store.Plugin) error {
	*t.ids = append(*t.ids, p.ID)
	return t.Tx.PutPlugin(p)
}

func (t *notifyingTx) DeletePlugin(id string) error {
	*t.ids = append(*t.ids, id)
	return t.Tx.DeletePlugin(id)
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
