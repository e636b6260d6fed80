package runtime

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// attach hears of a connected instance (from presence). Its first healthy report makes a
// launching plugin ready, and an external plugin active.
func (rt *Runtime) attach(inst presence.Instance) {
	r := rt.get(inst.PluginID())
	rt.spawn(func() {
		ctx, cancel := context.WithTimeout(rt.ctx, rt.cfg.HealthTimeout)
		defer cancel()
		checks, err := inst.AskHealth(ctx)
		if err != nil {
			return
		}
		rt.recordHealth(r, checks, nil)
		if overall(checks) == HealthUnhealthy {
			return
		}
		r.mu.Lock()
		// Under r.mu: two instances attaching at once must not both close it.
		if r.ready != nil {
			select {
			case <-r.ready:
			default:
				close(r.ready)
			}
		}
		r.mu.Unlock()
		rt.activateExternal(r.id)
	})
}

// activateExternal makes an enabled external plugin active once a connected instance of it
// reports healthy: its first instance (attach), or, when that one's first check failed or
// timed out (a plugin still warming up, a loaded machine), any later report, asked
// (checkNow) or sent unasked (ObserveHealth). A plugin in error (stopped with its
// dependency, for example) waits for an administrator.
func (rt *Runtime) activateExternal(id string) {
	p, err := rt.load(id)
	if err != nil || !p.man.External || !p.rec.Enabled || rt.pres.Count(id) == 0 {
		return
	}
	if p.rec.Status == registry.StatusActive || p.rec.Status == registry.StatusError {
		return
	}
	_ = rt.SetStatus(rt.ctx, id, registry.StatusActive, "", nil)
}

// detach hears of an instance whose session ended (from presence): an external plugin left
// without instances is inactive.
func (rt *Runtime) detach(inst presence.Instance) {
	if rt.pres.Count(inst.PluginID()) > 0 || !rt.isExternal(inst.PluginID()) {
		return
	}
	if p, err := rt.load(inst.PluginID()); err == nil && p.rec.Enabled {
		_ = rt.SetStatus(rt.ctx, inst.PluginID(), registry.StatusInactive, "no instance connected", nil)
	}
}

func (rt *Runtime) isExternal(id string) bool {
	p, err := rt.load(id)
	return err == nil && p.man.External
}

// ObserveHealth records a health report a plugin sent unasked.
func (rt *Runtime) ObserveHealth(pluginID string, checks []presence.Check) {
	rt.recordHealth(rt.get(pluginID), checks, nil)
	if overall(checks) != HealthUnhealthy {
		rt.activateExternal(pluginID)
	}
}

// recordHealth records a health report (or a failed check, err); see healthChanged.
func (rt *Runtime) recordHealth(r *running, checks []presence.Check, err error) {
	r.mu.Lock()
	was := r.health.status
	if err != nil {
		r.health.misses++
		r.health.status = HealthUnhealthy
	} else {
		r.health = healthState{status: overall(checks), lastCheck: time.Now().UTC(), checks: checks}
	}
	now := r.health.status
	r.mu.Unlock()
	rt.healthChanged(r.id, was, now)
}

// healthChanged emits plugin.health_changed when a plugin's health went from was to now
// (recorded statuses: "" is unknown), so that watchers (the console) need not poll.
func (rt *Runtime) healthChanged(id, was, now string) {
	if healthName(was) != healthName(now) {
		rt.notify(rt.ctx, "plugin.health_changed", map[string]any{"plugin_id": id, "health": healthName(now), "previous": healthName(was)})
	}
}

// healthName is a recorded health status as it is shown: "unknown" before any report.
func healthName(status string) string {
	if status == "" {
		return HealthUnknown
	}
	return status
}

// overall is the health of a set of checks: any fail is unhealthy, any warning degraded.
func overall(checks []presence.Check) string {
	status := HealthHealthy
	for _, c := range checks {
		switch c.Status {
		case "fail":
			return HealthUnhealthy
		case "warning":
			status = HealthDegraded
		}
	}
	return status
}

// healthLoop asks the plugin for its health on an interval; after HealthMisses misses in a
// row the process is killed, and supervise restarts it.
func (rt *Runtime) healthLoop(r *running, stop chan struct{}) {
	ticker := time.NewTicker(rt.cfg.HealthInterval)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-rt.ctx.Done():
			return
		case <-ticker.C:
		}
		r.mu.Lock()
		proc := r.proc
		launching := r.ready != nil && !isClosed(r.ready)
		r.mu.Unlock()
		if launching {
			// A restart is under way: its start timeout bounds it, and until it is ready
			// it has no instance to ask. Misses counted now would kill it as it starts.
			continue
		}
		if proc != nil {
			limit := 0
			if p, err := rt.load(r.id); err == nil {
				limit = p.rec.Limits.MemoryMB
			}
			rt.sample(r, proc, limit)
		}
		if _, err := rt.checkNow(r); err == nil {
			continue
		}
		r.mu.Lock()
		misses := r.health.misses
		proc = r.proc
		r.mu.Unlock()
		if misses >= rt.cfg.HealthMisses && proc != nil {
			rt.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR",
				Message: fmt.Sprintf("Plugin missed %d health checks in a row; restarting it", misses)})
			proc.Stop(rt.ctx, rt.cfg.KillGrace)
		}
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// checkNow asks every connected instance for its health and records the result.
func (rt *Runtime) checkNow(r *running) ([]presence.Check, error) {
	sessions := rt.pres.Instances(r.id)
	if len(sessions) == 0 {
		err := errs.New(errs.PluginUnavailable, "plugin %s has no connected instance", r.id)
		rt.recordHealth(r, nil, err)
		return nil, err
	}
	var all []presence.Check
	for _, s := range sessions {
		ctx, cancel := context.WithTimeout(rt.ctx, rt.cfg.HealthTimeout)
		start := time.Now()
		checks, err := s.AskHealth(ctx)
		cancel()
		if err != nil {
			rt.recordHealth(r, nil, err)
			return nil, err
		}
		for i := range checks {
			if checks[i].ResponseTimeMS == nil {
				ms := float64(time.Since(start).Microseconds()) / 1000
				checks[i].ResponseTimeMS = &ms
			}
		}
		all = append(all, checks...)
	}
	rt.recordHealth(r, all, nil)
	if overall(all) != HealthUnhealthy {
		rt.activateExternal(r.id)
	}
	return all, nil
}

// Info is what the runtime knows of a plugin, for the API. Usage and CPUPercent are
// from the last sample of the process (at launch, then every health interval).
type Info struct {
	PID     int
	Running bool
	// CPUPercent is the plugin's CPU use averaged since it started (100 = one core).
	CPUPercent float64
	Uptime     time.Duration
	Restarts   int
	Backoff    time.Duration
	Instances  int
	// Connected are the instances connected to this replica, ordered by instance id (the
	// instances connected to other replicas are not known here).
	Connected  []ConnectedInstance
	Health     string
	LastCheck  time.Time
	Checks     []presence.Check
	Enforced   supervisor.Enforcement
	Usage      supervisor.Usage
	StartedAt  time.Time
	LastOutput []string
}

// ConnectedInstance is an instance of a plugin and the replica it is connected to.
type ConnectedInstance struct {
	InstanceID string
	Replica    string
}

// Info returns the live state of a plugin.
func (rt *Runtime) Info(id string) Info {
	r := rt.get(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	info := Info{Restarts: r.restarts, Backoff: r.backoff, Connected: rt.connected(id),
		Health: r.health.status, LastCheck: r.health.lastCheck, Checks: slices.Clone(r.health.checks),
		StartedAt: r.startedAt, LastOutput: slices.Clone(r.lastLines)}
	info.Instances = len(info.Connected)
	info.Health = healthName(info.Health)
	if r.proc != nil {
		info.PID, info.Running = r.proc.PID(), true
		info.Enforced = r.proc.Enforced()
		if !r.usageAt.IsZero() {
			info.Usage = r.usage
			if !r.startedAt.IsZero() {
				if secs := r.usageAt.Sub(r.startedAt).Seconds(); secs > 0 {
					info.CPUPercent = r.usage.CPUSeconds / secs * 100
				}
			}
		}
	}
	if !r.startedAt.IsZero() {
		info.Uptime = time.Since(r.startedAt)
	}
	return info
}

// connected lists the instances of plugin id connected to this replica.
func (rt *Runtime) connected(id string) []ConnectedInstance {
	insts := rt.pres.Instances(id)
	out := make([]ConnectedInstance, len(insts))
	for i, inst := range insts {
		out[i] = ConnectedInstance{InstanceID: inst.InstanceID(), Replica: rt.cfg.Replica}
	}
	slices.SortStableFunc(out, func(a, b ConnectedInstance) int { return strings.Compare(a.InstanceID, b.InstanceID) })
	return out
}

// CheckHealth asks a running plugin for fresh health checks.
func (rt *Runtime) CheckHealth(ctx context.Context, id string) (Info, error) {
	p, err := rt.load(id)
	if err != nil {
		return Info{}, err
	}
	// A disabled plugin is not expected to answer: its health stays unknown, rather than
	// turning unhealthy for want of an instance. A failed check of an enabled one is in
	// the result (unhealthy), not an error.
	if p.rec.Enabled {
		_, _ = rt.checkNow(rt.get(id))
	}
	return rt.Info(id), nil
}

// PushConfig sends a new configuration to every connected instance of a plugin and waits
// for their answers; the first rejection is returned as a configuration error.
func (rt *Runtime) PushConfig(ctx context.Context, id string, cfg map[string]any, updated []string, restart bool) error {
	for _, s := range rt.pres.Instances(id) {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ack, err := s.PushConfig(actx, cfg, updated, restart)
		cancel()
		if err != nil {
			return err
		}
		if !ack.Accepted {
			return errs.New(errs.PluginConfigurationError, "plugin %s rejected the configuration: %s", id, orDefault(ack.Reason, "no reason given"))
		}
	}
	return nil
}

// Health values of a plugin.
const (
	HealthHealthy   = "healthy"
	HealthDegraded  = "degraded"
	HealthUnhealthy = "unhealthy"
	HealthUnknown   = "unknown"
)
