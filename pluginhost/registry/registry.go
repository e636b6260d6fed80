// Package registry holds the installed plugins: their records, parsed manifests, opened
// configurations and the dependency graph between them, in memory. It is the single writer
// of plugin records: every change goes through [Registry.Update], which commits it to the
// store and then replaces the in-memory copies, so reads ([Registry.Get],
// [Registry.Snapshot]) never touch the store and never parse a manifest. Subscribers hear
// of every committed change ([Registry.Subscribe]).
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Registry is the in-memory registry of installed plugins over a store. It is safe for
// concurrent use.
type Registry struct {
	st  store.Store
	box *secrets.Box
	log *slog.Logger

	// wmu serialises writes of plugin records, so that the in-memory copies change in the
	// order the store committed them. It is held across one store transaction, never
	// across a plugin's start or stop.
	wmu sync.Mutex
	// snap is the current snapshot; replaced (never modified) under wmu, read without locks.
	snap atomic.Pointer[Snapshot]

	subMu sync.Mutex // guards subs
	subs  []func(Change)

	// shared says the store is shared with other servers (it is a store.Feed): a
	// transaction then reads the records it works on from the store, not from memory,
	// since another server may have committed a newer one.
	shared bool
}

// New returns an empty registry over st; [Registry.Load] fills it. box opens and seals the
// secret configuration values.
func New(st store.Store, box *secrets.Box, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_, shared := st.(store.Feed)
	r := &Registry{st: st, box: box, log: log, shared: shared}
	r.snap.Store(newSnapshot(map[string]*Plugin{}))
	return r
}

// Load reads every plugin record from the store into memory. A record whose manifest or
// configuration cannot be read fails the load: the registry never serves half of itself.
func (r *Registry) Load(ctx context.Context) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	var recs []store.Plugin
	if err := r.st.Read(ctx, func(tx store.Tx) error {
		var err error
		recs, err = tx.Plugins()
		return err
	}); err != nil {
		return fmt.Errorf("registry: read the plugin records: %w", err)
	}
	byID := make(map[string]*Plugin, len(recs))
	for _, rec := range recs {
		p, err := r.newPlugin(rec, nil)
		if err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		byID[rec.ID] = p
	}
	r.snap.Store(newSnapshot(byID))
	return nil
}

// Store is the store the registry writes to, for the other tables (logs, backups, tokens).
func (r *Registry) Store() store.Store { return r.st }

// Snapshot returns the current state of the registry. It never changes: a later write
// produces a new snapshot.
func (r *Registry) Snapshot() *Snapshot { return r.snap.Load() }

// Get returns an installed plugin, or a PLUGIN_NOT_FOUND error.
func (r *Registry) Get(id string) (*Plugin, error) { return r.Snapshot().Get(id) }

// Subscribe registers fn to hear of every committed change, in commit order. fn runs on the
// writer's goroutine once the change is visible to readers; it must be quick and must not
// write to the registry.
func (r *Registry) Subscribe(fn func(Change)) {
	r.subMu.Lock()
	r.subs = append(r.subs, fn)
	r.subMu.Unlock()
}

// Update runs fn in one store transaction. Plugin records fn writes through tx replace the
// registry's copies once the transaction commits; nothing changes in memory when it fails.
func (r *Registry) Update(ctx context.Context, fn func(tx *Tx) error) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	base := r.snap.Load()
	var t *Tx
	err := r.st.Write(ctx, func(stx store.Tx) error {
		t = &Tx{Tx: stx, r: r, base: base, pending: map[string]*Plugin{}, fresh: map[string]*Plugin{}}
		return fn(t)
	})
	if err != nil {
		return err
	}
	defer func() {
		for _, fn := range t.after {
			fn()
		}
	}()
	if len(t.order) == 0 {
		return nil
	}
	byID := make(map[string]*Plugin, len(base.byID)+1)
	for id, p := range base.byID {
		byID[id] = p
	}
	changes := make([]Change, 0, len(t.order)+len(t.fresh))
	// What the transaction found newer in the store (committed by another server) and did
	// not write over comes first, as Refresh would have announced it.
	for _, id := range slices.Sorted(maps.Keys(t.fresh)) {
		old, now := base.byID[id], t.fresh[id]
		if old == now {
			continue
		}
		if now == nil {
			delete(byID, id)
		} else {
			byID[id] = now
		}
		if _, written := t.pending[id]; !written {
			changes = append(changes, Change{ID: id, Old: old, New: now, Remote: true})
		}
	}
	for _, id := range t.order {
		old, now := t.prev(id), t.pending[id]
		if old == nil && now == nil {
			continue // written and deleted in one transaction
		}
		if now == nil {
			delete(byID, id)
		} else {
			byID[id] = now
		}
		changes = append(changes, Change{ID: id, Old: old, New: now})
	}
	r.snap.Store(newSnapshot(byID))
	r.subMu.Lock()
	subs := slices.Clone(r.subs)
	r.subMu.Unlock()
	for _, c := range changes {
		for _, fn := range subs {
			fn(c)
		}
	}
	return nil
}

// Refresh reads the records of the plugins ids (all of them when ids is empty) from the
// store again, for the changes another server sharing it committed: those that differ from
// the registry's copies replace them, and subscribers hear of each as a Remote change. A
// record the registry could not serve (an unreadable manifest, a secret it cannot open) is
// left as it was, and Refresh reports it.
func (r *Registry) Refresh(ctx context.Context, ids ...string) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	base := r.snap.Load()
	found := map[string]store.Plugin{}
	if err := r.st.Read(ctx, func(tx store.Tx) error {
		clear(found)
		if len(ids) == 0 {
			recs, err := tx.Plugins()
			for _, rec := range recs {
				found[rec.ID] = rec
			}
			return err
		}
		for _, id := range ids {
			rec, err := tx.Plugin(id)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return err
			default:
				found[id] = rec
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("registry: refresh: %w", err)
	}
	if len(ids) == 0 {
		for id := range base.byID {
			ids = append(ids, id)
		}
		for id := range found {
			if base.byID[id] == nil {
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	byID := maps.Clone(base.byID)
	var changes []Change
	var problems []error
	for _, id := range slices.Compact(ids) {
		old := base.byID[id]
		rec, ok := found[id]
		switch {
		case !ok && old == nil:
			continue
		case !ok:
			delete(byID, id)
			changes = append(changes, Change{ID: id, Old: old, Remote: true})
			continue
		case old != nil && sameRecord(old.rec, rec):
			continue
		}
		p, err := r.newPlugin(rec, old)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		byID[id] = p
		changes = append(changes, Change{ID: id, Old: old, New: p, Remote: true})
	}
	if len(changes) > 0 {
		r.snap.Store(newSnapshot(byID))
		r.subMu.Lock()
		subs := slices.Clone(r.subs)
		r.subMu.Unlock()
		for _, c := range changes {
			for _, fn := range subs {
				fn(c)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("registry: refresh: %w", errors.Join(problems...))
	}
	return nil
}

// sameRecord reports whether two records hold the same values: times compared as instants,
// an empty list as a missing one, as a store may give either back.
func sameRecord(a, b store.Plugin) bool {
	norm := func(p store.Plugin) []byte {
		p.ConfigUpdatedAt, p.InstalledAt, p.UpdatedAt = p.ConfigUpdatedAt.UTC(), p.InstalledAt.UTC(), p.UpdatedAt.UTC()
		for _, l := range []*[]string{&p.Requested, &p.Granted, &p.Denied} {
			if len(*l) == 0 {
				*l = nil
			}
		}
		if len(p.Config) == 0 {
			p.Config = nil
		}
		j, err := json.Marshal(p)
		if err != nil {
			return nil
		}
		return j
	}
	ja, jb := norm(a), norm(b)
	return ja != nil && string(ja) == string(jb)
}

// Modify changes one plugin's record in its own transaction: fn gets a copy of the current
// record to change. It returns the plugin as stored, or PLUGIN_NOT_FOUND.
func (r *Registry) Modify(ctx context.Context, id string, fn func(rec *store.Plugin) error) (*Plugin, error) {
	var out *Plugin
	err := r.Update(ctx, func(tx *Tx) error {
		p, err := tx.Get(id)
		if err != nil {
			return err
		}
		rec := p.Record()
		if err := fn(&rec); err != nil {
			return err
		}
		out, err = tx.Put(rec)
		return err
	})
	return out, err
}

// Tx is a store transaction in which plugin records are read and written through the
// registry. The other tables are reached through the embedded store.Tx.
type Tx struct {
	store.Tx
	r    *Registry
	base *Snapshot
	// pending are the plugins written in this transaction (nil: deleted), and order the
	// ids in the order first written.
	pending map[string]*Plugin
	order   []string
	// fresh are the plugins read from a shared store in this transaction (nil: not
	// installed), before it wrote them.
	fresh map[string]*Plugin
	// after are run once the transaction commits.
	after []func()
}

// AfterCommit registers fn to run once the transaction has committed and its changes are
// visible (it does not run when the transaction fails).
func (t *Tx) AfterCommit(fn func()) { t.after = append(t.after, fn) }

// Get returns a plugin as this transaction sees it: as it wrote it, or else as committed,
// read from the store when the store is shared (the write lock makes that the latest), and
// from memory otherwise (this registry is the store's only writer).
func (t *Tx) Get(id string) (*Plugin, error) {
	if p, ok := t.pending[id]; ok {
		if p == nil {
			return nil, notFound(id)
		}
		return p, nil
	}
	if !t.r.shared {
		return t.base.Get(id)
	}
	p, err := t.committed(id)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, notFound(id)
	}
	return p, nil
}

// committed returns the plugin as the shared store holds it (nil when not installed).
func (t *Tx) committed(id string) (*Plugin, error) {
	if p, ok := t.fresh[id]; ok {
		return p, nil
	}
	old := t.base.byID[id]
	rec, err := t.Tx.Plugin(id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		t.fresh[id] = nil
		return nil, nil
	case err != nil:
		return nil, err
	case old != nil && sameRecord(old.rec, rec):
		t.fresh[id] = old
		return old, nil
	}
	p, err := t.r.newPlugin(rec, old)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "internal error")
	}
	t.fresh[id] = p
	return p, nil
}

// prev is the plugin as committed before this transaction wrote it.
func (t *Tx) prev(id string) *Plugin {
	if p, ok := t.fresh[id]; ok {
		return p
	}
	return t.base.byID[id]
}

// Put writes a plugin record. Its manifest and configuration must be readable: a record the
// registry could not serve is refused before it is stored.
func (t *Tx) Put(rec store.Plugin) (*Plugin, error) {
	prev, _ := t.Get(rec.ID)
	p, err := t.r.newPlugin(rec, prev)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "internal error")
	}
	if err := t.Tx.PutPlugin(rec); err != nil {
		return nil, err
	}
	t.note(rec.ID, p)
	return p, nil
}

// Delete removes a plugin record.
func (t *Tx) Delete(id string) error {
	if err := t.Tx.DeletePlugin(id); err != nil {
		return err
	}
	t.note(id, nil)
	return nil
}

// PutPlugin is [Tx.Put] for code written against store.Tx.
func (t *Tx) PutPlugin(rec store.Plugin) error {
	_, err := t.Put(rec)
	return err
}

// DeletePlugin is [Tx.Delete] for code written against store.Tx.
func (t *Tx) DeletePlugin(id string) error { return t.Delete(id) }

// Plugin reads a record as this transaction sees it, from memory.
func (t *Tx) Plugin(id string) (store.Plugin, error) {
	p, err := t.Get(id)
	if err != nil {
		return store.Plugin{}, store.ErrNotFound
	}
	return p.Record(), nil
}

func (t *Tx) note(id string, p *Plugin) {
	if _, seen := t.pending[id]; !seen {
		t.order = append(t.order, id)
	}
	t.pending[id] = p
}

// Change is one committed change of a plugin record. Old is nil for an install, New is nil
// for an uninstall.
type Change struct {
	ID       string
	Old, New *Plugin
	// Remote says the change was committed by another server sharing the store, and found
	// by Refresh.
	Remote bool
}

// Installed reports whether the change added the plugin.
func (c Change) Installed() bool { return c.Old == nil && c.New != nil }

// Removed reports whether the change removed the plugin.
func (c Change) Removed() bool { return c.New == nil }

// Disabled reports whether the plugin stopped being enabled (also by its removal).
func (c Change) Disabled() bool {
	return c.Old != nil && c.Old.rec.Enabled && (c.New == nil || !c.New.rec.Enabled)
}

// GrantsChanged reports whether the plugin's granted permissions changed.
func (c Change) GrantsChanged() bool {
	return c.Old != nil && c.New != nil && !slices.Equal(c.Old.rec.Granted, c.New.rec.Granted)
}

// newPlugin builds the in-memory plugin of a record. What did not change since prev (the
// manifest, the configuration) is taken from prev instead of being parsed again.
func (r *Registry) newPlugin(rec store.Plugin, prev *Plugin) (*Plugin, error) {
	p := &Plugin{rec: cloneRecord(rec)}
	if prev != nil && string(prev.rec.Manifest) == string(rec.Manifest) {
		p.man = prev.man
	} else {
		m, err := manifest.Parse(rec.Manifest)
		if err != nil {
			return nil, fmt.Errorf("the stored manifest of %s is unreadable: %w", rec.ID, err)
		}
		p.man = m
	}
	p.schema = p.man.Schema()
	if prev != nil && prev.man == p.man && string(prev.rec.Config) == string(rec.Config) {
		p.config, p.masked = prev.config, prev.masked
	} else {
		values := map[string]any{}
		if len(rec.Config) > 0 {
			if err := json.Unmarshal(rec.Config, &values); err != nil {
				return nil, fmt.Errorf("the stored configuration of %s is unreadable: %w", rec.ID, err)
			}
		}
		opened, err := r.box.OpenFields(values, p.schema.SecretFields())
		if err != nil {
			return nil, fmt.Errorf("the stored secrets of %s cannot be decrypted: %w", rec.ID, err)
		}
		p.config, p.masked = opened, p.schema.Mask(opened)
	}
	return p, nil
}

// SealConfig seals a configuration's secrets and encodes it for a record.
func (r *Registry) SealConfig(schema configschema.Schema, values map[string]any) ([]byte, error) {
	sealed, err := r.box.SealFields(values, schema.SecretFields())
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "could not encrypt secret values")
	}
	b, err := json.Marshal(sealed)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "could not encode the configuration")
	}
	return b, nil
}

// Snapshot is the registry at one moment: every installed plugin and the dependency graph.
// It is immutable.
type Snapshot struct {
	byID map[string]*Plugin
	all  []*Plugin // by id
	// order is each plugin's load order (dependencies first, ties by id, from 1);
	// dependents the installed plugins that depend on each, sorted.
	order      map[string]int
	dependents map[string][]string
}

func newSnapshot(byID map[string]*Plugin) *Snapshot {
	s := &Snapshot{byID: byID, all: make([]*Plugin, 0, len(byID))}
	for _, p := range byID {
		s.all = append(s.all, p)
	}
	sort.Slice(s.all, func(i, j int) bool { return s.all[i].rec.ID < s.all[j].rec.ID })
	s.order, s.dependents = buildGraph(s.all)
	return s
}

// Get returns an installed plugin, or a PLUGIN_NOT_FOUND error.
func (s *Snapshot) Get(id string) (*Plugin, error) {
	if p := s.byID[id]; p != nil {
		return p, nil
	}
	return nil, notFound(id)
}

// All returns every installed plugin, ordered by id. The slice must not be modified.
func (s *Snapshot) All() []*Plugin { return s.all }

// LoadOrder returns the plugins in load order (dependencies first).
func (s *Snapshot) LoadOrder() []*Plugin {
	out := slices.Clone(s.all)
	sort.SliceStable(out, func(i, j int) bool { return s.order[out[i].rec.ID] < s.order[out[j].rec.ID] })
	return out
}

// Order is a plugin's position in the load order, from 1 (0 when it is not installed).
func (s *Snapshot) Order(id string) int { return s.order[id] }

// Dependents are the installed plugins that depend on id, sorted. The slice must not be
// modified.
func (s *Snapshot) Dependents(id string) []string { return s.dependents[id] }

// buildGraph computes the load order (dependencies first, ties by id, starting at 1) and
// the dependents of each installed plugin. Plugins caught in a cycle (possible only through
// forced reinstalls) load last.
func buildGraph(all []*Plugin) (map[string]int, map[string][]string) {
	order := make(map[string]int, len(all))
	dependents := map[string][]string{}
	indegree := make(map[string]int, len(all))
	for _, p := range all {
		indegree[p.rec.ID] += 0
	}
	for _, p := range all {
		for _, dep := range p.man.DependencyIDs() {
			if _, installed := indegree[dep]; installed {
				indegree[p.rec.ID]++
				dependents[dep] = append(dependents[dep], p.rec.ID)
			}
		}
	}
	for k := range dependents {
		sort.Strings(dependents[k])
	}
	var ready []string
	for id, n := range indegree {
		if n == 0 {
			ready = append(ready, id)
		}
	}
	n := 0
	for len(ready) > 0 {
		sort.Strings(ready)
		id := ready[0]
		ready = ready[1:]
		n++
		order[id] = n
		for _, d := range dependents[id] {
			indegree[d]--
			if indegree[d] == 0 {
				ready = append(ready, d)
			}
		}
	}
	var rest []string
	for id := range indegree {
		if _, ok := order[id]; !ok {
			rest = append(rest, id)
		}
	}
	sort.Strings(rest)
	for _, id := range rest {
		n++
		order[id] = n
	}
	return order, dependents
}

func notFound(id string) error {
	return errs.New(errs.PluginNotFound, "plugin %q is not installed", id)
}

// IsNotFound reports whether err says a plugin is not installed.
func IsNotFound(err error) bool {
	return errs.Is(err, errs.PluginNotFound) || errors.Is(err, store.ErrNotFound)
}

func cloneRecord(rec store.Plugin) store.Plugin {
	rec.Manifest = slices.Clone(rec.Manifest)
	rec.Config = slices.Clone(rec.Config)
	rec.Requested = slices.Clone(rec.Requested)
	rec.Granted = slices.Clone(rec.Granted)
	rec.Denied = slices.Clone(rec.Denied)
	return rec
}
