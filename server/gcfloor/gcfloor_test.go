package gcfloor

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		live, floor uint64
		want        int
	}{
		{0, 64 << 20, 100},             // no collection yet
		{10 << 20, 0, 100},             // no floor
		{10 << 20, 64 << 20, 540},      // the heap may grow by 54 MiB: 540%
		{32 << 20, 64 << 20, 100},      // twice the live heap reaches the floor already
		{40 << 20, 64 << 20, 100},      // GOGC=100 would go past the floor: never below it
		{100 << 20, 64 << 20, 100},     // above the floor
		{1 << 20, 64 << 20, 1600},      // below 4 MiB live, the runtime's minimum goal binds
		{1 << 10, 1 << 40, maxPercent}, // bounded
	} {
		if got := Percent(tc.live, tc.floor); got != tc.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", tc.live, tc.floor, got, tc.want)
		}
	}
}

// gogc is the GOGC in effect.
func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// After collections the GOGC in effect makes the heap goal the floor; stop restores 100
// and no later collection changes it. (This test changes the process's GOGC: the package
// has no other test that collects.)
func TestStartSetsTheGoalAfterEachCollection(t *testing.T) {
	const floor = 256 << 20
	if gogc() != 100 {
		t.Skipf("GOGC is %d in this process (set in the environment?)", gogc())
	}
	stop := Start(floor)
	deadline := time.Now().Add(10 * time.Second)
	var p uint64
	for {
		runtime.GC() // the cleanup runs after this collection, on another goroutine
		p = gogc()
		if want := uint64(Percent(liveHeap(), floor)); p == want && p > 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d with %d bytes live, want %d", p, liveHeap(), Percent(liveHeap(), floor))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The goal of the next cycle is the floor, give or take the live heap's change.
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	if goal := s[0].Value.Uint64(); goal < floor*9/10 || goal > floor*11/10 {
		t.Errorf("heap goal %d with GOGC %d, want about %d", goal, p, floor)
	}

	// Every collection tunes again: with 100 MiB more live, the heap may grow by less.
	keep := make([]byte, 100<<20)
	for {
		runtime.GC()
		p = gogc()
		if live := liveHeap(); live >= 100<<20 && p == uint64(Percent(live, floor)) && p < 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d with %d bytes live, want %d", p, liveHeap(), Percent(liveHeap(), floor))
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(keep)

	stop()
	stop() // twice is fine
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if p := gogc(); p != 100 {
		t.Errorf("GOGC is %d after stop, want 100", p)
	}
	if stop := Start(0); gogc() != 100 {
		t.Errorf("Start(0) set GOGC %d", gogc())
		stop()
	}
}
