package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// RuntimeConfig tunes how plugins are run and supervised. Zero fields take defaults.
type RuntimeConfig struct {
	// HostURL returns the URL plugins connect back to (NEXUS_HOST); it is called at each
	// launch, so it may be set once the server listens.
	HostURL func() string
	// HealthInterval is how often running plugins are asked for their health (10s).
	HealthInterval time.Duration
	// HealthTimeout bounds one health check (5s).
	HealthTimeout time.Duration
	// HealthMisses is how many health checks in a row a plugin may miss before it is
	// restarted (3).
	HealthMisses int
	// CrashLoopCount crashes within CrashLoopWindow quarantine a plugin (5 within 2m).
	CrashLoopCount  int
	CrashLoopWindow time.Duration
	// BackoffMin and BackoffMax bound the delay before restarting a crashed plugin
	// (500ms, 30s); it doubles with each crash, with jitter.
	BackoffMin, BackoffMax time.Duration
	// KillGrace is how long a plugin may take to exit after SIGTERM before SIGKILL (5s).
	KillGrace time.Duration
	// MaxLogLineBytes cuts longer output lines (16 KiB).
	MaxLogLineBytes int
}

func (c RuntimeConfig) withDefaults() RuntimeConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HealthInterval, 10*time.Second)
	def(&c.HealthTimeout, 5*time.Second)
	def(&c.CrashLoopWindow, 2*time.Minute)
	def(&c.BackoffMin, 500*time.Millisecond)
	def(&c.BackoffMax, 30*time.Second)
	def(&c.KillGrace, 5*time.Second)
	if c.HealthMisses <= 0 {
		c.HealthMisses = 3
	}
	if c.CrashLoopCount <= 0 {
		c.CrashLoopCount = 5
	}
	if c.MaxLogLineBytes <= 0 {
		c.MaxLogLineBytes = 16 << 10
	}
	if c.HostURL == nil {
		c.HostURL = func() string { return "http://127.0.0.1:8080" }
	}
	return c
}

// tokenIssuer mints and revokes the plugin tokens handed to launched plugins.
type tokenIssuer interface {
	Create(ctx context.Context, name string, role store.Role, pluginID string) (string, store.Token, error)
	Revoke(ctx context.Context, id string) error
}

// pluginRuntime runs and supervises plugins. Each plugin's state is a *running, guarded by
// its own mutex; lifecycle operations on one plugin are serialised by its op mutex.
type pluginRuntime struct {
	h      *Host
	cfg    RuntimeConfig
	tokens tokenIssuer
	ctx    context.Context // the host's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup // supervision and health goroutines

	mu      sync.Mutex // guards plugins
	plugins map[string]*running
}

// running is the live state of one plugin.
type running struct {
	id string

	mu        sync.Mutex // guards everything below
	proc      *supervisor.Process
	gen       int // launch generation: events of older launches are ignored
	stopping  bool
	sessions  map[string]*session
	ready     chan struct{} // closed when the current launch is ready
	startedAt time.Time
	restarts  int
	crashes   []time.Time
	backoff   time.Duration
	tokenID   string
	lastLines []string // the newest output lines, for failure reasons
	health    healthState
	stopSup   chan struct{} // closed to stop the supervision loop of the current run
	// overLimit is why the host stopped the current process for exceeding a resource
	// limit; supervise then keeps it stopped, in error.
	overLimit string
	// usage is the current process's resource use at its last sample (at launch, then on
	// every health interval), taken at usageAt: views read it instead of /proc.
	usage   supervisor.Usage
	usageAt time.Time
}

type healthState struct {
	status    string
	lastCheck time.Time
	checks    []Check
	misses    int
}

const lastLinesKept = 10

func newRuntime(h *Host, cfg RuntimeConfig, tokens tokenIssuer) *pluginRuntime {
	ctx, cancel := context.WithCancel(context.Background())
	return &pluginRuntime{h: h, cfg: cfg.withDefaults(), tokens: tokens, ctx: ctx, cancel: cancel, plugins: map[string]*running{}}
}

func (rt *pluginRuntime) get(id string) *running {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	r := rt.plugins[id]
	if r == nil {
		r = &running{id: id, sessions: map[string]*session{}}
		rt.plugins[id] = r
	}
	return r
}

// forget drops the live state of an uninstalled plugin (it has been stopped).
func (rt *pluginRuntime) forget(id string) {
	rt.mu.Lock()
	delete(rt.plugins, id)
	rt.mu.Unlock()
}

// setStatus records a plugin's status and reason in the store.
// Entering the error status emits plugin.error.
func (rt *pluginRuntime) setStatus(ctx context.Context, id, status, reason string, enabled *bool) error {
	var was string
	err := rt.h.write(ctx, func(tx store.Tx) error {
		rec, err := tx.Plugin(id)
		if err != nil {
			return err
		}
		was = rec.Status
		rec.Status, rec.StatusReason = status, reason
		if enabled != nil {
			rec.Enabled = *enabled
		}
		return tx.PutPlugin(rec)
	})
	if err == nil && status == StatusError && was != StatusError {
		rt.h.system(ctx, "plugin.error", map[string]any{"plugin_id": id, "reason": reason})
	}
	return err
}

// endSessions ends every session of a plugin (see session.end).
func (rt *pluginRuntime) endSessions(id string, why error) {
	for _, s := range rt.sessionsOf(id) {
		s.end(why)
	}
}

// endTokenSessions ends the sessions opened with a token that was revoked.
func (rt *pluginRuntime) endTokenSessions(tokenID string) {
	rt.mu.Lock()
	var ended []*session
	for _, r := range rt.plugins {
		r.mu.Lock()
		for _, s := range r.sessions {
			if s.tokenID == tokenID {
				ended = append(ended, s)
			}
		}
		r.mu.Unlock()
	}
	rt.mu.Unlock()
	for _, s := range ended {
		s.end(errs.New(errs.Unauthenticated, "the token of this session was revoked"))
	}
}

// sessionTokens returns the token ids of the sessions connected now.
func (rt *pluginRuntime) sessionTokens() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var ids []string
	for _, r := range rt.plugins {
		r.mu.Lock()
		for _, s := range r.sessions {
			if s.tokenID != "" && !slices.Contains(ids, s.tokenID) {
				ids = append(ids, s.tokenID)
			}
		}
		r.mu.Unlock()
	}
	return ids
}

// sessionsOf returns the sessions of a plugin connected now.
func (rt *pluginRuntime) sessionsOf(id string) []*session {
	rt.mu.Lock()
	r := rt.plugins[id]
	rt.mu.Unlock()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s)
	}
	return out
}

// connected returns how many instances of a plugin are connected to this host.
func (rt *pluginRuntime) connected(id string) int {
	rt.mu.Lock()
	r := rt.plugins[id]
	rt.mu.Unlock()
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// announced returns the services and message types a plugin's connected instances announced
// in their hello, and how many instances are connected.
func (rt *pluginRuntime) announced(id string) (services, types []string, n int) {
	rt.mu.Lock()
	r := rt.plugins[id]
	rt.mu.Unlock()
	if r == nil {
		return nil, nil, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sessions {
		for _, v := range s.services {
			if !slices.Contains(services, v) {
				services = append(services, v)
			}
		}
		for _, v := range s.messageTypes {
			if !slices.Contains(types, v) {
				types = append(types, v)
			}
		}
	}
	return services, types, len(r.sessions)
}

// EnableOptions says how to enable a plugin.
type EnableOptions struct {
	// EnableDependencies also enables inactive dependencies (in load order).
	EnableDependencies bool
}

// Enable enables a plugin and starts it. For a host-launched plugin it returns once the
// plugin is active (it said hello and passed its first health check) or has failed to
// start within its start timeout (PLUGIN_STARTUP_FAILED with the reason). An external
// plugin becomes active when an instance connects.
func (h *Host) Enable(ctx context.Context, id string, opts EnableOptions) (string, error) {
	return h.enable(ctx, id, opts, map[string]bool{})
}

func (h *Host) enable(ctx context.Context, id string, opts EnableOptions, visiting map[string]bool) (string, error) {
	if visiting[id] {
		return "", errs.New(errs.PluginDependencyError, "dependency cycle through %s", id)
	}
	visiting[id] = true
	p, err := h.load(ctx, id)
	if err != nil {
		return "", err
	}
	// Dependencies first: each must be active, or be enabled when asked.
	for _, dep := range p.man.DependencyIDs() {
		d, err := h.load(ctx, dep)
		if errs.Is(err, errs.PluginNotFound) {
			return "", errs.New(errs.PluginDependencyError, "plugin %s depends on %s, which is not installed", id, dep).WithDetail("missing", []string{dep})
		}
		if err != nil {
			return "", err
		}
		if d.rec.Status == StatusActive {
			continue
		}
		if !opts.EnableDependencies {
			return "", errs.New(errs.PluginDependencyError, "plugin %s depends on %s, which is %s; enable it first or pass enable_dependencies", id, dep, d.rec.Status).
				WithDetail("inactive", []string{dep})
		}
		if _, err := h.enable(ctx, dep, opts, visiting); err != nil {
			return "", fmt.Errorf("enable dependency %s: %w", dep, err)
		}
	}
	defer h.locks.lock(id)()
	return h.startLocked(ctx, id)
}

// startLocked starts an enabled (or to be enabled) plugin whose lifecycle lock the caller
// holds; its dependencies must be active already.
func (h *Host) startLocked(ctx context.Context, id string) (string, error) {
	p, err := h.load(ctx, id)
	if err != nil {
		return "", err
	}
	for _, dep := range p.man.DependencyIDs() {
		if d, err := h.load(ctx, dep); err != nil || d.rec.Status != StatusActive {
			status := "not installed"
			if err == nil {
				status = d.rec.Status
			}
			return "", errs.New(errs.PluginDependencyError, "plugin %s depends on %s, which is %s", id, dep, status).
				WithDetail("inactive", []string{dep})
		}
	}
	values, err := h.openConfig(p)
	if err != nil {
		return "", err
	}
	if problems := p.man.Schema().Validate(values); len(problems) > 0 {
		return "", errs.WithFields(errs.PluginConfigurationError, "plugin "+id+" cannot start: "+configProblemMessage(problems)[len("invalid configuration: "):], problems)
	}
	r := h.rt.get(id)
	r.mu.Lock()
	if r.proc != nil && !r.stopping {
		r.mu.Unlock()
		return StatusActive, nil // already running
	}
	r.crashes, r.restarts, r.backoff = nil, 0, 0
	r.mu.Unlock()
	yes := true
	if p.man.External {
		if err := h.rt.setStatus(ctx, id, h.rt.externalStatus(r), "", &yes); err != nil {
			return "", errs.Wrap(errs.Internal, err, "could not record the plugin state")
		}
		h.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin enabled (external: it becomes active when an instance connects)"})
		h.system(ctx, "plugin.enabled", map[string]any{"plugin_id": id, "version": p.rec.Version})
		return h.rt.externalStatus(r), nil
	}
	if err := h.rt.setStatus(ctx, id, StatusLoading, "", &yes); err != nil {
		return "", errs.Wrap(errs.Internal, err, "could not record the plugin state")
	}
	h.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin enabled; starting"})
	if err := h.rt.start(ctx, r, p); err != nil {
		return "", err
	}
	h.system(ctx, "plugin.enabled", map[string]any{"plugin_id": id, "version": p.rec.Version})
	return StatusActive, nil
}

func (rt *pluginRuntime) externalStatus(r *running) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sessions) > 0 && r.health.status != HealthUnhealthy && !r.health.lastCheck.IsZero() {
		return StatusActive
	}
	return StatusInactive
}

// start launches a host-launched plugin, waits until it is ready, and starts its
// supervision. On failure the plugin is left stopped, in error, and the error says why.
func (rt *pluginRuntime) start(ctx context.Context, r *running, p loaded) error {
	if err := rt.launch(ctx, r, p); err != nil {
		reason := errorMessage(err)
		_ = rt.setStatus(context.WithoutCancel(ctx), r.id, StatusError, reason, nil)
		rt.h.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin failed to start: " + reason})
		return err
	}
	r.mu.Lock()
	stop := make(chan struct{})
	r.stopSup = stop
	r.mu.Unlock()
	rt.wg.Add(2)
	go rt.supervise(r, stop)
	go rt.healthLoop(r, stop)
	return nil
}

// launch starts the plugin process and waits for it to become ready.
func (rt *pluginRuntime) launch(ctx context.Context, r *running, p loaded) error {
	h := rt.h
	token, tok, err := rt.tokens.Create(ctx, "runtime:"+r.id, store.RolePlugin, r.id)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "could not issue the plugin token")
	}
	values, err := h.openConfig(p)
	if err != nil {
		return err
	}
	h.logs.SetSecrets(r.id, secretStrings(values, p.man.Schema().SecretFields()))
	home := filepath.Join(h.dataDir, "plugin-data", r.id)
	if err := os.MkdirAll(filepath.Join(home, "tmp"), 0o700); err != nil {
		return errs.Wrap(errs.Internal, err, "could not create the plugin's data directory")
	}
	r.mu.Lock()
	r.gen++
	gen := r.gen
	oldToken := r.tokenID
	r.tokenID = tok.ID
	r.ready = make(chan struct{})
	ready := r.ready
	r.stopping = false
	r.lastLines = nil
	r.health = healthState{}
	r.mu.Unlock()
	if oldToken != "" {
		_ = rt.tokens.Revoke(context.WithoutCancel(ctx), oldToken)
	}
	spec := supervisor.Spec{
		PluginID: r.id,
		Dir:      h.abs(p.rec.Dir),
		Path:     filepath.Join(h.abs(p.rec.Dir), filepath.FromSlash(p.man.EntryPoint)),
		Args:     p.man.Args,
		Env: []string{
			"NEXUS_PLUGIN_ID=" + r.id,
			"NEXUS_HOST=" + rt.cfg.HostURL(),
			"NEXUS_PLUGIN_TOKEN=" + token,
			"HOME=" + home,
			"TMPDIR=" + filepath.Join(home, "tmp"),
			"PATH=/usr/local/bin:/usr/bin:/bin",
		},
		Limits: supervisor.Limits{
			FileHandles: p.rec.Limits.FileHandles, MemoryMB: kernelMemoryLimit(p.rec.Limits.MemoryMB), CPUPercent: p.rec.Limits.CPUPercent,
		},
		MaxLineBytes: rt.cfg.MaxLogLineBytes,
		Output: func(stream, line string, truncated bool) {
			r.mu.Lock()
			r.lastLines = append(r.lastLines, line)
			if len(r.lastLines) > lastLinesKept {
				r.lastLines = r.lastLines[len(r.lastLines)-lastLinesKept:]
			}
			r.mu.Unlock()
			h.logs.AddLine(r.id, stream, line, truncated)
		},
	}
	launched := time.Now()
	proc, err := supervisor.Start(spec)
	if err != nil {
		return errs.Wrap(errs.PluginStartupFailed, err, "plugin %s could not be started: %v", r.id, err)
	}
	r.mu.Lock()
	r.proc = proc
	r.mu.Unlock()
	timeout := time.Duration(p.man.StartTimeoutSeconds) * time.Second
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	fail := func(format string, args ...any) error {
		st := proc.Stop(context.WithoutCancel(ctx), rt.cfg.KillGrace)
		r.mu.Lock()
		if r.gen == gen {
			r.proc = nil
		}
		lines := slices.Clone(r.lastLines)
		r.mu.Unlock()
		reason := fmt.Sprintf(format, args...)
		e := errs.New(errs.PluginStartupFailed, "plugin %s failed to start: %s", r.id, reason).
			WithDetail("exit", st.String())
		if len(lines) > 0 {
			e.Message += "; last output: " + strings.Join(lines, " | ")
			e.WithDetail("last_log_lines", lines)
		}
		return e
	}
	select {
	case <-ready:
	case <-proc.Done():
		return fail("%s before it became ready", proc.Exit().String())
	case <-timer.C:
		return fail("not ready within %s (it must connect, say hello and pass its first health check)", timeout)
	case <-ctx.Done():
		return fail("the request was canceled")
	case <-rt.ctx.Done():
		return fail("the server is shutting down")
	}
	now := time.Now().UTC()
	r.mu.Lock()
	r.startedAt = now
	r.overLimit = ""
	r.mu.Unlock()
	h.metrics.Started(r.id, now)
	rt.sample(r, proc, p.rec.Limits.MemoryMB)
	if err := rt.setStatus(context.WithoutCancel(ctx), r.id, StatusActive, "", nil); err != nil {
		return fail("could not record the plugin state: %v", err)
	}
	h.logs.Add(store.LogRecord{PluginID: r.id, Level: "INFO", Message: "Plugin active",
		Metadata: mustJSON(map[string]any{"pid": proc.PID(), "startup_ms": now.Sub(launched).Milliseconds()})})
	return nil
}

// attach registers a connected session. During a launch, its first healthy report makes
// the plugin ready.
func (rt *pluginRuntime) attach(s *session) {
	r := rt.get(s.pluginID)
	r.mu.Lock()
	r.sessions[s.id] = s
	r.mu.Unlock()
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		ctx, cancel := context.WithTimeout(rt.ctx, rt.cfg.HealthTimeout)
		defer cancel()
		checks, err := s.askHealth(ctx)
		if err != nil {
			return
		}
		rt.recordHealth(r, checks, nil)
		if overall(checks) == HealthUnhealthy {
			return
		}
		r.mu.Lock()
		ready := r.ready
		r.mu.Unlock()
		if ready != nil {
			select {
			case <-ready:
			default:
				close(ready)
			}
		}
		if rt.isExternal(r.id) {
			_ = rt.setStatus(rt.ctx, r.id, StatusActive, "", nil)
		}
	}()
}

// detach forgets a session that ended.
func (rt *pluginRuntime) detach(s *session, err error) {
	r := rt.get(s.pluginID)
	r.mu.Lock()
	delete(r.sessions, s.id)
	left := len(r.sessions)
	r.mu.Unlock()
	if left == 0 && rt.isExternal(r.id) {
		if p, lerr := rt.h.load(rt.ctx, r.id); lerr == nil && p.rec.Enabled {
			_ = rt.setStatus(rt.ctx, r.id, StatusInactive, "no instance connected", nil)
		}
	}
}

func (rt *pluginRuntime) isExternal(id string) bool {
	p, err := rt.h.load(rt.ctx, id)
	return err == nil && p.man.External
}

func (rt *pluginRuntime) unsolicitedHealth(s *session, checks []Check) {
	rt.recordHealth(rt.get(s.pluginID), checks, nil)
}

func (rt *pluginRuntime) recordHealth(r *running, checks []Check, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.health.misses++
		r.health.status = HealthUnhealthy
		return
	}
	r.health = healthState{status: overall(checks), lastCheck: time.Now().UTC(), checks: checks}
}

// overall is the health of a set of checks: any fail is unhealthy, any warning degraded.
func overall(checks []Check) string {
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
func (rt *pluginRuntime) healthLoop(r *running, stop chan struct{}) {
	defer rt.wg.Done()
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
		r.mu.Unlock()
		if proc != nil {
			limit := 0
			if p, err := rt.h.load(rt.ctx, r.id); err == nil {
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
			rt.h.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR",
				Message: fmt.Sprintf("Plugin missed %d health checks in a row; restarting it", misses)})
			proc.Stop(rt.ctx, rt.cfg.KillGrace)
		}
	}
}

// memoryEnforcement is how memory limits are enforced here: by the kernel with a cgroup
// when the host allows it; otherwise by watching resident memory ("monitor") and stopping
// the plugin over its limit. Address-space and data rlimits are not used: runtimes such as
// Go's reserve far more than they use and fail at start under any useful limit.
func memoryEnforcement(caps supervisor.Enforcement) string {
	if caps.Memory == supervisor.EnforcedByCgroup {
		return supervisor.EnforcedByCgroup
	}
	return "monitor"
}

// kernelMemoryLimit is the memory limit handed to the supervisor: only when a cgroup
// enforces it (see memoryEnforcement); the host watches resident memory either way.
func kernelMemoryLimit(mb int) int {
	if memoryEnforcement(supervisor.Capabilities()) == supervisor.EnforcedByCgroup {
		return mb
	}
	return 0
}

// sample records a running process's resource use, and stops it when it is over its
// memory limit (the limit is enforced by watching its resident memory).
func (rt *pluginRuntime) sample(r *running, proc *supervisor.Process, limitMB int) {
	u, err := proc.Usage()
	if err != nil {
		return
	}
	now := time.Now()
	r.mu.Lock()
	if r.proc == proc {
		r.usage, r.usageAt = u, now
	}
	r.mu.Unlock()
	rt.h.metrics.ObserveResources(r.id, u.RSSBytes, u.CPUSeconds, u.OpenFiles, now)
	if limitMB <= 0 || u.RSSBytes <= int64(limitMB)<<20 {
		return
	}
	reason := fmt.Sprintf("stopped: resident memory %d MiB exceeds its limit of %d MiB", u.RSSBytes>>20, limitMB)
	r.mu.Lock()
	r.overLimit = reason
	r.mu.Unlock()
	rt.h.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin " + reason})
	proc.Stop(rt.ctx, rt.cfg.KillGrace)
}

// checkNow asks every connected instance for its health and records the result.
func (rt *pluginRuntime) checkNow(r *running) ([]Check, error) {
	r.mu.Lock()
	sessions := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		sessions = append(sessions, s)
	}
	r.mu.Unlock()
	if len(sessions) == 0 {
		err := errs.New(errs.PluginUnavailable, "plugin %s has no connected instance", r.id)
		rt.recordHealth(r, nil, err)
		return nil, err
	}
	var all []Check
	for _, s := range sessions {
		ctx, cancel := context.WithTimeout(rt.ctx, rt.cfg.HealthTimeout)
		start := time.Now()
		checks, err := s.askHealth(ctx)
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
	return all, nil
}

// supervise waits for the plugin process to exit; an exit that nobody asked for is a
// crash: the plugin is restarted with exponential backoff and jitter, and quarantined in
// error after a crash loop.
func (rt *pluginRuntime) supervise(r *running, stop chan struct{}) {
	defer rt.wg.Done()
	for {
		r.mu.Lock()
		proc := r.proc
		r.mu.Unlock()
		if proc != nil {
			select {
			case <-proc.Done():
			case <-stop:
				return
			case <-rt.ctx.Done():
				return
			}
		}
		r.mu.Lock()
		if r.stopping {
			r.mu.Unlock()
			return
		}
		rt.h.metrics.Stopped(r.id)
		if proc != nil && proc.Exit().OOMKilled && r.overLimit == "" {
			r.overLimit = "stopped: " + proc.Exit().String()
		}
		if r.overLimit != "" {
			reason := r.overLimit
			r.proc = nil
			r.mu.Unlock()
			_ = rt.setStatus(rt.ctx, r.id, StatusError, reason, nil)
			return
		}
		exit := "it did not start"
		if proc != nil {
			exit = proc.Exit().String()
		}
		now := time.Now().UTC()
		r.proc = nil
		r.crashes = append(r.crashes, now)
		cut := now.Add(-rt.cfg.CrashLoopWindow)
		r.crashes = slices.DeleteFunc(r.crashes, func(t time.Time) bool { return t.Before(cut) })
		crashes := len(r.crashes)
		lines := slices.Clone(r.lastLines)
		r.backoff = nextBackoff(r.backoff, rt.cfg.BackoffMin, rt.cfg.BackoffMax)
		delay := r.backoff
		r.mu.Unlock()

		last := ""
		if len(lines) > 0 {
			last = "; last output: " + strings.Join(lines, " | ")
		}
		if crashes >= rt.cfg.CrashLoopCount {
			reason := fmt.Sprintf("quarantined after %d crashes within %s; last exit: %s%s", crashes, rt.cfg.CrashLoopWindow, exit, last)
			_ = rt.setStatus(rt.ctx, r.id, StatusError, reason, nil)
			rt.h.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin " + reason})
			return
		}
		reason := fmt.Sprintf("crashed (%s); restarting in %s", exit, delay.Round(time.Millisecond))
		_ = rt.setStatus(rt.ctx, r.id, StatusLoading, reason, nil)
		rt.h.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin " + reason + last})
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-stop:
			timer.Stop()
			return
		case <-rt.ctx.Done():
			timer.Stop()
			return
		}
		p, err := rt.h.load(rt.ctx, r.id)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.restarts++
		r.mu.Unlock()
		rt.h.metrics.Restarted(r.id)
		if err := rt.launch(rt.ctx, r, p); err != nil {
			rt.h.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Restart failed: " + errorMessage(err)})
			r.mu.Lock()
			r.proc = nil
			r.mu.Unlock()
		}
	}
}

// nextBackoff doubles the previous delay within [min, max] and adds up to 20% jitter.
func nextBackoff(prev, min, max time.Duration) time.Duration {
	d := prev * 2
	if d < min {
		d = min
	}
	if d > max {
		d = max
	}
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

// DisableOptions says how to stop a plugin.
type DisableOptions struct {
	Reason string
	// Graceful sends a shutdown frame first and waits up to Timeout for the plugin to exit.
	Graceful bool
	Timeout  time.Duration
	// Force disables even when active plugins depend on this one.
	Force bool
}

// Disable stops a plugin and keeps it disabled. It returns once the process is gone.
func (h *Host) Disable(ctx context.Context, id string, opts DisableOptions) error {
	unlock, dependents := h.lockWithDependents(id)
	defer unlock()
	snap := h.reg.Snapshot()
	if _, err := snap.Get(id); err != nil {
		return err
	}
	if !opts.Force {
		var active []string
		for _, dep := range snap.Dependents(id) {
			if p, err := snap.Get(dep); err == nil && p.Enabled() && p.Status() == StatusActive {
				active = append(active, dep)
			}
		}
		if len(active) > 0 {
			return errs.New(errs.PluginDependencyError, "active plugins %s depend on %s; disable them first or pass force", strings.Join(active, ", "), id).
				WithDetail("dependents", active)
		}
	}
	h.stopDependents(ctx, id, dependents, "disabled")
	reason := opts.Reason
	if reason == "" {
		reason = "disabled"
	}
	opts.Reason = reason
	h.rt.stop(ctx, h.rt.get(id), opts)
	no := false
	if err := h.rt.setStatus(context.WithoutCancel(ctx), id, StatusInactive, reason, &no); err != nil {
		return errs.Wrap(errs.Internal, err, "could not record the plugin state")
	}
	h.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin disabled: " + reason})
	h.msg.forget(id)
	h.system(ctx, "plugin.disabled", map[string]any{"plugin_id": id, "reason": reason})
	return nil
}

// lockWithDependents takes the lifecycle locks of a plugin and of every installed plugin that
// depends on it, directly or not, in one call (so in lock order); it returns the dependents,
// deepest first (reverse load order).
func (h *Host) lockWithDependents(id string) (unlock func(), dependents []string) {
	for {
		deps := dependentsOf(h.reg.Snapshot(), id)
		unlock := h.locks.lock(append(slices.Clone(deps), id)...)
		// A plugin installed meanwhile that depends on id: take its lock too.
		if slices.Equal(dependentsOf(h.reg.Snapshot(), id), deps) {
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

// stopDependents stops the running dependents of a plugin that is being disabled or
// uninstalled by force (the caller holds their locks, see lockWithDependents): a plugin does
// not run without its dependencies. Each stays enabled, in error with the reason on record,
// until an administrator enables it again.
func (h *Host) stopDependents(ctx context.Context, id string, dependents []string, verb string) {
	for _, d := range dependents {
		p, err := h.reg.Get(d)
		r := h.rt.get(d)
		r.mu.Lock()
		running := r.proc != nil || len(r.sessions) > 0
		r.mu.Unlock()
		if err != nil || !running && p.Status() != StatusActive && p.Status() != StatusLoading {
			continue
		}
		reason := fmt.Sprintf("stopped because its dependency %s was %s by force; enable it again once %s is back", id, verb, id)
		h.rt.stop(ctx, r, DisableOptions{Reason: reason, Graceful: true, Timeout: 10 * time.Second})
		if err := h.rt.setStatus(context.WithoutCancel(ctx), d, StatusError, reason, nil); err != nil {
			h.log.Warn("could not record the state of a dependent plugin", "plugin_id", d, "error", err)
		}
		h.logs.Add(store.LogRecord{PluginID: d, Level: "ERROR", Message: "Plugin " + reason})
	}
}

// stop ends a plugin's sessions and process: a shutdown frame (when graceful), then
// SIGTERM, then SIGKILL; it returns when the process is gone.
func (rt *pluginRuntime) stop(ctx context.Context, r *running, opts DisableOptions) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	r.mu.Lock()
	r.stopping = true
	proc := r.proc
	stopSup := r.stopSup
	r.stopSup = nil
	sessions := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		sessions = append(sessions, s)
	}
	tokenID := r.tokenID
	r.tokenID = ""
	r.mu.Unlock()
	if stopSup != nil {
		close(stopSup)
	}
	deadline := time.NewTimer(opts.Timeout)
	defer deadline.Stop()
	if opts.Graceful {
		frame := &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Shutdown{Shutdown: &pluginhostv1.Shutdown{
			Reason: opts.Reason, TimeoutSeconds: int32(opts.Timeout / time.Second)}}}
		for _, s := range sessions {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = s.send(sctx, frame)
			cancel()
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
				case <-s.done:
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
	for _, s := range sessions {
		s.end(errs.New(errs.PluginUnavailable, "plugin %s was stopped: %s", r.id, orDefault(opts.Reason, "stopped")))
	}
	rt.h.metrics.Stopped(r.id)
	r.mu.Lock()
	if r.proc == proc {
		r.proc = nil
	}
	r.startedAt = time.Time{}
	r.health = healthState{}
	r.usage, r.usageAt = supervisor.Usage{}, time.Time{}
	r.mu.Unlock()
}

// Restart stops and starts a plugin with the guarantees of Disable and Enable.
func (h *Host) Restart(ctx context.Context, id, reason string, timeout time.Duration) (string, error) {
	p, err := h.load(ctx, id)
	if err != nil {
		return "", err
	}
	unlock := h.locks.lock(id)
	h.rt.stop(ctx, h.rt.get(id), DisableOptions{Reason: reason, Graceful: true, Timeout: timeout})
	unlock()
	if !p.rec.Enabled {
		yes := true
		_ = h.rt.setStatus(ctx, id, StatusInactive, "", &yes)
	}
	h.logs.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "Plugin restarting: " + orDefault(reason, "restart requested")})
	return h.Enable(ctx, id, EnableOptions{})
}

// StartEnabled starts every enabled plugin in dependency load order. Failures are
// recorded on each plugin and logged; they do not stop the others.
func (h *Host) StartEnabled(ctx context.Context) {
	h.system(ctx, "system.startup", map[string]any{"version": Version})
	all, g, err := h.loadAll(ctx)
	if err != nil {
		h.log.Error("cannot start enabled plugins", "error", err)
		return
	}
	sort.SliceStable(all, func(i, j int) bool { return g.Order(all[i].rec.ID) < g.Order(all[j].rec.ID) })
	for _, p := range all {
		// A quarantined plugin (error) waits for an administrator.
		if !p.rec.Enabled || p.rec.Status == StatusError || ctx.Err() != nil {
			continue
		}
		if _, err := h.Enable(ctx, p.rec.ID, EnableOptions{}); err != nil {
			h.log.Error("enabled plugin did not start", "plugin_id", p.rec.ID, "error", err)
			if ctx.Err() != nil {
				continue
			}
			// Visible in the API and the plugin's logs, not only on the server's stderr. A
			// start failure has recorded its reason already; the others (a dependency that
			// is missing or not active, a configuration that no longer passes) are
			// recorded here.
			reason := "did not start with the server: " + errorMessage(err)
			if cur, gerr := h.reg.Get(p.rec.ID); gerr == nil && cur.Status() != StatusError {
				_ = h.rt.setStatus(context.WithoutCancel(ctx), p.rec.ID, StatusError, reason, nil)
				h.logs.Add(store.LogRecord{PluginID: p.rec.ID, Level: "ERROR", Message: "Plugin " + reason})
			}
		}
	}
}

// Shutdown stops every running plugin in reverse load order (gracefully, within timeout
// each) and waits for the supervision goroutines. Plugins stay enabled, so they start
// again with the server.
func (h *Host) Shutdown(ctx context.Context, timeout time.Duration) {
	h.shutdownOnce.Do(func() { h.shutdown(ctx, timeout) })
}

func (h *Host) shutdown(ctx context.Context, timeout time.Duration) {
	// Plugins still running hear of the shutdown before they are asked to stop.
	h.system(ctx, "system.shutdown", map[string]any{"version": Version})
	g := h.reg.Snapshot()
	h.rt.mu.Lock()
	ids := make([]string, 0, len(h.rt.plugins))
	for id := range h.rt.plugins {
		ids = append(ids, id)
	}
	h.rt.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return g.Order(ids[i]) > g.Order(ids[j]) })
	for _, id := range ids {
		unlock := h.locks.lock(id)
		r := h.rt.get(id)
		r.mu.Lock()
		running := r.proc != nil || len(r.sessions) > 0
		r.mu.Unlock()
		if running {
			h.rt.stop(ctx, r, DisableOptions{Reason: "server shutting down", Graceful: true, Timeout: timeout})
		}
		unlock()
	}
	h.rt.cancel()
	h.rt.wg.Wait()
	h.msg.close()
	h.closeLogs()
}

// RuntimeInfo is what the runtime knows of a plugin, for the API. Usage and CPUPercent are
// from the last sample of the process (at launch, then every health interval).
type RuntimeInfo struct {
	PID     int
	Running bool
	// CPUPercent is the plugin's CPU use averaged since it started (100 = one core).
	CPUPercent float64
	Uptime     time.Duration
	Restarts   int
	Backoff    time.Duration
	Instances  int
	Health     string
	LastCheck  time.Time
	Checks     []Check
	Enforced   supervisor.Enforcement
	Usage      supervisor.Usage
	StartedAt  time.Time
	LastOutput []string
}

// Runtime returns the live state of a plugin.
func (h *Host) Runtime(id string) RuntimeInfo {
	r := h.rt.get(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	info := RuntimeInfo{Restarts: r.restarts, Backoff: r.backoff, Instances: len(r.sessions),
		Health: r.health.status, LastCheck: r.health.lastCheck, Checks: slices.Clone(r.health.checks),
		StartedAt: r.startedAt, LastOutput: slices.Clone(r.lastLines)}
	if info.Health == "" {
		info.Health = HealthUnknown
	}
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

// CheckHealth asks a running plugin for fresh health checks.
func (h *Host) CheckHealth(ctx context.Context, id string) (RuntimeInfo, error) {
	if _, err := h.load(ctx, id); err != nil {
		return RuntimeInfo{}, err
	}
	r := h.rt.get(id)
	if _, err := h.rt.checkNow(r); err != nil && !errs.Is(err, errs.PluginUnavailable) {
		return h.Runtime(id), nil
	}
	return h.Runtime(id), nil
}

// pushConfig sends a new configuration to every connected instance of a plugin and waits
// for their answers; the first rejection is returned as a configuration error.
func (rt *pluginRuntime) pushConfig(ctx context.Context, id string, cfg map[string]any, updated []string, restart bool) error {
	r := rt.get(id)
	r.mu.Lock()
	sessions := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		sessions = append(sessions, s)
	}
	r.mu.Unlock()
	for _, s := range sessions {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ack, err := s.pushConfig(actx, cfg, updated, restart)
		cancel()
		if err != nil {
			return err
		}
		if !ack.accepted {
			return errs.New(errs.PluginConfigurationError, "plugin %s rejected the configuration: %s", id, orDefault(ack.reason, "no reason given"))
		}
	}
	return nil
}

func secretStrings(values map[string]any, fields []string) []string {
	var out []string
	for _, f := range fields {
		if s, ok := values[f].(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

func errorMessage(err error) string { return errs.MessageOf(err) }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
