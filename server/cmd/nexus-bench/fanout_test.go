package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

func TestFanoutManifestsParse(t *testing.T) {
	for _, tc := range []struct {
		id      string
		emitter bool
	}{{fanoutEmitterID, true}, {fanoutSubscriberID(0), false}, {fanoutSubscriberID(fanoutSubscribers - 1), false}} {
		js, err := json.Marshal(fanoutManifest(tc.id, tc.emitter))
		if err != nil {
			t.Fatal(err)
		}
		m, err := manifest.Parse(js)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if m.ID != tc.id || !m.External {
			t.Errorf("%s: id %q, external %v", tc.id, m.ID, m.External)
		}
		perm, events := "events:subscribe", m.Events.Subscribes
		if tc.emitter {
			perm, events = "events:emit", m.Events.Emits
		}
		if !slices.Contains(m.Permissions, perm) || len(events) != 1 || events[0].Type != fanoutEventType {
			t.Errorf("%s: permissions %v, events %+v; want %s and %s", tc.id, m.Permissions, m.Events, perm, fanoutEventType)
		}
	}
	if a, b := fanoutSubscriberID(7), fanoutSubscriberID(77); a == b || a == fanoutEmitterID {
		t.Errorf("subscriber ids collide: %q, %q", a, b)
	}
}

func TestTokenFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens")
	ids := []string{fanoutEmitterID, fanoutSubscriberID(0), fanoutSubscriberID(1)}
	tokens := map[string]string{ids[0]: "t0", ids[1]: "t1", ids[2]: "t2"}
	if err := writeTokenFile(path, ids, tokens); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, mode %v; want 0600", err, fi.Mode())
	}
	gotIDs, gotTokens, err := readTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gotIDs, ids) || len(gotTokens) != len(tokens) {
		t.Fatalf("read %v %v, want %v %v", gotIDs, gotTokens, ids, tokens)
	}
	for id, tok := range tokens {
		if gotTokens[id] != tok {
			t.Errorf("token of %s: %q, want %q", id, gotTokens[id], tok)
		}
	}

	for name, content := range map[string]string{"no token": "bench-emitter\n", "twice": "a x\na y\n"} {
		bad := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readTokenFile(bad); err == nil {
			t.Errorf("%s: read without an error", name)
		}
	}
}

// fanoutEvent is an event as a subscriber receives it.
func fanoutEvent(seq int, blob string) plugin.Event {
	return plugin.Event{ID: "evt", Type: fanoutEventType, Data: map[string]any{"blob": blob, "seq": float64(seq)}}
}

func TestFanoutCountersCountEachIntactEventOnce(t *testing.T) {
	const blob = "payload"
	c := newFanoutCounters(3, blob)
	// Subscribers 0 and 1 get events 0..9, concurrently; subscriber 2 only 0..4.
	var wg sync.WaitGroup
	for sub, n := range []int{10, 10, 5} {
		for seq := range n {
			wg.Go(func() {
				if err := c.receive(sub, fanoutEvent(seq, blob)); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	if got := c.total.Load(); got != 25 {
		t.Errorf("total %d, want 25", got)
	}
	if got := c.min(); got != 5 {
		t.Errorf("min %d, want 5", got)
	}

	// A duplicate is not counted, and fails the check.
	_ = c.receive(2, fanoutEvent(3, blob))
	if c.total.Load() != 25 || c.min() != 5 {
		t.Errorf("a duplicate was counted: total %d, min %d", c.total.Load(), c.min())
	}
	if err := c.check(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("check after a duplicate: %v", err)
	}

	// Events that are not intact are not counted, and fail the check.
	for name, e := range map[string]plugin.Event{
		"payload":  fanoutEvent(20, "other"),
		"type":     {Type: "bench.other", Data: map[string]any{"blob": blob, "seq": float64(21)}},
		"no seq":   {Type: fanoutEventType, Data: map[string]any{"blob": blob}},
		"negative": fanoutEvent(-1, blob),
		"fraction": {Type: fanoutEventType, Data: map[string]any{"blob": blob, "seq": 2.5}},
	} {
		c := newFanoutCounters(1, blob)
		_ = c.receive(0, e)
		if c.total.Load() != 0 {
			t.Errorf("%s: counted", name)
		}
		if err := c.check(); err == nil || !strings.Contains(err.Error(), "intact") {
			t.Errorf("%s: check: %v", name, err)
		}
	}
}

func TestFanoutDrain(t *testing.T) {
	const blob = "payload"
	em := &fanoutEmitter{subs: newFanoutCounters(2, blob), blob: blob, failed: make(chan error)}
	em.accepted.Store(3)
	for seq := range 3 {
		_ = em.subs.receive(0, fanoutEvent(seq, blob))
	}
	// Subscriber 1 has nothing yet: the drain waits for it.
	done := make(chan error, 1)
	go func() { done <- em.drain(context.Background(), time.Minute) }()
	for seq := range 3 {
		_ = em.subs.receive(1, fanoutEvent(seq, blob))
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("drain did not return once every subscriber had every event")
	}

	// A subscriber that never gets the last event fails the drain when its time is up.
	em.accepted.Store(4)
	_ = em.subs.receive(0, fanoutEvent(3, blob))
	if err := em.drain(context.Background(), 20*time.Millisecond); err == nil || !strings.Contains(err.Error(), "3 of 4") {
		t.Errorf("drain with a missing delivery: %v", err)
	}
	// More events counted than accepted is a failure too.
	em.accepted.Store(2)
	if err := em.drain(context.Background(), time.Minute); err == nil {
		t.Error("drain with more deliveries than events: no error")
	}
}

func TestReportFanoutRatios(t *testing.T) {
	r := newReport(config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 3, only: onlyFanout})
	p2p := func(tput float64) Measurement {
		return Measurement{P50us: 300, Throughput: tput, RoundTrips: int(tput)}
	}
	fan := func(tput float64) Measurement {
		return Measurement{Throughput: tput, Deliveries: int(3 * tput), Events: int(3 * tput / 1000), EventsPerSecond: tput / 1000,
			Subscribers: fanoutSubscribers, InFlight: fanoutEmitsInFlight, SetupSeconds: 30, InstallSeconds: 20, TokenSeconds: 1, ConnectSeconds: 9,
			HostCPUPerDeliveryUS: 40, PluginsCPUPerDeliveryUS: 50}
	}
	r.add(keyHostMem, "host, in memory", []Measurement{p2p(10000), p2p(8000), p2p(10000)}, nil)
	// Rounds 1.2, 0.5, 0.8: median 0.8, not met.
	r.add(keyFanoutMem, "fan-out, in memory", []Measurement{fan(12000), fan(4000), fan(8000)}, nil)
	r.add(keyHostRedis, "host, over Redis", []Measurement{p2p(2000), p2p(2000), p2p(2000)}, nil)
	// Rounds 1, 1.5, 2: median 1.5, met.
	r.add(keyFanoutRedis, "fan-out, over Redis", []Measurement{fan(2000), fan(3000), fan(4000)}, nil)
	r.computeRatios()

	want := map[string]struct {
		value float64
		met   bool
	}{
		"fanout-memory deliveries/s / host-memory msg/s": {0.8, false},
		"fanout-redis deliveries/s / host-redis msg/s":   {1.5, true},
	}
	found := 0
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok {
			continue
		}
		found++
		if q.Value == nil || *q.Value != w.value || q.Met != w.met || q.Op != ">=" || q.Target != targetFanout || len(q.PerRound) != 3 {
			t.Errorf("%s = %v (met %v, %s %v, rounds %v), want %v (met %v)", q.Name, q.Value, q.Met, q.Op, q.Target, q.PerRound, w.value, w.met)
		}
	}
	if found != len(want) {
		t.Errorf("%d fan-out ratios, want %d: %+v", found, len(want), r.Ratios)
	}
	if got := r.result(keyFanoutMem); got == nil || got.Subscribers != fanoutSubscribers || got.EventsPerSecond != 8 || got.SetupSeconds != 30 || got.ConnectSeconds != 9 {
		t.Errorf("the fan-out median lacks its figures: %+v", got)
	}

	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, s := range []string{
		"**Fan-out** · one server, 1000 subscribing plugins",
		"| fan-out, in memory | 8000 | 8 | 24000 | 40.0, 50.0 | 30.0: 20.0 + 1.0 + 9.0 | deliveries/s ÷ point-to-point msg/s = **0.80** (rounds 0.50–1.20; target ≥ 1) ✗ |",
		"deliveries/s ÷ point-to-point msg/s = **1.50** (rounds 1.00–2.00; target ≥ 1) ✓",
		"| host, in memory | 300 |", // the point-to-point rows stay in the messaging table
	} {
		if !strings.Contains(md, s) {
			t.Errorf("the Markdown report lacks %q:\n%s", s, md)
		}
	}
	if strings.Contains(md, "| fan-out, in memory | 0 |") {
		t.Errorf("a fan-out row is printed in the messaging table:\n%s", md)
	}

	// Without the point-to-point rows of its round, the ratio is not available.
	r = newReport(config{rounds: 1})
	r.add(keyFanoutMem, "fan-out, in memory", []Measurement{fan(1000)}, nil)
	r.add(keyHostMem, "host, in memory", nil, errors.New("refused"))
	r.computeRatios()
	if cell := r.ratioCell(keyFanoutMem); !strings.Contains(cell, "n/a (target ≥ 1)") {
		t.Errorf("ratio cell without the point-to-point figure: %q", cell)
	}
}

func TestParseFlagsFanout(t *testing.T) {
	for _, tc := range []struct {
		args                         []string
		messaging, reads, fanout, ok bool
	}{
		{nil, true, true, true, true},
		{[]string{"-only", "fanout"}, false, false, true, true},
		{[]string{"-only", "messaging"}, true, false, false, true},
		{[]string{"-only", "reads"}, false, true, false, true},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%v: error %v, want ok %v", tc.args, err, tc.ok)
			continue
		}
		if cfg.runsMessaging() != tc.messaging || cfg.runsReads() != tc.reads || cfg.runsFanout() != tc.fanout {
			t.Errorf("%v: messaging %v, reads %v, fan-out %v; want %v, %v, %v", tc.args,
				cfg.runsMessaging(), cfg.runsReads(), cfg.runsFanout(), tc.messaging, tc.reads, tc.fanout)
		}
	}
}

func TestCPUOf(t *testing.T) {
	if cpu, ok := cpuOf(os.Getpid()); !ok || cpu < 0 {
		t.Errorf("this process's CPU time: %v, %v", cpu, ok)
	}
	if _, ok := cpuOf(0); ok {
		t.Error("cpuOf(0) ok")
	}
}
