package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
)

// testResponses are answers as the server gives them, for three plugins.
func testResponses(t *testing.T) readResponses {
	t.Helper()
	r := readResponses{list: &pluginv1.ListPluginsResponse{Summary: &pluginv1.PluginsSummary{Total: 3}},
		details: map[string]*pluginv1.GetPluginResponse{}}
	for i := 1; i <= 3; i++ {
		cfg, err := structpb.NewStruct(map[string]any{"api_key": "***hidden***", "note": "<b> & \u00e9"})
		if err != nil {
			t.Fatal(err)
		}
		r.list.Plugins = append(r.list.Plugins, &pluginv1.PluginSummary{Id: readPluginID(i), Name: "P", Configuration: cfg,
			Endpoints: []string{"/" + readPluginID(i) + "/items"}})
		r.details[readPluginID(i)] = &pluginv1.GetPluginResponse{Plugin: &pluginv1.PluginDetail{Id: readPluginID(i), Name: "P"}}
	}
	return r
}

func TestReadResponsesFile(t *testing.T) {
	want := testResponses(t)
	path := filepath.Join(t.TempDir(), "r.pb")
	if err := writeReadResponses(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := loadReadResponses(path)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.list, want.list) || len(got.details) != len(want.details) {
		t.Fatalf("loaded %v and %d details, want %v and %d", got.list, len(got.details), want.list, len(want.details))
	}
	for id, d := range want.details {
		if !proto.Equal(got.details[id], d) {
			t.Errorf("detail of %s: %v, want %v", id, got.details[id], d)
		}
	}

	// A detail missing, a file cut short, or trailing bytes are refused.
	short := testResponses(t)
	delete(short.details, readPluginID(2))
	if err := writeReadResponses(filepath.Join(t.TempDir(), "r.pb"), short); err == nil {
		t.Error("writeReadResponses without a plugin's detail succeeded")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"cut": raw[:len(raw)-3], "trailing": append(raw, 1, 2)} {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadReadResponses(p); err == nil {
			t.Errorf("loadReadResponses of a %s file succeeded", name)
		}
	}
}

// TestBaseHandler checks that the bare server answers the prebuilt messages through REST,
// in the envelope and in the server's JSON shape, and through Connect.
func TestBaseHandler(t *testing.T) {
	r := testResponses(t)
	h, err := baseHandler(r)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	base := &hostServer{name: "bare", url: srv.URL}

	// REST: the envelope's data is the message in protojson with proto names and unpopulated
	// fields, whatever the client accepts (the envelope is never compressed).
	for path, msg := range map[string]proto.Message{
		pathPlugins:                         r.list,
		pathPlugins + "/" + readPluginID(2): r.details[readPluginID(2)],
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := srv.Client().Transport.RoundTrip(req) // no transparent decompression
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" || !strings.HasPrefix(string(body), string(successPrefix)) ||
			!strings.HasPrefix(resp.Header.Get("X-Request-Id"), "req_") {
			t.Fatalf("GET %s: %d %v %q", path, resp.StatusCode, resp.Header, body)
		}
		var env struct {
			Success   bool            `json:"success"`
			Data      json.RawMessage `json:"data"`
			Timestamp string          `json:"timestamp"`
			RequestID string          `json:"request_id"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
		if _, err := time.Parse(time.RFC3339Nano, env.Timestamp); err != nil || env.RequestID != resp.Header.Get("X-Request-Id") {
			t.Errorf("GET %s: timestamp %q, request id %q (header %q)", path, env.Timestamp, env.RequestID, resp.Header.Get("X-Request-Id"))
		}
		js, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var got, want any
		if err := json.Unmarshal(env.Data, &got); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(js, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GET %s: data %s, want %s", path, env.Data, js)
		}
	}
	if err := base.getData(context.Background(), pathPlugins+"/no-such-plugin", &struct{}{}); err == nil || !strings.Contains(err.Error(), "status 404") {
		t.Errorf("GET an unknown plugin: %v, want a 404", err)
	}

	// Connect, through the generated client, and the measured round trips' checks.
	c := newReadClient(srv.URL, "", newReadHTTPClient(2))
	l, err := c.list(context.Background())
	if err != nil || !proto.Equal(l, r.list) {
		t.Errorf("Connect ListPlugins: %v, %v", l, err)
	}
	d, err := c.detail(context.Background(), readPluginID(3))
	if err != nil || !proto.Equal(d, r.details[readPluginID(3)]) {
		t.Errorf("Connect GetPlugin: %v, %v", d, err)
	}
	if _, err := c.detail(context.Background(), "nope"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("Connect GetPlugin of an unknown plugin: %v", err)
	}
	if err := c.connectList(context.Background()); err == nil || !strings.Contains(err.Error(), "3 plugins, want 100") {
		t.Errorf("connectList of a short list: %v", err)
	}
	if err := c.connectDetail(context.Background(), readPluginID(1)); err != nil {
		t.Errorf("connectDetail: %v", err)
	}
	if err := c.get(context.Background(), pathPlugins+"/nope"); err == nil {
		t.Error("get of an unknown plugin succeeded")
	}

	// fetchResponses reads back what the server serves.
	got, err := c.fetchResponses(context.Background())
	if err != nil || !proto.Equal(got.list, r.list) || len(got.details) != 3 || !proto.Equal(got.details[readPluginID(1)], r.details[readPluginID(1)]) {
		t.Errorf("fetchResponses: %v, %v", got, err)
	}
}

// TestSameReads checks that sameReads tells a server answering the same from one that
// does not.
func TestSameReads(t *testing.T) {
	r := testResponses(t)
	serve := func(r readResponses) *hostServer {
		h, err := baseHandler(r)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return &hostServer{name: "server", url: srv.URL}
	}
	// sameReads reads plugins 1, 50 and 100: serve those.
	for _, i := range []int{readPlugins / 2, readPlugins} {
		r.details[readPluginID(i)] = &pluginv1.GetPluginResponse{Plugin: &pluginv1.PluginDetail{Id: readPluginID(i)}}
	}
	a, b := serve(r), serve(r)
	if err := sameReads(context.Background(), a, b); err != nil {
		t.Errorf("sameReads of two servers answering the same: %v", err)
	}
	other := testResponses(t)
	other.details = r.details
	other.list = proto.Clone(r.list).(*pluginv1.ListPluginsResponse)
	other.list.Plugins[0].Name = "changed"
	if err := sameReads(context.Background(), a, serve(other)); err == nil || !strings.Contains(err.Error(), "other data") {
		t.Errorf("sameReads of servers answering different lists: %v", err)
	}
}

// TestManyConnections checks that every client has a connection of its own, that every
// connection completes requests, and that the server's CPU clock is read over the phase.
func TestManyConnections(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]int{} // requests by the client's address
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != pathPlugins || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		mu.Lock()
		conns[r.RemoteAddr]++
		mu.Unlock()
		_, _ = w.Write([]byte(`{"success":true,"data":{}}`))
	}))
	defer srv.Close()
	const n = 40
	var ticks time.Duration
	clock := func() (time.Duration, error) { ticks += time.Millisecond; return ticks, nil }
	var progress strings.Builder
	m, err := manyConnections(context.Background(), &readClient{base: srv.URL, auth: "Bearer tok"}, clock, n, 20*time.Millisecond, &progress)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, c := range conns {
		total += c
	}
	if len(conns) != n || total != m.RoundTrips || m.RoundTrips < n || m.InFlight != n {
		t.Errorf("%d connections made %d requests; measurement %+v; want %d connections", len(conns), total, m, n)
	}
	if m.LoadedP50us <= 0 || m.LoadedP50us > m.LoadedP99us || m.Throughput <= 0 ||
		m.ServerCPUus != float64(time.Millisecond/time.Microsecond)/float64(m.RoundTrips) {
		t.Errorf("measurement %+v", m)
	}
	if !strings.Contains(progress.String(), "first request of each of the 40 connections") {
		t.Errorf("progress: %q", progress.String())
	}

	// A failing request fails the measurement.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	if _, err := manyConnections(context.Background(), &readClient{base: bad.URL}, nil, 3, time.Millisecond, io.Discard); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Errorf("manyConnections against a failing server: %v", err)
	}
}

func TestParseStatCPU(t *testing.T) {
	// A process named "a) b" (names may hold spaces and parentheses): utime 250, stime 50.
	line := "1234 (a) b) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 10\n"
	if got, err := parseStatCPU(line); err != nil || got != 3*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 3s", got, err)
	}
	for _, bad := range []string{"", "1234 (x) S 1 2", "1234 (x) S 1 1 1 0 -1 0 0 0 0 0 x 50 0"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) succeeded", bad)
		}
	}
	if _, err := os.Stat("/proc/self/stat"); err == nil {
		clock := processCPU(os.Getpid())
		if clock == nil {
			t.Fatal("no clock for this process")
		}
		if _, err := clock(); err != nil {
			t.Error(err)
		}
		if s := serverLimits(os.Getpid()); !strings.Contains(s, "open files") || !strings.Contains(s, "somaxconn") {
			t.Errorf("serverLimits = %q", s)
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
