package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// testEndpoints are the api_endpoints of the test plugin's HTTP handler (testHTTPHandler).
func testEndpoints() []map[string]any {
	return []map[string]any{
		{"path": "/api/v1/test/{name}", "methods": []string{"GET"}},
		{"path": "/api/v1/test-public", "methods": []string{"GET"}, "auth": "public"},
		{"path": "/api/v1/test-admin", "methods": []string{"GET"}, "auth": "settings:write"},
		{"path": "/api/v1/test-read", "methods": []string{"GET"}, "auth": "reports:read"},
		{"path": "/api/v1/test-sse", "methods": []string{"GET"}},
		{"path": "/api/v1/test-upload", "methods": []string{"POST"}},
		{"path": "/api/v1/test-slow", "methods": []string{"GET"}, "timeout_seconds": 1},
		{"path": "/api/v1/test-crash", "methods": []string{"GET"}},
	}
}

// testHTTPHandler is the test plugin's HTTP handler.
func testHTTPHandler() http.Handler {
	mux := http.NewServeMux()
	hello := func(w http.ResponseWriter, r *http.Request) {
		c, _ := plugin.CallerOf(r.Context())
		w.Header().Set("Content-Type", "application/json")
		// What the host must not pass on (a service worker for the whole origin) or must
		// add to (the sandbox that keeps a plugin's page out of the console's origin).
		w.Header().Set("Service-Worker-Allowed", "/")
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"name": r.PathValue("name"), "query": r.URL.Query().Get("q"), "header": r.Header.Get("X-Test"),
			"authorization": r.Header.Get("Authorization"), "caller": c, "pid": os.Getpid(),
		})
	}
	mux.HandleFunc("GET /api/v1/test/{name}", hello)
	mux.HandleFunc("GET /api/v1/test-public", hello)
	mux.HandleFunc("GET /api/v1/test-admin", hello)
	mux.HandleFunc("GET /api/v1/test-read", hello)
	mux.HandleFunc("GET /api/v1/test-sse", serveTicks(20*time.Millisecond))
	mux.HandleFunc("POST /api/v1/test-upload", serveUpload(false))
	mux.HandleFunc("GET /api/v1/test-slow", func(w http.ResponseWriter, r *http.Request) {
		_ = os.WriteFile(filepath.Join(os.Getenv("HOME"), "started-"+r.URL.Query().Get("mark")), nil, 0o600)
		<-r.Context().Done()
		_ = os.WriteFile(filepath.Join(os.Getenv("HOME"), "cancelled-"+r.URL.Query().Get("mark")), []byte(context.Cause(r.Context()).Error()), 0o600)
	})
	mux.HandleFunc("GET /api/v1/test-crash", func(w http.ResponseWriter, r *http.Request) {
		os.Exit(3)
	})
	return mux
}

// serveTicks answers three Server-Sent Events, flushed one by one, gap apart.
func serveTicks(gap time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: tick %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(gap)
		}
	}
}

// serveUpload answers the length and sha256 of the body it read; with echo, after as many
// zero bytes (a download as large as the upload).
func serveUpload(echo bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if echo {
			_, _ = io.Copy(w, io.LimitReader(zeros{}, n))
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	}
}

// getWith calls the server with token ("" for none).
func getWith(t *testing.T, e *env, method, path, token string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("X-Test", "passed")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// The api_endpoints of an active plugin are served on the main listener and answered by
// the plugin's own net/http handler: auth modes, the caller's identity without its token,
// streamed answers, an upload, the endpoint's timeout (the handler is cancelled), a client
// that goes away, a plugin that crashes mid-request, and the plugin's metrics.
func TestPluginEndpointsAreServed(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "web-plugin", "healthy", map[string]any{"api_endpoints": testEndpoints(), "permissions": []string{"reports:read"}}, nil)
	if res, b := getWith(t, e, "GET", "/api/v1/test/alice", e.Admin, nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("before the plugin is active: %d %s", res.StatusCode, b)
	}
	e.mustREST(http.MethodPost, "/api/v1/plugins/web-plugin/enable", e.Admin, nil)
	pluginTok := e.token("plugin", "web-plugin")

	// Auth modes.
	for _, c := range []struct {
		path, token string
		status      int
	}{
		{"/api/v1/test/alice?q=1", "", 401},
		{"/api/v1/test/alice?q=1", "nxt_not-a-token", 401},
		{"/api/v1/test/alice?q=1", e.User, 200},
		{"/api/v1/test-public", "", 200},
		{"/api/v1/test-public", "nxt_not-a-token", 401},
		{"/api/v1/test-admin", e.User, 403},
		{"/api/v1/test-admin", pluginTok, 403},
		{"/api/v1/test-admin", e.Admin, 200},
		{"/api/v1/test-read", e.User, 200},
		{"/api/v1/test-read", pluginTok, 200},
	} {
		res, b := getWith(t, e, "GET", c.path, c.token, nil)
		if res.StatusCode != c.status {
			t.Errorf("GET %s with %q: %d %s, want %d", c.path, c.token, res.StatusCode, b, c.status)
		}
	}
	res, b := getWith(t, e, "GET", "/api/v1/test/alice?q=1", e.User, nil)
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%d %s", res.StatusCode, b)
	}
	// A plugin's page is sandboxed out of the console's origin, whatever it asks for.
	if csp := res.Header.Values("Content-Security-Policy"); len(csp) != 2 || csp[0] != "default-src 'self'" ||
		!strings.HasPrefix(csp[1], "sandbox ") || strings.Contains(csp[1], "allow-same-origin") || res.Header.Get("Service-Worker-Allowed") != "" {
		t.Errorf("answer headers: Content-Security-Policy %q, Service-Worker-Allowed %q", csp, res.Header.Get("Service-Worker-Allowed"))
	}
	caller := got["caller"].(map[string]any)
	if got["name"] != "alice" || got["query"] != "1" || got["header"] != "passed" || got["authorization"] != "" ||
		caller["Role"] != "user" || caller["Authenticated"] != true || caller["TokenID"] == "" {
		t.Errorf("the plugin saw %v", got)
	}

	// A declared path with a method it is not declared with: 405, with the methods it has.
	res, b = getWith(t, e, "DELETE", "/api/v1/test/alice", e.User, nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" || !strings.Contains(string(b), "METHOD_NOT_ALLOWED") {
		t.Errorf("DELETE of a GET endpoint: %d %v %s", res.StatusCode, res.Header, b)
	}

	// A streamed answer (Server-Sent Events) arrives event by event.
	req, _ := http.NewRequest("GET", e.URL+"/api/v1/test-sse", nil)
	req.Header.Set("Authorization", "Bearer "+e.User)
	sse, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(sse.Body)
	var events []string
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "data: ") {
			events = append(events, l)
		}
	}
	sse.Body.Close()
	if sse.Header.Get("Content-Type") != "text/event-stream" || len(events) != 3 || events[2] != "data: tick 2" {
		t.Errorf("SSE: %v %v", sse.Header, events)
	}

	// A 10 MiB upload, streamed through.
	upload := bytes.Repeat([]byte("0123456789abcdef"), (10<<20)/16)
	// (That the host holds at most a window of it at a time is tested exactly in the stream
	// package, TestHTTPCall: this process's heap also holds the tests running beside.)
	res, b = getWith(t, e, "POST", "/api/v1/test-upload", e.User, bytes.NewReader(upload))
	sum := sha256.Sum256(upload)
	if want := fmt.Sprintf("%d %s", len(upload), hex.EncodeToString(sum[:])); res.StatusCode != 200 || string(b) != want {
		t.Errorf("upload: %d %q", res.StatusCode, b)
	}

	// The endpoint's timeout: 504, and the handler is cancelled.
	res, b = getWith(t, e, "GET", "/api/v1/test-slow?mark=timeout", e.User, nil)
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), "PLUGIN_COMMUNICATION_TIMEOUT") {
		t.Errorf("past the timeout: %d %s", res.StatusCode, b)
	}
	home := filepath.Join(e.DataDir, "plugin-data", "web-plugin")
	waitFor(t, "the handler cancelled by the timeout", 5*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(home, "cancelled-timeout"))
		return err == nil
	})
	// A client that goes away cancels the handler.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, "GET", e.URL+"/api/v1/test-slow?mark=client", nil)
	req.Header.Set("Authorization", "Bearer "+e.User)
	go func() {
		// Once the handler runs, the client gives up.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join(home, "started-client")); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Error("the cancelled request succeeded")
	}
	waitFor(t, "the handler cancelled by the client", 5*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(home, "cancelled-client"))
		return err == nil
	})

	// A plugin that crashes mid-request: 502.
	res, b = getWith(t, e, "GET", "/api/v1/test-crash", e.User, nil)
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "PLUGIN_UNAVAILABLE") {
		t.Errorf("crash mid-request: %d %s", res.StatusCode, b)
	}

	// Metrics: every call counted, with its callers.
	// Counted: every call that reached the plugin (not the 401s); failed: the timeout and
	// the crash, not the client that went away; callers: the user, the admin, the plugin
	// and the anonymous caller of the public endpoint.
	m := e.mustREST(http.MethodGet, "/api/v1/plugins/web-plugin", e.Admin, nil)["plugin"].(map[string]any)
	usage := m["metrics"].(map[string]any)["usage"].(map[string]any)
	if usage["total_requests"] != 11.0 || usage["failed_requests"] != 2.0 || usage["unique_users"] != 4.0 {
		t.Errorf("metrics after the calls: %v", m["metrics"])
	}
	// Each declared endpoint's calls, as the host answered them (refusals included).
	stats := map[string]map[string]any{}
	for _, ep := range m["api_endpoints"].([]any) {
		ep := ep.(map[string]any)
		stats[ep["path"].(string)] = ep["stats"].(map[string]any)
	}
	if s := stats["/api/v1/test-admin"]; s["requests"] != 3.0 || s["client_errors"] != 2.0 || s["server_errors"] != 0.0 || s["average_response_ms"].(float64) <= 0 {
		t.Errorf("stats of /api/v1/test-admin (403, 403, 200): %v", s)
	}
	if s := stats["/api/v1/test-crash"]; s["requests"] != 1.0 || s["server_errors"] != 1.0 {
		t.Errorf("stats of /api/v1/test-crash (502): %v", s)
	}
	prom, pb := getWith(t, e, "GET", "/metrics", "", nil)
	if prom.StatusCode != 200 || !strings.Contains(string(pb), `nexus_plugin_http_requests_total{plugin_id="web-plugin",route="GET /api/v1/test/{name}",status_class="2xx"}`) {
		t.Errorf("prometheus: no nexus_plugin_http_requests_total by route pattern")
	}
}

// Calls are spread over a plugin's connected instances (here two external ones).
func TestPluginEndpointCallsAreSpreadOverInstances(t *testing.T) {
	e := startRuntimeServer(t)
	installTestPlugin(e, "shared-plugin", "healthy", map[string]any{"external": true, "entry_point": nil, "args": nil,
		"api_endpoints": []map[string]any{{"path": "/api/v1/shared/who", "methods": []string{"GET"}}}}, nil)
	e.mustREST(http.MethodPost, "/api/v1/plugins/shared-plugin/enable", e.Admin, nil)
	token := e.token(store.RolePlugin, "shared-plugin")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, name := range []string{"one", "two"} {
		go func() {
			_ = plugin.Run(ctx, plugin.Plugin{Version: "1.0.0", HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, name)
			})}, plugin.WithHost(e.URL), plugin.WithToken(token), plugin.WithPluginID("shared-plugin"),
				plugin.WithInstanceID("instance-"+name), plugin.WithStderr(io.Discard))
		}()
	}
	waitFor(t, "both instances connected", 10*time.Second, func() bool {
		st, p := status(e, "shared-plugin")
		return st == "active" && p["runtime"].(map[string]any)["instances"] == 2.0
	})
	seen := map[string]int{}
	for range 20 {
		res, b := getWith(t, e, "GET", "/api/v1/shared/who", e.User, nil)
		if res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, b)
		}
		seen[string(b)]++
	}
	if seen["one"] == 0 || seen["two"] == 0 {
		t.Fatalf("answers by instance: %v", seen)
	}
}
