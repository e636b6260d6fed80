package metrics

import (
	"fmt"
	"slices"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// Names of the metric series, as the API spells them (message MetricSeries).
const (
	// RequestsPerMinute is the requests handled in a bucket divided by the bucket's length in
	// minutes. The bucket in progress therefore reads low until it completes.
	RequestsPerMinute = "requests_per_minute"
	// ResponseTimeMS is the mean latency of the bucket's requests, in milliseconds.
	ResponseTimeMS = "response_time_ms"
	// P95ResponseTimeMS is the 95th percentile (nearest rank) of the bucket's request
	// latencies, in milliseconds, within QuantileRelativeError.
	P95ResponseTimeMS = "p95_response_time_ms"
	// ErrorRate is failed requests over requests in the bucket, 0 when it has none.
	ErrorRate = "error_rate"
	// MemoryUsageMB is the mean resident memory of the bucket's samples, in MiB.
	MemoryUsageMB = "memory_usage_mb"
	// CPUUsagePercent is the mean CPU usage of the bucket's samples, in percent of one core.
	CPUUsagePercent = "cpu_usage_percent"
	// FileHandles is the mean number of open files of the bucket's samples.
	FileHandles = "file_handles"
)

// Series beyond the API's: the largest sample of a gauge in the bucket, kept by downsampling.
const (
	MemoryUsageMBMax   = "memory_usage_mb_max"
	CPUUsagePercentMax = "cpu_usage_percent_max"
	FileHandlesMax     = "file_handles_max"
)

// The resolutions Series accepts.
const (
	Resolution1m  = time.Minute
	Resolution5m  = 5 * time.Minute
	Resolution15m = 15 * time.Minute
	Resolution1h  = time.Hour
)

// retentionGrace lets a range start up to this much before the retained data, to absorb
// clock skew between the caller and the host (a "last 24 hours" query computed by the
// caller). The extra stretch has no points.
const retentionGrace = time.Minute

// Point is one value of a series: Time is the start of its bucket, aligned to the
// resolution (in UTC, from the Unix epoch).
type Point struct {
	Time  time.Time
	Value float64
}

// Names returns the names of the API's series, in the order of message MetricSeries.
func Names() []string {
	return []string{
		RequestsPerMinute, ResponseTimeMS, P95ResponseTimeMS, ErrorRate,
		MemoryUsageMB, CPUUsagePercent, FileHandles,
	}
}

// ParseResolution parses the API's resolution parameter ("1m", "5m", "15m", "1h"). Any other
// value is a VALIDATION_ERROR.
func ParseResolution(s string) (time.Duration, error) {
	for _, r := range []time.Duration{Resolution1m, Resolution5m, Resolution15m, Resolution1h} {
		if s == formatResolution(r) {
			return r, nil
		}
	}
	return 0, invalid("resolution", "must be one of 1m, 5m, 15m, 1h")
}

// Series returns the named series of the plugin between start and end at the given
// resolution. Points are aligned to the resolution and run from the bucket holding start to
// the bucket holding end (or now, if earlier), partial buckets included whole. A bucket with
// nothing recorded has no point; requests_per_minute and error_rate are 0 in a bucket where
// the plugin reported resources but handled no requests, and the latency series have no point
// there. Every requested name is a key of the result; no names means all of Names().
//
// Resolutions 1m, 5m and 15m read the 1-minute buckets and reach back 24 hours; 1h also reads
// the hour buckets and reaches back 30 days. Errors are VALIDATION_ERROR (errs.Error): an
// unknown resolution or series name, end before start, or a start beyond the retention of
// the resolution (the message says to use 1h when that would answer). A plugin the store
// knows nothing about has empty series.
func (s *Store) Series(pluginID string, start, end time.Time, resolution time.Duration, names []string) (map[string][]Point, error) {
	now := s.now()
	if !slices.Contains([]time.Duration{Resolution1m, Resolution5m, Resolution15m, Resolution1h}, resolution) {
		return nil, invalid("resolution", "must be one of 1m, 5m, 15m, 1h")
	}
	if end.Before(start) {
		return nil, invalid("end_time", "must not be before start_time")
	}
	if len(names) == 0 {
		names = Names()
	}
	for _, n := range names {
		if !knownSeries(n) {
			return nil, invalid("metrics", fmt.Sprintf("unknown metric %q", n))
		}
	}
	nowMin := unixMinute(now)
	oldestMin := nowMin - minuteSlots + 1
	oldestHour := floorDiv(nowMin, 60) - hourSlots + 1
	// The earliest start each tier accepts.
	minuteLimit := minuteTime(oldestMin).Add(-retentionGrace)
	hourLimit := time.Unix(oldestHour*3600, 0).Add(-retentionGrace)
	if resolution < time.Hour && start.Before(minuteLimit) {
		if !start.Before(hourLimit) {
			return nil, invalid("start_time", fmt.Sprintf(
				"data at resolution %s is kept for 24 hours; use resolution 1h for a range starting earlier",
				formatResolution(resolution)))
		}
		return nil, invalid("start_time", "metrics are kept for 30 days")
	}
	if start.Before(hourLimit) {
		return nil, invalid("start_time", "metrics are kept for 30 days")
	}

	out := make(map[string][]Point, len(names))
	for _, n := range names {
		out[n] = []Point{}
	}
	p := s.find(pluginID)
	if p == nil {
		return out, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance(nowMin)

	step := int64(resolution / time.Minute)
	first := floorDiv(unixMinute(start), step) * step
	last := floorDiv(unixMinute(minTime(end, now)), step) * step
	var a aggregate
	for b := first; b <= last; b += step {
		a = aggregate{}
		if resolution == time.Hour {
			h := floorDiv(b, 60)
			if hb := &p.hours[slot(h, hourSlots)]; h >= oldestHour && hb.used && hb.index == h {
				a.add(hb)
			}
		}
		for m := max(b, oldestMin); m < b+step && m <= nowMin; m++ {
			if mb := &p.minutes[slot(m, minuteSlots)]; mb.used && mb.index == m {
				a.add(mb)
			}
		}
		if !a.hasData() {
			continue
		}
		t := minuteTime(b)
		for _, n := range names {
			if v, ok := s.value(n, &a, step); ok {
				out[n] = append(out[n], Point{Time: t, Value: v})
			}
		}
	}
	return out, nil
}

// value computes series name from an aggregated bucket of the given length in minutes.
func (s *Store) value(name string, a *aggregate, minutes int64) (float64, bool) {
	switch name {
	case RequestsPerMinute:
		return float64(a.requests) / float64(minutes), true
	case ErrorRate:
		return ratio(a.failed, a.requests), true
	case ResponseTimeMS:
		if a.requests == 0 {
			return 0, false
		}
		return float64(a.latencyNS) / float64(a.requests) / 1e6, true
	case P95ResponseTimeMS:
		if a.requests == 0 {
			return 0, false
		}
		return s.layout.quantile(&a.counts, a.minNS, a.maxNS, 0.95) / 1e6, true
	case MemoryUsageMB:
		return a.memory.mean() / bytesPerMiB, a.memory.n > 0
	case MemoryUsageMBMax:
		return a.memory.max / bytesPerMiB, a.memory.n > 0
	case CPUUsagePercent:
		return a.cpu.mean(), a.cpu.n > 0
	case CPUUsagePercentMax:
		return a.cpu.max, a.cpu.n > 0
	case FileHandles:
		return a.fds.mean(), a.fds.n > 0
	case FileHandlesMax:
		return a.fds.max, a.fds.n > 0
	}
	return 0, false
}

func knownSeries(name string) bool {
	switch name {
	case RequestsPerMinute, ResponseTimeMS, P95ResponseTimeMS, ErrorRate,
		MemoryUsageMB, CPUUsagePercent, FileHandles,
		MemoryUsageMBMax, CPUUsagePercentMax, FileHandlesMax:
		return true
	}
	return false
}

// formatResolution spells a resolution as the API does.
func formatResolution(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dm", d/time.Minute)
}

// invalid returns a VALIDATION_ERROR about one query parameter.
func invalid(field, description string) error {
	return errs.WithFields(errs.ValidationError, "invalid metrics query: "+field+" "+description,
		[]errs.FieldViolation{{Field: field, Description: description}})
}

func ratio(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return float64(part) / float64(whole)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
