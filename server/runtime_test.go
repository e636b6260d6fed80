package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/server"
)

// startRuntimeServer starts a server with short health and crash-loop settings.
func startRuntimeServer(t *testing.T) *env {
	t.Helper()
	return startServerWith(t, testLogSink(), slog.LevelDebug, func(c *server.Config) {
		c.HealthInterval = 300 * time.Millisecond
		c.HealthMisses = 2
		c.CrashLoopCount = 3
		c.CrashLoopWindow = time.Minute
	})
}

func installTestPlugin(e *env, id, mode string, extra map[string]any, cfg map[string]any) {
	e.t.Helper()
	body := map[string]any{}
	if cfg != nil {
		body["config"] = cfg
	}
	res := installFromBytes(e, testPluginPackage(e.t, id, mode, extra), body)
	if res.Status != http.StatusOK {
		e.t.Fatalf("install %s: %d %s", id, res.Status, res.Raw)
	}
}

// pluginPID is the pid of a running plugin, from its "Plugin active" log entry.
// Logs are stored in batches, so it polls briefly.
func pluginPID(e *env, id string) int {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		logs := e.mustREST("GET", "/api/v1/plugins/"+id+"/logs?search=Plugin+active&per_page=1", e.Admin, nil)["logs"].([]any)
		if len(logs) > 0 {
			return int(logs[0].(map[string]any)["metadata"].(map[string]any)["pid"].(float64))
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s never became active", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func processGone(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil {
		return true
	}
	// A zombie still answers kill(0); it is gone for our purposes once it is not running.
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	fields := strings.Fields(string(b))
	return len(fields) > 2 && fields[2] == "Z"
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

func status(e *env, id string) (string, map[string]any) {
	p := e.mustREST("GET", "/api/v1/plugins/"+id, e.Admin, nil)["plugin"].(map[string]any)
	return p["status"].(string), p
}

func TestEnableDisableRestartLifecycle(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "life-plugin", "healthy", nil, nil)

	d := e.mustREST("POST", "/api/v1/plugins/life-plugin/enable", e.Admin, map[string]any{})
	if d["status"] != "active" {
		t.Fatalf("enable answered %v", d)
	}
	pid := pluginPID(e, "life-plugin")
	if processGone(pid) {
		t.Fatalf("plugin process %d is not running", pid)
	}
	if st, p := status(e, "life-plugin"); st != "active" || p["enabled"] != true || p["health"] != "healthy" {
		t.Fatalf("after enable: %s %v %v", st, p["enabled"], p["health"])
	}
	h := e.mustREST("GET", "/api/v1/plugins/life-plugin/health?refresh=true", e.User, nil)["health"].(map[string]any)
	if h["status"] != "healthy" || len(h["checks"].([]any)) != 1 || h["last_check"] == nil {
		t.Fatalf("health = %v", h)
	}
	compareShape(t, "", seed(t, "get_health")["data"], map[string]any{"health": h})

	d = e.mustREST("POST", "/api/v1/plugins/life-plugin/restart", e.Admin, map[string]any{"reason": "test", "timeout_seconds": 5})
	if d["status"] != "active" {
		t.Fatalf("restart answered %v", d)
	}
	if !processGone(pid) {
		t.Fatalf("old process %d survived the restart", pid)
	}
	var pid2 int
	waitFor(t, "the new process's pid in the logs", 5*time.Second, func() bool { pid2 = pluginPID(e, "life-plugin"); return pid2 != pid })
	if processGone(pid2) {
		t.Fatalf("the restarted process %d is not running", pid2)
	}

	d = e.mustREST("POST", "/api/v1/plugins/life-plugin/disable", e.Admin, map[string]any{"reason": "Maintenance", "graceful_shutdown": true, "timeout_seconds": 5})
	compareShape(t, "", seed(t, "disable_plugin")["data"], d)
	if d["status"] != "inactive" || d["reason"] != "Maintenance" {
		t.Fatalf("disable answered %v", d)
	}
	if !processGone(pid2) {
		t.Fatalf("process %d survived disable", pid2)
	}
	if st, p := status(e, "life-plugin"); st != "inactive" || p["enabled"] != false {
		t.Fatalf("after disable: %s %v", st, p["enabled"])
	}
}

func TestStartupFailures(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "never-ready", "hang-startup", map[string]any{"start_timeout_seconds": 1}, nil)
	start := time.Now()
	res := e.rest("POST", "/api/v1/plugins/never-ready/enable", e.Admin, map[string]any{})
	if res.Status != 500 || res.errorCode() != "PLUGIN_STARTUP_FAILED" || !strings.Contains(string(res.Raw), "not ready within 1s") {
		t.Fatalf("hang on startup: %d %s", res.Status, res.Raw)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("enable took %s", time.Since(start))
	}
	if !strings.Contains(string(res.Raw), "hanging before connecting") {
		t.Errorf("the reason lacks the last log lines: %s", res.Raw)
	}
	if st, p := status(e, "never-ready"); st != "error" || !strings.Contains(p["error"].(string), "not ready") {
		t.Fatalf("status after failed start: %s %v", st, p["error"])
	}

	installTestPlugin(e, "dies-at-once", "crash-loop", nil, nil)
	res = e.rest("POST", "/api/v1/plugins/dies-at-once/enable", e.Admin, map[string]any{})
	if res.errorCode() != "PLUGIN_STARTUP_FAILED" || !strings.Contains(string(res.Raw), "exited with code 3") || !strings.Contains(string(res.Raw), "boom") {
		t.Fatalf("crash at start: %d %s", res.Status, res.Raw)
	}

	installTestPlugin(e, "needs-secret", "healthy", map[string]any{"configuration": map[string]any{
		"token": map[string]any{"type": "string", "required": true, "secret": true}}}, nil)
	res = e.rest("POST", "/api/v1/plugins/needs-secret/enable", e.Admin, map[string]any{})
	if res.errorCode() != "PLUGIN_CONFIGURATION_ERROR" || !strings.Contains(string(res.Raw), "token") {
		t.Fatalf("missing required config: %d %s", res.Status, res.Raw)
	}
}

func TestCrashIsRestartedAndCrashLoopIsQuarantined(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "crash-once", "crash-once", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/crash-once/enable", e.Admin, map[string]any{})
	first := pluginPID(e, "crash-once")
	waitFor(t, "a restart after the crash", 20*time.Second, func() bool {
		logs := e.mustREST("GET", "/api/v1/plugins/crash-once/logs?search=crashed&per_page=5", e.Admin, nil)["logs"].([]any)
		st, _ := status(e, "crash-once")
		return len(logs) > 0 && st == "active" && pluginPID(e, "crash-once") != first
	})
	logs := e.mustREST("GET", "/api/v1/plugins/crash-once/logs?search=crashed&per_page=5", e.Admin, nil)["logs"].([]any)
	if msg := logs[0].(map[string]any)["message"].(string); !strings.Contains(msg, "exited with code 7") || !strings.Contains(msg, "restarting in") {
		t.Errorf("crash log = %q", msg)
	}

	// A plugin that becomes active and then crashes every time is quarantined.
	installTestPlugin(e, "crash-loop", "healthy", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/crash-loop/enable", e.Admin, map[string]any{})
	lastPID := 0
	for i := 0; i < 3; i++ {
		var pid int
		waitFor(t, "the plugin to run again", 20*time.Second, func() bool {
			st, _ := status(e, "crash-loop")
			pid = pluginPID(e, "crash-loop")
			return st == "active" && pid != lastPID
		})
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
		lastPID = pid
		waitFor(t, "the crash to be noticed", 10*time.Second, func() bool { st, _ := status(e, "crash-loop"); return st != "active" })
	}
	waitFor(t, "quarantine", 20*time.Second, func() bool { st, _ := status(e, "crash-loop"); return st == "error" })
	_, p := status(e, "crash-loop")
	if reason := p["error"].(string); !strings.Contains(reason, "quarantined after 3 crashes") || !strings.Contains(reason, "SIGKILL") {
		t.Fatalf("quarantine reason = %q", reason)
	}
	time.Sleep(1500 * time.Millisecond) // well past any backoff: it must stay down
	if st, _ := status(e, "crash-loop"); st != "error" {
		t.Fatalf("a quarantined plugin was restarted: %s", st)
	}
	// An admin brings it back.
	if d := e.mustREST("POST", "/api/v1/plugins/crash-loop/enable", e.Admin, map[string]any{}); d["status"] != "active" {
		t.Fatalf("enable after quarantine: %v", d)
	}
}

func TestHangOnShutdownIsKilled(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "stubborn", "hang-shutdown", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/stubborn/enable", e.Admin, map[string]any{})
	pid := pluginPID(e, "stubborn")
	start := time.Now()
	e.mustREST("POST", "/api/v1/plugins/stubborn/disable", e.Admin, map[string]any{"graceful_shutdown": true, "timeout_seconds": 1})
	took := time.Since(start)
	if !processGone(pid) {
		t.Fatalf("process %d survived a disable", pid)
	}
	if took < time.Second || took > 15*time.Second {
		t.Errorf("disable took %s (1s grace, then SIGTERM ignored, then SIGKILL after the kill grace)", took)
	}
}

func TestHealthCheckTimeoutRestartsPlugin(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "goes-quiet", "stop-health", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/goes-quiet/enable", e.Admin, map[string]any{})
	first := pluginPID(e, "goes-quiet")
	waitFor(t, "a restart for missed health checks", 40*time.Second, func() bool {
		logs := e.mustREST("GET", "/api/v1/plugins/goes-quiet/logs?search=missed&per_page=1", e.Admin, nil)["logs"].([]any)
		return len(logs) > 0 && processGone(first)
	})
}

func TestPluginOutputIsCapturedBoundedAndRedacted(t *testing.T) {
	e := startRuntimeServer(t)
	// 200,000 lines before it connects: under a loaded machine (-race, tests beside it) that
	// takes longer than the test plugins' usual 5 s start timeout.
	installTestPlugin(e, "noisy", "flood", map[string]any{"start_timeout_seconds": 60}, map[string]any{"secret_token": "s3cr3t-value-42"})
	e.mustREST("POST", "/api/v1/plugins/noisy/enable", e.Admin, map[string]any{})
	waitFor(t, "the flood to end", 30*time.Second, func() bool {
		logs := e.mustREST("GET", "/api/v1/plugins/noisy/logs?search=flood+done", e.Admin, nil)["logs"].([]any)
		return len(logs) == 1
	})
	done := e.mustREST("GET", "/api/v1/plugins/noisy/logs?search=flood+done", e.Admin, nil)["logs"].([]any)[0].(map[string]any)
	if done["level"] != "WARNING" || done["metadata"].(map[string]any)["lines"] != 200000.0 {
		t.Errorf("JSON line not parsed: %v", done)
	}
	trunc := e.mustREST("GET", "/api/v1/plugins/noisy/logs?search=truncated&per_page=1", e.Admin, nil)["logs"].([]any)
	if len(trunc) != 1 || len(trunc[0].(map[string]any)["message"].(string)) > 20<<10 {
		t.Errorf("the oversized line was not cut")
	}
	total := e.mustREST("GET", "/api/v1/plugins/noisy/logs?per_page=1", e.Admin, nil)["pagination"].(map[string]any)["total"].(float64)
	if total > 10000 {
		t.Errorf("%v records kept, retention is 10000", total)
	}
	if dropped := e.mustREST("GET", "/api/v1/plugins/noisy/logs?search=lines+dropped", e.Admin, nil)["logs"].([]any); len(dropped) == 0 {
		t.Errorf("no record says that flooded lines were dropped")
	}
	// Secrets never reach stored logs, from stdout or from log frames.
	waitFor(t, "the secret lines", 10*time.Second, func() bool {
		return len(e.mustREST("GET", "/api/v1/plugins/noisy/logs?search=carrying+the+secret", e.Admin, nil)["logs"].([]any)) == 2
	})
	for _, l := range e.mustREST("GET", "/api/v1/plugins/noisy/logs?search=carrying+the+secret", e.Admin, nil)["logs"].([]any) {
		msg := l.(map[string]any)["message"].(string)
		if strings.Contains(msg, "s3cr3t-value-42") || !strings.Contains(msg, "***hidden***") {
			t.Errorf("secret not redacted: %q", msg)
		}
	}
	if st, _ := status(e, "noisy"); st != "active" {
		t.Errorf("the flooding plugin is %s", st)
	}
}

func TestLiveConfigurationPush(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "live-config", "healthy", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/live-config/enable", e.Admin, map[string]any{})
	d := e.mustREST("PUT", "/api/v1/plugins/live-config/config", e.Admin, map[string]any{"greeting": "hi"})
	if d["restart_required"] != false {
		t.Fatalf("update = %v", d)
	}
	res := e.rest("PUT", "/api/v1/plugins/live-config/config", e.Admin, map[string]any{"reject_changes": true, "greeting": "nope"})
	if res.errorCode() != "PLUGIN_CONFIGURATION_ERROR" || !strings.Contains(string(res.Raw), "rejects this configuration") {
		t.Fatalf("rejected change: %d %s", res.Status, res.Raw)
	}
	cfg := e.mustREST("GET", "/api/v1/plugins/live-config/config", e.Admin, nil)["configuration"].(map[string]any)
	if cfg["greeting"] != "hi" || cfg["reject_changes"] != false {
		t.Fatalf("a rejected change was stored: %v", cfg)
	}
	pid := pluginPID(e, "live-config")
	d = e.mustREST("PUT", "/api/v1/plugins/live-config/config?restart=true", e.Admin, map[string]any{"workers": 4})
	if d["restart_required"] != true {
		t.Fatalf("restart_required = %v", d["restart_required"])
	}
	waitFor(t, "the restart the caller asked for", 20*time.Second, func() bool {
		st, _ := status(e, "live-config")
		return st == "active" && processGone(pid)
	})
}

func TestPluginTokenCannotOpenAnotherPluginsStream(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "plugin-a", "healthy", map[string]any{"external": true, "entry_point": nil, "args": nil}, nil)
	installTestPlugin(e, "plugin-b", "healthy", map[string]any{"external": true, "entry_point": nil, "args": nil}, nil)
	e.mustREST("POST", "/api/v1/plugins/plugin-b/enable", e.Admin, map[string]any{})
	tokenA := e.token(store.RolePlugin, "plugin-a")
	c := nexus.New(e.URL, nexus.WithToken(tokenA))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := c.PluginHost.Connect(ctx)
	_ = stream.Send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{PluginId: "plugin-b"}}})
	_, err := stream.Receive()
	if nexus.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" || connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("hello as another plugin: %v", err)
	}
	_ = stream.CloseRequest()
	_ = stream.CloseResponse()
}

func TestMemoryLimitStopsPlugin(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "hog", "hog", map[string]any{"resource_limits": map[string]any{"memory_mb": 96}}, nil)
	perms := e.mustREST("GET", "/api/v1/plugins/hog/permissions", e.Admin, nil)
	if enf := perms["limits_enforcement"].(map[string]any); enf["memory_mb"] == "" {
		t.Fatalf("the memory limit is not enforced: %v", enf)
	}
	e.mustREST("POST", "/api/v1/plugins/hog/enable", e.Admin, map[string]any{})
	pid := pluginPID(e, "hog")
	waitFor(t, "the plugin to be stopped for its memory", 30*time.Second, func() bool {
		st, _ := status(e, "hog")
		return st == "error"
	})
	_, p := status(e, "hog")
	// Watched by the host ("exceeds its limit"), or killed by the kernel under a cgroup
	// ("memory limit exceeded"), depending on what this host allows.
	if reason := p["error"].(string); !strings.Contains(reason, "exceeds its limit of 96 MiB") && !strings.Contains(reason, "memory limit exceeded") {
		t.Fatalf("reason = %q", reason)
	}
	if !processGone(pid) {
		t.Fatalf("process %d survived", pid)
	}
}

func TestMetricsOfARunningPlugin(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "measured", "healthy", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/measured/enable", e.Admin, map[string]any{})
	waitFor(t, "a resource sample", 10*time.Second, func() bool {
		d := e.mustREST("GET", "/api/v1/plugins/measured/metrics?resolution=1m", e.User, nil)
		return len(d["metrics"].(map[string]any)["memory_usage_mb"].([]any)) > 0
	})
	d := e.mustREST("GET", "/api/v1/plugins/measured/metrics?resolution=5m&metrics=memory_usage_mb&metrics=file_handles", e.User, nil)
	compareShape(t, "", seed(t, "get_metrics")["data"], d)
	if d["time_range"].(map[string]any)["resolution"] != "5m" || len(d["metrics"].(map[string]any)["file_handles"].([]any)) == 0 {
		t.Fatalf("metrics = %v", d)
	}
	if got := d["metrics"].(map[string]any)["requests_per_minute"].([]any); len(got) != 0 {
		t.Errorf("a series that was not asked for is filled: %v", got)
	}
	list := e.mustREST("GET", "/api/v1/plugins", e.Admin, nil)["plugins"].([]any)[0].(map[string]any)
	if list["metrics"].(map[string]any)["uptime_seconds"].(float64) < 0 {
		t.Errorf("list metrics = %v", list["metrics"])
	}
	detail := e.mustREST("GET", "/api/v1/plugins/measured", e.Admin, nil)["plugin"].(map[string]any)
	if mem := detail["metrics"].(map[string]any)["resources"].(map[string]any)["memory_usage_mb"].(float64); mem <= 0 {
		t.Errorf("detail memory_usage_mb = %v", mem)
	}
	resp, err := http.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `nexus_plugin_up{plugin_id="measured"} 1`) {
		t.Errorf("/metrics lacks nexus_plugin_up for the plugin")
	}
	res := e.rest("GET", "/api/v1/plugins/measured/metrics?resolution=1m&start_time=2020-01-01T00:00:00Z", e.User, nil)
	if res.errorCode() != "VALIDATION_ERROR" {
		t.Errorf("a 1m range beyond retention: %d %s", res.Status, res.Raw)
	}
}

func TestExternalPluginInstances(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "remote-plugin", "healthy", map[string]any{"external": true, "entry_point": nil, "args": nil}, nil)
	if d := e.mustREST("POST", "/api/v1/plugins/remote-plugin/enable", e.Admin, map[string]any{}); d["status"] != "inactive" {
		t.Fatalf("an external plugin without instances is %v", d["status"])
	}
	token := e.token(store.RolePlugin, "remote-plugin")
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func(i int) {
			done <- plugin.Run(ctx, plugin.Plugin{Version: "1.0.0"},
				plugin.WithHost(e.URL), plugin.WithToken(token), plugin.WithPluginID("remote-plugin"),
				plugin.WithInstanceID("instance-"+strconv.Itoa(i)), plugin.WithStderr(io.Discard))
		}(i)
	}
	waitFor(t, "both instances to be connected and the plugin active", 10*time.Second, func() bool {
		st, p := status(e, "remote-plugin")
		return st == "active" && p["runtime"].(map[string]any)["instances"] == 2.0
	})
	cancel()
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	waitFor(t, "the plugin to be inactive without instances", 10*time.Second, func() bool {
		st, _ := status(e, "remote-plugin")
		return st == "inactive"
	})
	waitFor(t, "the session goroutines to end", 10*time.Second, func() bool { return runtime.NumGoroutine() <= before+5 })
}

func TestTailPluginLogs(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "tailed", "healthy", nil, nil)
	c := nexus.New(e.URL, nexus.WithToken(e.Admin))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := c.Plugins.TailPluginLogs(ctx, connect.NewRequest(&pluginv1.TailPluginLogsRequest{PluginId: "tailed", Backlog: 5}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || !strings.Contains(stream.Msg().GetEntry().GetMessage(), "installed") {
		t.Fatalf("first entry (backlog): %v %v", stream.Msg(), stream.Err())
	}
	go e.mustREST("POST", "/api/v1/plugins/tailed/enable", e.Admin, map[string]any{})
	for stream.Receive() {
		if strings.Contains(stream.Msg().GetEntry().GetMessage(), "test plugin started") {
			return
		}
	}
	t.Fatalf("the plugin's own log frame never arrived: %v", stream.Err())
}

func TestNoLeakedProcessesOrGoroutinesAfterLifecycles(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "cycled", "healthy", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/cycled/enable", e.Admin, map[string]any{})
	e.mustREST("POST", "/api/v1/plugins/cycled/disable", e.Admin, map[string]any{"timeout_seconds": 5})
	base := runtime.NumGoroutine()
	var pids []int
	for i := 0; i < 3; i++ {
		e.mustREST("POST", "/api/v1/plugins/cycled/enable", e.Admin, map[string]any{})
		var pid int
		waitFor(t, "the new pid", 5*time.Second, func() bool { pid = pluginPID(e, "cycled"); return !slices.Contains(pids, pid) })
		pids = append(pids, pid)
		e.mustREST("POST", "/api/v1/plugins/cycled/disable", e.Admin, map[string]any{"timeout_seconds": 5})
	}
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("process %d is still running", pid)
		}
	}
	waitFor(t, "goroutines back to the baseline", 10*time.Second, func() bool { return runtime.NumGoroutine() <= base+3 })
}

func TestForcedDisableSkipsTheShutdownFrame(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "forced", "hang-shutdown", nil, nil)
	e.mustREST("POST", "/api/v1/plugins/forced/enable", e.Admin, map[string]any{})
	pid := pluginPID(e, "forced")
	start := time.Now()
	// The plugin ignores SIGTERM: a forced disable goes SIGTERM, then SIGKILL after timeout_seconds.
	e.mustREST("POST", "/api/v1/plugins/forced/disable", e.Admin, map[string]any{"graceful_shutdown": false, "timeout_seconds": 1})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("forced disable took %s", took)
	}
	if !processGone(pid) {
		t.Fatalf("process %d survived a forced disable", pid)
	}
	if st, _ := status(e, "forced"); st != "inactive" {
		t.Fatalf("status %s", st)
	}
}

func TestInstallWithAutoEnable(t *testing.T) {
	e := startRuntimeServer(t)
	res := installFromBytes(e, testPluginPackage(t, "auto-plugin", "healthy", nil), map[string]any{"auto_enable": true})
	if res.Status != http.StatusOK {
		t.Fatalf("install: %s", res.Raw)
	}
	compareShape(t, "", seed(t, "install_plugin")["data"], res.data())
	if p := res.data()["plugin"].(map[string]any); p["status"] != "active" || p["enabled"] != true {
		t.Fatalf("plugin = %v", p)
	}
}

func TestSafeUpdateAndRollback(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "upd-plugin", "healthy", nil, map[string]any{"greeting": "kept"})
	e.mustREST("POST", "/api/v1/plugins/upd-plugin/enable", e.Admin, map[string]any{})
	update := func(mode, version string, extra map[string]any) restResult {
		m := map[string]any{"version": version}
		for k, v := range extra {
			m[k] = v
		}
		return e.rest("PUT", "/api/v1/plugins/upd-plugin", e.Admin, map[string]any{
			"source": "file", "package_data": testPluginPackage(t, "upd-plugin", mode, m),
			"backup_current": true, "restart_plugin": true,
		})
	}
	check := func(wantVersion string) {
		t.Helper()
		st, p := status(e, "upd-plugin")
		if st != "active" || p["version"] != wantVersion {
			t.Fatalf("status %s version %v, want active %s", st, p["version"], wantVersion)
		}
		cfg := e.mustREST("GET", "/api/v1/plugins/upd-plugin/config", e.Admin, nil)["configuration"].(map[string]any)
		if cfg["greeting"] != "kept" {
			t.Fatalf("configuration lost: %v", cfg)
		}
	}
	// A new version that crashes at start: the old one runs again, with its configuration.
	res := update("crash-loop", "2.0.0", nil)
	if res.errorCode() != "PLUGIN_STARTUP_FAILED" || !strings.Contains(string(res.Raw), "1.0.0 was restored") || !strings.Contains(string(res.Raw), "exited with code 3") {
		t.Fatalf("crashing update: %d %s", res.Status, res.Raw)
	}
	check("1.0.0")
	// A new version that fails its health checks: the same.
	res = update("unhealthy", "2.0.0", map[string]any{"start_timeout_seconds": 1})
	if res.errorCode() != "PLUGIN_STARTUP_FAILED" || !strings.Contains(string(res.Raw), "restored") {
		t.Fatalf("unhealthy update: %d %s", res.Status, res.Raw)
	}
	check("1.0.0")
	if backups := e.mustREST("GET", "/api/v1/plugins/upd-plugin/backups", e.Admin, nil)["backups"].([]any); len(backups) != 0 {
		t.Fatalf("failed updates left backups: %v", backups)
	}
	// A good update keeps a backup; rolling back to it restores the old version, running.
	res = update("healthy", "2.0.0", nil)
	if res.Status != http.StatusOK {
		t.Fatalf("update: %s", res.Raw)
	}
	compareShape(t, "", seed(t, "update_plugin")["data"], res.data())
	u := res.data()["update"].(map[string]any)
	if u["old_version"] != "1.0.0" || u["new_version"] != "2.0.0" || u["backup_id"] == "" {
		t.Fatalf("update = %v", u)
	}
	check("2.0.0")
	d := e.mustREST("POST", "/api/v1/plugins/upd-plugin/rollback", e.Admin, map[string]any{"backup_id": u["backup_id"]})
	if r := d["rollback"].(map[string]any); r["from_version"] != "2.0.0" || r["to_version"] != "1.0.0" {
		t.Fatalf("rollback = %v", r)
	}
	check("1.0.0")
	if res := e.rest("POST", "/api/v1/plugins/upd-plugin/rollback", e.Admin, map[string]any{"backup_id": "backup_nope"}); res.errorCode() != "PLUGIN_NOT_FOUND" {
		t.Fatalf("unknown backup: %s", res.Raw)
	}
	if dirs := pluginDirs(t, e.DataDir); len(dirs) != 1 {
		t.Fatalf("package directories left: %v", dirs)
	}
}

func TestReinstallFromUninstallBackup(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 321})
	u := e.mustREST("DELETE", "/api/v1/plugins/analytics-plugin?backup=true", e.Admin, nil)["uninstallation"].(map[string]any)
	e.mustREST("POST", "/api/v1/plugins/analytics-plugin/rollback", e.Admin, map[string]any{"backup_id": u["backup_id"]})
	cfg := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/config", e.Admin, nil)["configuration"].(map[string]any)
	if cfg["batch_size"] != 321.0 {
		t.Fatalf("configuration after the reinstall: %v", cfg)
	}
}
