package metrics_test

import (
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/metrics"
)

func TestSummary(t *testing.T) {
	s, clock := newStore(t0)
	s.Started("p", t0)
	// Ten minutes of 10 requests each, one failed per minute: 10 ms in the first five
	// minutes, 20 ms in the last five; 30 distinct callers.
	for m := range 10 {
		for i := range 10 {
			clock.Set(t0.Add(time.Duration(m)*time.Minute + time.Duration(i)*time.Second))
			d := 10 * time.Millisecond
			if m >= 5 {
				d = 20 * time.Millisecond
			}
			s.ObserveRequest("p", string(rune('a'+(m*10+i)%30)), d, i == 0)
		}
	}
	clock.Set(t0.Add(10*time.Minute + 30*time.Second))
	s.ObserveResources("p", 40<<20, 12.0, 15, t0.Add(9*time.Minute+45*time.Second))
	s.ObserveResources("p", 45<<20, 12.375, 16, t0.Add(10*time.Minute))

	zero := metrics.Summary{}
	tests := []struct {
		name  string
		setup func()
		want  metrics.Summary
		p95   float64 // checked within the quantile bound
	}{
		{
			name:  "running",
			setup: func() {},
			want: metrics.Summary{
				Up: true, StartedAt: t0, UptimeSeconds: 630,
				RequestsHandled: 100, SuccessfulRequests: 90, FailedRequests: 10, UniqueUsers: 30,
				LifetimeAverageResponseMS: 15,
				// Minutes 5..9 and the half minute in progress: 50 requests in 5.5 minutes.
				RequestsPerMinute: 50 / 5.5,
				AverageResponseMS: 15, ErrorRate: 0.1,
				MemoryMB: 45, CPUPercent: 2.5, FileHandles: 16,
			},
			p95: 20,
		},
		{
			name:  "restarted",
			setup: func() { clock.Add(30 * time.Second); s.Restarted("p") },
			want: metrics.Summary{
				Up: true, StartedAt: t0.Add(11 * time.Minute), UptimeSeconds: 0, Restarts: 1,
				RequestsHandled: 100, SuccessfulRequests: 90, FailedRequests: 10, UniqueUsers: 30,
				LifetimeAverageResponseMS: 15,
				// Minutes 6..10 and nothing of minute 11 yet: 40 requests in 5 minutes.
				RequestsPerMinute: 8,
				AverageResponseMS: 15, ErrorRate: 0.1,
				MemoryMB: 45, CPUPercent: 2.5, FileHandles: 16,
			},
			p95: 20,
		},
		{
			name:  "stopped and quiet",
			setup: func() { s.Stopped("p"); clock.Add(30 * time.Minute) },
			want: metrics.Summary{
				Restarts:        1,
				RequestsHandled: 100, SuccessfulRequests: 90, FailedRequests: 10, UniqueUsers: 30,
				LifetimeAverageResponseMS: 15,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { // sequential: each step builds on the last
			tt.setup()
			got := s.Summary("p")
			if !near(got.P95ResponseMS, tt.p95, metrics.QuantileRelativeError) {
				t.Errorf("P95ResponseMS = %v, want %v within the bound", got.P95ResponseMS, tt.p95)
			}
			got.P95ResponseMS = 0
			if !near(got.RequestsPerMinute, tt.want.RequestsPerMinute, 1e-9) {
				t.Errorf("RequestsPerMinute = %v, want %v", got.RequestsPerMinute, tt.want.RequestsPerMinute)
			}
			got.RequestsPerMinute = tt.want.RequestsPerMinute
			if !near(got.CPUPercent, tt.want.CPUPercent, 1e-9) {
				t.Errorf("CPUPercent = %v, want %v", got.CPUPercent, tt.want.CPUPercent)
			}
			got.CPUPercent = tt.want.CPUPercent
			if got != tt.want {
				t.Errorf("Summary =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}

	if got := s.Summary("never-seen"); got != zero {
		t.Errorf("unknown plugin: %+v, want the zero Summary", got)
	}
	s.Forget("p")
	if got := s.Summary("p"); got != zero {
		t.Errorf("after Forget: %+v, want the zero Summary", got)
	}
}
