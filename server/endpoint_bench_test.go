package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/server"
)

// BenchmarkPluginEndpoint measures a small REST call to a plugin's HTTP endpoint through
// Nexus (the call carried over the plugin's stream) beside the same handler behind
// net/http/httputil.ReverseProxy, what a user would otherwise put in front of it, in the same
// run: each iteration times 500 sequential calls (p50) and 2,000 calls from 16 clients
// (throughput) on each path, alternating. It reports both p50s and throughputs and their
// ratios (Nexus over the proxy: p50 ratio below 1.3 and throughput ratio above 0.7 are the
// targets). The plugin and the backend run in this process, as the server does.
func BenchmarkPluginEndpoint(b *testing.B) {
	e := startServerWith(b, io.Discard, slog.LevelWarn, func(*server.Config) {})
	installTestPlugin(e, "bench-web", "healthy", map[string]any{"external": true, "entry_point": nil, "args": nil,
		"api_endpoints": []map[string]any{{"path": "/api/v1/bench/hello", "methods": []string{"GET"}}}}, nil)
	e.mustREST(http.MethodPost, "/api/v1/plugins/bench-web/enable", e.Admin, nil)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"hello":"world"}`)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	token := e.token(store.RolePlugin, "bench-web")
	go func() {
		_ = plugin.Run(ctx, plugin.Plugin{Version: "1.0.0", HTTP: handler}, plugin.WithHost(e.URL), plugin.WithToken(token),
			plugin.WithPluginID("bench-web"), plugin.WithStderr(io.Discard))
	}()
	waitFor(b, "the plugin active", 10*time.Second, func() bool { st, _ := status(e, "bench-web"); return st == "active" })

	backend := httptest.NewServer(handler)
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	defer proxy.Close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	call := func(u string) {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+e.User)
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d", u, res.StatusCode)
		}
	}
	p50 := func(u string) time.Duration {
		d := make([]time.Duration, 500)
		for i := range d {
			start := time.Now()
			call(u)
			d[i] = time.Since(start)
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	throughput := func(u string) float64 {
		const clients, calls = 16, 2000
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range calls / clients {
					call(u)
				}
			}()
		}
		wg.Wait()
		return calls / time.Since(start).Seconds()
	}
	nexusURL, proxyURL := e.URL+"/api/v1/bench/hello", proxy.URL+"/api/v1/bench/hello"
	call(nexusURL) // warm both paths
	call(proxyURL)
	var np, pp time.Duration
	var nt, pt float64
	b.ResetTimer()
	for range b.N {
		np += p50(nexusURL)
		pp += p50(proxyURL)
		nt += throughput(nexusURL)
		pt += throughput(proxyURL)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(np.Microseconds())/n, "nexus-p50-µs")
	b.ReportMetric(float64(pp.Microseconds())/n, "proxy-p50-µs")
	b.ReportMetric(float64(np)/float64(pp), "p50-x-proxy")
	b.ReportMetric(nt/n, "nexus-calls/s")
	b.ReportMetric(pt/n, "proxy-calls/s")
	b.ReportMetric(nt/pt, "throughput-x-proxy")
}
