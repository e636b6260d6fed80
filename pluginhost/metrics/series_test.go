package metrics_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
)

// recordTwoMinutes records, from t0, 60 requests at 1..60 ms (3 failed) in the first minute
// and 60 at 61..120 ms (2 failed) in the second, and a resource sample every 15 s: memory
// 40, 42, ... 54 MiB, open files 10, 12, ... 24, and CPU alternating 2 % and 4 % after the
// first sample. The clock is left at t0+5m.
func recordTwoMinutes(s *metrics.Store, clock *fakeClock) {
	for i := range 120 {
		clock.Set(t0.Add(time.Duration(i) * time.Second))
		ms := i + 1
		s.ObserveRequest("p", "caller", time.Duration(ms)*time.Millisecond, ms%20 == 0 && ms <= 60 || ms%30 == 0 && ms > 60)
	}
	cpu := 1.0
	for i := range 8 {
		at := t0.Add(time.Duration(i) * 15 * time.Second)
		clock.Set(at)
		if i > 0 {
			cpu += []float64{0.6, 0.3}[i%2] // 4 % or 2 % of 15 s
		}
		s.ObserveResources("p", int64(40+2*i)<<20, cpu, 10+2*i, at)
	}
	clock.Set(t0.Add(5 * time.Minute))
}

func TestSeriesMath(t *testing.T) {
	pts := func(vs ...float64) []metrics.Point {
		out := make([]metrics.Point, len(vs))
		for i, v := range vs {
			out[i] = metrics.Point{Time: t0.Add(time.Duration(i) * time.Minute), Value: v}
		}
		return out
	}
	// The same two minutes fall in a single bucket at every coarser resolution.
	coarse := func(minutes float64) map[string][]metrics.Point {
		return map[string][]metrics.Point{
			metrics.RequestsPerMinute:  pts(120 / minutes),
			metrics.ResponseTimeMS:     pts(60.5),
			metrics.P95ResponseTimeMS:  pts(114), // nearest rank 114 of 1..120
			metrics.ErrorRate:          pts(5.0 / 120),
			metrics.MemoryUsageMB:      pts(47),
			metrics.MemoryUsageMBMax:   pts(54),
			metrics.CPUUsagePercent:    pts(20.0 / 7),
			metrics.CPUUsagePercentMax: pts(4),
			metrics.FileHandles:        pts(17),
			metrics.FileHandlesMax:     pts(24),
		}
	}
	tests := []struct {
		resolution time.Duration
		want       map[string][]metrics.Point
	}{
		{time.Minute, map[string][]metrics.Point{
			metrics.RequestsPerMinute:  pts(60, 60),
			metrics.ResponseTimeMS:     pts(30.5, 90.5),
			metrics.P95ResponseTimeMS:  pts(57, 117),
			metrics.ErrorRate:          pts(3.0/60, 2.0/60),
			metrics.MemoryUsageMB:      pts(43, 51),
			metrics.MemoryUsageMBMax:   pts(46, 54),
			metrics.CPUUsagePercent:    pts(8.0/3, 3),
			metrics.CPUUsagePercentMax: pts(4, 4),
			metrics.FileHandles:        pts(13, 21),
			metrics.FileHandlesMax:     pts(16, 24),
		}},
		{5 * time.Minute, coarse(5)},
		{15 * time.Minute, coarse(15)},
		{time.Hour, coarse(60)},
	}
	for _, tt := range tests {
		t.Run(tt.resolution.String(), func(t *testing.T) {
			s, clock := newStore(t0)
			recordTwoMinutes(s, clock)
			names := make([]string, 0, len(tt.want))
			for n := range tt.want {
				names = append(names, n)
			}
			got, err := s.Series("p", t0, t0.Add(3*time.Minute), tt.resolution, names)
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.want {
				tol := 1e-9
				if name == metrics.P95ResponseTimeMS {
					tol = metrics.QuantileRelativeError
				}
				if !samePoints(got[name], want, tol) {
					t.Errorf("%s = %v, want %v (tolerance %g)", name, got[name], want, tol)
				}
			}
		})
	}
}

func TestSeriesAllNamesByDefault(t *testing.T) {
	s, clock := newStore(t0)
	recordTwoMinutes(s, clock)
	got, err := s.Series("p", t0, t0.Add(time.Hour), time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n, pts := range got {
		names = append(names, n)
		if len(pts) != 2 {
			t.Errorf("%s has %d points, want 2 (empty minutes are omitted)", n, len(pts))
		}
	}
	slices.Sort(names)
	want := metrics.Names()
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("series %v, want %v", names, want)
	}

	unknown, err := s.Series("nobody", t0, t0.Add(time.Hour), time.Minute, []string{metrics.ErrorRate})
	if err != nil || len(unknown) != 1 || len(unknown[metrics.ErrorRate]) != 0 {
		t.Errorf("unknown plugin: %v, %v; want one empty series", unknown, err)
	}
}

// TestSeriesIdleBuckets checks that a minute with resource samples but no requests has a zero
// rate and error rate and no latency points, and that a minute with nothing has no point.
func TestSeriesIdleBuckets(t *testing.T) {
	s, clock := newStore(t0)
	s.ObserveResources("p", 1<<20, 0, 1, t0)
	clock.Set(t0.Add(2 * time.Minute))
	s.ObserveRequest("p", "", 10*time.Millisecond, true)
	got, err := s.Series("p", t0, t0.Add(2*time.Minute), time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	want := map[string][]metrics.Point{
		metrics.RequestsPerMinute: {{at(0), 0}, {at(2), 1}},
		metrics.ErrorRate:         {{at(0), 0}, {at(2), 1}},
		metrics.ResponseTimeMS:    {{at(2), 10}},
		metrics.P95ResponseTimeMS: {{at(2), 10}},
		metrics.MemoryUsageMB:     {{at(0), 1}},
		metrics.CPUUsagePercent:   {},
		metrics.FileHandles:       {{at(0), 1}},
	}
	for name, w := range want {
		if !samePoints(got[name], w, 1e-9) {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
}

// TestP95ErrorBound checks the documented bound against exact nearest-rank quantiles, for
// latencies spread over the whole histogram and for latencies on bucket bounds.
func TestP95ErrorBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	logUniform := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(1e5 * math.Pow(10, rng.Float64()*5.7)) // 0.1 ms .. 50 s
		}
		return out
	}
	var bounds []time.Duration
	for k := range 116 {
		bounds = append(bounds, time.Duration(math.Round(1e5*math.Pow(10, float64(k)/20))))
	}
	tests := []struct {
		name      string
		latencies []time.Duration
	}{
		{"log-uniform", logUniform(5000)},
		{"few samples", logUniform(7)},
		{"on bucket bounds", bounds},
		{"just below bucket bounds", func() []time.Duration {
			out := make([]time.Duration, len(bounds)-1)
			for i, b := range bounds[1:] {
				out[i] = b - 1
			}
			return out
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t0)
			for _, d := range tt.latencies {
				s.ObserveRequest("p", "", d, false)
			}
			sorted := slices.Clone(tt.latencies)
			slices.Sort(sorted)
			exact := float64(sorted[int(math.Ceil(0.95*float64(len(sorted))))-1]) / 1e6
			got, err := s.Series("p", t0, t0, time.Minute, []string{metrics.P95ResponseTimeMS})
			if err != nil {
				t.Fatal(err)
			}
			p95 := got[metrics.P95ResponseTimeMS]
			if len(p95) != 1 || math.Abs(p95[0].Value-exact) > metrics.QuantileRelativeError*exact {
				t.Errorf("p95 = %v, want %v ± %.2f%%", p95, exact, metrics.QuantileRelativeError*100)
			}
		})
	}
}

// TestDownsampling records an hour of traffic and checks that its 1h point is the same
// whether it is read from minute buckets, partly folded, or entirely from the hour bucket.
func TestDownsampling(t *testing.T) {
	s, clock := newStore(t0)
	for m := range 60 {
		for i := range 10 + m/2 {
			clock.Set(t0.Add(time.Duration(m)*time.Minute + time.Duration(i)*time.Second))
			d := time.Duration(1+(m*7+i*13)%400) * time.Millisecond
			s.ObserveRequest("p", "u", d, (m+i)%17 == 0)
		}
		for q := range 4 {
			at := t0.Add(time.Duration(m)*time.Minute + time.Duration(q)*15*time.Second)
			s.ObserveResources("p", int64(30+m%7)<<20, float64(m*60+q*15)*0.05, 8+m%5, at)
		}
	}
	clock.Set(t0.Add(time.Hour))
	ref, err := s.Series("p", t0, t0, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	refSummary := s.Summary("p")
	for _, pts := range ref {
		if len(pts) != 1 {
			t.Fatalf("reference series %v, want one point each", ref)
		}
	}

	for _, later := range []time.Duration{24*time.Hour + 30*time.Minute, 25 * time.Hour, 29 * 24 * time.Hour} {
		t.Run("after "+later.String(), func(t *testing.T) {
			clock.Set(t0.Add(later))
			got, err := s.Series("p", t0, t0.Add(59*time.Minute), time.Hour, nil)
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range ref {
				if !samePoints(got[name], want, 1e-9) {
					t.Errorf("%s = %v, want %v as before downsampling", name, got[name], want)
				}
			}
			sum := s.Summary("p")
			if sum.RequestsHandled != refSummary.RequestsHandled || sum.FailedRequests != refSummary.FailedRequests ||
				sum.UniqueUsers != refSummary.UniqueUsers {
				t.Errorf("totals changed: %+v, want %+v", sum, refSummary)
			}
		})
	}

	// Beyond 30 days even the hour buckets are gone.
	clock.Set(t0.Add(30*24*time.Hour + 2*time.Hour))
	if _, err := s.Series("p", t0, t0.Add(time.Hour), time.Hour, nil); !errs.Is(err, errs.ValidationError) {
		t.Errorf("query beyond 30 days: err = %v, want VALIDATION_ERROR", err)
	}
	if f := s.Footprint("p"); f.MinuteBuckets != 0 || f.HourBuckets != 0 {
		t.Errorf("footprint after retention %+v, want no buckets", f)
	}
}

func TestSeriesErrors(t *testing.T) {
	now := t0.Add(40 * 24 * time.Hour)
	tests := []struct {
		name       string
		start, end time.Time
		resolution time.Duration
		names      []string
		field      string
		mentions   string
	}{
		{"unsupported resolution", now.Add(-time.Hour), now, 2 * time.Minute, nil, "resolution", "1m, 5m, 15m, 1h"},
		{"zero resolution", now.Add(-time.Hour), now, 0, nil, "resolution", "1m, 5m, 15m, 1h"},
		{"end before start", now, now.Add(-time.Minute), time.Minute, nil, "end_time", "before"},
		{"unknown series", now.Add(-time.Hour), now, time.Minute, []string{"latency"}, "metrics", "latency"},
		{"1m beyond a day", now.Add(-25 * time.Hour), now, time.Minute, nil, "start_time", "use resolution 1h"},
		{"15m beyond a day", now.Add(-48 * time.Hour), now.Add(-47 * time.Hour), 15 * time.Minute, nil, "start_time", "use resolution 1h"},
		{"1m beyond 30 days", now.Add(-31 * 24 * time.Hour), now, time.Minute, nil, "start_time", "30 days"},
		{"1h beyond 30 days", now.Add(-31 * 24 * time.Hour), now, time.Hour, nil, "start_time", "30 days"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(now)
			s.ObserveRequest("p", "", time.Millisecond, false)
			_, err := s.Series("p", tt.start, tt.end, tt.resolution, tt.names)
			var e *errs.Error
			if !errors.As(err, &e) || e.Code != errs.ValidationError {
				t.Fatalf("err = %v, want a VALIDATION_ERROR", err)
			}
			if len(e.Fields) != 1 || e.Fields[0].Field != tt.field || !strings.Contains(e.Message, tt.mentions) {
				t.Errorf("err = %v (fields %v), want field %q and a message mentioning %q", e, e.Fields, tt.field, tt.mentions)
			}
		})
	}

	// The edges of retention are accepted, with a minute of grace for the caller's clock.
	s, _ := newStore(now.Add(30 * time.Second))
	for _, q := range []struct {
		start      time.Time
		resolution time.Duration
	}{
		{now.Add(-24 * time.Hour), time.Minute},
		{now.Add(-24*time.Hour - 30*time.Second), 5 * time.Minute},
		{now.Add(-30 * 24 * time.Hour), time.Hour},
	} {
		if _, err := s.Series("p", q.start, now, q.resolution, nil); err != nil {
			t.Errorf("start %v at %v: %v", q.start, q.resolution, err)
		}
	}
}

func TestParseResolution(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1m", time.Minute, true}, {"5m", 5 * time.Minute, true}, {"15m", 15 * time.Minute, true},
		{"1h", time.Hour, true}, {"60m", 0, false}, {"1d", 0, false}, {"", 0, false},
	} {
		got, err := metrics.ParseResolution(tt.in)
		if got != tt.want || (err == nil) != tt.ok || (err != nil && !errs.Is(err, errs.ValidationError)) {
			t.Errorf("ParseResolution(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func samePoints(got, want []metrics.Point, tol float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !got[i].Time.Equal(want[i].Time) || !near(got[i].Value, want[i].Value, tol) {
			return false
		}
	}
	return true
}

// TestFoldAfterLongGap checks that minutes recorded before a long quiet spell are folded into
// their hours, not lost, when the next call comes days later.
func TestFoldAfterLongGap(t *testing.T) {
	for _, gap := range []time.Duration{25 * time.Hour, 3 * 24 * time.Hour, 29 * 24 * time.Hour} {
		t.Run(gap.String(), func(t *testing.T) {
			s, clock := newStore(t0)
			s.ObserveRequest("p", "", 10*time.Millisecond, false)
			clock.Set(t0.Add(30 * time.Minute))
			s.ObserveRequest("p", "", 30*time.Millisecond, true)
			clock.Set(t0.Add(gap))
			got, err := s.Series("p", t0, t0, time.Hour, []string{metrics.RequestsPerMinute, metrics.ResponseTimeMS, metrics.ErrorRate})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]metrics.Point{
				metrics.RequestsPerMinute: {{t0, 2.0 / 60}},
				metrics.ResponseTimeMS:    {{t0, 20}},
				metrics.ErrorRate:         {{t0, 0.5}},
			}
			for name, w := range want {
				if !samePoints(got[name], w, 1e-9) {
					t.Errorf("%s = %v, want %v", name, got[name], w)
				}
			}
			if f := s.Footprint("p"); f.MinuteBuckets != 0 || f.HourBuckets != 1 {
				t.Errorf("footprint %+v, want the hour bucket only", f)
			}
		})
	}
}
