package metrics

import "time"

// Windows of the recent figures of Summary.
const (
	// RateWindow is the window of Summary.RequestsPerMinute.
	RateWindow = 5 * time.Minute
	// LatencyWindow is the window of Summary.AverageResponseMS, P95ResponseMS and ErrorRate.
	LatencyWindow = 15 * time.Minute
)

// Summary holds the figures of the plugin's list, detail and health views.
type Summary struct {
	// Up reports whether the plugin's process is running (between Started and Stopped).
	Up bool
	// StartedAt is when the current process started; zero when the plugin is down.
	StartedAt time.Time
	// UptimeSeconds is the whole seconds since StartedAt; 0 when the plugin is down.
	UptimeSeconds int64
	// Restarts counts Restarted calls.
	Restarts uint64

	// RequestsHandled, SuccessfulRequests and FailedRequests count every request recorded
	// since the store first heard of the plugin (or since Forget).
	RequestsHandled    uint64
	SuccessfulRequests uint64
	FailedRequests     uint64
	// UniqueUsers is the number of distinct callers over the same period: exact up to 64,
	// estimated beyond (standard error about 3.3 %).
	UniqueUsers uint64
	// LifetimeAverageResponseMS is the mean latency of every request recorded, in ms.
	LifetimeAverageResponseMS float64

	// RequestsPerMinute is the request rate over RateWindow (the five whole minutes before
	// the current one and the elapsed part of the current one).
	RequestsPerMinute float64
	// AverageResponseMS and P95ResponseMS are the mean and 95th percentile latency over
	// LatencyWindow, in ms; ErrorRate is failed over all requests in that window (0 without
	// requests).
	AverageResponseMS float64
	P95ResponseMS     float64
	ErrorRate         float64

	// MemoryMB (MiB), CPUPercent (of one core) and FileHandles are the latest resource
	// sample of the current process; 0 when the plugin is down or has not reported yet.
	MemoryMB    float64
	CPUPercent  float64
	FileHandles int
}

// Summary returns the plugin's figures; the zero Summary for a plugin the store knows nothing
// about.
func (s *Store) Summary(pluginID string) Summary {
	now := s.now()
	p := s.find(pluginID)
	if p == nil {
		return Summary{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	nowMin := unixMinute(now)
	p.advance(nowMin)

	sum := Summary{
		Up:                 p.up,
		Restarts:           p.restarts,
		RequestsHandled:    p.requests,
		SuccessfulRequests: p.requests - p.failed,
		FailedRequests:     p.failed,
		UniqueUsers:        p.users.count(),
	}
	if p.requests > 0 {
		sum.LifetimeAverageResponseMS = p.latencyNS / float64(p.requests) / 1e6
	}
	if p.up {
		sum.StartedAt = p.startedAt
		sum.UptimeSeconds = max(int64(now.Sub(p.startedAt)/time.Second), 0)
	}
	if p.hasSample {
		sum.MemoryMB = float64(p.rss) / bytesPerMiB
		sum.CPUPercent = p.cpuPercent
		sum.FileHandles = p.openFiles
	}

	// Elapsed part of the current minute, in minutes.
	partial := now.Sub(minuteTime(nowMin)).Minutes()
	rate := p.recent(nowMin, int64(RateWindow/time.Minute))
	sum.RequestsPerMinute = float64(rate.requests) / (RateWindow.Minutes() + partial)
	lat := p.recent(nowMin, int64(LatencyWindow/time.Minute))
	if lat.requests > 0 {
		sum.AverageResponseMS = float64(lat.latencyNS) / float64(lat.requests) / 1e6
		sum.P95ResponseMS = s.layout.quantile(&lat.counts, lat.minNS, lat.maxNS, 0.95) / 1e6
		sum.ErrorRate = ratio(lat.failed, lat.requests)
	}
	return sum
}

// recent aggregates the n whole minutes before nowMin and nowMin itself.
func (p *plugin) recent(nowMin, n int64) aggregate {
	var a aggregate
	for m := nowMin - n; m <= nowMin; m++ {
		if b := &p.minutes[slot(m, minuteSlots)]; b.used && b.index == m {
			a.add(b)
		}
	}
	return a
}
