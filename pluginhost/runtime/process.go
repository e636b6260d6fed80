package runtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/sandbox"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// start launches a host-launched plugin, waits until it is ready, and starts its
// supervision. On failure the plugin is left stopped, in error, and the error says why.
func (rt *Runtime) start(ctx context.Context, r *running, p loaded) error {
	if err := rt.launch(ctx, r, p); err != nil {
		rt.revokeToken(ctx, r)
		reason := errorMessage(err)
		_ = rt.SetStatus(context.WithoutCancel(ctx), r.id, registry.StatusError, reason, nil)
		rt.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin failed to start: " + reason})
		return err
	}
	r.mu.Lock()
	stop := make(chan struct{})
	r.stopSup = stop
	r.mu.Unlock()
	rt.spawn(func() { rt.supervise(r, stop) })
	rt.spawn(func() { rt.healthLoop(r, stop) })
	return nil
}

// launch starts the plugin process and waits for it to become ready.
func (rt *Runtime) launch(ctx context.Context, r *running, p loaded) error {
	token, tok, err := rt.tokens.Create(ctx, LaunchTokenName(rt.cfg.Replica, r.id), store.RolePlugin, r.id)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "could not issue the plugin token")
	}
	values := p.p.Config()
	rt.logs.SetSecrets(r.id, registry.SecretValues(values, p.man.Schema().SecretFields()))
	rt.logs.SetLaunchToken(r.id, token)
	home := filepath.Join(rt.dataDir, "plugin-data", r.id)
	if err := os.MkdirAll(filepath.Join(home, "tmp"), 0o700); err != nil {
		return errs.Wrap(errs.Internal, err, "could not create the plugin's data directory")
	}
	r.mu.Lock()
	if r.stopping {
		// Stopped since a restart began (a start resets stopping under the lifecycle
		// lock, which every stop holds): the stop wins.
		r.mu.Unlock()
		_ = rt.tokens.Revoke(context.WithoutCancel(ctx), tok.ID)
		return errStopped
	}
	r.gen++
	gen := r.gen
	oldToken := r.tokenID
	r.tokenID = tok.ID
	r.ready = make(chan struct{})
	ready := r.ready
	r.lastLines = nil
	wasHealth := r.health.status
	r.health = healthState{}
	r.overLimit = ""
	r.mu.Unlock()
	rt.healthChanged(r.id, wasHealth, "")
	if oldToken != "" {
		_ = rt.tokens.Revoke(context.WithoutCancel(ctx), oldToken)
	}
	conf, err := rt.confine(r.id, p, home, true)
	if err != nil {
		return errs.Wrap(errs.PluginStartupFailed, err, "plugin %s could not be confined: %v", r.id, err)
	}
	want, lim := rt.pluginWant(p.rec), rt.limitsOf(p.rec)
	if conf.box != nil && sandbox.FailClosed(p.rec.SecurityLevel) {
		caps := supervisor.Capabilities()
		if predicted := limitReport(conf.report, want, caps, lim, MemoryEnforcement(caps)); !predicted.Complete() {
			return errs.New(errs.PluginStartupFailed, "plugin %s has security level critical and this host cannot enforce: %s", r.id, predicted.Missing())
		}
	}
	if conf.box != nil && conf.box.Confine.UID >= 0 {
		if err := preparePackage(rt.abs(p.rec.Dir), conf.box.Confine.GID); err != nil {
			return errs.Wrap(errs.PluginStartupFailed, err, "plugin %s: open its package to its uid: %v", r.id, err)
		}
	}
	spec := rt.spec(r, p, token, home, conf.host)
	spec.Sandbox = conf.box
	if want[sandbox.Processes] {
		spec.Limits.Processes = lim.Processes
	}
	launched := time.Now()
	proc, err := supervisor.Start(spec)
	if err != nil {
		return errs.Wrap(errs.PluginStartupFailed, err, "plugin %s could not be started: %v", r.id, err)
	}
	report := limitReport(conf.report, want, proc.Enforced(), lim, MemoryEnforcement(proc.Enforced()))
	r.mu.Lock()
	stopped := r.stopping
	if !stopped {
		r.proc = proc
		r.report = report
	}
	r.mu.Unlock()
	if stopped {
		// Stopped while the process was being started: the stop could not see it.
		proc.Stop(context.WithoutCancel(ctx), 0)
		return errStopped
	}
	if limit := p.rec.Limits.MemoryMB; limit > 0 && MemoryEnforcement(proc.Enforced()) == "monitor" {
		rt.spawn(func() { rt.watchMemory(r, proc, limit) })
	}
	timeout := time.Duration(p.man.StartTimeoutSeconds) * time.Second
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	fail := func(format string, args ...any) error {
		return rt.startFailed(ctx, r, proc, gen, fmt.Sprintf(format, args...))
	}
	select {
	case <-ready:
	case <-proc.Done():
		r.mu.Lock()
		overLimit := r.overLimit
		r.mu.Unlock()
		if overLimit != "" {
			return fail("%s", overLimit) // the memory watch stopped it
		}
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
	rt.metrics.Started(r.id, now)
	rt.sample(r, proc, p.rec.Limits.MemoryMB)
	r.mu.Lock()
	overLimit := r.overLimit
	r.mu.Unlock()
	if overLimit != "" {
		return fail("%s", overLimit) // sample stopped it
	}
	if err := rt.SetStatus(context.WithoutCancel(ctx), r.id, registry.StatusActive, "", nil); err != nil {
		return fail("could not record the plugin state: %v", err)
	}
	rt.logs.Add(store.LogRecord{PluginID: r.id, Level: "INFO", Message: "Plugin active",
		Metadata: mustJSON(map[string]any{"pid": proc.PID(), "startup_ms": now.Sub(launched).Milliseconds()})})
	return nil
}

// errStopped is returned by a restart's launch when the plugin was stopped meanwhile.
var errStopped = errors.New("the plugin was stopped while it was restarting")

// spec is how a plugin's process is started: its entry point in its package directory, its
// environment (the host to connect to, its token, its own data directory as HOME and
// TMPDIR), its resource limits, and where its output goes.
func (rt *Runtime) spec(r *running, p loaded, token, home, hostURL string) supervisor.Spec {
	return supervisor.Spec{
		PluginID: r.id,
		Dir:      rt.abs(p.rec.Dir),
		Path:     filepath.Join(rt.abs(p.rec.Dir), filepath.FromSlash(p.man.EntryPoint)),
		Args:     p.man.Args,
		Env: []string{
			"NEXUS_PLUGIN_ID=" + r.id,
			"NEXUS_HOST=" + hostURL,
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
			r.lastLines = append(r.lastLines, rt.logs.Redact(r.id, line)) // they reach failure reasons
			if len(r.lastLines) > lastLinesKept {
				r.lastLines = r.lastLines[len(r.lastLines)-lastLinesKept:]
			}
			r.mu.Unlock()
			rt.logs.AddLine(r.id, stream, line, truncated)
		},
	}
}

// startFailed stops a process that did not become ready and returns why, with its exit
// status and its last output lines.
func (rt *Runtime) startFailed(ctx context.Context, r *running, proc *supervisor.Process, gen int, reason string) error {
	st := proc.Stop(context.WithoutCancel(ctx), rt.cfg.KillGrace)
	r.mu.Lock()
	if r.gen == gen {
		r.proc = nil
	}
	lines := slices.Clone(r.lastLines)
	r.mu.Unlock()
	e := errs.New(errs.PluginStartupFailed, "%s", withOutput(fmt.Sprintf("plugin %s failed to start: %s", r.id, reason), lines)).
		WithDetail("exit", st.String())
	if len(lines) > 0 {
		e.WithDetail("last_log_lines", lines)
	}
	return e
}

// outputMark begins the part of a failure reason that holds the plugin's last output lines
// (see withOutput).
const outputMark = "; last output: "

// withOutput appends a plugin's last output lines to a failure reason. The lines are the
// plugin's own words, its secrets hidden as they were captured: administrators see them
// (in the recorded reason, the start's error, the logs); users and events get the reason
// without them (see PublicReason).
func withOutput(reason string, lines []string) string {
	if len(lines) == 0 {
		return reason
	}
	return reason + outputMark + strings.Join(lines, " | ")
}

// PublicReason returns a status reason without the plugin's output lines that a failure
// reason carries (see withOutput): what users and events are shown. The reason is cut
// before the first mark, and what precedes it is always the host's own words, so nothing
// of the plugin's output is left whatever the plugin printed.
func PublicReason(reason string) string {
	before, _, _ := strings.Cut(reason, outputMark)
	return before
}

// MemoryEnforcement is how memory limits are enforced here: by the kernel with a cgroup
// when the host allows it; otherwise by watching resident memory ("monitor") and stopping
// the plugin over its limit. Address-space and data rlimits are not used: runtimes such as
// Go's reserve far more than they use and fail at start under any useful limit.
func MemoryEnforcement(caps supervisor.Enforcement) string {
	if caps.Memory == supervisor.EnforcedByCgroup {
		return supervisor.EnforcedByCgroup
	}
	return "monitor"
}

// kernelMemoryLimit is the memory limit handed to the supervisor: only when a cgroup
// enforces it (see memoryEnforcement); the host watches resident memory either way.
func kernelMemoryLimit(mb int) int {
	if MemoryEnforcement(supervisor.Capabilities()) == supervisor.EnforcedByCgroup {
		return mb
	}
	return 0
}

// memoryWatchInterval is how often the host measures the memory of a plugin whose limit no
// cgroup enforces: a process cannot fault in much more than a few GiB a second, so a
// 64 MiB plugin is stopped long before it holds 1 GiB.
const memoryWatchInterval = 50 * time.Millisecond

// watchMemory enforces a memory limit without a cgroup: it measures the resident memory of
// the plugin's whole process tree (children included) every memoryWatchInterval and kills
// the plugin at once when it is over its limit.
func (rt *Runtime) watchMemory(r *running, proc *supervisor.Process, limitMB int) {
	tick := time.NewTicker(memoryWatchInterval)
	defer tick.Stop()
	for {
		select {
		case <-proc.Done():
			return
		case <-rt.ctx.Done():
			return
		case <-tick.C:
		}
		rss, err := proc.TreeRSS()
		if err != nil {
			return
		}
		if rss <= int64(limitMB)<<20 {
			continue
		}
		reason := fmt.Sprintf("stopped: resident memory of its process tree %d MiB exceeds its limit of %d MiB", rss>>20, limitMB)
		r.mu.Lock()
		current := r.proc == proc
		if current {
			r.overLimit = reason
		}
		r.mu.Unlock()
		if current {
			rt.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin " + reason})
		}
		proc.Stop(rt.ctx, 0)
		return
	}
}

// sample records a running process's resource use, and stops it when it is over its
// memory limit (the limit is enforced by watching its resident memory).
func (rt *Runtime) sample(r *running, proc *supervisor.Process, limitMB int) {
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
	rt.metrics.ObserveResources(r.id, u.RSSBytes, u.CPUSeconds, u.OpenFiles, now)
	if limitMB <= 0 || u.RSSBytes <= int64(limitMB)<<20 {
		return
	}
	reason := fmt.Sprintf("stopped: resident memory %d MiB exceeds its limit of %d MiB", u.RSSBytes>>20, limitMB)
	r.mu.Lock()
	r.overLimit = reason
	r.mu.Unlock()
	rt.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin " + reason})
	proc.Stop(rt.ctx, rt.cfg.KillGrace)
}

// supervise waits for the plugin process to exit; an exit that nobody asked for is a
// crash: the plugin is restarted with exponential backoff and jitter, and quarantined in
// error after a crash loop.
func (rt *Runtime) supervise(r *running, stop chan struct{}) {
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
		rt.metrics.Stopped(r.id)
		if proc != nil && proc.Exit().OOMKilled && r.overLimit == "" {
			r.overLimit = "stopped: " + proc.Exit().String()
		}
		if r.overLimit != "" {
			reason := r.overLimit
			r.proc = nil
			r.mu.Unlock()
			rt.revokeToken(rt.ctx, r)
			_ = rt.SetStatus(rt.ctx, r.id, registry.StatusError, reason, nil)
			rt.releaseLease(rt.ctx, r.id) // after the error is on record: no replica takes it over
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
		// The crashed process is gone: its token goes with it, not only when (or if) the
		// restart launches the next one.
		rt.revokeToken(rt.ctx, r)

		if crashes >= rt.cfg.CrashLoopCount {
			reason := withOutput(fmt.Sprintf("quarantined after %d crashes within %s; last exit: %s", crashes, rt.cfg.CrashLoopWindow, exit), lines)
			rt.revokeToken(rt.ctx, r)
			_ = rt.SetStatus(rt.ctx, r.id, registry.StatusError, reason, nil)
			rt.releaseLease(rt.ctx, r.id) // after the error is on record: no replica takes it over
			rt.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin " + reason})
			return
		}
		reason := fmt.Sprintf("crashed (%s); restarting in %s", exit, delay.Round(time.Millisecond))
		_ = rt.SetStatus(rt.ctx, r.id, registry.StatusLoading, reason, nil)
		rt.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Plugin " + withOutput(reason, lines)})
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
		p, err := rt.load(r.id)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.restarts++
		r.mu.Unlock()
		rt.metrics.Restarted(r.id)
		if err := rt.launch(rt.ctx, r, p); errors.Is(err, errStopped) {
			return
		} else if err != nil {
			rt.logs.Add(store.LogRecord{PluginID: r.id, Level: "ERROR", Message: "Restart failed: " + errorMessage(err)})
			r.mu.Lock()
			r.proc = nil
			r.mu.Unlock()
			rt.revokeToken(rt.ctx, r)
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

// revokeToken revokes the token of the plugin's current launch, once no process of it runs:
// a plugin that failed to start, was quarantined or stopped over a limit keeps no valid
// token.
func (rt *Runtime) revokeToken(ctx context.Context, r *running) {
	r.mu.Lock()
	tokenID := r.tokenID
	r.tokenID = ""
	r.mu.Unlock()
	if tokenID != "" {
		_ = rt.tokens.Revoke(context.WithoutCancel(ctx), tokenID)
	}
}
