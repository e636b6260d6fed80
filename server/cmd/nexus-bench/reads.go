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
	"strings"
	"sync/atomic"
	"time"
)

// The REST reads scenario: `nexus serve` with readPlugins external plugins installed
// through the REST API, and one HTTP client in this process reading three endpoints of it
// in alternation: the plugin list, a plugin's detail, and the repository list (the
// baseline: with no repository configured it is the REST stack alone, with no domain work).

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

// readRows are the rows of the REST reads scenario, in the order of its measurements;
// keyReadRepos, the baseline, comes first.
func readRows() []row {
	return []row{
		{keyReadRepos, "GET " + pathRepositories + " (baseline)"},
		{keyReadList, fmt.Sprintf("GET %s (%d plugins)", pathPlugins, readPlugins)},
		{keyReadDetail, "GET " + pathPlugins + "/{id} (ids in turn)"},
	}
}

// runReads starts the server, installs the plugins, checks one answer of each endpoint in
// full, warms up, and measures the endpoints in alternating slices. The measurements are
// in the order of readRows.
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
	c := newReadClient(h)
	defer c.hc.CloseIdleConnections()
	var next atomic.Uint64 // the detail reads take the plugins in turn
	rts := []roundTrip{
		func(ctx context.Context) error { return c.get(ctx, pathRepositories) },
		func(ctx context.Context) error { return c.get(ctx, pathPlugins) },
		func(ctx context.Context) error {
			return c.get(ctx, pathPlugins+"/"+readPluginID(int(next.Add(1)%readPlugins)+1))
		},
	}
	return alternate(ctx, rts, readConcurrency, b.cfg.warmup, b.cfg.duration, readSlices)
}

// alternate warms up every round trip for a share of warmup, then drives each with n in
// flight for d in all, cut into at most maxSlices slices (see sliceCount): in cycle i the
// round trips take turns starting with number i (mod their count), so that none always
// follows the same one. Each Measurement gives the throughput over the summed wall time of
// its slices and the latency percentiles over all its requests (LoadedP50us, LoadedP99us);
// the 1-in-flight fields are left zero.
func alternate(ctx context.Context, rts []roundTrip, n int, warmup, d time.Duration, maxSlices int) ([]Measurement, error) {
	k := len(rts)
	ms := make([]Measurement, k)
	var slowest time.Duration // the largest warm-up p50
	if warmup > 0 {
		for i, rt := range rts {
			lat, _, err := drive(ctx, rt, n, warmup/time.Duration(k))
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
	for cycle := range nSlices {
		for j := range k {
			i := (cycle + j) % k
			lat, el, err := drive(ctx, rts[i], n, d/time.Duration(nSlices))
			if err != nil {
				return nil, fmt.Errorf("measurement (%d in flight): %w", n, err)
			}
			lats[i] = append(lats[i], lat...)
			elapsed[i] += el
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
		"api_endpoints": []map[string]any{
			{"path": "/items", "methods": []string{"GET", "POST"}, "description": "List or create items"},
			{"path": "/items/{id}", "methods": []string{"GET", "PUT", "DELETE"}, "description": "One item"},
			{"path": "/reports", "methods": []string{"GET"}, "description": "Activity reports"},
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

// readClient is the measuring HTTP client: keep-alive HTTP/1.1, one idle connection kept per
// request in flight, the admin token on every request. It is safe for concurrent use.
type readClient struct {
	base, auth string
	hc         *http.Client
}

func newReadClient(h *hostServer) *readClient {
	return &readClient{
		base: h.url,
		auth: "Bearer " + h.admin,
		hc: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        readConcurrency,
			MaxIdleConnsPerHost: readConcurrency, // the default (2) would redial most requests
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		}},
	}
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

// verifyReads reads each endpoint once and checks its answer in full: the list holds every
// plugin, the enabled ones enabled, with its secret masked; the detail is the plugin asked
// for.
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
	var repos struct {
		Repositories []json.RawMessage `json:"repositories"`
	}
	return h.getData(ctx, pathRepositories, &repos)
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
