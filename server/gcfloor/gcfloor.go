// Package gcfloor keeps the Go garbage collector from running while the heap is below a
// floor, and lets it run as GOGC=100 would above it.
//
// The collector's default policy starts a cycle when the heap has grown by GOGC percent
// (100) of what was live after the last one. A server whose live heap is small but which
// allocates fast (a message host: a few kilobytes per message, thousands of messages a
// second) then collects several times a second, and each cycle marks the whole live heap,
// runs write barriers while it marks and, on an otherwise idle processor, mark workers
// that take CPU from the plugin processes beside it. Go has a ceiling (GOMEMLIMIT) but no
// floor: after each collection the tuner sets GOGC so that the next one starts when the
// heap reaches the floor, or at twice the live heap when that is more. The cost is memory
// up to the floor, which the operator chooses.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

const (
	// basePercent is Go's default GOGC, which the tuner never goes below.
	basePercent = 100
	// maxPercent bounds the GOGC the tuner sets (a live heap of a few hundred kilobytes
	// under a floor of gigabytes would ask for more).
	maxPercent = 100_000
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales with GOGC
// (runtime/mgcpacer.go: defaultHeapMinimum * GOGC / 100).
const heapMinimum = 4 << 20

// Percent is the GOGC that makes the collector start its next cycle when the heap
// reaches floor bytes, given the heap live after the last cycle: at least basePercent,
// at most maxPercent. The runtime's goal is the larger of live * (1 + GOGC/100) and
// heapMinimum * GOGC/100, so neither may pass the floor.
func Percent(live, floor uint64) int {
	if live == 0 || floor <= live {
		return basePercent
	}
	p := min((floor-live)*100/live, floor*100/heapMinimum)
	switch {
	case p < basePercent:
		return basePercent
	case p > maxPercent:
		return maxPercent
	}
	return int(p)
}

// tuner resets GOGC after every collection until it is stopped.
type tuner struct {
	floor uint64

	mu      sync.Mutex // cleanups may run concurrently
	stopped bool
	percent int // the GOGC last set
}

// sentinel is garbage from birth; its cleanup runs after the next collection. The
// pointer keeps it out of the tiny allocator, whose blocks outlive their objects.
type sentinel struct {
	t *tuner
	_ [16]byte
}

// Start sets GOGC after every collection so that the heap grows to floor bytes before the
// next one (see Percent), and returns a function that stops doing so and restores Go's
// default. The caller must not set GOGC meanwhile; Start does nothing for floor 0.
func Start(floor uint64) (stop func()) {
	if floor == 0 {
		return func() {}
	}
	t := &tuner{floor: floor, percent: basePercent}
	t.tune()
	return t.stop
}

// tune sets GOGC from the live heap of the last collection and arms the next call.
func (t *tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if p := Percent(liveHeap(), t.floor); p != t.percent {
		debug.SetGCPercent(p)
		t.percent = p
	}
	runtime.AddCleanup(&sentinel{t: t}, (*tuner).tune, t)
}

func (t *tuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(basePercent)
	}
}

// liveHeap is the heap that was live at the end of the last collection (0 before one).
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
