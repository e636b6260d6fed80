package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/server"
)

// BenchmarkEnableToActive measures enable -> active for the example analytics plugin
// (built, packaged and installed once; then enabled and disabled b.N times). The baseline,
// in the same run, is starting the same binary as a bare process (fork, exec, kill, reap):
// the ratio is the cost of the whole start protocol (connect, hello, welcome, first health
// check) over the cost of a process start.
func BenchmarkEnableToActive(b *testing.B) {
	stage := b.TempDir()
	if err := os.MkdirAll(filepath.Join(stage, "bin"), 0o755); err != nil {
		b.Fatal(err)
	}
	manifest, err := os.ReadFile("../clients/go/plugin/examples/analytics-plugin/plugin.json")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "plugin.json"), manifest, 0o644); err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(stage, "bin", "analytics-plugin")
	build := exec.Command("go", "build", "-o", bin, "../clients/go/plugin/examples/analytics-plugin")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the example: %v\n%s", err, out)
	}
	var buf bytes.Buffer
	if err := archive.Create(&buf, stage); err != nil {
		b.Fatal(err)
	}
	e := startServerWith(b, io.Discard, slog.LevelWarn, func(c *server.Config) { c.MaxUnpackedBytes = 256 << 20 })
	pkgFile := filepath.Join(b.TempDir(), "analytics-plugin.tar.gz")
	if err := os.WriteFile(pkgFile, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	if res := e.rest("POST", "/api/v1/plugins/install", e.Admin, map[string]any{"source": "file", "file_path": pkgFile}); res.Status != http.StatusOK {
		b.Fatalf("install: %s", res.Raw)
	}
	var spawnTotal, enableTotal time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		cmd := exec.Command(bin)
		cmd.Env = []string{"NEXUS_PLUGIN_ID=analytics-plugin", "NEXUS_HOST=http://127.0.0.1:1", "NEXUS_PLUGIN_TOKEN=x"}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		spawnTotal += time.Since(start)

		start = time.Now()
		if d := e.mustREST("POST", "/api/v1/plugins/analytics-plugin/enable", e.Admin, map[string]any{}); d["status"] != "active" {
			b.Fatalf("enable: %v", d)
		}
		enableTotal += time.Since(start)
		b.StopTimer()
		e.mustREST("POST", "/api/v1/plugins/analytics-plugin/disable", e.Admin, map[string]any{"timeout_seconds": 5})
		b.StartTimer()
	}
	b.StopTimer()
	enable := float64(enableTotal.Microseconds()) / float64(b.N) / 1000
	base := float64(spawnTotal.Microseconds()) / float64(b.N) / 1000
	b.ReportMetric(enable, "ms/enable-to-active")
	b.ReportMetric(base, "ms/process-start")
	b.ReportMetric(enable/base, "x-process-start")
}

// BenchmarkIdlePluginStreams measures the resident memory a server process spends per
// connected, idle plugin session (hello and welcome, then nothing), over 1,000 sessions.
// The baseline, in the same run and server, is an idle server stream of the same API
// (TailPluginLogs): the ratio is what a plugin session costs over any open stream.
func BenchmarkIdlePluginStreams(b *testing.B) {
	streams := 1000
	if n, err := strconv.Atoi(os.Getenv("NEXUS_BENCH_STREAMS")); err == nil && n > 0 {
		streams = n
	}
	for i := 0; i < b.N; i++ {
		dataDir := b.TempDir()
		cmd, url := startProcess(b, dataDir)
		e := &env{t: b, URL: url, DataDir: dataDir, Admin: testAdminToken}
		installTestPlugin(e, "idle-plugin", "healthy", map[string]any{"external": true, "entry_point": nil, "args": nil}, nil)
		e.mustREST("POST", "/api/v1/plugins/idle-plugin/enable", e.Admin, map[string]any{})
		token := pluginToken(b, dataDir, "idle-plugin")
		ctx, cancel := context.WithCancel(context.Background())
		clients := make([]*nexus.Client, 10) // the server allows 250 streams per connection
		for j := range clients {
			clients[j] = nexus.New(url, nexus.WithToken(token), nexus.WithHTTPClient(nexus.DefaultHTTPClient()))
		}
		measure := func(open func(c *nexus.Client, j int)) float64 {
			before := rssOf(b, cmd.Process.Pid)
			for j := 0; j < streams; j++ {
				open(clients[j%len(clients)], j)
			}
			time.Sleep(time.Second)
			return float64(rssOf(b, cmd.Process.Pid)-before) / float64(streams)
		}
		tails := measure(func(c *nexus.Client, j int) {
			s, err := c.Plugins.TailPluginLogs(ctx, connect.NewRequest(&pluginv1.TailPluginLogsRequest{PluginId: "idle-plugin"}))
			if err != nil {
				b.Fatal(err)
			}
			_ = s
		})
		sessions := measure(func(c *nexus.Client, j int) {
			s := c.PluginHost.Connect(ctx)
			if err := s.Send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
				PluginId: "idle-plugin", InstanceId: "i" + strconv.Itoa(j)}}}); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Receive(); err != nil {
				b.Fatalf("session %d: %v", j, err)
			}
		})
		b.ReportMetric(sessions/1024, "KiB/plugin-session")
		b.ReportMetric(tails/1024, "KiB/tail-stream")
		if tails > 0 {
			b.ReportMetric(sessions/tails, "x-tail-stream")
		}
		cancel()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// pluginToken issues a plugin token in a server's data directory (the store allows a
// second process while the server runs).
func pluginToken(tb testing.TB, dataDir, pluginID string) string {
	tb.Helper()
	st, err := storesqlite.Open(context.Background(), filepath.Join(dataDir, "nexus.db"))
	if err != nil {
		tb.Fatal(err)
	}
	defer st.Close()
	plain, _, err := identity.New(st).Create(context.Background(), "bench", store.RolePlugin, pluginID)
	if err != nil {
		tb.Fatal(err)
	}
	return plain
}

// rssOf reads a process's resident memory in bytes.
func rssOf(tb testing.TB, pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
