package metrics

// bucket holds what was recorded during one minute (in the minute ring) or one hour (in the
// hour ring). A bucket belongs to a plugin and is guarded by that plugin's lock.
type bucket struct {
	// index is the Unix minute (minute ring) or Unix hour (hour ring) the bucket holds; it is
	// meaningful only when used is set.
	index int64
	used  bool

	requests, failed uint32
	// latencyNS is the sum of request latencies, in nanoseconds.
	latencyNS int64
	// latency is allocated on the first request the slot ever counts and reused, cleared,
	// when the slot is recycled; a ring therefore holds at most one histogram per slot.
	latency *histogram

	// memory holds resident memory samples in bytes, cpu the CPU percentages derived from
	// successive samples, fds the open file counts.
	memory, cpu, fds gauge
}

// gauge accumulates samples of a gauge: their count, sum and maximum.
type gauge struct {
	n        uint32
	sum, max float64
}

// claim resets the bucket to hold index, keeping its histogram allocation for reuse.
func (b *bucket) claim(index int64) {
	b.clear()
	b.index, b.used = index, true
}

// clear empties the bucket, keeping its histogram allocation for reuse.
func (b *bucket) clear() {
	h := b.latency
	*b = bucket{latency: h}
	if h != nil {
		*h = histogram{}
	}
}

// addRequest counts one request of ns nanoseconds in histogram bucket idx.
func (b *bucket) addRequest(idx int, ns int64, failed bool) {
	if b.latency == nil {
		b.latency = new(histogram)
	}
	if b.requests == 0 {
		b.latency.min, b.latency.max = ns, ns
	} else {
		b.latency.min = min(b.latency.min, ns)
		b.latency.max = max(b.latency.max, ns)
	}
	b.requests = addSat(b.requests, 1)
	if failed {
		b.failed = addSat(b.failed, 1)
	}
	b.latencyNS += ns
	b.latency.counts[idx] = addSat(b.latency.counts[idx], 1)
}

// merge folds o into b: counters and histograms are added, latency extremes widened, gauge
// sums, counts and maxima combined (so the average of the result is the average of all
// samples).
func (b *bucket) merge(o *bucket) {
	if o.requests > 0 {
		if b.latency == nil {
			b.latency = new(histogram)
		}
		if b.requests == 0 {
			b.latency.min, b.latency.max = o.latency.min, o.latency.max
		} else {
			b.latency.min = min(b.latency.min, o.latency.min)
			b.latency.max = max(b.latency.max, o.latency.max)
		}
		for i, c := range o.latency.counts {
			b.latency.counts[i] = addSat(b.latency.counts[i], c)
		}
		b.requests = addSat(b.requests, o.requests)
		b.failed = addSat(b.failed, o.failed)
		b.latencyNS += o.latencyNS
	}
	b.memory.merge(o.memory)
	b.cpu.merge(o.cpu)
	b.fds.merge(o.fds)
}

func (g *gauge) add(v float64) {
	if g.n == 0 || v > g.max {
		g.max = v
	}
	g.n++
	g.sum += v
}

func (g *gauge) merge(o gauge) {
	if o.n == 0 {
		return
	}
	if g.n == 0 || o.max > g.max {
		g.max = o.max
	}
	g.n += o.n
	g.sum += o.sum
}

// aggregate sums buckets for a query: one output point, or one summary window.
type aggregate struct {
	requests, failed uint64
	latencyNS        int64
	counts           [histBuckets]uint64
	minNS, maxNS     int64
	memory, cpu, fds gauge64
}

// gauge64 is gauge with a wide count, for sums over many buckets.
type gauge64 struct {
	n        uint64
	sum, max float64
}

// add merges a stored bucket into the aggregate.
func (a *aggregate) add(b *bucket) {
	if b.requests > 0 {
		if a.requests == 0 {
			a.minNS, a.maxNS = b.latency.min, b.latency.max
		} else {
			a.minNS = min(a.minNS, b.latency.min)
			a.maxNS = max(a.maxNS, b.latency.max)
		}
		for i, c := range b.latency.counts {
			a.counts[i] += uint64(c)
		}
		a.requests += uint64(b.requests)
		a.failed += uint64(b.failed)
		a.latencyNS += b.latencyNS
	}
	a.memory.add(b.memory)
	a.cpu.add(b.cpu)
	a.fds.add(b.fds)
}

// hasData reports whether anything at all was recorded in the aggregated buckets.
func (a *aggregate) hasData() bool {
	return a.requests > 0 || a.memory.n > 0 || a.cpu.n > 0 || a.fds.n > 0
}

func (g *gauge64) add(o gauge) {
	if o.n == 0 {
		return
	}
	if g.n == 0 || o.max > g.max {
		g.max = o.max
	}
	g.n += uint64(o.n)
	g.sum += o.sum
}

func (g *gauge64) mean() float64 {
	if g.n == 0 {
		return 0
	}
	return g.sum / float64(g.n)
}
