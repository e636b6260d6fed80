package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentileUS(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- { // 1..100 µs, unsorted
		lat = append(lat, time.Duration(i)*time.Microsecond)
	}
	for _, tc := range []struct {
		p    float64
		want float64
	}{{0.50, 50}, {0.99, 99}, {1, 100}, {0.001, 1}} {
		if got := percentileUS(lat, tc.p); got != tc.want {
			t.Errorf("p%v = %v µs, want %v", tc.p*100, got, tc.want)
		}
	}
	if got := percentileUS([]time.Duration{7 * time.Microsecond}, 0.99); got != 7 {
		t.Errorf("one sample: p99 = %v, want 7", got)
	}
}

func TestDriveCountsOnlySuccessfulRoundTrips(t *testing.T) {
	var calls atomic.Int64
	ok := func(context.Context) error { calls.Add(1); return nil }
	lat, elapsed, err := drive(context.Background(), ok, 4, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(lat)) != calls.Load() || len(lat) == 0 {
		t.Errorf("%d latencies for %d round trips", len(lat), calls.Load())
	}
	if elapsed < 20*time.Millisecond {
		t.Errorf("elapsed %v, shorter than the phase", elapsed)
	}

	boom := errors.New("boom")
	var n atomic.Int64
	failing := func(context.Context) error {
		if n.Add(1) == 10 {
			return boom
		}
		return nil
	}
	if _, _, err := drive(context.Background(), failing, 4, time.Second); !errors.Is(err, boom) {
		t.Errorf("drive with a failing round trip: %v, want %v", err, boom)
	}
}

func TestReportRatios(t *testing.T) {
	r := newReport(config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 3})
	m := func(p50, tput float64) Measurement {
		return Measurement{P50us: p50, P99us: 2 * p50, Samples: 10, Throughput: tput, RoundTrips: int(tput)}
	}
	// The ratios are taken within each round: 1.4, 1.5 and 1.6 for p50, median 1.5 (the
	// medians of the scenarios, 160 / 100, would say 1.6).
	r.add(keyRelay, "relay", []Measurement{m(100, 1000), m(200, 1000), m(100, 1000)}, nil)
	r.add(keyProtoRelay, "proto", []Measurement{m(120, 500), m(220, 600), m(130, 400)}, nil)
	r.add(keyRedis, "redis", []Measurement{m(100, 1000)}, nil)
	r.add(keyHostMem, "mem", []Measurement{m(140, 500), m(300, 500), m(160, 500)}, nil)
	r.add(keyHostRedis, "host redis", nil, errors.New("no redis | here"))
	r.computeRatios()

	want := map[string]struct {
		value float64
		met   bool
	}{
		"host-memory p50 / relay p50":                     {1.5, false},
		"host-memory throughput / relay throughput":       {0.5, true},
		"proto-frame-relay p50 / relay p50":               {1.2, false}, // a reference: never "met"
		"proto-frame-relay throughput / relay throughput": {0.5, false},
		// rounds 140/120, 300/220, 160/130 (median 160/130); 500/500, 500/600, 500/400
		"host-memory p50 / proto-frame-relay p50":               {160.0 / 130, false},
		"host-memory throughput / proto-frame-relay throughput": {1, true},
	}
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok {
			if q.Value != nil {
				t.Errorf("%s = %v, want n/a (its scenario failed)", q.Name, *q.Value)
			}
			continue
		}
		if q.Value == nil || *q.Value != w.value || q.Met != w.met || len(q.PerRound) != 3 {
			t.Errorf("%s = %v (met %v, rounds %v), want %v (met %v)", q.Name, q.Value, q.Met, q.PerRound, w.value, w.met)
		}
	}
	if got := r.result(keyHostMem); got == nil || got.P50us != 160 || got.P99us != 320 {
		t.Errorf("the median of host-memory: %+v, want p50 160 and p99 320", got)
	}

	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, s := range []string{"| relay | 100 | 200 | 10 | 1000 | 1000 | – | baseline |", "**1.50** (rounds 1.40–1.60; target ≤ 1.35) ✗",
		"**0.50** (rounds 0.50–0.50; target ≥ 0.45) ✓", "median of 3 rounds",
		"throughput ÷ reference throughput = **1.00** (rounds 0.83–1.25; target ≥ 0.8) ✓",
		"**failed to run**: no redis \\| here",
		"| proto | 130 | 260 | 10 | 500 | 500 | – | p50 ÷ relay p50 = 1.20 (rounds 1.10–1.30), no target; throughput ÷ relay throughput = 0.50 (rounds 0.40–0.60), no target |"} {
		if !strings.Contains(md, s) {
			t.Errorf("the Markdown report lacks %q:\n%s", s, md)
		}
	}
	if got := r.failed(); len(got) != 1 || got[0] != keyHostRedis {
		t.Errorf("failed() = %v", got)
	}

	// Without the baseline, the host's ratios are not available.
	r = newReport(config{payload: 256, duration: time.Second})
	r.add(keyRelay, "relay", nil, errors.New("refused"))
	r.add(keyHostMem, "mem", []Measurement{{P50us: 140, Throughput: 500}}, nil)
	r.computeRatios()
	if cell := r.ratioCell(keyHostMem); !strings.Contains(cell, "p50 ÷ relay p50 n/a (target ≤ 1.35)") {
		t.Errorf("ratio cell without a baseline: %q", cell)
	}
}

// The over-Redis targets: p50 against the relay's and Redis's p50 together, throughput
// against Redis's, within each round.
func TestReportRedisRatios(t *testing.T) {
	r := newReport(config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 3})
	m := func(p50, tput float64) Measurement {
		return Measurement{P50us: p50, P99us: 2 * p50, Samples: 10, Throughput: tput, RoundTrips: int(tput)}
	}
	r.add(keyRelay, "relay", []Measurement{m(100, 30000), m(100, 30000), m(100, 30000)}, nil)
	r.add(keyRedis, "redis", []Measurement{m(200, 10000), m(300, 20000), m(200, 10000)}, nil)
	// p50 330/300 = 1.1, 520/400 = 1.3, 390/300 = 1.3; throughput 0.5, 0.3, 0.45.
	r.add(keyHostRedis, "host redis", []Measurement{m(330, 5000), m(520, 6000), m(390, 4500)}, nil)
	r.computeRatios()
	want := map[string]struct {
		value float64
		met   bool
	}{
		"host-redis p50 / (relay p50 + redis p50)": {1.3, false},
		"host-redis throughput / redis throughput": {0.45, true},
	}
	found := 0
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok {
			continue
		}
		found++
		if q.Value == nil || math.Abs(*q.Value-w.value) > 1e-9 || q.Met != w.met || len(q.PerRound) != 3 {
			t.Errorf("%s = %v (met %v, rounds %v), want %v (met %v)", q.Name, q.Value, q.Met, q.PerRound, w.value, w.met)
		}
	}
	if found != len(want) {
		t.Errorf("%d of the %d over-Redis ratios in %+v", found, len(want), r.Ratios)
	}
	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"p50 ÷ (relay p50 + Redis p50) = **1.30** (rounds 1.10–1.30; target ≤ 1.2) ✗",
		"throughput ÷ Redis throughput = **0.45** (rounds 0.30–0.50; target ≥ 0.4) ✓"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("the Markdown report lacks %q:\n%s", s, b.String())
		}
	}
}

// The two-replica row carries its ratios to the same-replica over-Redis row, within each
// round and without a target; they are n/a when the same-replica row failed.
func TestReportReplicasRatios(t *testing.T) {
	r := newReport(config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 2})
	m := func(p50, tput float64) Measurement {
		return Measurement{P50us: p50, P99us: 2 * p50, Samples: 10, Throughput: tput, RoundTrips: int(tput)}
	}
	r.add(keyHostRedis, "same replica", []Measurement{m(500, 4000), m(600, 3000)}, nil)
	r.add(keyHostReplicas, "two replicas", []Measurement{m(700, 2000), m(900, 3000)}, nil)
	r.computeRatios()

	// Rounds: p50 700/500 = 1.4 and 900/600 = 1.5; throughput 0.5 and 1.
	want := map[string]float64{
		"host-redis-replicas p50 / host-redis p50":               1.45,
		"host-redis-replicas throughput / host-redis throughput": 0.75,
	}
	found := 0
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok {
			continue
		}
		found++
		if q.Value == nil || math.Abs(*q.Value-w) > 1e-9 || q.Op != "" || q.Met || len(q.PerRound) != 2 {
			t.Errorf("%s = %v (op %q, met %v, rounds %v), want %v with no target", q.Name, q.Value, q.Op, q.Met, q.PerRound, w)
		}
	}
	if found != len(want) {
		t.Errorf("%d of the %d replica ratios in %+v", found, len(want), r.Ratios)
	}

	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	row := "| two replicas | 800 | 1600 | 10 | 2500 | 2500 | – | p50 ÷ same-replica p50 = 1.45 (rounds 1.40–1.50), no target; " +
		"throughput ÷ same-replica throughput = 0.75 (rounds 0.50–1.00), no target |"
	if !strings.Contains(b.String(), row) {
		t.Errorf("the Markdown report lacks %q:\n%s", row, b.String())
	}

	// Without the same-replica row, the ratios are not available.
	r = newReport(config{payload: 256, duration: time.Second})
	r.add(keyHostRedis, "same replica", nil, errors.New("no redis"))
	r.add(keyHostReplicas, "two replicas", []Measurement{m(700, 2000)}, nil)
	r.computeRatios()
	if cell := r.ratioCell(keyHostReplicas); cell != "p50 ÷ same-replica p50 n/a; throughput ÷ same-replica throughput n/a" {
		t.Errorf("ratio cell without the same-replica row: %q", cell)
	}
}

// A child's last stderr lines are kept for its error, and still copied with its prefix.
func TestPrefixWriterKeepsTheLastLines(t *testing.T) {
	var out strings.Builder
	pw := &prefixWriter{prefix: "[child] ", w: &out}
	for i := range 7 {
		fmt.Fprintf(pw, "line %d\n", i)
	}
	_, _ = pw.Write([]byte("partial"))
	if got, want := pw.tailText(), "; its last lines on stderr: line 2 | line 3 | line 4 | line 5 | line 6"; got != want {
		t.Errorf("tailText = %q, want %q", got, want)
	}
	if !strings.HasPrefix(out.String(), "[child] line 0\n") || strings.Contains(out.String(), "partial") {
		t.Errorf("copied %q", out.String())
	}
	var none *prefixWriter
	if none.tailText() != "" {
		t.Error("a nil writer has a tail")
	}
}
