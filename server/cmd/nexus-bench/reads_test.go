package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

func TestReadPluginManifestsParse(t *testing.T) {
	ids := map[string]bool{}
	enabled := 0
	for i := 1; i <= readPlugins; i++ {
		if i%readEnabledEvery == 1 { // as installReadPlugin
			enabled++
		}
		js, err := json.Marshal(readPluginManifest(i))
		if err != nil {
			t.Fatal(err)
		}
		m, err := manifest.Parse(js)
		if err != nil {
			t.Fatalf("plugin %d: %v", i, err)
		}
		if !m.External || m.ID != readPluginID(i) || ids[m.ID] {
			t.Errorf("plugin %d: id %q (external %v), want the distinct external %q", i, m.ID, m.External, readPluginID(i))
		}
		ids[m.ID] = true
		if len(m.Schema().SecretFields()) == 0 || len(m.APIEndpoints) == 0 || len(m.Events.Emits) == 0 || len(m.Permissions) == 0 {
			t.Errorf("plugin %d lacks a secret field, endpoints, events or permissions: %+v", i, m)
		}
	}
	if enabled != readEnabled() {
		t.Errorf("readEnabled() = %d, but %d are enabled", readEnabled(), enabled)
	}
}

func TestAlternate(t *testing.T) {
	// turns records which round trip ran, once per change: the slices alternate, each cycle
	// starting with the next round trip.
	var mu sync.Mutex
	var turns []int
	rt := func(i int) roundTrip {
		return func(context.Context) error {
			mu.Lock()
			if len(turns) == 0 || turns[len(turns)-1] != i {
				turns = append(turns, i)
			}
			mu.Unlock()
			return nil
		}
	}
	// The first endpoint's server "uses" 10µs of CPU per request on its clock; the others
	// have no clock.
	var used atomic.Int64
	counted := func(ctx context.Context) error {
		used.Add(int64(10 * time.Microsecond))
		return rt(0)(ctx)
	}
	clock := func() (time.Duration, error) { return time.Duration(used.Load()), nil }
	ms, err := alternate(context.Background(), []readEndpoint{{counted, clock}, {rt(1), nil}, {rt(2), nil}}, 4, 0, 9*time.Millisecond, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 1, 2, 0, 2, 0, 1}; !slices.Equal(turns, want) {
		t.Errorf("order of the slices: %v, want %v", turns, want)
	}
	for i, m := range ms {
		if m.RoundTrips == 0 || m.InFlight != 4 || m.Seconds <= 0 || m.Throughput != float64(m.RoundTrips)/m.Seconds ||
			m.LoadedP50us > m.LoadedP99us || m.P50us != 0 || m.Samples != 0 || m.WarmupRoundTrips != 0 || m.Slices != 3 {
			t.Errorf("measurement %d: %+v", i, m)
		}
	}
	if ms[0].ServerCPUus != 10 || ms[1].ServerCPUus != 0 {
		t.Errorf("server CPU per request: %v and %v, want 10 (its clock) and 0 (no clock)", ms[0].ServerCPUus, ms[1].ServerCPUus)
	}

	boom := errors.New("boom")
	fail := func(context.Context) error { return boom }
	if _, err := alternate(context.Background(), []readEndpoint{{rt(0), nil}, {fail, nil}}, 2, 0, 2*time.Millisecond, 1); !errors.Is(err, boom) {
		t.Errorf("alternate with a failing round trip: %v, want %v", err, boom)
	}
	if _, err := alternate(context.Background(), []readEndpoint{{fail, nil}}, 2, time.Millisecond, time.Millisecond, 1); !errors.Is(err, boom) || !strings.Contains(err.Error(), "warm-up") {
		t.Errorf("alternate failing in its warm-up: %v", err)
	}
	broken := func() (time.Duration, error) { return 0, boom }
	if _, err := alternate(context.Background(), []readEndpoint{{rt(0), broken}}, 2, 0, time.Millisecond, 1); !errors.Is(err, boom) {
		t.Errorf("alternate with a clock that cannot be read: %v, want %v", err, boom)
	}
}

func TestReportReadRatios(t *testing.T) {
	cfg := config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 3, only: onlyReads}
	r := newReport(cfg)
	var round int
	m := func(tput, p50 float64) Measurement {
		round++
		slices := 6 // per round: 6, 2, 6
		if round%3 == 2 {
			slices = 2
		}
		return Measurement{Throughput: tput, LoadedP50us: p50, LoadedP99us: 3 * p50, RoundTrips: int(tput), InFlight: readConcurrency, Slices: slices}
	}
	rows := readRows()
	// Rounds: list 0.4, 0.6, 0.5 of the repositories' throughput (median 0.5, met); detail
	// 0.7, 0.9, 0.75 (median 0.75, not met).
	r.add(rows[0].key, rows[0].name, []Measurement{m(1000, 100), m(2000, 50), m(1000, 100)}, nil)
	r.add(rows[1].key, rows[1].name, []Measurement{m(400, 250), m(1200, 80), m(500, 200)}, nil)
	r.add(rows[2].key, rows[2].name, []Measurement{m(700, 140), m(1800, 55), m(750, 130)}, nil)
	r.computeRatios()

	want := map[string]struct {
		value float64
		met   bool
	}{
		// References since issue 15 (never met: no target).
		"plugin-list throughput / repositories throughput":   {0.5, false},
		"plugin-detail throughput / repositories throughput": {0.75, false},
	}
	if len(r.Ratios) != len(want) {
		t.Errorf("%d ratios, want %d: %+v", len(r.Ratios), len(want), r.Ratios)
	}
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok || q.Value == nil || *q.Value != w.value || q.Met != w.met || len(q.PerRound) != 3 {
			t.Errorf("%s = %v (met %v, rounds %v), want %v (met %v)", q.Name, q.Value, q.Met, q.PerRound, w.value, w.met)
		}
	}

	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, s := range []string{
		"100 plugins installed (5 enabled)", "32 requests in flight", "median of 3 rounds",
		"the endpoints alternating in slices (2–6 per round; at most 6, each at least 5× the slowest warm-up p50)",
		"| GET /api/v1/plugins/repositories (baseline) | 32 | 1000 | 100 | 300 | – | 1000 | baseline |",
		"throughput ÷ repositories throughput = 0.50 (rounds 0.40–0.60), no target",
		"throughput ÷ repositories throughput = 0.75 (rounds 0.70–0.90), no target",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("the Markdown report lacks %q:\n%s", s, md)
		}
	}
	if strings.Contains(md, "samples (1 in flight)") {
		t.Errorf("the messaging table is printed although no messaging scenario ran:\n%s", md)
	}

	// A failed reads scenario fails all its rows, and the ratios are not available.
	r = newReport(cfg)
	for _, row := range rows {
		r.add(row.key, row.name, nil, errors.New("install: refused"))
	}
	r.computeRatios()
	if got := r.failed(); len(got) != len(rows) {
		t.Errorf("failed() = %v", got)
	}
	if cell := r.ratioCell(keyReadList); !strings.Contains(cell, "throughput ÷ bare throughput n/a (target ≥ 0.5)") {
		t.Errorf("ratio cell without a baseline: %q", cell)
	}
}

func TestFmtRatio(t *testing.T) {
	for v, want := range map[float64]string{0: "0.00", 0.5: "0.50", 1.234: "1.23", 0.1: "0.10", 0.0025: "0.0025", 0.04567: "0.046", 496.35: "496.35"} {
		if got := fmtRatio(v); got != want {
			t.Errorf("fmtRatio(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSliceCount(t *testing.T) {
	for _, tc := range []struct {
		d, latency time.Duration
		want       int
	}{
		{3 * time.Second, 0, 6},                      // no warm-up: the most
		{3 * time.Second, time.Millisecond, 6},       // fast endpoints: the most
		{3 * time.Second, 150 * time.Millisecond, 4}, // 3s / (5 × 150ms) = 4
		{3 * time.Second, 3 * time.Second, 1},        // slower than the slice: one
		{time.Millisecond, time.Second, 1},
	} {
		if got := sliceCount(tc.d, tc.latency, readSlices); got != tc.want {
			t.Errorf("sliceCount(%v, %v) = %d, want %d", tc.d, tc.latency, got, tc.want)
		}
	}
}

func TestParseFlagsSelection(t *testing.T) {
	for _, tc := range []struct {
		args                 []string
		messaging, reads, ok bool
	}{
		{nil, true, true, true},
		{[]string{"-only", "reads"}, false, true, true},
		{[]string{"-only", "messaging"}, true, false, true},
		{[]string{"-skip-reads"}, true, false, true},
		{[]string{"-only", "reads", "-skip-reads"}, false, false, false},
		{[]string{"-only", "rest"}, false, false, false},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%v: error %v, want ok %v", tc.args, err, tc.ok)
			continue
		}
		if tc.ok && (cfg.runsMessaging() != tc.messaging || cfg.runsReads() != tc.reads) {
			t.Errorf("%v: messaging %v, reads %v; want %v, %v", tc.args, cfg.runsMessaging(), cfg.runsReads(), tc.messaging, tc.reads)
		}
	}
}

// TestReportBareRatios checks issue 15's ratios: each read against the bare server's, and
// the tail over 1,000 connections.
func TestReportBareRatios(t *testing.T) {
	r := newReport(config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 3, only: onlyReads})
	r.Reads.ServerLimits = "open files 20000 (soft) / 20000 (hard), somaxconn 4096"
	m := func(tput, p50, p99, cpu float64) Measurement {
		return Measurement{Throughput: tput, LoadedP50us: p50, LoadedP99us: p99, ServerCPUus: cpu, RoundTrips: int(tput), InFlight: readConcurrency, Slices: 2}
	}
	three := func(a, b, c Measurement) []Measurement { return []Measurement{a, b, c} }
	for _, row := range readRows() {
		var runs []Measurement
		switch row.key {
		case keyReadList: // 0.4, 0.6, 0.55 of the bare list: median 0.55, met
			runs = three(m(40, 800, 900, 8000), m(60, 500, 600, 8000), m(55, 600, 700, 9000))
		case keyReadListBase:
			runs = three(m(100, 320, 400, 4000), m(100, 300, 400, 4000), m(100, 300, 400, 4500))
		case keyReadDetail: // 0.3, 0.4, 0.45: median 0.4, not met
			runs = three(m(300, 100, 200, 1000), m(400, 80, 200, 1000), m(450, 70, 200, 1000))
		case keyReadConns: // p99/p50 12, 8, 9: median 9, met
			runs = three(m(100, 1e6, 12e6, 9000), m(100, 1e6, 8e6, 9000), m(100, 1e6, 9e6, 9000))
		case keyReadConnsBase:
			runs = three(m(200, 5e5, 1e6, 4000), m(200, 5e5, 1e6, 4000), m(200, 5e5, 1e6, 4000))
		default:
			runs = three(m(1000, 10, 20, 100), m(1000, 10, 20, 100), m(1000, 10, 20, 100))
		}
		r.add(row.key, row.name, runs, nil)
	}
	r.computeRatios()
	want := map[string]struct {
		value float64
		met   bool
		op    string
	}{
		"plugin-list throughput / bare throughput":                            {0.55, true, ">="},
		"plugin-detail throughput / bare throughput":                          {0.4, false, ">="},
		"plugin-list bare server CPU per request / server CPU per request":    {0.5, false, ""},
		"connect-list throughput / bare throughput":                           {1, false, ""},
		"1000-connections p99 / p50":                                          {9, true, "<="},
		"1000-connections p50 / bare p50":                                     {2, false, ""},
		"1000-connections bare p99 / p50":                                     {2, false, ""},
		"plugin-list throughput / repositories throughput":                    {0.055, false, ""},
		"connect-detail bare server CPU per request / server CPU per request": {1, false, ""},
	}
	found := 0
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok {
			continue
		}
		found++
		if q.Value == nil || math.Abs(*q.Value-w.value) > 1e-9 || q.Met != w.met || q.Op != w.op || len(q.PerRound) != 3 {
			t.Errorf("%s = %v (met %v, op %q, rounds %v), want %v (met %v, op %q)", q.Name, q.Value, q.Met, q.Op, q.PerRound, w.value, w.met, w.op)
		}
	}
	if found != len(want) {
		t.Errorf("found %d of the %d ratios: %+v", found, len(want), r.Ratios)
	}
	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, s := range []string{
		"then the list over 1,000 connections", "server limits: open files 20000 (soft) / 20000 (hard), somaxconn 4096",
		"| GET /api/v1/plugins, 1,000 connections, 1 request in flight on each | 32 | 100 | 1000000 | 9000000 | 9000 | 100 |",
		"p99 ÷ p50 = **9.00** (rounds 8.00–12.00; target ≤ 10) ✓",
		"throughput ÷ bare throughput = **0.55** (rounds 0.40–0.60; target ≥ 0.5) ✓",
		"throughput ÷ bare throughput = **0.40** (rounds 0.30–0.45; target ≥ 0.5) ✗",
		"| bare connect-go + vanguard: GET /api/v1/plugins (the same answer) | 32 | 100 | 300 | 400 | 4000 | 100 | baseline |",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("the Markdown report lacks %q:\n%s", s, md)
		}
	}
}
