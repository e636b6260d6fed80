package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
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
// connected, idle plugin session (hello and welcome, then nothing), over 1,000 sessions
// (NEXUS_BENCH_STREAMS sets the count), on the paths a plugin may take:
//   - KiB/plugin-session: what the Go SDK does by default, a grpc-go client with a
//     connection of its own per session (one plugin process), served by the host's grpc-go
//     server (plugingrpc.go): the session and its connection.
//   - KiB/grpc-session: the same sessions 100 to a connection: what a session costs
//     beyond its connection.
//   - KiB/connect-session: connect-go's client over net/http, 100 sessions to a connection,
//     served by the Connect handler on net/http's HTTP/2 server.
//
// Memory is the server's Go heap (allocated) and goroutine stacks, from its /metrics, with
// GOGC=10; rss-KiB/plugin-session is its resident memory for the first path (it keeps
// what the Go runtime freed but did not yet give back).
//
// The baseline, in the same run and server, is an idle server stream of the same API
// (TailPluginLogs, 100 to a connection), opened last: a tail open while sessions connect
// would be sent (and compress) their log entries.
func BenchmarkIdlePluginStreams(b *testing.B) {
	streams := 1000
	if n, err := strconv.Atoi(os.Getenv("NEXUS_BENCH_STREAMS")); err == nil && n > 0 {
		streams = n
	}
	for i := 0; i < b.N; i++ {
		dataDir := b.TempDir()
		// GOGC=10: the heap figures are the live heap within a tenth.
		cmd, url := startProcessWith(b, dataDir, filepath.Join(b.TempDir(), "addr"), nil, []string{"GOGC=10"})
		e := &env{t: b, URL: url, DataDir: dataDir, Admin: testAdminToken}
		installTestPlugin(e, "idle-plugin", "healthy", map[string]any{"external": true, "entry_point": nil, "args": nil}, nil)
		e.mustREST("POST", "/api/v1/plugins/idle-plugin/enable", e.Admin, map[string]any{})
		token := pluginToken(b, dataDir, "idle-plugin")
		ctx, cancel := context.WithCancel(context.Background())
		const perConn = 100 // the server allows 250 streams per connection on net/http
		clients := make([]*nexus.Client, (streams+perConn-1)/perConn)
		for j := range clients {
			clients[j] = nexus.New(url, nexus.WithToken(token), nexus.WithHTTPClient(nexus.DefaultHTTPClient()))
		}
		grpcConns := make([]*grpc.ClientConn, len(clients))
		for j := range grpcConns {
			grpcConns[j] = dialPluginGRPC(b, ctx, url)
		}
		var rss []float64
		measure := func(open func(j int)) float64 {
			before, beforeRSS := goMemory(b, url), rssOf(b, cmd.Process.Pid)
			for j := 0; j < streams; j++ {
				open(j)
			}
			time.Sleep(time.Second)
			rss = append(rss, float64(rssOf(b, cmd.Process.Pid)-beforeRSS)/float64(streams))
			return float64(goMemory(b, url)-before) / float64(streams)
		}
		own := measure(func(j int) {
			openIdleGRPCSession(b, ctx, dialPluginGRPC(b, ctx, url), token, "own"+strconv.Itoa(j))
		})
		shared := measure(func(j int) {
			openIdleGRPCSession(b, ctx, grpcConns[j/perConn], token, "shared"+strconv.Itoa(j))
		})
		connectSessions := measure(func(j int) {
			s := clients[j/perConn].PluginHost.Connect(ctx)
			if err := s.Send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
				PluginId: "idle-plugin", InstanceId: "connect" + strconv.Itoa(j)}}}); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Receive(); err != nil {
				b.Fatalf("session %d: %v", j, err)
			}
		})
		tails := measure(func(j int) {
			s, err := clients[j/perConn].Plugins.TailPluginLogs(ctx, connect.NewRequest(&pluginv1.TailPluginLogsRequest{PluginId: "idle-plugin"}))
			if err != nil {
				b.Fatal(err)
			}
			_ = s
		})
		b.ReportMetric(rss[0]/1024, "rss-KiB/plugin-session")
		b.ReportMetric(own/1024, "KiB/plugin-session")
		b.ReportMetric(shared/1024, "KiB/grpc-session")
		b.ReportMetric(connectSessions/1024, "KiB/connect-session")
		b.ReportMetric(tails/1024, "KiB/tail-stream")
		cancel()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// dialPluginGRPC makes a grpc-go client for a server as the Go SDK does by default (its
// fixed 4 MiB windows); it closes when ctx ends.
func dialPluginGRPC(tb testing.TB, ctx context.Context, hostURL string) *grpc.ClientConn {
	tb.Helper()
	u, err := neturl.Parse(hostURL)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(4<<20))
	if err != nil {
		tb.Fatal(err)
	}
	context.AfterFunc(ctx, func() { _ = conn.Close() })
	return conn
}

// openIdleGRPCSession opens a plugin session on conn: it says hello and reads the welcome.
func openIdleGRPCSession(tb testing.TB, ctx context.Context, conn *grpc.ClientConn, token, instance string) {
	tb.Helper()
	callCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	cs, err := conn.NewStream(callCtx, &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true},
		pluginhostv1connect.PluginHostServiceConnectProcedure)
	if err != nil {
		tb.Fatal(err)
	}
	if err := cs.SendMsg(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
		PluginId: "idle-plugin", InstanceId: instance}}}); err != nil {
		tb.Fatal(err)
	}
	var welcome pluginhostv1.ConnectResponse
	if err := cs.RecvMsg(&welcome); err != nil || welcome.GetWelcome() == nil {
		tb.Fatalf("session %s: no welcome: %v", instance, err)
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

// goMemory reads a server's Go heap (allocated bytes) plus goroutine stacks from its
// /metrics.
func goMemory(tb testing.TB, url string) int64 {
	tb.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(string(raw), "\n") {
		for _, name := range []string{"go_memstats_heap_alloc_bytes ", "go_memstats_stack_inuse_bytes "} {
			if v, ok := strings.CutPrefix(line, name); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					tb.Fatalf("%s: %v", line, err)
				}
				total += int64(f)
			}
		}
	}
	if total == 0 {
		tb.Fatal("no go_memstats in /metrics")
	}
	return total
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
