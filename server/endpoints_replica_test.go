package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
	"github.com/nexus-platform/nexus/server"
)

// Two servers share one Redis; the plugin's only instance is connected to B. Every call to
// its endpoints through A is carried to B and answered: the caller's identity as A knows it,
// a streamed answer event by event, a 10 MiB upload, the endpoint's timeout and a client
// that goes away (both cancel the handler), counted in A's metrics; an instance that goes
// away mid-request is a 502, and once it is gone A answers 503.
func TestPluginEndpointsAreServedFromAnotherServer(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	tune := func(c *server.Config) {
		c.RedisURL = rs.URL()
		c.RedisPrefix = "test-replicas:"
		c.HealthInterval = 300 * time.Millisecond
	}
	a := startServerWith(t, testLogSink(), 0, tune)
	b := startServerWith(t, testLogSink(), 0, tune)
	endpoints := []map[string]any{
		{"path": "/api/v1/relay/hello/{name}", "methods": []string{"GET"}},
		{"path": "/api/v1/relay/events", "methods": []string{"GET"}},
		{"path": "/api/v1/relay/upload", "methods": []string{"POST"}},
		{"path": "/api/v1/relay/slow", "methods": []string{"GET"}, "timeout_seconds": 1},
		{"path": "/api/v1/relay/hang", "methods": []string{"GET"}},
	}
	for _, e := range []*env{a, b} {
		externalPlugin(e, "relay-plugin", map[string]any{"api_endpoints": endpoints})
	}
	cancelled := make(chan string, 4)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/relay/hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		c, _ := plugin.CallerOf(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]any{"name": r.PathValue("name"), "query": r.URL.RawQuery, "caller": c,
			"authorization": r.Header.Get("Authorization"), "header": r.Header.Get("X-Test")})
	})
	mux.HandleFunc("GET /api/v1/relay/events", serveTicks(50*time.Millisecond))
	mux.HandleFunc("POST /api/v1/relay/upload", serveUpload(true))
	mux.HandleFunc("GET /api/v1/relay/slow", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		cancelled <- r.URL.RawQuery
	})
	hanging := make(chan struct{}, 1)
	mux.HandleFunc("GET /api/v1/relay/hang", func(w http.ResponseWriter, r *http.Request) {
		hanging <- struct{}{}
		<-r.Context().Done()
	})
	stop := runInstance(b, "relay-plugin", "only-on-b", plugin.Plugin{HTTP: mux})

	res, body := getWith(t, a, "GET", "/api/v1/relay/hello/alice?q=1", a.User, nil)
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("GET through A: %d %s", res.StatusCode, body)
	}
	caller := got["caller"].(map[string]any)
	if got["name"] != "alice" || got["query"] != "q=1" || got["header"] != "passed" || got["authorization"] != "" ||
		caller["Role"] != "user" || caller["TokenID"] == "" || res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("the plugin on B saw %v (headers %v)", got, res.Header)
	}

	// Server-Sent Events: each event reaches A's client before the next is written.
	req, _ := http.NewRequest("GET", a.URL+"/api/v1/relay/events", nil)
	req.Header.Set("Authorization", "Bearer "+a.User)
	sse, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	var gaps []time.Duration
	last := time.Now()
	for sc := bufio.NewScanner(sse.Body); sc.Scan(); {
		if l := sc.Text(); strings.HasPrefix(l, "data: ") {
			events = append(events, l)
			gaps = append(gaps, time.Since(last))
			last = time.Now()
		}
	}
	sse.Body.Close()
	if len(events) != 3 || events[2] != "data: tick 2" || sse.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("SSE through A: %v %v", sse.Header, events)
	} else if gaps[1] < 30*time.Millisecond {
		t.Errorf("SSE through A: the events came together (gaps %v), not as written", gaps)
	}

	// A 10 MiB upload, and as large an answer, in chunks both ways.
	upload := bytes.Repeat([]byte("0123456789abcdef"), (10<<20)/16)
	res, body = getWith(t, a, "POST", "/api/v1/relay/upload", a.User, bytes.NewReader(upload))
	sum := sha256.Sum256(upload)
	want := fmt.Sprintf("%d %s", len(upload), hex.EncodeToString(sum[:]))
	if res.StatusCode != 200 || len(body) != len(upload)+len(want) || string(body[len(upload):]) != want {
		t.Errorf("upload through A: %d, %d bytes, ends %q", res.StatusCode, len(body), body[max(0, len(body)-80):])
	}

	// The endpoint's timeout: 504 from A, and the handler on B is cancelled.
	res, body = getWith(t, a, "GET", "/api/v1/relay/slow?timeout", a.User, nil)
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "PLUGIN_COMMUNICATION_TIMEOUT") {
		t.Errorf("past the timeout: %d %s", res.StatusCode, body)
	}
	waitCancelled(t, cancelled, "timeout")
	// A client of A that goes away cancels the handler on B.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	req, _ = http.NewRequestWithContext(ctx, "GET", a.URL+"/api/v1/relay/slow?client", nil)
	req.Header.Set("Authorization", "Bearer "+a.User)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Error("the abandoned request succeeded")
	}
	cancel()
	waitCancelled(t, cancelled, "client")

	// The calls count where they were received, once.
	calls := func(e *env) (n float64) {
		m := e.mustREST(http.MethodGet, "/api/v1/plugins/relay-plugin/metrics", e.Admin, nil)["metrics"].(map[string]any)
		for _, p := range m["requests_per_minute"].([]any) {
			n += p.(map[string]any)["value"].(float64)
		}
		return n
	}
	if got, gotB := calls(a), calls(b); got != 5 || gotB != 0 {
		t.Errorf("calls counted: %v on A, %v on B; want 5 on A", got, gotB)
	}
	if prom, pb := getWith(t, a, "GET", "/metrics", "", nil); prom.StatusCode != 200 ||
		!strings.Contains(string(pb), `nexus_plugin_http_requests_total{plugin_id="relay-plugin",route="GET /api/v1/relay/hello/{name}",status_class="2xx"} 1`) {
		t.Errorf("A's prometheus counters miss the relayed call")
	}

	// The instance goes away mid-request: 502 from A, at once.
	go func() {
		select {
		case <-hanging:
			stop()
		case <-time.After(10 * time.Second):
		}
	}()
	start := time.Now()
	res, body = getWith(t, a, "GET", "/api/v1/relay/hang", a.User, nil)
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "PLUGIN_UNAVAILABLE") || time.Since(start) > 5*time.Second {
		t.Errorf("the instance gone mid-request: %d %s after %s", res.StatusCode, body, time.Since(start))
	}

	// Without an instance anywhere: 503 from A.
	waitFor(t, "A answers 503", 10*time.Second, func() bool {
		res, body := getWith(t, a, "GET", "/api/v1/relay/hello/bob", a.User, nil)
		return res.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "PLUGIN_UNAVAILABLE")
	})
}

func waitCancelled(t *testing.T, cancelled <-chan string, which string) {
	t.Helper()
	select {
	case got := <-cancelled:
		if got != which {
			t.Errorf("cancelled %q, want %q", got, which)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the handler was not cancelled (%s)", which)
	}
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
