package metrics

import (
	"math"
	"sort"
)

// Latency histogram layout.
//
// Durations are counted in fixed, log-spaced buckets: 20 per decade from 0.1 ms up to
// 0.1 ms × 10^(116/20) ≈ 63.1 s, plus one bucket below 0.1 ms and one at or above 63.1 s.
// Histograms of different minutes and hours therefore merge exactly, by adding counts, and a
// quantile of any merged range is read from the merged counts.
//
// Error bound: a quantile is reported as the geometric midpoint of the bucket holding the
// nearest-rank sample, clamped to the smallest and largest latency seen in the range. For a
// true quantile between 0.1 ms and 63.1 s the relative error is at most 10^(1/40) − 1 ≈ 5.93 %
// (QuantileRelativeError). Below 0.1 ms the absolute error is at most 0.05 ms; at or above
// 63.1 s the report is the largest latency seen in the range.
const (
	// histFloorNS is the lower bound of the first log-spaced bucket (0.1 ms).
	histFloorNS = 100_000
	// bucketsPerDecade sets the resolution of the histogram.
	bucketsPerDecade = 20
	// logBuckets log-spaced buckets reach 0.1 ms × 10^(116/20) ≈ 63.1 s, just above 60 s.
	logBuckets = 116
	// histBuckets adds the underflow bucket (index 0) and the overflow bucket (last index).
	histBuckets = logBuckets + 2
)

// QuantileRelativeError is the largest relative error of a reported latency quantile whose
// true value lies between 0.1 ms and 63.1 s: 10^(1/40) − 1, about 5.93 %.
const QuantileRelativeError = 0.0593

// numPromBounds is the number of finite buckets of nexus_plugin_request_duration_seconds.
const numPromBounds = 12

// layout holds the fixed bucket bounds. It is computed once by New and read-only afterwards,
// so it is shared without synchronisation.
type layout struct {
	// bounds[k] = 0.1 ms × 10^(k/20) in nanoseconds, k = 0..logBuckets. Bucket i (1..logBuckets)
	// covers [bounds[i-1], bounds[i]).
	bounds [logBuckets + 1]int64
	// mid[i] is the value reported for a quantile falling in bucket i, in nanoseconds.
	mid [histBuckets]float64
	// promSeconds and promNS are the upper bounds of the Prometheus histogram buckets.
	promSeconds [numPromBounds]float64
	promNS      [numPromBounds]int64
}

func newLayout() *layout {
	l := &layout{
		promSeconds: [numPromBounds]float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}
	for k := range l.bounds {
		l.bounds[k] = int64(math.Round(histFloorNS * math.Pow(10, float64(k)/bucketsPerDecade)))
	}
	l.mid[0] = histFloorNS / 2
	for i := 1; i <= logBuckets; i++ {
		l.mid[i] = math.Sqrt(float64(l.bounds[i-1]) * float64(l.bounds[i]))
	}
	l.mid[histBuckets-1] = float64(l.bounds[logBuckets])
	for i, s := range l.promSeconds {
		l.promNS[i] = int64(math.Round(s * 1e9))
	}
	return l
}

// index returns the histogram bucket of a duration in nanoseconds.
func (l *layout) index(ns int64) int {
	// The number of bounds at or below ns is the bucket index: 0 below 0.1 ms,
	// logBuckets+1 (overflow) at or above the last bound.
	return sort.Search(len(l.bounds), func(i int) bool { return l.bounds[i] > ns })
}

// promIndex returns the Prometheus bucket of a duration: the first upper bound at or above
// it, or numPromBounds for +Inf.
func (l *layout) promIndex(ns int64) int {
	for i, b := range l.promNS {
		if ns <= b {
			return i
		}
	}
	return numPromBounds
}

// histogram is the stored latency histogram of one minute or hour bucket. Counts saturate at
// the largest uint32 rather than wrap.
type histogram struct {
	counts [histBuckets]uint32
	// min and max are the extreme latencies seen, in nanoseconds; meaningful only when the
	// owning bucket counted a request.
	min, max int64
}

// quantile returns the nearest-rank q-quantile, in nanoseconds, of merged counts whose
// extremes are lo and hi. It returns 0 when counts are empty.
func (l *layout) quantile(counts *[histBuckets]uint64, lo, hi int64, q float64) float64 {
	var n uint64
	for _, c := range counts {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(1, min(rank, n))
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			return math.Min(math.Max(l.mid[i], float64(lo)), float64(hi))
		}
	}
	return float64(hi)
}

// addSat adds two counts, saturating at the largest uint32.
func addSat(a, b uint32) uint32 {
	s := a + b
	if s < a {
		return math.MaxUint32
	}
	return s
}
