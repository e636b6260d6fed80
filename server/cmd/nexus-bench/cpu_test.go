package main

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
)

// scenarioCPU adds the measuring process's CPU time, the other processes' and
// redis-server's; a process that cannot be read makes the figure unavailable.
func TestScenarioCPU(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	ctx := context.Background()

	c := newScenarioCPU(loadFlags{cpuSelf: "client", cpuPIDs: "sleeper=" + strconv.Itoa(child.Process.Pid), cpuRedis: rs.URL()})
	defer c.close()
	if want := []cpuProc{{"client", os.Getpid()}, {"sleeper", child.Process.Pid}}; !slices.Equal(c.procs, want) || c.rdb == nil {
		t.Fatalf("processes %v, redis %v; want %v and redis-server", c.procs, c.rdb, want)
	}
	// Make redis-server spend a tenth of a second or so, so that its share is plain.
	if err := c.rdb.Eval(ctx, "local i = 0 while i < 20000000 do i = i + 1 end return i", nil).Err(); err != nil {
		t.Fatal(err)
	}
	redis0, err := redisServerCPU(ctx, c.rdb) // read first: the totals read next hold at least this
	if err != nil {
		t.Fatal(err)
	}
	noRedis := newScenarioCPU(loadFlags{cpuPIDs: strconv.Itoa(child.Process.Pid)})
	without, ok := readTotal(ctx, noRedis)
	if !ok {
		t.Fatal("the processes' CPU time could not be read")
	}
	before, ok := readTotal(ctx, c)
	if !ok {
		t.Fatal("the scenario's CPU time could not be read")
	}
	each0, ok := c.readEach(ctx)
	if !ok {
		t.Fatal("the processes' CPU time could not be read one by one")
	}
	own0, _ := cpuOf(os.Getpid())
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; { // burn some CPU here
	}
	after, ok := readTotal(ctx, c)
	if !ok {
		t.Fatal("the scenario's CPU time could not be read again")
	}
	own1, _ := cpuOf(os.Getpid())
	each1, ok := c.readEach(ctx)
	if !ok || len(each1) != 3 || each1["client"]-each0["client"] < own1-own0-10*time.Millisecond ||
		each1[redisProcName] < redis0 {
		t.Errorf("by process: %v then %v (this process grew by %v, redis-server had %v)", each0, each1, own1-own0, redis0)
	}
	total, split := perRoundTrip(each0, each1, 10)
	var sum float64
	for _, v := range split {
		sum += v
	}
	if len(split) != 3 || math.Abs(sum-total) > 1e-6 || split["client"] < float64((own1-own0-10*time.Millisecond)/time.Microsecond)/10 {
		t.Errorf("per round trip: %v in all, %v by process", total, split)
	}
	if after-before < own1-own0-10*time.Millisecond || own1-own0 < 10*time.Millisecond {
		t.Errorf("the scenario's CPU grew by %v while this process's grew by %v", after-before, own1-own0)
	}
	// before was read after without, so the processes' share in it is at least without's.
	if redis0 < 50*time.Millisecond || before-without < redis0 {
		t.Errorf("redis-server's CPU %v is not in the total: %v with it, %v without", redis0, before, without)
	}

	if c := newScenarioCPU(loadFlags{cpuPIDs: strconv.Itoa(child.Process.Pid)}); len(c.procs) != 2 ||
		c.procs[0].name != "measuring process" || c.procs[1].name != "pid "+strconv.Itoa(child.Process.Pid) {
		t.Errorf("unnamed processes: %v", c.procs)
	}
	for _, l := range []loadFlags{{cpuPIDs: "999999999"}, {cpuPIDs: "12x"}, {cpuPIDs: "a=12x"}, {cpuPIDs: "=12"}, {cpuRedis: "not a url"}} {
		c := newScenarioCPU(l)
		if _, ok := readTotal(ctx, c); ok {
			t.Errorf("%+v: read, though it names a process that cannot be read", l)
		}
		c.close()
	}
}

// readTotal is the processes' CPU time so far, all added up.
func readTotal(ctx context.Context, c *scenarioCPU) (total time.Duration, ok bool) {
	each, ok := c.readEach(ctx)
	for _, cpu := range each {
		total += cpu
	}
	return total, ok
}

// The CPU per round trip of the host rows is shown and divided by their baselines' within
// each round, as references without a target.
func TestReportCPURatios(t *testing.T) {
	r := newReport(config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 2})
	m := func(cpu float64) Measurement {
		return Measurement{P50us: 100, P99us: 200, Samples: 10, Throughput: 1000, RoundTrips: 1000, CPUPerRoundTripUS: cpu}
	}
	r.add(keyRelay, "relay", []Measurement{m(50), m(100)}, nil)
	r.add(keyProtoRelay, "proto", []Measurement{m(80), m(100)}, nil)
	r.add(keyRedis, "redis", []Measurement{m(40), m(40)}, nil)
	split := func(cpu float64, byProcess map[string]float64) Measurement {
		x := m(cpu)
		x.CPUByProcessUS = byProcess
		return x
	}
	// The split's medians are each process's, over the rounds that have it.
	r.add(keyHostMem, "mem", []Measurement{
		split(100, map[string]float64{"sender": 30, "nexus serve": 50, "echo": 20}),
		split(150, map[string]float64{"sender": 40, "nexus serve": 80, "echo": 30}),
	}, nil)
	r.add(keyHostRedis, "host redis", []Measurement{m(200), m(0)}, nil) // not measured in round 2
	r.computeRatios()
	want := map[string]float64{
		"host-memory CPU per round trip / relay CPU per round trip":             1.75, // 2 and 1.5
		"host-memory CPU per round trip / proto-frame-relay CPU per round trip": 1.375,
		"host-redis CPU per round trip / redis CPU per round trip":              5,
	}
	for _, q := range r.Ratios {
		w, ok := want[q.Name]
		if !ok {
			continue
		}
		delete(want, q.Name)
		if q.Value == nil || math.Abs(*q.Value-w) > 1e-9 || q.Op != "" || q.Met {
			t.Errorf("%s = %v (op %q, met %v), want %v as a reference", q.Name, q.Value, q.Op, q.Met, w)
		}
	}
	if len(want) > 0 {
		t.Errorf("missing ratios: %v", want)
	}
	var b strings.Builder
	if err := r.writeMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"| relay | 100 | 200 | 10 | 1000 | 1000 | 75 | baseline |", "CPU ÷ relay CPU = 1.75 (rounds 1.50–2.00), no target",
		"CPU µs per round trip by process", "\n- mem: echo 25 · nexus serve 65 · sender 35\n",
	} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("the Markdown report lacks %q:\n%s", s, b.String())
		}
	}
	if strings.Contains(b.String(), "- relay:") {
		t.Errorf("a split printed for a row without one:\n%s", b.String())
	}
}

// A report written with -json renders as the Markdown the run would have printed.
func TestRenderJSON(t *testing.T) {
	r := newReport(config{payload: 256, duration: time.Second, warmup: time.Second, rounds: 2})
	m := func(p50, tput, cpu float64) Measurement {
		return Measurement{P50us: p50, P99us: 2 * p50, Samples: 10, Throughput: tput, RoundTrips: int(tput), CPUPerRoundTripUS: cpu}
	}
	r.add(keyRelay, "relay", []Measurement{m(100, 1000, 50), m(120, 900, 60)}, nil)
	r.add(keyProtoRelay, "proto", []Measurement{m(110, 700, 70), m(130, 600, 80)}, nil)
	r.add(keyHostMem, "mem", []Measurement{m(130, 500, 100), m(150, 450, 110)}, nil)
	r.add(keyHostRedis, "host redis", nil, errors.New("no redis"))
	r.computeRatios()
	var want, js strings.Builder
	if err := r.writeMarkdown(&want); err != nil {
		t.Fatal(err)
	}
	if err := r.writeJSON(&js); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "run.json")
	if err := os.WriteFile(path, []byte(js.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	if err := renderJSON(path, &got); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("rendered from JSON:\n%s\nwant what the run printed:\n%s", got.String(), want.String())
	}
	if err := os.WriteFile(path, []byte("| a markdown table |"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := renderJSON(path, &got); err == nil || !strings.Contains(err.Error(), "not a report written with -json") {
		t.Errorf("rendering a file that is not JSON: %v", err)
	}
}
