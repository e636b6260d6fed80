package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestReportIdleFigure(t *testing.T) {
	cfg := config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 3, only: onlyIdle}
	r := newReport(cfg)
	m := func(kib, rss float64) Measurement {
		return Measurement{Sessions: idleSessions, KiBPerSession: kib, HeapKiBPerSession: kib / 4, StackKiBPerSession: kib * 3 / 4, RSSKiBPerSession: rss}
	}
	rows := idleRows()
	if len(rows) != 3 || rows[0].key != keyIdleConns || rows[1].key != keyIdleStreams || rows[2].key != keyIdleSessions {
		t.Fatalf("rows %+v", rows)
	}
	// Rounds: sessions 30, 40, 28 KiB (median 30, target met); connections 10, 10, 14
	// (ratios 3, 4, 2: median 3); bare streams 26, 35, 27 (differences 4, 5, 1: median 4).
	r.add(rows[0].key, rows[0].name, []Measurement{m(10, 12), m(10, 11), m(14, 13)}, nil)
	r.add(rows[1].key, rows[1].name, []Measurement{m(26, 20), m(35, 21), m(27, 22)}, nil)
	r.add(rows[2].key, rows[2].name, []Measurement{m(30, 33), m(40, 45), m(28, 30)}, nil)
	r.computeRatios()

	want := map[string]struct {
		value float64
		met   bool
		unit  string
	}{
		"idle plugin session, server KiB (Go heap + stacks)":      {30, true, "KiB"},
		"idle plugin session / idle HTTP/2 connection (KiB)":      {3, false, ""},
		"idle bare grpc-go stream, server KiB (Go heap + stacks)": {27, false, "KiB"},
		"idle plugin session - idle bare grpc-go stream (KiB)":    {4, false, "KiB"},
	}
	if len(r.Ratios) != len(want) {
		t.Errorf("%d ratios, want %d: %+v", len(r.Ratios), len(want), r.Ratios)
	}
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok || q.Value == nil || *q.Value != w.value || q.Met != w.met || q.Unit != w.unit || len(q.PerRound) != 3 {
			t.Errorf("%s = %v %s (met %v, rounds %v), want %v %s (met %v)", q.Name, q.Value, q.Unit, q.Met, q.PerRound, w.value, w.unit, w.met)
		}
	}
	if got := r.result(keyIdleSessions); got == nil || got.KiBPerSession != 30 || got.HeapKiBPerSession != 7.5 || got.StackKiBPerSession != 22.5 || got.RSSKiBPerSession != 33 || got.Sessions != idleSessions {
		t.Errorf("median measurement %+v", got)
	}

	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, s := range []string{
		"**Idle plugin sessions**", "1000 sessions or connections per phase", "median of 3 rounds",
		"| idle HTTP/2 connection (1000, one gRPC call each) | 10.0 | 2.5 | 7.5 | 12.0 | baseline |",
		"per session = **30.0 KiB** (rounds 28.00–40.00) (target ≤ 32 KiB) ✓",
		"÷ idle connection = 3.00 (rounds 2.00–4.00), no target",
		"− bare grpc-go stream = 4.0 KiB (rounds 1.00–5.00), no target",
		"per stream = 27.0 KiB (rounds 26.00–35.00), no target",
		"| idle grpc-go stream, bare (1000, host's server options, a connection each) | 27.0 |",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("the Markdown report lacks %q:\n%s", s, md)
		}
	}
	if strings.Contains(md, "samples (1 in flight)") || strings.Contains(md, "REST reads") {
		t.Errorf("another scenario's table is printed although only the idle one ran:\n%s", md)
	}

	// Over the target: not met.
	r = newReport(cfg)
	r.add(rows[0].key, rows[0].name, []Measurement{m(10, 10)}, nil)
	r.add(rows[1].key, rows[1].name, []Measurement{m(30, 30)}, nil)
	r.add(rows[2].key, rows[2].name, []Measurement{m(50, 50)}, nil)
	r.computeRatios()
	if cell := r.ratioCell(keyIdleSessions); !strings.Contains(cell, "per session = **50.0 KiB** (target ≤ 32 KiB) ✗") {
		t.Errorf("ratio cell over the target: %q", cell)
	}

	// A failed idle scenario fails every row, and the figure is not available.
	r = newReport(cfg)
	for _, row := range rows {
		r.add(row.key, row.name, nil, errors.New("install: refused"))
	}
	r.computeRatios()
	if got := r.failed(); len(got) != 3 {
		t.Errorf("failed() = %v", got)
	}
	if q := r.Ratios[0]; q.Value != nil || q.Met {
		t.Errorf("figure of a failed scenario: %+v", q)
	}
}

func TestIdleMeasurement(t *testing.T) {
	m := idleMeasurement(1000, 24<<20, 8<<20, 16<<20)
	if m.Sessions != 1000 || m.KiBPerSession != 32.768 || m.HeapKiBPerSession != 24.576 ||
		m.StackKiBPerSession != 8.192 || m.RSSKiBPerSession != 16.384 {
		t.Errorf("%+v", m)
	}
}

func TestParseGoMemory(t *testing.T) {
	const exposition = `# HELP go_memstats_heap_alloc_bytes Number of heap bytes allocated and currently in use.
# TYPE go_memstats_heap_alloc_bytes gauge
go_memstats_heap_alloc_bytes 1.2345678e+07
go_memstats_heap_alloc_bytes_total 9e+09
go_gc_heap_live_bytes 1.1e+07
go_memstats_last_gc_time_seconds 1.7650e+09
go_memstats_stack_inuse_bytes 655360
go_goroutines 18
`
	got, err := parseGoMemory(strings.NewReader(exposition))
	if want := (goMemory{heap: 11000000, stacks: 655360, lastGCAt: 1.765e9}); err != nil || got != want {
		t.Errorf("parseGoMemory = %+v, %v; want %+v", got, err, want)
	}
	for _, missing := range []string{"go_gc_heap_live_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_last_gc_time_seconds"} {
		var partial []string
		for _, line := range strings.Split(exposition, "\n") {
			if !strings.HasPrefix(line, missing+" ") {
				partial = append(partial, line)
			}
		}
		if _, err := parseGoMemory(strings.NewReader(strings.Join(partial, "\n"))); err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("without %s: %v", missing, err)
		}
	}
}

func TestParseFlagsIdle(t *testing.T) {
	for _, tc := range []struct {
		args                       []string
		messaging, reads, idle, ok bool
	}{
		{nil, true, true, true, true},
		{[]string{"-only", "idle"}, false, false, true, true},
		{[]string{"-only", "reads"}, false, true, false, true},
		{[]string{"-skip-idle"}, true, true, false, true},
		{[]string{"-only", "idle", "-skip-idle"}, false, false, false, false},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%v: error %v, want ok %v", tc.args, err, tc.ok)
			continue
		}
		if tc.ok && (cfg.runsMessaging() != tc.messaging || cfg.runsReads() != tc.reads || cfg.runsIdle() != tc.idle) {
			t.Errorf("%v: messaging %v, reads %v, idle %v; want %v, %v, %v", tc.args,
				cfg.runsMessaging(), cfg.runsReads(), cfg.runsIdle(), tc.messaging, tc.reads, tc.idle)
		}
	}
}

// The transport baseline's two children, in this process: the client's streams are each
// answered by the bare server (it says ready only then), and the server's metrics carry
// what settledMemory reads, once a collection has ended.
func TestIdleGRPCBaselineChildren(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	start := func(role childRole, args ...string) (*json.Decoder, chan error) {
		r, w := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- role(ctx, args, w); _ = w.Close() }()
		return json.NewDecoder(r), done
	}
	srvOut, srvDone := start(idleGRPCServerMain)
	var r idleGRPCReady
	if err := srvOut.Decode(&r); err != nil || r.Addr == "" || !strings.HasPrefix(r.Metrics, "http://127.0.0.1:") {
		t.Fatalf("server report %+v: %v", r, err)
	}
	clientOut, clientDone := start(idleStreamsMain, "-addr", r.Addr, "-n", "20")
	if err := clientOut.Decode(&ready{}); err != nil {
		t.Fatalf("the client is not ready: %v (%v)", err, <-clientDone)
	}
	since := time.Now()
	go func() { time.Sleep(50 * time.Millisecond); runtime.GC() }()
	m, err := settledMemory(ctx, r.Metrics, since)
	if err != nil || m.heap <= 0 || m.stacks <= 0 || m.lastGCAt < float64(since.UnixNano())/1e9 {
		t.Fatalf("settled memory %+v: %v", m, err)
	}
	cancel()
	if err := <-clientDone; err != nil {
		t.Errorf("client: %v", err)
	}
	if err := <-srvDone; err != nil {
		t.Errorf("server: %v", err)
	}
}
