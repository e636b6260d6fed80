package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
)

// The reads scenario: `nexus serve` with readPlugins external plugins installed through
// the REST API, and the bare server (readsbase.go) serving its answers; clients in this
// process read, in alternation, the repository list (issue 11's baseline: with no
// repository configured it is the REST stack alone), the plugin list and a plugin's detail
// through REST and Connect, of both servers; then the list over readConnections
// connections (readsconns.go) of each.

// Parameters of the REST reads scenario.
const (
	// readPlugins is how many plugins are installed before the reads.
	readPlugins = 100
	// readEnabledEvery enables every readEnabledEvery-th plugin (bench-plugin-001, -021,
	// ...): external plugins become enabled and inactive until an instance connects.
	readEnabledEvery = 20
	// readDependentEvery makes every readDependentEvery-th plugin depend on the first, so
	// that the views carry dependencies and dependents.
	readDependentEvery = 10
	// readConcurrency is the number of requests in flight, each on a keep-alive connection
	// of its own.
	readConcurrency = 32
	// readSlices is how many slices each endpoint's -duration is cut into within a round, at
	// most; the slices of the three endpoints alternate, so that drift hits all three alike.
	readSlices = 6
	// readSliceLatencies: a slice lasts at least this many times the slowest endpoint's
	// warm-up p50 (fewer slices otherwise). A slice ends when its last request does, so it
	// overruns by about one latency, and the drained connections are idle meanwhile.
	readSliceLatencies = 5
)

// The paths read.
const (
	pathRepositories = "/api/v1/plugins/repositories"
	pathPlugins      = "/api/v1/plugins"
)

// successPrefix starts every successful REST answer (the envelope's first field); the
// measured requests check it instead of decoding bodies, which would load the client.
var successPrefix = []byte(`{"success":true`)

// The rows of the REST reads scenario, in the order of its measurements: the first
// readAlternating are measured in alternating slices (readRows()[0], keyReadRepos, is the
// baseline of issue 11's targets; the bare server's rows are the baselines of issue 15's),
// then the 1,000-connection rows, one after the other.
const readAlternating = 9

// The name of the bare server in the rows.
const baseName = "bare connect-go + vanguard"

func readRows() []row {
	return []row{
		{keyReadRepos, "GET " + pathRepositories + " (baseline)"},
		{keyReadList, fmt.Sprintf("GET %s (%d plugins)", pathPlugins, readPlugins)},
		{keyReadDetail, "GET " + pathPlugins + "/{id} (ids in turn)"},
		{keyReadListBase, fmt.Sprintf("%s: GET %s (the same answer)", baseName, pathPlugins)},
		{keyReadDetailBase, fmt.Sprintf("%s: GET %s/{id} (the same answers)", baseName, pathPlugins)},
		{keyConnectList, fmt.Sprintf("Connect ListPlugins (%d plugins; Go client, proto)", readPlugins)},
		{keyConnectDetail, "Connect GetPlugin (ids in turn)"},
		{keyConnectListBase, baseName + ": Connect ListPlugins (the same answer)"},
		{keyConnectDetailBase, baseName + ": Connect GetPlugin (the same answers)"},
		{keyReadConns, fmt.Sprintf("GET %s, %s connections, 1 request in flight on each", pathPlugins, thousands(readConnections))},
		{keyReadConnsBase, fmt.Sprintf("%s: GET %s, %s connections", baseName, pathPlugins, thousands(readConnections))},
	}
}

// runReads starts the server, installs the plugins, checks one answer of each endpoint in
// full, starts the bare server with the server's answers, checks that it gives the same,
// warms up, measures the endpoints of both in alternating slices, then the list over
// readConnections connections on each. The measurements are in the order of readRows.
func (b *bench) runReads(ctx context.Context) (ms []Measurement, err error) {
	ps := newProcs(b.stderr)
	defer ps.stopAll()
	h, err := b.startHost(ctx, ps, hostOptions{})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, h.logTail())
		}
	}()
	for i := 1; i <= readPlugins; i++ {
		if err := h.installReadPlugin(ctx, i); err != nil {
			return nil, err
		}
	}
	if err := h.verifyReads(ctx); err != nil {
		return nil, err
	}
	var repos struct {
		Repositories []json.RawMessage `json:"repositories"`
	}
	if err := h.getData(ctx, pathRepositories, &repos); err != nil {
		return nil, err
	}

	// The readClient's transport serves every client of the alternating phase: REST and
	// Connect, on both servers (it keeps readConcurrency idle connections per server).
	hc := newReadHTTPClient(readConcurrency)
	defer hc.CloseIdleConnections()
	nx := newReadClient(h.url, h.admin, hc)
	resp, err := nx.fetchResponses(ctx)
	if err != nil {
		return nil, err
	}
	base, err := b.startReadsBase(ctx, ps, resp)
	if err != nil {
		return nil, err
	}
	bc := newReadClient(base.url, h.admin, hc)
	if err := sameReads(ctx, h, base); err != nil {
		return nil, err
	}

	var next [4]atomic.Uint64 // the detail reads take the plugins in turn, each its own turn
	nextID := func(i int) string { return readPluginID(int(next[i].Add(1)%readPlugins) + 1) }
	nxCPU, bcCPU := processCPU(h.proc.cmd.Process.Pid), processCPU(base.proc.cmd.Process.Pid)
	eps := []readEndpoint{
		{func(ctx context.Context) error { return nx.get(ctx, pathRepositories) }, nxCPU},
		{func(ctx context.Context) error { return nx.get(ctx, pathPlugins) }, nxCPU},
		{func(ctx context.Context) error { return nx.get(ctx, pathPlugins+"/"+nextID(0)) }, nxCPU},
		{func(ctx context.Context) error { return bc.get(ctx, pathPlugins) }, bcCPU},
		{func(ctx context.Context) error { return bc.get(ctx, pathPlugins+"/"+nextID(1)) }, bcCPU},
		{nx.connectList, nxCPU},
		{func(ctx context.Context) error { return nx.connectDetail(ctx, nextID(2)) }, nxCPU},
		{bc.connectList, bcCPU},
		{func(ctx context.Context) error { return bc.connectDetail(ctx, nextID(3)) }, bcCPU},
	}
	if ms, err = alternate(ctx, eps, readConcurrency, b.cfg.warmup, b.cfg.duration, readSlices); err != nil {
		return nil, err
	}
	hc.CloseIdleConnections()

	b.readsLimits = serverLimits(h.proc.cmd.Process.Pid)
	for _, srv := range []struct {
		c     *readClient
		clock cpuClock
	}{{nx, nxCPU}, {bc, bcCPU}} {
		m, err := manyConnections(ctx, srv.c, srv.clock, readConnections, max(b.cfg.duration, readConnectionsMin), b.stderr)
		if err != nil {
			return nil, fmt.Errorf("%s connections to %s: %w", thousands(readConnections), srv.c.base, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// startReadsBase writes the answers to a file and starts the bare server on them.
func (b *bench) startReadsBase(ctx context.Context, ps *procs, resp readResponses) (*hostServer, error) {
	f, err := os.CreateTemp(b.tmp, "reads-*.pb")
	if err != nil {
		return nil, err
	}
	path := f.Name()
	f.Close()
	os.Remove(path) // writeReadResponses creates it afresh
	if err := writeReadResponses(path, resp); err != nil {
		return nil, err
	}
	p, err := ps.start(roleReadsBase, b.selfCmd(roleReadsBase, "-responses", path), stopGrace)
	if err != nil {
		return nil, err
	}
	var addr ready
	if err := p.readJSON(ctx, readyTimeout, &addr); err != nil {
		return nil, err
	}
	return &hostServer{name: baseName, url: "http://" + addr.Addr, proc: p}, nil
}

// readEndpoint is one measured read: its round trip, and the CPU clock of the server
// process that answers it (nil when there is none to read).
type readEndpoint struct {
	rt    roundTrip
	clock cpuClock
}

// alternate warms up every endpoint for a share of warmup, then drives each with n in
// flight for d in all, cut into at most maxSlices slices (see sliceCount): in cycle i the
// endpoints take turns starting with number i (mod their count), so that none always
// follows the same one. Each Measurement gives the throughput over the summed wall time of
// its slices, the latency percentiles over all its requests (LoadedP50us, LoadedP99us), and
// the server's CPU time per request over its slices (ServerCPUus, when it has a clock); the
// 1-in-flight fields are left zero.
func alternate(ctx context.Context, eps []readEndpoint, n int, warmup, d time.Duration, maxSlices int) ([]Measurement, error) {
	k := len(eps)
	ms := make([]Measurement, k)
	var slowest time.Duration // the largest warm-up p50
	if warmup > 0 {
		for i, ep := range eps {
			lat, _, err := drive(ctx, ep.rt, n, warmup/time.Duration(k))
			if err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
			ms[i].WarmupRoundTrips = len(lat)
			if len(lat) > 0 {
				slowest = max(slowest, time.Duration(percentileUS(lat, 0.50)*float64(time.Microsecond)))
			}
		}
	}
	nSlices := sliceCount(d, slowest, maxSlices)
	lats := make([][]time.Duration, k)
	elapsed := make([]time.Duration, k)
	cpu := make([]time.Duration, k)
	for cycle := range nSlices {
		for j := range k {
			i := (cycle + j) % k
			var lat []time.Duration
			var el time.Duration
			used, err := eps[i].clock.during(func() (err error) {
				lat, el, err = drive(ctx, eps[i].rt, n, d/time.Duration(nSlices))
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("measurement (%d in flight): %w", n, err)
			}
			lats[i] = append(lats[i], lat...)
			elapsed[i] += el
			cpu[i] += used
		}
	}
	for i := range ms {
		if len(lats[i]) == 0 {
			return nil, errors.New("measurement: no request completed")
		}
		ms[i].InFlight = n
		ms[i].Slices = nSlices
		ms[i].RoundTrips = len(lats[i])
		ms[i].Seconds = elapsed[i].Seconds()
		ms[i].Throughput = float64(len(lats[i])) / elapsed[i].Seconds()
		ms[i].LoadedP50us, ms[i].LoadedP99us = percentileUS(lats[i], 0.50), percentileUS(lats[i], 0.99)
		if eps[i].clock != nil {
			ms[i].ServerCPUus = float64(cpu[i]) / float64(time.Microsecond) / float64(len(lats[i]))
		}
	}
	return ms, nil
}

// sliceCount is how many slices d is cut into: maxSlices, or fewer so that a slice lasts
// at least readSliceLatencies times latency (the slowest endpoint's; 0 when unknown), and
// at least one.
func sliceCount(d, latency time.Duration, maxSlices int) int {
	n := maxSlices
	if latency > 0 {
		n = min(n, int(d/(readSliceLatencies*latency)))
	}
	return max(n, 1)
}

// readPluginID is the id of the i-th plugin (1-based): bench-plugin-001 ...
func readPluginID(i int) string {
	return fmt.Sprintf("bench-plugin-%03d", i)
}

// readPluginManifest is the manifest of the i-th plugin: external, with endpoints,
// events, message types, permissions and a configuration schema with a secret field, so
// that the views have the content of real plugins.
func readPluginManifest(i int) map[string]any {
	categories := []string{"analytics", "integration", "security", "storage", "testing"}
	m := map[string]any{
		"id": readPluginID(i), "name": fmt.Sprintf("Bench plugin %03d", i), "version": fmt.Sprintf("1.%d.0", i%7),
		"description": fmt.Sprintf("nexus-bench plugin %d of %d: reads the REST API's plugin views", i, readPlugins),
		"author":      "nexus-bench", "email": "bench@nexus.dev", "homepage": "https://nexus.dev/bench",
		"license": "MIT", "category": categories[i%len(categories)], "tags": []string{"bench", fmt.Sprintf("group-%d", i%10)},
		"external": true, "nexus_version": ">=1.0.0",
		"permissions": []string{"database:read", "database:write", "events:emit", "messages:send"},
		// Each under a prefix of its own: an enabled plugin holds its paths, and another
		// may not serve them (PLUGIN_ROUTE_CONFLICT).
		"api_endpoints": []map[string]any{
			{"path": "/" + readPluginID(i) + "/items", "methods": []string{"GET", "POST"}, "description": "List or create items"},
			{"path": "/" + readPluginID(i) + "/items/{id}", "methods": []string{"GET", "PUT", "DELETE"}, "description": "One item"},
			{"path": "/" + readPluginID(i) + "/reports", "methods": []string{"GET"}, "description": "Activity reports"},
		},
		"events": map[string]any{
			"emits": []map[string]any{
				{"type": "bench.item_created", "description": "An item was created"},
				{"type": "bench.item_deleted", "description": "An item was deleted"},
			},
			"subscribes": []any{map[string]any{"type": "user.*", "description": "Every user event"}, "system.shutdown"},
		},
		"message_types": []map[string]any{{"type": "item_request", "description": "Ask for an item"}},
		"configuration": map[string]any{
			"batch_size": map[string]any{"type": "integer", "default": 50, "min": 1, "max": 1000, "description": "Items per batch"},
			"mode":       map[string]any{"type": "string", "enum": []string{"fast", "safe"}, "default": "safe", "description": "Processing mode"},
			"endpoint":   map[string]any{"type": "string", "default": "https://example.com/hook", "description": "Where to report"},
			"api_key":    map[string]any{"type": "string", "secret": true, "description": "Key of the external service"},
		},
	}
	if i%readDependentEvery == 0 {
		m["dependencies"] = map[string]any{"plugins": map[string]string{readPluginID(1): ">=1.0.0"}}
	}
	return m
}

// readEnabled is how many of the plugins are enabled.
func readEnabled() int {
	return (readPlugins + readEnabledEvery - 1) / readEnabledEvery // i%readEnabledEvery == 1
}

// installReadPlugin installs the i-th plugin with a secret in its configuration, enabling
// every readEnabledEvery-th.
func (h *hostServer) installReadPlugin(ctx context.Context, i int) error {
	pkg, err := manifestPackage(readPluginManifest(i))
	if err != nil {
		return err
	}
	req := map[string]any{
		"source": "file", "package_data": pkg,
		"config":      map[string]any{"api_key": fmt.Sprintf("secret-%03d", i), "batch_size": 10 * i},
		"auto_enable": i%readEnabledEvery == 1,
	}
	if err := h.mustOK(ctx, http.MethodPost, "/api/v1/plugins/install", req); err != nil {
		return fmt.Errorf("install %s: %w", readPluginID(i), err)
	}
	return nil
}

// readClient reads one server through the measuring HTTP client: REST, and Connect with
// the generated Go client (the Connect protocol, binary proto), the admin token on every
// request. It is safe for concurrent use.
type readClient struct {
	base, auth string
	hc         *http.Client
	plugins    pluginv1connect.PluginServiceClient
}

// newReadHTTPClient is a keep-alive HTTP/1.1 client keeping idle connections for n requests
// in flight to each server.
func newReadHTTPClient(n int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        4 * n,
		MaxIdleConnsPerHost: n, // the default (2) would redial most requests
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
}

func newReadClient(base, admin string, hc *http.Client) *readClient {
	return &readClient{base: base, auth: "Bearer " + admin, hc: hc, plugins: pluginv1connect.NewPluginServiceClient(hc, base)}
}

// get reads path, checks that the answer is a success and drains its body (so that the
// connection is reused).
func (c *readClient) get(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", c.auth)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	head := make([]byte, len(successPrefix))
	n, err := io.ReadFull(resp.Body, head)
	if resp.StatusCode != http.StatusOK || err != nil || !bytes.Equal(head, successPrefix) {
		rest, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: status %d: %s", path, resp.StatusCode, oneLine(string(head[:n])+string(rest), 300))
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// list calls ListPlugins over Connect.
func (c *readClient) list(ctx context.Context) (*pluginv1.ListPluginsResponse, error) {
	req := connect.NewRequest(&pluginv1.ListPluginsRequest{})
	req.Header().Set("Authorization", c.auth)
	res, err := c.plugins.ListPlugins(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("Connect ListPlugins: %w", err)
	}
	return res.Msg, nil
}

// detail calls GetPlugin over Connect.
func (c *readClient) detail(ctx context.Context, id string) (*pluginv1.GetPluginResponse, error) {
	req := connect.NewRequest(&pluginv1.GetPluginRequest{PluginId: id})
	req.Header().Set("Authorization", c.auth)
	res, err := c.plugins.GetPlugin(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("Connect GetPlugin %s: %w", id, err)
	}
	return res.Msg, nil
}

// connectList is a measured ListPlugins: it must list every plugin.
func (c *readClient) connectList(ctx context.Context) error {
	l, err := c.list(ctx)
	if err == nil && len(l.GetPlugins()) != readPlugins {
		err = fmt.Errorf("Connect ListPlugins: %d plugins, want %d", len(l.GetPlugins()), readPlugins)
	}
	return err
}

// connectDetail is a measured GetPlugin: it must be about the plugin asked for.
func (c *readClient) connectDetail(ctx context.Context, id string) error {
	d, err := c.detail(ctx, id)
	if err == nil && d.GetPlugin().GetId() != id {
		err = fmt.Errorf("Connect GetPlugin %s: the answer is about %q", id, d.GetPlugin().GetId())
	}
	return err
}

// fetchResponses reads the list and every plugin's detail over Connect: the answers the
// bare server is to give.
func (c *readClient) fetchResponses(ctx context.Context) (readResponses, error) {
	l, err := c.list(ctx)
	if err != nil {
		return readResponses{}, err
	}
	r := readResponses{list: l, details: map[string]*pluginv1.GetPluginResponse{}}
	for _, p := range l.GetPlugins() {
		if r.details[p.GetId()], err = c.detail(ctx, p.GetId()); err != nil {
			return readResponses{}, err
		}
	}
	return r, nil
}

// sameReads checks that the bare server answers as the server does: the same list and
// details through REST (the envelopes' data compared as JSON values) and Connect.
func sameReads(ctx context.Context, h, base *hostServer) error {
	for _, path := range []string{pathPlugins, pathPlugins + "/" + readPluginID(1), pathPlugins + "/" + readPluginID(readPlugins)} {
		var want, got any
		if err := h.getData(ctx, path, &want); err != nil {
			return err
		}
		if err := base.getData(ctx, path, &got); err != nil {
			return fmt.Errorf("%s: %w", base.name, err)
		}
		if !reflect.DeepEqual(want, got) {
			return fmt.Errorf("GET %s: %s answers other data than %s", path, base.name, h.name)
		}
	}
	hc := newReadHTTPClient(1)
	defer hc.CloseIdleConnections()
	nx, bc := newReadClient(h.url, h.admin, hc), newReadClient(base.url, h.admin, hc)
	want, err := nx.list(ctx)
	if err != nil {
		return err
	}
	got, err := bc.list(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", base.name, err)
	}
	if !proto.Equal(want, got) {
		return fmt.Errorf("Connect ListPlugins: %s answers another list than %s", base.name, h.name)
	}
	id := readPluginID(readPlugins / 2)
	wantD, err := nx.detail(ctx, id)
	if err != nil {
		return err
	}
	gotD, err := bc.detail(ctx, id)
	if err != nil {
		return fmt.Errorf("%s: %w", base.name, err)
	}
	if !proto.Equal(wantD, gotD) {
		return fmt.Errorf("Connect GetPlugin %s: %s answers another detail than %s", id, base.name, h.name)
	}
	return nil
}

// verifyReads reads the list and a detail once and checks them in full: the list holds
// every plugin, the enabled ones enabled, with its secret masked; the detail is the plugin
// asked for.
func (h *hostServer) verifyReads(ctx context.Context) error {
	var list struct {
		Plugins []struct {
			ID            string         `json:"id"`
			Enabled       bool           `json:"enabled"`
			Configuration map[string]any `json:"configuration"`
		} `json:"plugins"`
		Summary struct {
			Total int `json:"total"`
		} `json:"summary"`
	}
	if err := h.getData(ctx, pathPlugins, &list); err != nil {
		return err
	}
	if len(list.Plugins) != readPlugins || list.Summary.Total != readPlugins {
		return fmt.Errorf("GET %s: %d plugins (summary: %d), want %d", pathPlugins, len(list.Plugins), list.Summary.Total, readPlugins)
	}
	enabled := 0
	for _, p := range list.Plugins {
		if key, _ := p.Configuration["api_key"].(string); key == "" || strings.HasPrefix(key, "secret-") {
			return fmt.Errorf("GET %s: %s's api_key is %q, want it masked", pathPlugins, p.ID, key)
		}
		if p.Enabled {
			enabled++
		}
	}
	if want := readEnabled(); enabled != want {
		return fmt.Errorf("GET %s: %d plugins enabled, want %d", pathPlugins, enabled, want)
	}
	var detail struct {
		Plugin struct {
			ID string `json:"id"`
		} `json:"plugin"`
	}
	id := readPluginID(1)
	if err := h.getData(ctx, pathPlugins+"/"+id, &detail); err != nil {
		return err
	}
	if detail.Plugin.ID != id {
		return fmt.Errorf("GET %s/%s: the answer is about %q", pathPlugins, id, detail.Plugin.ID)
	}
	return nil
}

// getData reads path with the admin token and decodes the success envelope's data into v.
func (h *hostServer) getData(ctx context.Context, path string, v any) error {
	res, err := h.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	var env struct {
		Success bool            `json:"success"`
		Data    json.RawMessage `json:"data"`
	}
	if res.status != http.StatusOK || json.Unmarshal(res.raw, &env) != nil || !env.Success {
		return fmt.Errorf("GET %s: status %d: %s", path, res.status, oneLine(string(res.raw), 300))
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}
