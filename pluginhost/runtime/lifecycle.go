package runtime

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// EnableOptions says how to enable a plugin.
type EnableOptions struct {
	// EnableDependencies also enables inactive dependencies (in load order).
	EnableDependencies bool
}

// Enable enables a plugin and starts it. For a host-launched plugin it returns once the
// plugin is active (it said hello and passed its first health check) or has failed to
// start within its start timeout (PLUGIN_STARTUP_FAILED with the reason). An external
// plugin becomes active when an instance connects.
func (rt *Runtime) Enable(ctx context.Context, id string, opts EnableOptions) (string, error) {
	return rt.enable(ctx, id, opts, map[string]bool{})
}

func (rt *Runtime) enable(ctx context.Context, id string, opts EnableOptions, visiting map[string]bool) (string, error) {
	if visiting[id] {
		return "", errs.New(errs.PluginDependencyError, "dependency cycle through %s", id)
	}
	visiting[id] = true
	p, err := rt.load(id)
	if err != nil {
		return "", err
	}
	// Dependencies first: each must be active, or be enabled when asked.
	for _, dep := range p.man.DependencyIDs() {
		d, err := rt.load(dep)
		if errs.Is(err, errs.PluginNotFound) {
			return "", errs.New(errs.PluginDependencyError, "plugin %s depends on %s, which is not installed", id, dep).WithDetail("missing", []string{dep})
		}
		if err != nil {
			return "", err
		}
		if d.rec.Status == registry.StatusActive {
			continue
		}
		if !opts.EnableDependencies {
			return "", errs.New(errs.PluginDependencyError, "plugin %s depends on %s, which is %s; enable it first or pass enable_dependencies", id, dep, d.rec.Status).
				WithDetail("inactive", []string{dep})
		}
		if _, err := rt.enable(ctx, dep, opts, visiting); err != nil {
			return "", fmt.Errorf("enable dependency %s: %w", dep, err)
		}
	}
	defer rt.locks.lock(id)()
	return rt.StartLocked(ctx, id)
}

// StartLocked starts an enabled (or to be enabled) plugin whose lifecycle lock the caller
// holds; its dependencies must be active already. A start that fails gives up the lease
// slot held here (kept by a restart), unless a copy still runs here.
func (rt *Runtime) StartLocked(ctx context.Context, id string) (string, error) {
	status, err := rt.startLocked(ctx, id)
	if err != nil && !rt.runsHere(id) {
		rt.releaseLease(ctx, id)
	}
	return status, err
}

// runsHere reports whether a process of plugin id runs here, not being stopped.
func (rt *Runtime) runsHere(id string) bool {
	rt.mu.Lock()
	r := rt.plugins[id]
	rt.mu.Unlock()
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc != nil && !r.stopping
}

func (rt *Runtime) startLocked(ctx context.Context, id string) (string, error) {
	if rt.shuttingDown.Load() {
		// Not recorded as an error: the plugin starts again with the server.
		return "", errs.New(errs.PluginUnavailable, "the server is shutting down; plugin %s is not started", id)
	}
	p, err := rt.load(id)
	if err != nil {
		return "", err
	}
	for _, dep := range p.man.DependencyIDs() {
		if d, err := rt.load(dep); err != nil || d.rec.Status != registry.StatusActive {
			status := "not installed"
			if err == nil {
				status = d.rec.Status
			}
			return "", errs.New(errs.PluginDependencyError, "plugin %s depends on %s, which is %s", id, dep, status).
				WithDetail("inactive", []string{dep})
		}
	}
	values := p.p.Config()
	if problems := p.man.Schema().Validate(values); len(problems) > 0 {
		return "", errs.WithFields(errs.PluginConfigurationError, "plugin "+id+" cannot start: "+problemsText(problems), problems)
	}
	if err := rt.endpointConflict(id, p.man.APIEndpoints); err != nil {
		return "", err
	}
	r := rt.get(id)
	r.mu.Lock()
	if r.proc != nil && !r.stopping {
		r.mu.Unlock()
		return registry.StatusActive, nil // already running
	}
	r.crashes, r.restarts, r.backoff = nil, 0, 0
	r.stopping = false // the caller holds the lifecycle lock, which every stop holds
	r.mu.Unlock()
	yes := true
	if p.man.External {
		if err := rt.SetStatus(ctx, id, rt.externalStatus(r), "", &yes); err != nil {
			return "", errs.Wrap(errs.Internal, err, "could not record the plugin state")
		}
		rt.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin enabled (external: it becomes active when an instance connects)"})
		rt.notify(ctx, "plugin.enabled", map[string]any{"plugin_id": id, "version": p.rec.Version})
		return rt.externalStatus(r), nil
	}
	loading := registry.StatusLoading
	if rt.placed() {
		slot, others, err := rt.acquireLease(ctx, id)
		if err != nil {
			return "", errs.Wrap(errs.Internal, err, "could not take the plugin's lease")
		}
		if len(others) > 0 && p.rec.Status == registry.StatusActive {
			loading = registry.StatusActive // it runs elsewhere: one more copy does not make it loading
		}
		if slot < 0 {
			// Live replicas hold every slot: enabled, with the status they record.
			if !p.rec.Enabled {
				if _, err := rt.reg.Modify(ctx, id, func(rec *store.Plugin) error { rec.Enabled = true; return nil }); err != nil {
					return "", errs.Wrap(errs.Internal, err, "could not record the plugin state")
				}
			}
			rt.log.Debug("plugin not started here: other replicas hold every lease slot", "plugin_id", id, "holders", others)
			return p.rec.Status, nil
		}
	}
	if err := rt.ensurePackage(ctx, p.rec); err != nil {
		return "", err
	}
	if err := rt.SetStatus(ctx, id, loading, "", &yes); err != nil {
		return "", errs.Wrap(errs.Internal, err, "could not record the plugin state")
	}
	rt.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin enabled; starting"})
	if err := rt.start(ctx, r, p); err != nil {
		return "", err
	}
	rt.notify(ctx, "plugin.enabled", map[string]any{"plugin_id": id, "version": p.rec.Version})
	return registry.StatusActive, nil
}

func (rt *Runtime) externalStatus(r *running) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rt.pres.Count(r.id) > 0 && r.health.status != HealthUnhealthy && !r.health.lastCheck.IsZero() {
		return registry.StatusActive
	}
	return registry.StatusInactive
}

// DisableOptions says how to stop a plugin.
type DisableOptions struct {
	Reason string
	// Graceful sends a shutdown frame first and waits up to Timeout for the plugin to exit.
	Graceful bool
	Timeout  time.Duration
	// Force disables even when active plugins depend on this one.
	Force bool
	// keepLease keeps the plugin's lease held after the stop: the caller releases it once
	// the plugin's new state is on record, so that no other replica takes it over before.
	keepLease bool
}

// Disable stops a plugin and keeps it disabled. It returns once the process is gone.
func (rt *Runtime) Disable(ctx context.Context, id string, opts DisableOptions) error {
	unlock, dependents := rt.LockWithDependents(id)
	defer unlock()
	snap := rt.reg.Snapshot()
	if _, err := snap.Get(id); err != nil {
		return err
	}
	if !opts.Force {
		var active []string
		for _, dep := range snap.Dependents(id) {
			// Starting (loading) counts as running: it would run without its dependency.
			if p, err := snap.Get(dep); err == nil && p.Enabled() && (p.Status() == registry.StatusActive || p.Status() == registry.StatusLoading) {
				active = append(active, dep)
			}
		}
		if len(active) > 0 {
			return errs.New(errs.PluginDependencyError, "active plugins %s depend on %s; disable them first or pass force", strings.Join(active, ", "), id).
				WithDetail("dependents", active)
		}
	}
	if opts.Force {
		rt.StopDependents(ctx, id, dependents, "disabled")
	}
	reason := opts.Reason
	if reason == "" {
		reason = "disabled"
	}
	opts.Reason = reason
	opts.keepLease = true
	rt.stop(ctx, rt.get(id), opts)
	no := false
	err := rt.SetStatus(context.WithoutCancel(ctx), id, registry.StatusInactive, reason, &no)
	rt.releaseLease(ctx, id)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "could not record the plugin state")
	}
	rt.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin disabled: " + reason})
	rt.notify(ctx, "plugin.disabled", map[string]any{"plugin_id": id, "reason": reason})
	return nil
}

// LockWithDependents takes the lifecycle locks of a plugin and of every installed plugin that
// depends on it, directly or not, in one call (so in lock order); it returns the dependents,
// deepest first (reverse load order).
func (rt *Runtime) LockWithDependents(id string) (unlock func(), dependents []string) {
	for {
		deps := dependentsOf(rt.reg.Snapshot(), id)
		unlock := rt.locks.lock(append(slices.Clone(deps), id)...)
		// A plugin installed meanwhile that depends on id: take its lock too.
		if slices.Equal(dependentsOf(rt.reg.Snapshot(), id), deps) {
			return unlock, deps
		}
		unlock()
	}
}

// dependentsOf returns the plugins that depend on id, directly or not, deepest first.
func dependentsOf(snap *registry.Snapshot, id string) []string {
	seen := map[string]bool{id: true}
	var out []string
	queue := []string{id}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, d := range snap.Dependents(cur) {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
				queue = append(queue, d)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return snap.Order(out[i]) > snap.Order(out[j]) })
	return out
}

// StopDependents stops the running dependents of a plugin that is being disabled or
// uninstalled by force (the caller holds their locks, see lockWithDependents): a plugin does
// not run without its dependencies. Each stays enabled, in error with the reason on record,
// until an administrator enables it again.
func (rt *Runtime) StopDependents(ctx context.Context, id string, dependents []string, verb string) {
	for _, d := range dependents {
		p, err := rt.reg.Get(d)
		r := rt.get(d)
		r.mu.Lock()
		running := r.proc != nil || rt.pres.Count(r.id) > 0
		r.mu.Unlock()
		if err != nil || !running && p.Status() != registry.StatusActive && p.Status() != registry.StatusLoading {
			continue
		}
		reason := fmt.Sprintf("stopped because its dependency %s was %s by force; enable it again once %s is back", id, verb, id)
		rt.stop(ctx, r, DisableOptions{Reason: reason, Graceful: true, Timeout: 10 * time.Second, keepLease: true})
		if err := rt.SetStatus(context.WithoutCancel(ctx), d, registry.StatusError, reason, nil); err != nil {
			rt.log.Warn("could not record the state of a dependent plugin", "plugin_id", d, "error", err)
		}
		rt.releaseLease(ctx, d)
		rt.logs.Add(store.LogRecord{PluginID: d, Level: "ERROR", Message: "Plugin " + reason})
	}
}

// stop ends a plugin's sessions and process: a shutdown frame (when graceful), then
// SIGTERM, then SIGKILL; it returns when the process is gone. It then releases the plugin's
// lease, if this replica holds it, unless opts.keepLease.
func (rt *Runtime) stop(ctx context.Context, r *running, opts DisableOptions) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	r.mu.Lock()
	r.stopping = true
	proc := r.proc
	stopSup := r.stopSup
	r.stopSup = nil
	sessions := rt.pres.Instances(r.id)
	tokenID := r.tokenID
	r.tokenID = ""
	r.mu.Unlock()
	if stopSup != nil {
		close(stopSup)
	}
	deadline := time.NewTimer(opts.Timeout)
	defer deadline.Stop()
	if opts.Graceful {
		for _, s := range sessions {
			_ = s.AskShutdown(ctx, opts.Reason, opts.Timeout)
		}
		if proc != nil {
			select {
			case <-proc.Done():
			case <-deadline.C:
			}
		} else {
			// External instances: wait for them to disconnect.
			for _, s := range sessions {
				select {
				case <-s.Done():
				case <-deadline.C:
				}
			}
		}
	}
	if proc != nil {
		grace := rt.cfg.KillGrace
		if !opts.Graceful {
			grace = opts.Timeout
		}
		proc.Stop(context.WithoutCancel(ctx), grace)
	}
	if tokenID != "" {
		_ = rt.tokens.Revoke(context.WithoutCancel(ctx), tokenID)
	}
	// Instances still connected (external ones, or any that ignored the shutdown frame)
	// are cut off: a stopped plugin has no session.
	for _, s := range rt.pres.Instances(r.id) {
		s.End(errs.New(errs.PluginUnavailable, "plugin %s was stopped: %s", r.id, orDefault(opts.Reason, "stopped")))
	}
	rt.metrics.Stopped(r.id)
	r.mu.Lock()
	if r.proc == proc {
		r.proc = nil
	}
	r.startedAt = time.Time{}
	wasHealth := r.health.status
	r.health = healthState{}
	r.usage, r.usageAt = supervisor.Usage{}, time.Time{}
	r.mu.Unlock()
	rt.healthChanged(r.id, wasHealth, "")
	if !opts.keepLease {
		rt.releaseLease(ctx, r.id)
	}
}

// Restart stops and starts a plugin with the guarantees of Disable and Enable. With
// placement, the copies other replicas run restart too (RestartRequested).
func (rt *Runtime) Restart(ctx context.Context, id, reason string, timeout time.Duration) (string, error) {
	p, err := rt.load(id)
	if err != nil {
		return "", err
	}
	unlock := rt.locks.lock(id)
	// The copy keeps its lease slot: it starts again here, not on another replica.
	rt.stop(ctx, rt.get(id), DisableOptions{Reason: reason, Graceful: true, Timeout: timeout, keepLease: true})
	unlock()
	if p.rec.Enabled {
		if err := rt.askRestartElsewhere(ctx, id, reason); err != nil {
			rt.log.Warn("could not ask the other replicas to restart their copies", "plugin_id", id, "error", err)
		}
	}
	if !p.rec.Enabled {
		yes := true
		_ = rt.SetStatus(ctx, id, registry.StatusInactive, "", &yes)
	}
	rt.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin restarting: " + orDefault(reason, "restart requested")})
	status, err := rt.Enable(ctx, id, EnableOptions{})
	if err != nil && !rt.runsHere(id) {
		rt.releaseLease(ctx, id) // the slot the stop kept: a start refused before it was taken
		// Stopped and not started again: the record must not say active.
		if cur, gerr := rt.reg.Get(id); gerr == nil && cur.Status() == registry.StatusActive {
			_ = rt.SetStatus(context.WithoutCancel(ctx), id, registry.StatusInactive, "restart failed: "+err.Error(), nil)
		}
	}
	return status, err
}

// StartEnabled starts every enabled plugin in dependency load order. Failures are
// recorded on each plugin and logged; they do not stop the others. With placement, a
// plugin another replica holds the lease of is not started here, and from now on this
// replica takes over the plugins whose lease is free or ran out (see takeOver).
func (rt *Runtime) StartEnabled(ctx context.Context) {
	rt.startTakeovers()
	for _, rp := range rt.reg.Snapshot().LoadOrder() {
		p := loaded{rec: rp.Record(), man: rp.Manifest(), p: rp}
		// A quarantined plugin (error) waits for an administrator.
		if !p.rec.Enabled || p.rec.Status == registry.StatusError || ctx.Err() != nil {
			continue
		}
		if _, err := rt.Enable(ctx, p.rec.ID, EnableOptions{}); err != nil {
			rt.log.Error("enabled plugin did not start", "plugin_id", p.rec.ID, "error", err)
			if ctx.Err() != nil {
				continue
			}
			// Visible in the API and the plugin's logs, not only on the server's stderr. A
			// start failure has recorded its reason already; the others (a dependency that
			// is missing or not active, a configuration that no longer passes) are
			// recorded here.
			reason := "did not start with the server: " + errorMessage(err)
			if cur, gerr := rt.reg.Get(p.rec.ID); gerr == nil && cur.Status() != registry.StatusError {
				_ = rt.SetStatus(context.WithoutCancel(ctx), p.rec.ID, registry.StatusError, reason, nil)
				rt.logs.Add(store.LogRecord{PluginID: p.rec.ID, Level: "ERROR", Message: "Plugin " + reason})
			}
		}
	}
}

// Shutdown stops every running plugin in reverse load order (gracefully, within timeout
// each), then waits for the runtime's goroutines; none starts after it. Plugins stay
// enabled, so they start again with the server. It runs once; later calls return at once.
func (rt *Runtime) Shutdown(ctx context.Context, timeout time.Duration) {
	rt.goMu.Lock()
	if rt.closed {
		rt.goMu.Unlock()
		return
	}
	rt.goMu.Unlock()
	// No plugin starts from now on; a start under way takes its plugin's lock, so the loop
	// below waits for it and then stops it.
	rt.shuttingDown.Store(true)
	// Twice: a start that passed StartLocked's check just before the flag was set is stopped
	// by the second pass.
	for range 2 {
		rt.stopAll(ctx, timeout)
	}
	rt.goMu.Lock()
	rt.closed = true
	rt.goMu.Unlock()
	rt.cancel()
	rt.wg.Wait()
}

// StopLocked stops a plugin's instances and process (see stop); the caller holds the
// plugin's lifecycle lock.
func (rt *Runtime) StopLocked(ctx context.Context, id string, opts DisableOptions) {
	rt.stop(ctx, rt.get(id), opts)
}

// ResetStatuses marks every active or loading plugin inactive, as the server starts: no
// plugin runs before the runtime starts it. With placement, a plugin of which another live
// replica holds a lease slot keeps its status: it runs there. It also reads every plugin's
// placement into memory (PlacementOf).
func (rt *Runtime) ResetStatuses(ctx context.Context) error {
	placed, err := rt.placements(ctx) // and keeps them in memory for the views
	if err != nil {
		return err
	}
	return rt.reg.Update(ctx, func(tx *registry.Tx) error {
		for _, p := range rt.reg.Snapshot().All() {
			if len(placed[p.ID()].elsewhere(rt.cfg.Replica)) > 0 {
				continue
			}
			cur, err := tx.Get(p.ID()) // as committed: another server may have changed it
			if err != nil {
				continue // uninstalled meanwhile
			}
			rec := cur.Record()
			if rec.Status == registry.StatusActive || rec.Status == registry.StatusLoading {
				rec.Status, rec.StatusReason = registry.StatusInactive, "the server restarted"
				if _, err := tx.Put(rec); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// stopAll stops every running plugin in reverse load order, each under its lifecycle lock.
func (rt *Runtime) stopAll(ctx context.Context, timeout time.Duration) {
	g := rt.reg.Snapshot()
	rt.mu.Lock()
	ids := make([]string, 0, len(rt.plugins))
	for id := range rt.plugins {
		ids = append(ids, id)
	}
	rt.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return g.Order(ids[i]) > g.Order(ids[j]) })
	for _, id := range ids {
		unlock := rt.locks.lock(id)
		r := rt.get(id)
		r.mu.Lock()
		running := r.proc != nil || rt.pres.Count(r.id) > 0
		r.mu.Unlock()
		if running || rt.holds(id) {
			rt.stop(ctx, r, DisableOptions{Reason: "server shutting down", Graceful: true, Timeout: timeout})
		}
		unlock()
	}
}
