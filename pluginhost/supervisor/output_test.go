package supervisor_test

import (
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

func TestOversizedLineIsTruncated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		maxLineBytes int
		limit        int
	}{
		{"default", 0, supervisor.DefaultMaxLineBytes},
		{"4096", 4096, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			limit := tc.limit
			spec, rec := helperSpec(t, "oversize", strconv.Itoa(limit))
			spec.MaxLineBytes = tc.maxLineBytes
			p := start(t, spec)
			waitExit(t, p, 20*time.Second)
			want := []line{
				{strings.Repeat("a", limit), false}, // exactly the limit: whole
				{strings.Repeat("x", limit), true},  // 1 MiB: cut
				{"after 1", false},
				{"after 2", false},
			}
			if got := rec.get(supervisor.StreamStdout); !slices.Equal(got, want) {
				t.Errorf("got %d lines:", len(got))
				for _, l := range got {
					t.Errorf("  %d bytes %.10q... truncated=%v", len(l.text), l.text, l.truncated)
				}
			}
		})
	}
}

func TestTruncationKeepsUTF8Characters(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "print", "aéé", "€€")
	spec.MaxLineBytes = 4 // "aé" and half an "é"; "€" and a third of one
	p := start(t, spec)
	waitExit(t, p, 20*time.Second)
	want := []line{{"aé", true}, {"€", true}}
	if got := rec.get(supervisor.StreamStdout); !slices.Equal(got, want) {
		t.Errorf("lines = %+v, want %+v", got, want)
	}
}

func TestFloodKeepsHostMemoryBounded(t *testing.T) {
	// Not parallel: it measures the heap of the whole test binary.
	const floodMiB = 48
	var (
		lines, bytes int
		lastTrunc    bool
		peak         uint64
		ms           runtime.MemStats
	)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	spec, _ := helperSpec(t, "flood", strconv.Itoa(floodMiB))
	spec.Output = func(_, text string, truncated bool) {
		lines++
		bytes += len(text)
		lastTrunc = truncated
		if lines%1000 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	began := time.Now()
	p := start(t, spec)
	if st := waitExit(t, p, 60*time.Second); st.Code != 0 {
		t.Fatalf("exit = %v", st)
	}
	// Done guarantees the callback has returned for the last time.
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapInuse)
	growth := int64(peak) - int64(base)
	t.Logf("%d MiB in %d lines in %v; heap in use grew by at most %.1f MiB", floodMiB+8, lines, time.Since(began), float64(growth)/(1<<20))

	if want := floodMiB<<10 + 1; lines != want || !lastTrunc {
		t.Errorf("got %d lines (last truncated: %v), want %d, the last one truncated", lines, lastTrunc, want)
	}
	if want := floodMiB<<20 - floodMiB<<10 + supervisor.DefaultMaxLineBytes; bytes != want {
		t.Errorf("got %d bytes, want %d", bytes, want)
	}
	if growth > 8<<20 {
		t.Errorf("heap in use grew by %.1f MiB while reading the flood", float64(growth)/(1<<20))
	}
}
