package main

import (
	"context"
	"errors"
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
	r := newReport(config{payload: 256, duration: time.Second, warmup: time.Second})
	r.add(keyRelay, "relay", &Measurement{P50us: 100, P99us: 200, Samples: 10, Throughput: 1000, RoundTrips: 1000}, nil)
	r.add(keyRedis, "redis", &Measurement{P50us: 100, P99us: 200, Samples: 10, Throughput: 1000, RoundTrips: 1000}, nil)
	r.add(keyHostMem, "mem", &Measurement{P50us: 140, P99us: 300, Samples: 10, Throughput: 500, RoundTrips: 500}, nil)
	r.add(keyHostRedis, "host redis", nil, errors.New("no redis | here"))
	r.computeRatios()

	want := map[string]struct {
		value float64
		met   bool
	}{
		"host-memory p50 / relay p50":               {1.4, true},
		"host-memory throughput / relay throughput": {0.5, false},
	}
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok {
			if q.Value != nil {
				t.Errorf("%s = %v, want n/a (its scenario failed)", q.Name, *q.Value)
			}
			continue
		}
		if q.Value == nil || *q.Value != w.value || q.Met != w.met {
			t.Errorf("%s = %v (met %v), want %v (met %v)", q.Name, q.Value, q.Met, w.value, w.met)
		}
	}

	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, s := range []string{"| relay | 100 | 200 | 10 | 1000 | 1000 | baseline |", "**1.40** (target ≤ 1.5) ✓", "**0.50** (target ≥ 0.6) ✗",
		"**failed to run**: no redis \\| here"} {
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
	r.add(keyHostMem, "mem", &Measurement{P50us: 140, Throughput: 500}, nil)
	r.computeRatios()
	if cell := r.ratioCell(keyHostMem); !strings.Contains(cell, "p50 ÷ relay p50 n/a (target ≤ 1.5)") {
		t.Errorf("ratio cell without a baseline: %q", cell)
	}
}
