// Package metrics keeps the per-plugin metrics of the host in memory: requests handled and
// their latencies, distinct callers, restarts, uptime and resource samples (memory, CPU, open
// files). It answers the API's metric series (Series), the figures of the list, detail and
// health views (Summary), and exposes a Prometheus collector (Collector).
//
// Retention: each plugin has a ring of 1-minute buckets covering the last 24 hours (plus the
// minute in progress) and a ring of 1-hour buckets covering 30 days (plus the hour in
// progress). When a minute bucket leaves the 24-hour window it is folded into its hour bucket:
// counters and latency histograms are added, gauge sums, sample counts and maxima combined.
// Both rings have a fixed number of slots and each slot holds at most one fixed-size latency
// histogram, so the memory of a plugin is bounded (see Footprint): about 0.25 MiB for the rings,
// plus 488 bytes per slot that has ever counted a request, at most about 1.3 MiB in all.
//
// A Store is safe for concurrent use.
package metrics

import (
	"reflect"
	"sync"
	"time"
)

// Retention of the two tiers.
const (
	// MinuteRetention is how long 1-minute buckets are kept (the 1m, 5m and 15m resolutions).
	MinuteRetention = 24 * time.Hour
	// HourRetention is how long 1-hour buckets are kept (the 1h resolution).
	HourRetention = 30 * 24 * time.Hour

	// minuteSlots covers MinuteRetention plus the minute in progress.
	minuteSlots = int64(MinuteRetention/time.Minute) + 1
	// hourSlots covers HourRetention plus the hour in progress.
	hourSlots = int64(HourRetention/time.Hour) + 1
)

// bytesPerMiB converts resident memory to the API's memory_usage_mb (mebibytes).
const bytesPerMiB = 1 << 20

// Store holds the metrics of every plugin it has been told about, in memory.
type Store struct {
	// now is the clock. Set once by New; read-only afterwards.
	now func() time.Time
	// layout holds the histogram bounds. Set once by New; read-only afterwards.
	layout *layout

	// mu guards the plugins map itself. Each plugin's data is guarded by its own lock, which
	// is never taken while mu is held.
	mu      sync.RWMutex
	plugins map[string]*plugin
}

// New returns an empty Store.
func New(opts ...Option) *Store {
	cfg := config{now: time.Now}
	for _, o := range opts {
		o.apply(&cfg)
	}
	return &Store{now: cfg.now, layout: newLayout(), plugins: map[string]*plugin{}}
}

// ObserveRequest records a request or message the plugin handled, taking d, and whether it
// failed. caller identifies the sender, for unique_users; an empty caller is not counted as a
// user. The request is attributed to the current minute. A negative d counts as zero.
func (s *Store) ObserveRequest(pluginID, caller string, d time.Duration, failed bool) {
	now := s.now()
	ns := max(int64(d), 0)
	idx := s.layout.index(ns)
	promIdx := s.layout.promIndex(ns)

	p := s.lock(pluginID, now)
	defer p.mu.Unlock()
	nowMin := unixMinute(now)
	p.advance(nowMin)
	if b := p.target(nowMin, nowMin); b != nil {
		b.addRequest(idx, ns, failed)
	}
	p.requests++
	if failed {
		p.failed++
	}
	p.latencyNS += float64(ns)
	p.durations[promIdx]++
	if caller != "" {
		p.users.add(caller)
	}
}

// ObserveRedelivery records a message, event or broadcast handed to the plugin again after
// an attempt that was not settled (timed out, or its instance went away).
func (s *Store) ObserveRedelivery(pluginID string) {
	p := s.lock(pluginID, s.now())
	p.redeliveries++
	p.mu.Unlock()
}

// ObserveDeadLetter records a delivery of the plugin that was dead-lettered by this server:
// rejected by the plugin, or undecodable.
func (s *Store) ObserveDeadLetter(pluginID string) {
	p := s.lock(pluginID, s.now())
	p.deadLettered++
	p.mu.Unlock()
}

// ObserveResources records a resource sample of the plugin's process taken at at: resident
// memory in bytes, the cumulative CPU time the process has used in seconds, and its open file
// descriptors. The host samples about every 15 s. cpu_usage_percent is derived from two
// successive samples of the same process (percent of one core, so it may exceed 100 on
// several cores); the first sample after Started, Restarted or a CPU counter that went
// backwards only sets the baseline. Samples older than the retention are dropped; a sample
// stamped in the future is attributed to now.
func (s *Store) ObserveResources(pluginID string, rssBytes int64, cpuSeconds float64, openFiles int, at time.Time) {
	now := s.now()
	if at.After(now) {
		at = now
	}
	rssBytes, openFiles = max(rssBytes, 0), max(openFiles, 0)
	cpuSeconds = max(cpuSeconds, 0)

	p := s.lock(pluginID, now)
	defer p.mu.Unlock()
	nowMin := unixMinute(now)
	p.advance(nowMin)

	pct, hasPct := 0.0, false
	switch {
	case p.hasBaseline && !at.After(p.baseAt):
		// Not newer than the baseline (duplicate or out of order): no rate can be derived.
	case !p.hasBaseline || cpuSeconds < p.baseCPU:
		// A new process: all its CPU time is new.
		p.cpuTotal += cpuSeconds
		p.baseCPU, p.baseAt, p.hasBaseline = cpuSeconds, at, true
	default:
		p.cpuTotal += cpuSeconds - p.baseCPU
		pct = (cpuSeconds - p.baseCPU) / at.Sub(p.baseAt).Seconds() * 100
		hasPct = true
		p.baseCPU, p.baseAt = cpuSeconds, at
	}

	if b := p.target(unixMinute(at), nowMin); b != nil {
		b.memory.add(float64(rssBytes))
		b.fds.add(float64(openFiles))
		if hasPct {
			b.cpu.add(pct)
		}
	}
	if !p.hasSample || !at.Before(p.sampleAt) {
		p.rss, p.openFiles, p.sampleAt, p.hasSample = rssBytes, openFiles, at, true
		if hasPct {
			p.cpuPercent = pct
		}
	}
}

// Started records that the plugin's process started at at: the plugin is up and its uptime
// counts from at. The next resource sample sets a new CPU baseline.
func (s *Store) Started(pluginID string, at time.Time) {
	now := s.now()
	p := s.lock(pluginID, now)
	defer p.mu.Unlock()
	p.up, p.startedAt = true, at
	p.newProcess()
}

// Stopped records that the plugin's process stopped: the plugin is down, its uptime is zero
// and it has no current resource figures until it starts again.
func (s *Store) Stopped(pluginID string) {
	now := s.now()
	p := s.lock(pluginID, now)
	defer p.mu.Unlock()
	p.up, p.startedAt = false, time.Time{}
	p.newProcess()
}

// Restarted counts a restart of the plugin. The next resource sample sets a new CPU baseline,
// and when the plugin is up its uptime counts from now. Call Started as well when the new
// process reports its own start time.
func (s *Store) Restarted(pluginID string) {
	now := s.now()
	p := s.lock(pluginID, now)
	defer p.mu.Unlock()
	p.restarts++
	if p.up {
		p.startedAt = now
	}
	p.hasBaseline = false
}

// Forget drops every metric of the plugin, as on uninstall; it disappears from Collector's
// output. Recording for the plugin again starts afresh. A recording that races with Forget may
// be lost.
func (s *Store) Forget(pluginID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.plugins, pluginID)
}

// Footprint describes what the store holds for one plugin, to check that retention bounds it.
type Footprint struct {
	// MinuteBuckets is the number of 1-minute buckets holding data (at most 24×60+1).
	MinuteBuckets int
	// HourBuckets is the number of 1-hour buckets holding data (at most 30×24+1).
	HourBuckets int
	// Histograms is the number of latency histograms allocated (at most one per bucket slot).
	Histograms int
	// Bytes approximates the memory held for the plugin.
	Bytes int
}

// Footprint returns what the store holds for the plugin; the zero Footprint when it holds
// nothing.
func (s *Store) Footprint(pluginID string) Footprint {
	now := s.now()
	p := s.find(pluginID)
	if p == nil {
		return Footprint{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	nowMin := unixMinute(now)
	p.advance(nowMin)
	var f Footprint
	for i := range p.minutes {
		b := &p.minutes[i]
		if b.used {
			f.MinuteBuckets++
		}
		if b.latency != nil {
			f.Histograms++
		}
	}
	oldestHour := floorDiv(nowMin, 60) - hourSlots + 1
	for i := range p.hours {
		b := &p.hours[i]
		if b.used && b.index >= oldestHour {
			f.HourBuckets++
		}
		if b.latency != nil {
			f.Histograms++
		}
	}
	f.Bytes = int(reflect.TypeFor[plugin]().Size()) + f.Histograms*int(reflect.TypeFor[histogram]().Size())
	return f
}

// plugin is everything the store keeps for one plugin. mu guards every field.
type plugin struct {
	mu sync.Mutex

	minutes [minuteSlots]bucket // slot = Unix minute mod minuteSlots
	hours   [hourSlots]bucket   // slot = Unix hour mod hourSlots
	// foldedBefore is the first Unix minute still in the minute ring: every earlier minute
	// has been folded into the hour ring.
	foldedBefore int64

	// Lifetime totals, for the usage block and Prometheus.
	requests, failed uint64
	latencyNS        float64
	durations        [numPromBounds + 1]uint64 // Prometheus buckets, not cumulative; last is +Inf
	users            distinct

	up        bool
	startedAt time.Time
	restarts  uint64

	// Deliveries handed to the plugin again (attempt 2 or more), and those this server
	// dead-lettered or saw rejected: lifetime totals for Prometheus.
	redeliveries, deadLettered uint64

	// Latest resource sample of the current process.
	hasSample  bool
	sampleAt   time.Time
	rss        int64
	openFiles  int
	cpuPercent float64
	// CPU baseline: the previous cumulative CPU sample of the current process.
	hasBaseline bool
	baseCPU     float64
	baseAt      time.Time
	// cpuTotal is the CPU time used by every process of the plugin, in seconds.
	cpuTotal float64
}

// lock returns the plugin's entry, created if needed, with its lock held.
func (s *Store) lock(pluginID string, now time.Time) *plugin {
	p := s.find(pluginID)
	if p == nil {
		s.mu.Lock()
		p = s.plugins[pluginID]
		if p == nil {
			p = &plugin{foldedBefore: unixMinute(now) - minuteSlots + 1}
			s.plugins[pluginID] = p
		}
		s.mu.Unlock()
	}
	p.mu.Lock()
	return p
}

// find returns the plugin's entry, or nil.
func (s *Store) find(pluginID string) *plugin {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.plugins[pluginID]
}

// newProcess forgets the figures of the previous process.
func (p *plugin) newProcess() {
	p.hasBaseline = false
	p.hasSample, p.sampleAt = false, time.Time{}
	p.rss, p.openFiles, p.cpuPercent = 0, 0, 0
}

// advance folds the minute buckets that left the 24-hour window into their hour buckets.
func (p *plugin) advance(nowMin int64) {
	oldest := nowMin - minuteSlots + 1
	if oldest <= p.foldedBefore {
		return
	}
	if oldest-p.foldedBefore >= minuteSlots {
		// After a long quiet spell every slot may hold a minute to fold.
		for i := range p.minutes {
			if b := &p.minutes[i]; b.used && b.index < oldest {
				p.fold(b, nowMin)
			}
		}
	} else {
		for m := p.foldedBefore; m < oldest; m++ {
			if b := &p.minutes[slot(m, minuteSlots)]; b.used && b.index == m {
				p.fold(b, nowMin)
			}
		}
	}
	p.foldedBefore = oldest
}

// target returns the bucket to record minute m in: its minute bucket while it is in the
// minute ring, else its hour bucket, or nil when m is beyond retention.
func (p *plugin) target(m, nowMin int64) *bucket {
	if m < p.foldedBefore {
		return p.hourTarget(floorDiv(m, 60), nowMin)
	}
	b := &p.minutes[slot(m, minuteSlots)]
	if b.used && b.index != m {
		if b.index > m {
			return nil // only after the clock went backwards by more than a day
		}
		p.fold(b, nowMin)
	}
	if !b.used {
		b.claim(m)
	}
	return b
}

// hourTarget returns the bucket of Unix hour h, claiming its slot, or nil when h is beyond
// retention.
func (p *plugin) hourTarget(h, nowMin int64) *bucket {
	if h < floorDiv(nowMin, 60)-hourSlots+1 {
		return nil
	}
	b := &p.hours[slot(h, hourSlots)]
	if b.used && b.index != h {
		if b.index > h {
			return nil
		}
		b.clear() // an hour older than the retention
	}
	if !b.used {
		b.claim(h)
	}
	return b
}

// fold moves minute bucket b into its hour bucket.
func (p *plugin) fold(b *bucket, nowMin int64) {
	if h := p.hourTarget(floorDiv(b.index, 60), nowMin); h != nil {
		h.merge(b)
	}
	b.clear()
}

// unixMinute returns the number of whole minutes from the Unix epoch to t.
func unixMinute(t time.Time) int64 { return floorDiv(t.Unix(), 60) }

// minuteTime returns the start of Unix minute m, in UTC.
func minuteTime(m int64) time.Time { return time.Unix(m*60, 0).UTC() }

// floorDiv divides rounding towards minus infinity.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// slot returns the ring slot of index i in a ring of n slots.
func slot(i, n int64) int64 {
	r := i % n
	if r < 0 {
		r += n
	}
	return r
}
