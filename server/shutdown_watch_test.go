package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/server"
)

// A server shutting down ends the event feeds and log tails (an open console holds one)
// instead of waiting its whole timeout for them.
func TestShutdownEndsWatches(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.PluginReadPaths = pluginReadPaths(t)
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = searchableTempDir(t)
	cfg.AdminToken = testAdminToken
	cfg.ShutdownTimeout = 30 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv, err := server.New(ctx, cfg, server.NewLogger(io.Discard, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	e := &env{t: t, URL: url, DataDir: cfg.DataDir, Admin: testAdminToken, srv: srv}
	mustInstall(e, analyticsManifest("1.2.0"))

	callCtx, cancelCalls := context.WithTimeout(context.Background(), time.Minute)
	defer cancelCalls()
	client := nexus.New(url, nexus.WithToken(testAdminToken))
	watch, err := client.Messaging.WatchEvents(callCtx, connect.NewRequest(&pluginv1.WatchEventsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	tail, err := client.Plugins.TailPluginLogs(callCtx, connect.NewRequest(&pluginv1.TailPluginLogsRequest{PluginId: "analytics-plugin"}))
	if err != nil {
		t.Fatal(err)
	}
	defer tail.Close()
	var bodies []io.ReadCloser
	for _, path := range []string{"/api/v1/events/stream", "/v1/plugins/analytics-plugin/logs/stream"} {
		req, _ := http.NewRequestWithContext(callCtx, http.MethodGet, url+path, nil)
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, resp, err)
		}
		defer resp.Body.Close()
		bodies = append(bodies, resp.Body)
	}
	ended := make(chan string, 4)
	go func() {
		for watch.Receive() {
		}
		ended <- "WatchEvents"
	}()
	go func() {
		for tail.Receive() {
		}
		ended <- "TailPluginLogs"
	}()
	for i, b := range bodies {
		go func() {
			_, _ = io.Copy(io.Discard, b)
			ended <- []string{"events SSE", "logs SSE"}[i]
		}()
	}

	start := time.Now()
	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the server waited for its watchers to go")
	}
	for range 4 {
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a watch did not end")
		}
	}
	t.Logf("shut down in %v", time.Since(start))
}
