package metrics_test

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/metrics"
)

// t0 is an hour boundary, so that every resolution's bucket starts there.
var t0 = time.Date(2024, 1, 1, 11, 0, 0, 0, time.UTC)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newStore(t time.Time) (*metrics.Store, *fakeClock) {
	c := newClock(t)
	return metrics.New(metrics.WithClock(c.Now)), c
}

func near(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

// TestRetentionBoundsMemory records a request and a resource sample every minute for 35 days
// and checks that the buckets held stop growing once the rings are full: the minute ring
// after one day, the hour ring after thirty.
func TestRetentionBoundsMemory(t *testing.T) {
	s, clock := newStore(t0)
	const days = 35
	var footprints []metrics.Footprint
	for m := range days * 24 * 60 {
		at := t0.Add(time.Duration(m) * time.Minute)
		clock.Set(at)
		s.ObserveRequest("busy", "u", time.Duration(m%500)*time.Millisecond, m%97 == 0)
		s.ObserveResources("busy", 64<<20, float64(m), 12, at)
		if (m+1)%(24*60) == 0 {
			footprints = append(footprints, s.Footprint("busy"))
		}
	}
	for day, f := range footprints {
		if day >= 1 && f.MinuteBuckets != 24*60+1 {
			t.Errorf("day %d: %d minute buckets, want %d", day+1, f.MinuteBuckets, 24*60+1)
		}
		if f.HourBuckets > 30*24+1 || f.Histograms > f.MinuteBuckets+30*24+1 {
			t.Errorf("day %d: footprint %+v beyond the ring sizes", day+1, f)
		}
		if f.Bytes > 1400<<10 {
			t.Errorf("day %d: %d bytes, want at most 1400 KiB", day+1, f.Bytes)
		}
		if day >= 1 && f.Bytes < footprints[day-1].Bytes {
			t.Errorf("day %d: footprint shrank from %d to %d bytes", day+1, footprints[day-1].Bytes, f.Bytes)
		}
	}
	// The latest 24 hours are in minute buckets, so at the end of day 10 the hour buckets
	// hold 9 days. From day 32 on the hour ring spans its 721 hours, the latest 24 of which
	// are still minute buckets, and nothing grows any more.
	if got := footprints[9].HourBuckets; got != 9*24 {
		t.Errorf("day 10: %d hour buckets, want %d", got, 9*24)
	}
	full := footprints[31]
	if want := 30*24 + 1 - 24; full.HourBuckets != want {
		t.Errorf("day 32: %d hour buckets, want %d", full.HourBuckets, want)
	}
	if want := (24*60 + 1) + (30*24 + 1); full.Histograms != want {
		t.Errorf("day 32: %d histograms, want one per slot, %d", full.Histograms, want)
	}
	for day := 32; day < days; day++ {
		if footprints[day] != full {
			t.Errorf("day %d: footprint %+v, want it fixed at %+v", day+1, footprints[day], full)
		}
	}
	t.Logf("footprint with full rings: %+v", full)
}

func TestCPUPercent(t *testing.T) {
	type step struct {
		at      time.Duration // after t0
		cpu     float64       // cumulative seconds
		restart bool          // call Restarted before the sample
	}
	tests := []struct {
		name      string
		steps     []step
		latest    float64 // Summary.CPUPercent
		minuteAvg float64 // cpu_usage_percent of the minute; -1 for no point
		total     float64 // nexus_plugin_cpu_seconds_total
	}{
		{
			name:   "successive samples",
			steps:  []step{{0, 1.0, false}, {15 * time.Second, 1.3, false}, {30 * time.Second, 1.9, false}},
			latest: 4, minuteAvg: 3, total: 1.9,
		},
		{
			name: "restart sets a new baseline",
			steps: []step{
				{0, 5.0, false}, {15 * time.Second, 5.6, false},
				{30 * time.Second, 0.2, true}, {45 * time.Second, 0.5, false},
			},
			latest: 2, minuteAvg: 3, total: 6.1,
		},
		{
			name:   "counter going backwards is a new process",
			steps:  []step{{0, 5.0, false}, {15 * time.Second, 0.3, false}, {30 * time.Second, 0.6, false}},
			latest: 2, minuteAvg: 2, total: 5.6,
		},
		{
			name:   "out of order sample is ignored",
			steps:  []step{{0, 1.0, false}, {30 * time.Second, 1.6, false}, {15 * time.Second, 1.3, false}},
			latest: 2, minuteAvg: 2, total: 1.6,
		},
		{
			name:   "a single sample gives no rate",
			steps:  []step{{0, 3.0, false}},
			latest: 0, minuteAvg: -1, total: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, clock := newStore(t0)
			s.Started("p", t0)
			for _, st := range tt.steps {
				clock.Set(t0.Add(50 * time.Second))
				if st.restart {
					s.Restarted("p")
				}
				s.ObserveResources("p", 1<<20, st.cpu, 3, t0.Add(st.at))
			}
			clock.Set(t0.Add(5 * time.Minute))
			if got := s.Summary("p").CPUPercent; !near(got, tt.latest, 1e-9) {
				t.Errorf("latest CPU %% = %v, want %v", got, tt.latest)
			}
			series, err := s.Series("p", t0, t0, time.Minute, []string{metrics.CPUUsagePercent})
			if err != nil {
				t.Fatal(err)
			}
			pts := series[metrics.CPUUsagePercent]
			switch {
			case tt.minuteAvg < 0 && len(pts) != 0:
				t.Errorf("cpu series = %v, want no point", pts)
			case tt.minuteAvg >= 0 && (len(pts) != 1 || !near(pts[0].Value, tt.minuteAvg, 1e-9)):
				t.Errorf("cpu series = %v, want one point of %v", pts, tt.minuteAvg)
			}
			if got := gatherValue(t, s, "nexus_plugin_cpu_seconds_total", "p"); !near(got, tt.total, 1e-9) {
				t.Errorf("cpu seconds total = %v, want %v", got, tt.total)
			}
		})
	}
}

func TestUniqueUsers(t *testing.T) {
	tests := []struct {
		name    string
		callers func(add func(string))
		want    float64
		tol     float64 // relative
	}{
		{"none", func(func(string)) {}, 0, 0},
		{"anonymous callers are not users", func(add func(string)) { add(""); add("") }, 0, 0},
		{"repeats count once", func(add func(string)) {
			for i := range 30 {
				add(fmt.Sprintf("user-%d", i%3))
			}
		}, 3, 0},
		{"exact up to 64", func(add func(string)) {
			for i := range 640 {
				add(fmt.Sprintf("user-%d", i%64))
			}
		}, 64, 0},
		// Beyond 64 the HyperLogLog estimate has a standard error of about 3.3 %; the hash is
		// deterministic, so these bounds cannot flake.
		{"450 users", func(add func(string)) {
			for i := range 2000 {
				add(fmt.Sprintf("user-%d", i%450))
			}
		}, 450, 0.10},
		{"20000 users", func(add func(string)) {
			for i := range 20000 {
				add(fmt.Sprintf("tenant/%d@example.com", i))
			}
		}, 20000, 0.10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t0)
			s.Started("p", t0)
			tt.callers(func(c string) { s.ObserveRequest("p", c, time.Millisecond, false) })
			got := float64(s.Summary("p").UniqueUsers)
			if math.Abs(got-tt.want) > tt.tol*tt.want {
				t.Errorf("unique users = %v, want %v ± %.0f%%", got, tt.want, tt.tol*100)
			}
		})
	}
}

// TestConcurrentUse runs writers, readers, lifecycle calls and scrapes in parallel; run it
// with -race.
func TestConcurrentUse(t *testing.T) {
	s, clock := newStore(t0)
	const writers, perWriter = 4, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				s.ObserveRequest("steady", fmt.Sprintf("u%d", i%100), time.Duration(i)*time.Microsecond, i%10 == 0)
				s.ObserveRequest(fmt.Sprintf("churn-%d", i%3), "u", time.Millisecond, false)
				if i%50 == 0 {
					s.ObserveResources("steady", int64(w)<<20, float64(i), i%30, clock.Now())
				}
			}
		})
	}
	done := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				now := clock.Now()
				if _, err := s.Series("steady", now.Add(-time.Hour), now, time.Minute, nil); err != nil {
					t.Error(err)
					return
				}
				_ = s.Summary("churn-1")
				_ = s.Footprint("steady")
				gather(t, s)
			}
		})
	}
	readers.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			clock.Add(7 * time.Second)
			id := fmt.Sprintf("churn-%d", i%3)
			s.Started(id, clock.Now())
			s.Restarted(id)
			s.Stopped(id)
			s.Forget(id)
		}
	})
	wg.Wait()
	close(done)
	readers.Wait()

	sum := s.Summary("steady")
	if sum.RequestsHandled != writers*perWriter || sum.FailedRequests != writers*perWriter/10 {
		t.Errorf("steady: %d requests, %d failed; want %d, %d",
			sum.RequestsHandled, sum.FailedRequests, writers*perWriter, writers*perWriter/10)
	}
	if sum.UniqueUsers < 90 || sum.UniqueUsers > 110 {
		t.Errorf("steady: %d unique users, want about 100", sum.UniqueUsers)
	}
}
