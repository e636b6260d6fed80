package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// Enable launches the process and returns once the connected instance has passed its first
// health check; until then the plugin is loading. Disable asks the instance to shut down,
// waits for the process to go, and records the plugin inactive and disabled.
func TestEnableThenDisable(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	p := f.install(spec{id: "echo-plugin", mode: "serve"})
	release := p.hold()

	type result struct {
		status string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		status, err := f.enable("echo-plugin", runtime.EnableOptions{})
		done <- result{status, err}
	}()
	// The process runs, the plugin has not connected yet: loading.
	eventually(t, 10*time.Second, func() bool { return f.rt.Info("echo-plugin").PID != 0 }, "the process to start")
	if rec := f.record("echo-plugin"); rec.Status != registry.StatusLoading || !rec.Enabled {
		t.Fatalf("while starting: status %q, enabled %v; want loading, enabled", rec.Status, rec.Enabled)
	}
	if info := f.rt.Info("echo-plugin"); !info.Running || info.Health != runtime.HealthUnknown || !info.StartedAt.IsZero() {
		t.Fatalf("while starting: %+v", info)
	}
	release()
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Enable did not return")
	}
	if r.err != nil || r.status != registry.StatusActive {
		t.Fatalf("Enable = %q, %v; want active", r.status, r.err)
	}
	rec := f.record("echo-plugin")
	if rec.Status != registry.StatusActive || rec.StatusReason != "" || !rec.Enabled {
		t.Fatalf("after Enable: status %q (%q), enabled %v", rec.Status, rec.StatusReason, rec.Enabled)
	}
	info := f.rt.Info("echo-plugin")
	inst := p.current()
	if inst == nil || !info.Running || info.PID != inst.pid || info.Health != runtime.HealthHealthy ||
		info.Instances != 1 || info.StartedAt.IsZero() || len(info.Checks) != 1 {
		t.Fatalf("after Enable: info %+v, instance %+v", info, inst)
	}
	if got := f.eventsOf("plugin.enabled", "echo-plugin"); len(got) != 1 || got[0]["version"] != "1.0.0" {
		t.Fatalf("plugin.enabled events: %v", got)
	}

	if err := f.disable("echo-plugin", runtime.DisableOptions{Reason: "maintenance", Graceful: true, Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("Disable: %v", err)
	}
	if got := inst.shutdownReasons(); !slices.Equal(got, []string{"maintenance"}) {
		t.Fatalf("shutdown frames: %q", got)
	}
	if !gone(inst.pid) {
		t.Fatalf("process %d still runs after Disable", inst.pid)
	}
	// It left on the shutdown frame, not on a signal.
	if out := f.rt.Info("echo-plugin").LastOutput; !slices.Contains(out, "shutdown requested; bye") {
		t.Fatalf("last output %q: the process did not shut down on request", out)
	}
	if !inst.ended() || f.pres.Count("echo-plugin") != 0 {
		t.Fatal("the instance is still connected")
	}
	if !f.tokens.isRevoked(inst.tokenID) {
		t.Fatalf("token %s of the stopped plugin was not revoked", inst.tokenID)
	}
	rec = f.record("echo-plugin")
	if rec.Status != registry.StatusInactive || rec.StatusReason != "maintenance" || rec.Enabled {
		t.Fatalf("after Disable: status %q (%q), enabled %v", rec.Status, rec.StatusReason, rec.Enabled)
	}
	if info := f.rt.Info("echo-plugin"); info.Running || info.PID != 0 || info.Health != runtime.HealthUnknown {
		t.Fatalf("after Disable: %+v", info)
	}
	if got := f.eventsOf("plugin.disabled", "echo-plugin"); len(got) != 1 || got[0]["reason"] != "maintenance" {
		t.Fatalf("plugin.disabled events: %v", got)
	}
	// Each change of state, and of health, is an event: watchers need not poll.
	var changes []string
	for _, e := range f.eventsOf("plugin.status_changed", "echo-plugin") {
		changes = append(changes, fmt.Sprint(e["previous"], ">", e["status"]))
	}
	if want := []string{"inactive>loading", "loading>active", "active>inactive"}; !slices.Equal(changes, want) {
		t.Fatalf("plugin.status_changed events: %q, want %q", changes, want)
	}
	var health []string
	for _, e := range f.eventsOf("plugin.health_changed", "echo-plugin") {
		health = append(health, fmt.Sprint(e["previous"], ">", e["health"]))
	}
	if want := []string{"unknown>healthy", "healthy>unknown"}; !slices.Equal(health, want) {
		t.Fatalf("plugin.health_changed events: %q, want %q", health, want)
	}
}

// Enable of a running plugin changes nothing; Restart replaces the process.
func TestEnableTwiceAndRestart(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	p := f.install(spec{id: "echo-plugin", mode: "serve"})
	f.mustEnable("echo-plugin")
	first := p.current()
	f.mustEnable("echo-plugin")
	if got := f.tokens.creations(); len(got) != 1 {
		t.Fatalf("a second Enable launched again: tokens for %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	status, err := f.rt.Restart(ctx, "echo-plugin", "new settings", 10*time.Second)
	if err != nil || status != registry.StatusActive {
		t.Fatalf("Restart = %q, %v", status, err)
	}
	second := p.current()
	if second == first || !gone(first.pid) || !slices.Equal(first.shutdownReasons(), []string{"new settings"}) {
		t.Fatalf("Restart: first process %d (gone %v, asked %q), now %d", first.pid, gone(first.pid), first.shutdownReasons(), second.pid)
	}
	if info := f.rt.Info("echo-plugin"); info.PID != second.pid || !info.Running || info.Restarts != 0 {
		t.Fatalf("after Restart: %+v", info)
	}
	if !f.tokens.isRevoked(first.tokenID) || f.tokens.isRevoked(second.tokenID) {
		t.Fatal("Restart must revoke the old token and keep the new one")
	}
}

// A process that exits before it is ready fails the start with its exit status and its
// last output lines, and leaves the plugin in error.
func TestStartFailsWhenTheProcessExits(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	f.install(spec{id: "broken-plugin", mode: "exit", args: []string{"3"}})
	status, err := f.enable("broken-plugin", runtime.EnableOptions{})
	if !errs.Is(err, errs.PluginStartupFailed) || status != "" {
		t.Fatalf("Enable = %q, %v; want PLUGIN_STARTUP_FAILED", status, err)
	}
	var e *errs.Error
	errors.As(err, &e)
	if !strings.Contains(e.Message, "exited with code 3 before it became ready") ||
		!strings.Contains(e.Message, "fatal: the database is unreachable") {
		t.Fatalf("message %q lacks the exit status or the last output", e.Message)
	}
	if e.Details["exit"] != "exited with code 3" {
		t.Fatalf("exit detail %v", e.Details["exit"])
	}
	lines, _ := e.Details["last_log_lines"].([]string)
	if !slices.Contains(lines, "loading configuration") || !slices.Contains(lines, "fatal: the database is unreachable") {
		t.Fatalf("last_log_lines %q", lines)
	}
	rec := f.record("broken-plugin")
	if rec.Status != registry.StatusError || rec.StatusReason != e.Message || !rec.Enabled {
		t.Fatalf("status %q (%q), enabled %v", rec.Status, rec.StatusReason, rec.Enabled)
	}
	if got := f.eventsOf("plugin.error", "broken-plugin"); len(got) != 1 {
		t.Fatalf("plugin.error events: %v", got)
	}
	if got := f.eventsOf("plugin.enabled", "broken-plugin"); len(got) != 0 {
		t.Fatalf("plugin.enabled for a plugin that did not start: %v", got)
	}
	if tok := f.tokens.last(); !f.tokens.isRevoked(tok.ID) {
		t.Fatalf("the token of the failed launch (%s) is still valid", tok.ID)
	}
	if info := f.rt.Info("broken-plugin"); info.Running {
		t.Fatalf("info %+v", info)
	}
}

// A plugin that is not ready within start_timeout_seconds (it never connects, or connects
// and reports itself unhealthy) fails to start and its process is stopped.
func TestStartFailsWhenNotReadyInTime(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(p *fakePlugin)
	}{
		{"never connects", func(p *fakePlugin) { p.hold() }},
		{"unhealthy", func(p *fakePlugin) { p.answer(presence.Check{Name: "db", Status: "fail"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, runtime.Config{KillGrace: 2 * time.Second})
			p := f.install(spec{id: "slow-plugin", mode: "serve", startTimeout: 1})
			tc.setup(p)
			start := time.Now()
			_, err := f.enable("slow-plugin", runtime.EnableOptions{})
			var e *errs.Error
			if !errors.As(err, &e) || e.Code != errs.PluginStartupFailed || !strings.Contains(e.Message, "not ready within 1s") {
				t.Fatalf("Enable: %v; want PLUGIN_STARTUP_FAILED, not ready within 1s", err)
			}
			if elapsed := time.Since(start); elapsed < time.Second {
				t.Fatalf("gave up after %v, before the start timeout", elapsed)
			}
			// The process said it was ready (to no avail), with its pid.
			var pid int
			for _, l := range detail(e, "last_log_lines") {
				if _, err := fmt.Sscanf(l, "ready pid=%d", &pid); err == nil {
					break
				}
			}
			if pid == 0 {
				t.Fatalf("no ready line in %q", detail(e, "last_log_lines"))
			}
			if !gone(pid) {
				t.Fatalf("process %d still runs after the failed start", pid)
			}
			if rec := f.record("slow-plugin"); rec.Status != registry.StatusError {
				t.Fatalf("status %q", rec.Status)
			}
			if info := f.rt.Info("slow-plugin"); info.Running {
				t.Fatalf("info %+v", info)
			}
		})
	}
}

// A crash after the plugin was ready restarts it after a backoff and counts the restart;
// CrashLoopCount crashes within the window quarantine it in error, and it is not
// restarted.
func TestCrashRestartsThenQuarantines(t *testing.T) {
	f := newFixture(t, runtime.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond,
		CrashLoopCount: 3, CrashLoopWindow: time.Minute})
	p := f.install(spec{id: "crashy-plugin", mode: "serve"})
	f.mustEnable("crashy-plugin")

	for restarts := 1; restarts <= 2; restarts++ {
		old := p.current()
		old.crash(t)
		eventually(t, 20*time.Second, func() bool {
			info := f.rt.Info("crashy-plugin")
			return info.Restarts == restarts && info.PID != 0 && info.PID != old.pid &&
				f.record("crashy-plugin").Status == registry.StatusActive
		}, "restart %d", restarts)
		if info := f.rt.Info("crashy-plugin"); info.Backoff < 10*time.Millisecond {
			t.Fatalf("backoff %v after a crash", info.Backoff)
		}
		if !old.ended() {
			t.Fatal("the crashed process's instance is still connected")
		}
	}
	if got := f.eventsOf("plugin.error", "crashy-plugin"); len(got) != 0 {
		t.Fatalf("plugin.error before the quarantine: %v", got)
	}

	last := p.current()
	last.crash(t)
	eventually(t, 20*time.Second, func() bool { return f.record("crashy-plugin").Status == registry.StatusError }, "the quarantine")
	rec := f.record("crashy-plugin")
	for _, want := range []string{"quarantined after 3 crashes within 1m0s", "last exit: exited with code 3", "panic: crashing on purpose"} {
		if !strings.Contains(rec.StatusReason, want) {
			t.Fatalf("reason %q lacks %q", rec.StatusReason, want)
		}
	}
	if !rec.Enabled {
		t.Fatal("a quarantined plugin stays enabled (waiting for an administrator)")
	}
	if got := f.eventsOf("plugin.error", "crashy-plugin"); len(got) != 1 {
		t.Fatalf("plugin.error events: %v", got)
	}
	// Not restarted: no launch within many times the longest backoff. (A check that
	// something does not happen needs a bound; this one is not for synchronisation.)
	launches := len(f.tokens.creations())
	deadline := time.Now().Add(20 * 40 * time.Millisecond)
	for time.Now().Before(deadline) {
		if info := f.rt.Info("crashy-plugin"); info.Running || len(f.tokens.creations()) != launches {
			t.Fatalf("a quarantined plugin was restarted: %+v", info)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if f.record("crashy-plugin").Status != registry.StatusError {
		t.Fatal("the quarantine was lifted")
	}
	// An administrator's Enable starts it again, with the crash count reset.
	f.mustEnable("crashy-plugin")
	if info := f.rt.Info("crashy-plugin"); info.Restarts != 0 || !info.Running {
		t.Fatalf("after Enable: %+v", info)
	}
}

// A Disable that comes while a crashed plugin is being restarted wins: the restart does not
// bring the process back.
func TestDisableDuringRestart(t *testing.T) {
	f := newFixture(t, runtime.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	p := f.install(spec{id: "crashy-plugin", mode: "serve"})
	f.mustEnable("crashy-plugin")

	// Hold the restart in its first step, then disable the plugin.
	entered, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.tokens.setHook(func(string) {
		once.Do(func() {
			close(entered)
			select {
			case <-proceed:
			case <-time.After(20 * time.Second):
			}
		})
	})
	p.current().crash(t)
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the crashed plugin was not restarted")
	}
	if err := f.disable("crashy-plugin", runtime.DisableOptions{Graceful: true, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	close(proceed)

	// The restart ends one way or the other: its token is revoked (it gave up) or its
	// process connects (it came back).
	eventually(t, 20*time.Second, func() bool {
		tok := f.tokens.last()
		return f.tokens.isRevoked(tok.ID) || slices.ContainsFunc(p.all(), func(i *fakeInstance) bool { return i.tokenID == tok.ID })
	}, "the held restart to end")
	if n := len(p.all()); n != 1 {
		t.Fatalf("%d instances connected; the restart brought the disabled plugin back", n)
	}
	if info := f.rt.Info("crashy-plugin"); info.Running {
		t.Fatalf("a disabled plugin runs: %+v", info)
	}
	if rec := f.record("crashy-plugin"); rec.Status != registry.StatusInactive || rec.Enabled {
		t.Fatalf("status %q (%q), enabled %v", rec.Status, rec.StatusReason, rec.Enabled)
	}
}

// A plugin over its memory limit is stopped and left in error: by the kernel where a
// cgroup enforces the limit, otherwise by the runtime, which watches its resident memory.
func TestMemoryLimit(t *testing.T) {
	f := newFixture(t, runtime.Config{KillGrace: 2 * time.Second})
	p := f.install(spec{id: "hungry-plugin", mode: "serve", limits: store.ResourceLimits{MemoryMB: 1}})
	_, err := f.enable("hungry-plugin", runtime.EnableOptions{})
	if !errs.Is(err, errs.PluginStartupFailed) {
		t.Fatalf("Enable of a plugin over its memory limit: %v; want PLUGIN_STARTUP_FAILED", err)
	}
	want := "exceeds its limit of 1 MiB"
	if runtime.MemoryEnforcement(supervisor.Capabilities()) == supervisor.EnforcedByCgroup {
		want = "memory limit exceeded"
	}
	if !strings.Contains(errs.MessageOf(err), want) {
		t.Fatalf("message %q lacks %q", errs.MessageOf(err), want)
	}
	rec := f.record("hungry-plugin")
	if rec.Status != registry.StatusError || !strings.Contains(rec.StatusReason, want) {
		t.Fatalf("status %q (%q)", rec.Status, rec.StatusReason)
	}
	if got := f.eventsOf("plugin.enabled", "hungry-plugin"); len(got) != 0 {
		t.Fatalf("plugin.enabled for a plugin that was stopped: %v", got)
	}
	if info := f.rt.Info("hungry-plugin"); info.Running {
		t.Fatalf("info %+v", info)
	}
	for _, inst := range p.all() {
		if !gone(inst.pid) {
			t.Fatalf("process %d still runs", inst.pid)
		}
	}
}

// Without a cgroup, the memory limit covers the plugin's whole process tree and is checked
// often: a plugin whose forked child allocates as fast as it can up to 1 GiB is stopped,
// child included, long before the child holds it.
func TestMemoryLimitWithoutCgroupCoversForkedChildren(t *testing.T) {
	if runtime.MemoryEnforcement(supervisor.Capabilities()) != "monitor" {
		t.Fatalf("cgroups are in use in the runtime's tests: %+v", supervisor.Capabilities())
	}
	f := newFixture(t, runtime.Config{KillGrace: 2 * time.Second})
	f.install(spec{id: "forking-plugin", mode: "fork-hog", limits: store.ResourceLimits{MemoryMB: 64}})
	var reason string
	status, err := f.enable("forking-plugin", runtime.EnableOptions{})
	switch {
	case err != nil:
		// The child forks once the plugin is ready; on a busy machine it can pass the limit
		// before the start completes, and the start fails for that reason.
		reason = err.Error()
		if !strings.Contains(reason, "resident memory of its process tree") {
			t.Fatalf("Enable(forking-plugin): %v; want active, or stopped over its memory limit", err)
		}
	case status != registry.StatusActive:
		t.Fatalf("Enable(forking-plugin) = %q; want active", status)
	default:
		eventually(t, 20*time.Second, func() bool {
			return f.record("forking-plugin").Status == registry.StatusError
		}, "the plugin stopped over its limit")
		reason = f.record("forking-plugin").StatusReason
	}
	var mib, limit int
	if _, err := fmt.Sscanf(reason[strings.Index(reason, "resident memory"):], "resident memory of its process tree %d MiB exceeds its limit of %d MiB", &mib, &limit); err != nil {
		t.Fatalf("reason %q: %v", reason, err)
	}
	if limit != 64 || mib >= 1024 {
		t.Fatalf("stopped at %d MiB (limit %d): the tree reached 1 GiB first", mib, limit)
	}
	for _, line := range f.logLines("forking-plugin") {
		if strings.Contains(line, "holding 1 GiB") {
			t.Fatalf("the child got to hold 1 GiB: %q", line)
		}
		if pid, ok := strings.CutPrefix(line, "child pid="); ok {
			n, _ := strconv.Atoi(pid)
			eventually(t, 5*time.Second, func() bool { return gone(n) }, "the child gone")
		}
	}
	t.Logf("stopped: %s", reason)
}

// A configuration pushed to a running plugin is acknowledged or rejected by its instances;
// a configuration that does not pass the schema keeps the plugin from starting.
func TestConfiguration(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	p := f.install(spec{id: "config-plugin", mode: "serve"})
	f.install(spec{id: "unset-plugin", mode: "serve", configuration: `{"api_key": {"type": "string", "required": true}}`})

	_, err := f.enable("unset-plugin", runtime.EnableOptions{})
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.PluginConfigurationError || len(e.Fields) != 1 || !strings.Contains(e.Message, "api_key") {
		t.Fatalf("Enable without a required value: %v", err)
	}
	if got := f.tokens.creations(); len(got) != 0 {
		t.Fatalf("launched %v", got)
	}

	f.mustEnable("config-plugin")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.rt.PushConfig(ctx, "config-plugin", map[string]any{"level": "debug"}, []string{"level"}, false); err != nil {
		t.Fatalf("PushConfig: %v", err)
	}
	p.mu.Lock()
	p.reject = "level must be info or warn"
	p.mu.Unlock()
	err = f.rt.PushConfig(ctx, "config-plugin", map[string]any{"level": "trace"}, []string{"level"}, false)
	if !errs.Is(err, errs.PluginConfigurationError) || !strings.Contains(errs.MessageOf(err), "level must be info or warn") {
		t.Fatalf("rejected PushConfig: %v", err)
	}
	p.mu.Lock()
	pushed := len(p.pushed)
	p.mu.Unlock()
	if pushed != 2 {
		t.Fatalf("%d configurations pushed", pushed)
	}

	// A health report the plugin sends unasked is recorded.
	f.rt.ObserveHealth("config-plugin", []presence.Check{{Name: "db", Status: "fail"}})
	if info := f.rt.Info("config-plugin"); info.Health != runtime.HealthUnhealthy || len(info.Checks) != 1 {
		t.Fatalf("after an unasked report: %+v", info)
	}
}

// A plugin that misses HealthMisses health checks in a row is killed and restarted;
// answered checks are recorded with their response time.
func TestHealthLoop(t *testing.T) {
	f := newFixture(t, runtime.Config{HealthInterval: 20 * time.Millisecond, HealthTimeout: 50 * time.Millisecond,
		HealthMisses: 2, BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond, KillGrace: 5 * time.Second})
	p := f.install(spec{id: "health-plugin", mode: "serve"})
	p.answer(presence.Check{Name: "db", Status: "pass"}, presence.Check{Name: "queue", Status: "warning"})
	f.mustEnable("health-plugin")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := f.rt.CheckHealth(ctx, "health-plugin")
	if err != nil {
		t.Fatal(err)
	}
	if info.Health != runtime.HealthDegraded || len(info.Checks) != 2 || info.Checks[0].ResponseTimeMS == nil || info.LastCheck.IsZero() {
		t.Fatalf("after a health check: %+v", info)
	}

	// The instance stops answering; the process that replaces it is slow to connect.
	sick := p.current()
	release := p.hold()
	sick.setSick()
	var relaunched int
	eventually(t, 20*time.Second, func() bool {
		relaunched = f.rt.Info("health-plugin").PID
		return relaunched != 0 && relaunched != sick.pid
	}, "the restart of the plugin that stopped answering")
	if !gone(sick.pid) {
		t.Fatalf("process %d still runs", sick.pid)
	}
	// It connects ten health intervals later (a slow plugin, not a synchronisation): the
	// start timeout bounds its start, and the health loop must leave it alone meanwhile.
	timer := time.AfterFunc(10*20*time.Millisecond, release)
	defer timer.Stop()
	eventually(t, 20*time.Second, func() bool {
		rec, info := f.record("health-plugin"), f.rt.Info("health-plugin")
		if rec.Status == registry.StatusError {
			t.Fatalf("the restarted plugin is in error: %s", rec.StatusReason)
		}
		return rec.Status == registry.StatusActive && info.Health == runtime.HealthDegraded
	}, "the restarted plugin to be active and answer again")
	if info := f.rt.Info("health-plugin"); info.PID != relaunched || info.Restarts != 1 {
		t.Fatalf("the restarted process %d was not left to start: now %+v", relaunched, info)
	}
}

// Stop escalates: a process that ignores the shutdown frame and SIGTERM is killed.
func TestStopEscalatesToKill(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts runtime.DisableOptions
		// min is the least time the stop can take: the wait for the shutdown frame to be
		// heeded, then the grace after SIGTERM.
		min time.Duration
	}{
		{"graceful", runtime.DisableOptions{Graceful: true, Timeout: 200 * time.Millisecond}, 200*time.Millisecond + 300*time.Millisecond},
		{"not graceful", runtime.DisableOptions{Timeout: 200 * time.Millisecond}, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, runtime.Config{KillGrace: 300 * time.Millisecond})
			p := f.install(spec{id: "stubborn-plugin", mode: "stubborn"})
			f.mustEnable("stubborn-plugin")
			inst := p.current()
			start := time.Now()
			if err := f.disable("stubborn-plugin", tc.opts); err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(start)
			if !gone(inst.pid) {
				t.Fatalf("process %d survived the stop", inst.pid)
			}
			if elapsed < tc.min || elapsed > 15*time.Second {
				t.Fatalf("the stop took %v; want at least %v", elapsed, tc.min)
			}
			if asked := len(inst.shutdownReasons()) > 0; asked != tc.opts.Graceful {
				t.Fatalf("shutdown frame sent: %v; graceful: %v", asked, tc.opts.Graceful)
			}
			if !inst.ended() {
				t.Fatal("the instance that ignored the shutdown frame is still connected")
			}
			if rec := f.record("stubborn-plugin"); rec.Status != registry.StatusInactive || rec.Enabled {
				t.Fatalf("status %q, enabled %v", rec.Status, rec.Enabled)
			}
		})
	}
}

// A plugin starts only once its dependencies are active; EnableDependencies starts them
// first. A dependency with active dependents is disabled only by force, which stops the
// dependents and leaves them in error with the reason.
func TestDependencies(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	base := f.install(spec{id: "base-plugin", mode: "serve"})
	app := f.install(spec{id: "app-plugin", mode: "serve", deps: []string{"base-plugin"}})
	f.install(spec{id: "orphan-plugin", mode: "serve", deps: []string{"missing-plugin"}})

	_, err := f.enable("orphan-plugin", runtime.EnableOptions{EnableDependencies: true})
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.PluginDependencyError || !slices.Equal(detail(e, "missing"), []string{"missing-plugin"}) {
		t.Fatalf("Enable with a missing dependency: %v", err)
	}

	_, err = f.enable("app-plugin", runtime.EnableOptions{})
	if !errors.As(err, &e) || e.Code != errs.PluginDependencyError || !slices.Equal(detail(e, "inactive"), []string{"base-plugin"}) {
		t.Fatalf("Enable with an inactive dependency: %v", err)
	}
	if got := f.tokens.creations(); len(got) != 0 {
		t.Fatalf("launched %v although a dependency is inactive", got)
	}
	if rec := f.record("app-plugin"); rec.Enabled || rec.Status != registry.StatusInactive {
		t.Fatalf("the refused Enable changed the record: %+v", rec)
	}

	status, err := f.enable("app-plugin", runtime.EnableOptions{EnableDependencies: true})
	if err != nil || status != registry.StatusActive {
		t.Fatalf("Enable with dependencies = %q, %v", status, err)
	}
	if got := f.tokens.creations(); !slices.Equal(got, []string{"base-plugin", "app-plugin"}) {
		t.Fatalf("launch order %v; want the dependency first", got)
	}
	for _, id := range []string{"base-plugin", "app-plugin"} {
		if rec := f.record(id); rec.Status != registry.StatusActive || !rec.Enabled {
			t.Fatalf("%s: status %q, enabled %v", id, rec.Status, rec.Enabled)
		}
	}

	err = f.disable("base-plugin", runtime.DisableOptions{Graceful: true, Timeout: 10 * time.Second})
	if !errors.As(err, &e) || e.Code != errs.PluginDependencyError || !slices.Equal(detail(e, "dependents"), []string{"app-plugin"}) {
		t.Fatalf("Disable of a dependency: %v", err)
	}
	if !f.rt.Info("base-plugin").Running || !f.rt.Info("app-plugin").Running {
		t.Fatal("the refused Disable stopped something")
	}

	appInst, baseInst := app.current(), base.current()
	if err := f.disable("base-plugin", runtime.DisableOptions{Graceful: true, Timeout: 10 * time.Second, Force: true}); err != nil {
		t.Fatalf("forced Disable: %v", err)
	}
	if !gone(appInst.pid) || !gone(baseInst.pid) {
		t.Fatal("a process survived the forced Disable")
	}
	if got := f.shutdownOrder(); !slices.Equal(got, []string{"app-plugin", "base-plugin"}) {
		t.Fatalf("stop order %v; want the dependent first", got)
	}
	rec := f.record("app-plugin")
	if rec.Status != registry.StatusError || !rec.Enabled ||
		!strings.Contains(rec.StatusReason, "its dependency base-plugin was disabled by force") {
		t.Fatalf("dependent: status %q (%q), enabled %v", rec.Status, rec.StatusReason, rec.Enabled)
	}
	if got := appInst.shutdownReasons(); len(got) != 1 || got[0] != rec.StatusReason {
		t.Fatalf("the dependent was told %q", got)
	}
	if got := f.eventsOf("plugin.error", "app-plugin"); len(got) != 1 {
		t.Fatalf("plugin.error for the dependent: %v", got)
	}
	if rec := f.record("base-plugin"); rec.Status != registry.StatusInactive || rec.Enabled {
		t.Fatalf("dependency: status %q, enabled %v", rec.Status, rec.Enabled)
	}
}

// Lock takes several plugins' locks in id order, so two callers that name them in
// different orders do not deadlock, and each lock excludes the other holders.
func TestLockOrder(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	// Each counter is guarded by its plugin's lifecycle lock alone: -race checks that the
	// locks exclude each other's holders.
	counts := map[string]*int{"a-plugin": new(int), "b-plugin": new(int)}
	var wg sync.WaitGroup
	for _, ids := range [][]string{{"a-plugin", "b-plugin"}, {"b-plugin", "a-plugin"}, {"b-plugin", "", "a-plugin", "b-plugin"}, {"a-plugin"}, {"b-plugin"}} {
		wg.Go(func() {
			for range 200 {
				unlock := f.rt.Lock(ids...)
				for _, id := range slices.Compact(slices.Sorted(slices.Values(ids))) {
					if id != "" {
						*counts[id]++
					}
				}
				unlock()
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Lock deadlocked")
	}
	if *counts["a-plugin"] != 4*200 || *counts["b-plugin"] != 4*200 {
		t.Fatalf("counts a %d, b %d", *counts["a-plugin"], *counts["b-plugin"])
	}
}

// A plugin slow to become ready holds up only operations on itself: another plugin is
// enabled and disabled meanwhile.
func TestSlowStartDoesNotBlockOthers(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	slow := f.install(spec{id: "slow-plugin", mode: "serve"})
	f.install(spec{id: "quick-plugin", mode: "serve"})
	release := slow.hold()
	defer release()
	slowDone := make(chan error, 1)
	go func() {
		_, err := f.enable("slow-plugin", runtime.EnableOptions{})
		slowDone <- err
	}()
	eventually(t, 10*time.Second, func() bool { return f.rt.Info("slow-plugin").PID != 0 }, "the slow plugin's process")

	f.mustEnable("quick-plugin")
	if err := f.disable("quick-plugin", runtime.DisableOptions{Graceful: true, Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("the slow Enable returned (%v) before it was let through", err)
	default:
	}
	if rec := f.record("slow-plugin"); rec.Status != registry.StatusLoading {
		t.Fatalf("slow plugin: status %q", rec.Status)
	}
	release()
	select {
	case err := <-slowDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the slow Enable did not return")
	}
}

// StartEnabled starts the enabled plugins in load order and records why one did not
// start; it leaves disabled and quarantined plugins alone.
func TestStartEnabled(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	f.install(spec{id: "top-plugin", mode: "serve", deps: []string{"mid-plugin"}, enabled: true})
	f.install(spec{id: "mid-plugin", mode: "serve", deps: []string{"base-plugin"}, enabled: true})
	f.install(spec{id: "base-plugin", mode: "serve", enabled: true})
	f.install(spec{id: "off-plugin", mode: "serve"})
	f.install(spec{id: "held-plugin", mode: "serve", enabled: true, status: registry.StatusError})
	f.install(spec{id: "broken-plugin", mode: "exit", args: []string{"1"}, enabled: true})
	f.install(spec{id: "needy-plugin", mode: "serve", deps: []string{"broken-plugin"}, enabled: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f.rt.StartEnabled(ctx)

	if got, want := f.enabledOrder(), []string{"base-plugin", "mid-plugin", "top-plugin"}; !slices.Equal(got, want) {
		t.Fatalf("started %v; want %v", got, want)
	}
	for _, id := range []string{"off-plugin", "held-plugin", "needy-plugin"} {
		if slices.Contains(f.tokens.creations(), id) {
			t.Fatalf("%s was launched", id)
		}
	}
	if rec := f.record("needy-plugin"); rec.Status != registry.StatusError ||
		!strings.HasPrefix(rec.StatusReason, "did not start with the server: plugin needy-plugin depends on broken-plugin") {
		t.Fatalf("needy-plugin: status %q (%q)", rec.Status, rec.StatusReason)
	}
	if rec := f.record("broken-plugin"); rec.Status != registry.StatusError || !strings.Contains(rec.StatusReason, "exited with code 1") {
		t.Fatalf("broken-plugin: status %q (%q)", rec.Status, rec.StatusReason)
	}
	if rec := f.record("off-plugin"); rec.Status != registry.StatusInactive {
		t.Fatalf("off-plugin: status %q", rec.Status)
	}

	// ResetStatuses, as the next server start does: nothing runs before the runtime
	// starts it.
	if err := f.rt.ResetStatuses(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := f.record("top-plugin"); rec.Status != registry.StatusInactive || rec.StatusReason != "the server restarted" || !rec.Enabled {
		t.Fatalf("after ResetStatuses: %+v", rec)
	}
	if rec := f.record("broken-plugin"); rec.Status != registry.StatusError {
		t.Fatalf("ResetStatuses changed a plugin in error: %q", rec.Status)
	}
}

// An external plugin is active while an instance is connected, and inactive once the last
// one leaves.
func TestExternalPlugin(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	p := f.install(spec{id: "remote-plugin", external: true})
	status, err := f.enable("remote-plugin", runtime.EnableOptions{})
	if err != nil || status != registry.StatusInactive {
		t.Fatalf("Enable = %q, %v; want inactive until an instance connects", status, err)
	}
	if got := f.tokens.creations(); len(got) != 0 {
		t.Fatalf("an external plugin was launched: %v", got)
	}
	inst := &fakeInstance{p: p, pid: -1, session: "remote-1", done: make(chan struct{})}
	p.mu.Lock()
	p.instances = append(p.instances, inst)
	p.mu.Unlock()
	f.pres.Attach(inst)
	eventually(t, 10*time.Second, func() bool { return f.record("remote-plugin").Status == registry.StatusActive }, "the external plugin to be active")
	f.pres.Detach(inst)
	eventually(t, 10*time.Second, func() bool { return f.record("remote-plugin").Status == registry.StatusInactive }, "the external plugin to be inactive")
	if rec := f.record("remote-plugin"); rec.StatusReason != "no instance connected" || !rec.Enabled {
		t.Fatalf("after the instance left: %+v", rec)
	}

	// An instance whose first check fails (a plugin still warming up) leaves the plugin
	// inactive; its next healthy report, asked or sent unasked, makes it active.
	for _, later := range []string{"asked", "unasked"} {
		p.answer(presence.Check{Name: "db", Status: "fail"})
		inst := &fakeInstance{p: p, pid: -1, session: "remote-" + later, done: make(chan struct{})}
		p.mu.Lock()
		p.instances = append(p.instances, inst)
		p.mu.Unlock()
		f.pres.Attach(inst)
		eventually(t, 10*time.Second, func() bool { return f.rt.Info("remote-plugin").Health == runtime.HealthUnhealthy },
			"the failed first check to be recorded")
		if rec := f.record("remote-plugin"); rec.Status != registry.StatusInactive {
			t.Fatalf("after a failed first check: %q; want inactive", rec.Status)
		}
		healthy := presence.Check{Name: "db", Status: "pass"}
		if later == "asked" {
			p.answer(healthy)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := f.rt.CheckHealth(ctx, "remote-plugin")
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		} else {
			f.rt.ObserveHealth("remote-plugin", []presence.Check{healthy})
		}
		if rec := f.record("remote-plugin"); rec.Status != registry.StatusActive {
			t.Fatalf("after a healthy report %s: %q; want active", later, rec.Status)
		}
		f.pres.Detach(inst)
		eventually(t, 10*time.Second, func() bool { return f.record("remote-plugin").Status == registry.StatusInactive }, "the external plugin to be inactive")
	}
	// A disabled plugin's reports do not make it active, even from an instance still
	// attached.
	if err := f.rt.Disable(context.Background(), "remote-plugin", runtime.DisableOptions{}); err != nil {
		t.Fatal(err)
	}
	late := &fakeInstance{p: p, pid: -1, session: "remote-late", done: make(chan struct{})}
	p.mu.Lock()
	p.instances = append(p.instances, late)
	p.mu.Unlock()
	f.pres.Attach(late)
	defer f.pres.Detach(late)
	f.rt.ObserveHealth("remote-plugin", []presence.Check{{Name: "db", Status: "pass"}})
	if rec := f.record("remote-plugin"); rec.Status == registry.StatusActive || rec.Enabled {
		t.Fatalf("a disabled plugin after a healthy report: status %q, enabled %v; want not active, disabled", rec.Status, rec.Enabled)
	}
}

// Shutdown stops every running plugin in reverse load order and waits for every goroutine
// of the runtime.
func TestShutdown(t *testing.T) {
	f := newFixture(t, runtime.Config{HealthInterval: 10 * time.Millisecond})
	var all []*fakePlugin
	for _, s := range []spec{
		{id: "top-plugin", mode: "serve", deps: []string{"mid-plugin"}},
		{id: "mid-plugin", mode: "serve", deps: []string{"base-plugin"}},
		{id: "base-plugin", mode: "serve"},
		{id: "lone-plugin", mode: "serve"},
	} {
		all = append(all, f.install(s))
	}
	// The fixture's goroutines (store, log writer, fake connectors) and the supervisor's
	// launcher, which lives as long as the test binary, are not the runtime's.
	before := goleak.IgnoreCurrent()
	launcher := goleak.IgnoreAnyFunction("github.com/nexus-platform/nexus/pluginhost/supervisor.(*launcher).serve")
	status, err := f.enable("top-plugin", runtime.EnableOptions{EnableDependencies: true})
	if err != nil || status != registry.StatusActive {
		t.Fatalf("Enable = %q, %v", status, err)
	}
	f.mustEnable("lone-plugin")
	// Health checks are running.
	eventually(t, 10*time.Second, func() bool { return f.rt.Info("top-plugin").LastCheck.After(time.Now().Add(-time.Second)) }, "a health check")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f.rt.Shutdown(ctx, 10*time.Second)
	if got, want := f.shutdownOrder(), []string{"top-plugin", "mid-plugin", "lone-plugin", "base-plugin"}; !slices.Equal(got, want) {
		t.Fatalf("stop order %v; want %v (reverse load order)", got, want)
	}
	for _, p := range all {
		inst := p.current()
		if !gone(inst.pid) || !inst.ended() {
			t.Fatalf("%s: process %d survived the shutdown", p.id, inst.pid)
		}
		// Plugins stay enabled, to start again with the server.
		if rec := f.record(p.id); !rec.Enabled {
			t.Fatalf("%s was disabled by the shutdown", p.id)
		}
	}
	if err := goleak.Find(before, launcher); err != nil {
		t.Fatalf("goroutines left after Shutdown: %v", err)
	}
	f.rt.Shutdown(ctx, time.Second) // a second call returns at once
	// After Shutdown nothing starts, and the refusal is not recorded as the plugin's error
	// (it starts again with the server).
	if _, err := f.enable("lone-plugin", runtime.EnableOptions{}); !errs.Is(err, errs.PluginUnavailable) {
		t.Fatalf("Enable after Shutdown = %v; want PLUGIN_UNAVAILABLE", err)
	}
	if rec := f.record("lone-plugin"); rec.Status == registry.StatusError {
		t.Fatalf("a refused start after Shutdown was recorded as an error: %q", rec.StatusReason)
	}
}

// detail returns a list detail of an error.
func detail(e *errs.Error, key string) []string {
	v, _ := e.Details[key].([]string)
	return v
}

// Asking a disabled plugin for its health changes nothing: it is not expected to answer.
func TestCheckHealthOfADisabledPlugin(t *testing.T) {
	f := newFixture(t, runtime.Config{})
	f.install(spec{id: "echo-plugin", mode: "serve"})
	info, err := f.rt.CheckHealth(context.Background(), "echo-plugin")
	if err != nil || info.Health != runtime.HealthUnknown {
		t.Fatalf("CheckHealth of a disabled plugin: %+v, %v", info, err)
	}
	if got := f.eventsOf("plugin.health_changed", "echo-plugin"); len(got) != 0 {
		t.Fatalf("plugin.health_changed events: %v", got)
	}
	if _, err := f.rt.CheckHealth(context.Background(), "no-such-plugin"); !errs.Is(err, errs.PluginNotFound) {
		t.Fatalf("CheckHealth of an unknown plugin: %v", err)
	}
}
