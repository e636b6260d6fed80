package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The scenario keys (the rows of the report, and the JSON keys).
const (
	keyRelay = "raw_grpc_relay"
	// keyProtoRelay is a reference, not a target's baseline: baseline A with the plugin
	// protocol's frames (protorelay.go).
	keyProtoRelay = "proto_frame_relay"
	keyRedis      = "raw_redis_streams"
	keyHostMem    = "host_memory"
	keyHostRedis  = "host_redis"
	// keyHostReplicas is the host over Redis with the two plugins on two replicas
	// (replicas.go); its ratios to keyHostRedis have no target.
	keyHostReplicas = "host_redis_replicas"
	// The REST reads (reads.go); keyReadRepos is their baseline.
	keyReadRepos  = "rest_repositories"
	keyReadList   = "rest_plugin_list"
	keyReadDetail = "rest_plugin_detail"
	// Issue 15 (reads.go): the same reads from a bare connect-go + vanguard server serving
	// the server's answers (readsbase.go), the reads over Connect, and the list over 1,000
	// connections (readsconns.go).
	keyReadListBase      = "rest_plugin_list_bare"
	keyReadDetailBase    = "rest_plugin_detail_bare"
	keyConnectList       = "connect_plugin_list"
	keyConnectDetail     = "connect_plugin_detail"
	keyConnectListBase   = "connect_plugin_list_bare"
	keyConnectDetailBase = "connect_plugin_detail_bare"
	keyReadConns         = "rest_plugin_list_1000_connections"
	keyReadConnsBase     = "rest_plugin_list_1000_connections_bare"
	// The fan-out scenarios (fanout.go); their throughput is deliveries per second, compared
	// with the point-to-point throughput of keyHostMem and keyHostRedis.
	keyFanoutMem   = "fanout_memory"
	keyFanoutRedis = "fanout_redis"
)

// isFanoutKey reports whether key is a row of the fan-out scenarios.
func isFanoutKey(key string) bool { return key == keyFanoutMem || key == keyFanoutRedis }

// targetFanout: fan-out deliveries per second / point-to-point messages per second on the
// same bus, at least (issue 15).
const targetFanout = 1.0

// isReadKey reports whether key is a row of the REST reads, whose figures are requests
// under load (LoadedP50us, LoadedP99us, Throughput) rather than round trips.
func isReadKey(key string) bool {
	return slices.ContainsFunc(readRows(), func(r row) bool { return r.key == key })
}

// The targets of the issue.
const (
	// Issue 15 re-based the messaging targets of the messaging issue (1.5, 0.6 and 1.5).
	targetMemP50     = 1.35 // host-memory p50 / relay p50, at most
	targetMemTput    = 0.45 // host-memory throughput / relay throughput, at least
	targetMemRefTput = 0.8  // host-memory throughput / proto-frame-relay throughput, at least
	targetRedisP50   = 1.2  // host-redis p50 / (relay p50 + redis p50), at most
	targetRedisTput  = 0.4  // host-redis throughput / raw Redis Streams throughput, at least
	// Issue 11's targets for the REST reads against the repositories endpoint (list 0.5,
	// detail 0.8) compared a 96 KB list with an empty one; issue 15 replaced them by the
	// same reads from a bare server (below), and they are reported without a target.
	// Issue 15: the REST reads' throughput against the bare server's, and the tail over
	// 1,000 connections.
	targetListBare   = 0.5 // plugin-list throughput / the bare server's, at least
	targetDetailBare = 0.5 // plugin-detail throughput / the bare server's, at least
	targetConnsTail  = 10  // p99 / p50 of the list over 1,000 connections, at most
)

// report is the outcome of a run.
type report struct {
	Date        string  `json:"date"`
	Machine     machine `json:"machine"`
	PayloadB    int     `json:"payload_bytes"`
	Duration    string  `json:"duration"`
	Warmup      string  `json:"warmup"`
	Concurrency int     `json:"concurrency"`
	Rounds      int     `json:"rounds"`
	// Reads are the parameters of the REST reads, when they ran.
	Reads     *readsParams  `json:"reads,omitempty"`
	Scenarios []scenarioOut `json:"scenarios"`
	Ratios    []ratio       `json:"ratios"`
}

// readsParams are the parameters of the REST reads scenario.
type readsParams struct {
	Plugins  int `json:"plugins"` // installed
	Enabled  int `json:"enabled"` // of them
	InFlight int `json:"in_flight"`
	// MaxSlices is how many slices each endpoint's duration is cut into within a round, at
	// most (each measurement gives its own count); a slice lasts at least SliceLatencies
	// times the slowest endpoint's warm-up p50.
	MaxSlices      int `json:"max_slices"`
	SliceLatencies int `json:"slice_latencies"`
	// Connections is how many connections the 1,000-connection rows use; ServerLimits what
	// bounds them on the server (its descriptor limit, the kernel's accept queue).
	Connections  int    `json:"connections"`
	ServerLimits string `json:"server_limits,omitempty"`
}

// machine describes where the run happened.
type machine struct {
	OS    string `json:"os"` // uname -sr
	CPU   string `json:"cpu"`
	Cores int    `json:"cores"`
	Go    string `json:"go"`
	// LoadAvg is the 1-minute load average when the run started (other work on the
	// machine skews the figures).
	LoadAvg string `json:"load_avg,omitempty"`
}

// scenarioOut is one scenario's result: the median of its rounds (each figure the median
// of that figure over the rounds) and the rounds, or why it failed.
type scenarioOut struct {
	Key    string        `json:"key"`
	Name   string        `json:"name"`
	Result *Measurement  `json:"result,omitempty"`
	Runs   []Measurement `json:"rounds,omitempty"`
	Error  string        `json:"error,omitempty"`
}

// ratio is one target of the issue and how the run fared against it, or a reference
// figure with no target (Op empty): the ratio is taken within each round (the scenarios of
// a round run back to back), and Value is the median.
type ratio struct {
	Name     string    `json:"name"`
	Value    *float64  `json:"value"` // nil when a scenario it needs failed or was skipped
	PerRound []float64 `json:"per_round,omitempty"`
	Op       string    `json:"op,omitempty"` // "<=" or ">="; empty for a reference
	Target   float64   `json:"target,omitempty"`
	Met      bool      `json:"met"`
	// Unit is set for a figure with an absolute target rather than a ratio (Value and
	// Target in that unit, e.g. "KiB").
	Unit  string `json:"unit,omitempty"`
	row   string // the scenario row it is shown on
	label string // its short name in that row
}

func newReport(cfg config) *report {
	var reads *readsParams
	if cfg.runsReads() {
		reads = &readsParams{Plugins: readPlugins, Enabled: readEnabled(),
			InFlight: readConcurrency, MaxSlices: readSlices, SliceLatencies: readSliceLatencies, Connections: readConnections}
	}
	return &report{
		Reads:       reads,
		Date:        time.Now().UTC().Format("2006-01-02 15:04 MST"),
		Machine:     describeMachine(),
		PayloadB:    cfg.payload,
		Duration:    cfg.duration.String(),
		Warmup:      cfg.warmup.String(),
		Concurrency: concurrency,
		Rounds:      max(cfg.rounds, 1),
	}
}

// add records a scenario's rounds, or the error that stopped it.
func (r *report) add(key, name string, runs []Measurement, err error) {
	s := scenarioOut{Key: key, Name: name}
	if err != nil {
		s.Error = err.Error()
	} else if len(runs) > 0 {
		s.Runs = runs
		m := medianMeasurement(runs)
		s.Result = &m
	}
	r.Scenarios = append(r.Scenarios, s)
}

// medianMeasurement is the figure-by-figure median of runs.
func medianMeasurement(runs []Measurement) Measurement {
	med := func(f func(Measurement) float64) float64 {
		v := make([]float64, len(runs))
		for i, m := range runs {
			v[i] = f(m)
		}
		return median(v)
	}
	return Measurement{
		P50us:                   med(func(m Measurement) float64 { return m.P50us }),
		P99us:                   med(func(m Measurement) float64 { return m.P99us }),
		Samples:                 int(med(func(m Measurement) float64 { return float64(m.Samples) })),
		Throughput:              med(func(m Measurement) float64 { return m.Throughput }),
		RoundTrips:              int(med(func(m Measurement) float64 { return float64(m.RoundTrips) })),
		Seconds:                 med(func(m Measurement) float64 { return m.Seconds }),
		InFlight:                runs[0].InFlight,
		LoadedP50us:             med(func(m Measurement) float64 { return m.LoadedP50us }),
		LoadedP99us:             med(func(m Measurement) float64 { return m.LoadedP99us }),
		CPUPerRoundTripUS:       med(func(m Measurement) float64 { return m.CPUPerRoundTripUS }),
		CPUByProcessUS:          medianByName(runs, func(m Measurement) map[string]float64 { return m.CPUByProcessUS }),
		WarmupRoundTrips:        int(med(func(m Measurement) float64 { return float64(m.WarmupRoundTrips) })),
		Slices:                  int(med(func(m Measurement) float64 { return float64(m.Slices) })),
		Subscribers:             runs[0].Subscribers,
		Deliveries:              int(med(func(m Measurement) float64 { return float64(m.Deliveries) })),
		Events:                  int(med(func(m Measurement) float64 { return float64(m.Events) })),
		EventsPerSecond:         med(func(m Measurement) float64 { return m.EventsPerSecond }),
		SetupSeconds:            med(func(m Measurement) float64 { return m.SetupSeconds }),
		InstallSeconds:          med(func(m Measurement) float64 { return m.InstallSeconds }),
		TokenSeconds:            med(func(m Measurement) float64 { return m.TokenSeconds }),
		ConnectSeconds:          med(func(m Measurement) float64 { return m.ConnectSeconds }),
		ServerCPUus:             med(func(m Measurement) float64 { return m.ServerCPUus }),
		Sessions:                runs[0].Sessions,
		KiBPerSession:           med(func(m Measurement) float64 { return m.KiBPerSession }),
		HeapKiBPerSession:       med(func(m Measurement) float64 { return m.HeapKiBPerSession }),
		StackKiBPerSession:      med(func(m Measurement) float64 { return m.StackKiBPerSession }),
		RSSKiBPerSession:        med(func(m Measurement) float64 { return m.RSSKiBPerSession }),
		HostCPUPerDeliveryUS:    med(func(m Measurement) float64 { return m.HostCPUPerDeliveryUS }),
		PluginsCPUPerDeliveryUS: med(func(m Measurement) float64 { return m.PluginsCPUPerDeliveryUS }),
	}
}

// median of v (the mean of the middle two for an even count); v is reordered.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// result is the median measurement of a scenario, nil when it did not run.
func (r *report) result(key string) *Measurement {
	for _, s := range r.Scenarios {
		if s.Key == key {
			return s.Result
		}
	}
	return nil
}

// runs are the measurements of a scenario's rounds.
func (r *report) runs(key string) []Measurement {
	for _, s := range r.Scenarios {
		if s.Key == key {
			return s.Runs
		}
	}
	return nil
}

// failed names the scenarios that failed to run.
func (r *report) failed() []string {
	var names []string
	for _, s := range r.Scenarios {
		if s.Error != "" {
			names = append(names, s.Key)
		}
	}
	return names
}

// computeRatios sets the ratios the targets talk about, from the scenarios that ran: each
// within every round, then their median.
func (r *report) computeRatios() {
	relay, rds, protoRelay := r.runs(keyRelay), r.runs(keyRedis), r.runs(keyProtoRelay)
	mem, hostRedis, replicas := r.runs(keyHostMem), r.runs(keyHostRedis), r.runs(keyHostReplicas)
	add := func(row, label, name, op string, target float64, value func(round int) (float64, bool), scenarios ...[]Measurement) {
		q := ratio{Name: name, Op: op, Target: target, row: row, label: label}
		rounds := -1
		for _, runs := range scenarios {
			if rounds < 0 || len(runs) < rounds {
				rounds = len(runs)
			}
		}
		for i := 0; i < rounds; i++ {
			if v, ok := value(i); ok {
				q.PerRound = append(q.PerRound, v)
			}
		}
		if len(q.PerRound) > 0 {
			v := median(slices.Clone(q.PerRound))
			q.Value = &v
			q.Met = (op == "<=" && v <= target) || (op == ">=" && v >= target) // never for a reference
		}
		r.Ratios = append(r.Ratios, q)
	}
	div := func(num, den float64) (float64, bool) { return num / den, den > 0 }
	if r.hasScenario(keyProtoRelay) {
		add(keyProtoRelay, "p50 ÷ relay p50", "proto-frame-relay p50 / relay p50", "", 0,
			func(i int) (float64, bool) { return div(protoRelay[i].P50us, relay[i].P50us) }, protoRelay, relay)
		add(keyProtoRelay, "throughput ÷ relay throughput", "proto-frame-relay throughput / relay throughput", "", 0,
			func(i int) (float64, bool) { return div(protoRelay[i].Throughput, relay[i].Throughput) }, protoRelay, relay)
	}
	if r.hasScenario(keyHostMem) {
		add(keyHostMem, "p50 ÷ relay p50", "host-memory p50 / relay p50", "<=", targetMemP50,
			func(i int) (float64, bool) { return div(mem[i].P50us, relay[i].P50us) }, mem, relay)
		add(keyHostMem, "throughput ÷ relay throughput", "host-memory throughput / relay throughput", ">=", targetMemTput,
			func(i int) (float64, bool) { return div(mem[i].Throughput, relay[i].Throughput) }, mem, relay)
	}
	if r.hasScenario(keyHostMem) && r.hasScenario(keyProtoRelay) {
		add(keyHostMem, "p50 ÷ reference p50", "host-memory p50 / proto-frame-relay p50", "", 0,
			func(i int) (float64, bool) { return div(mem[i].P50us, protoRelay[i].P50us) }, mem, protoRelay)
		add(keyHostMem, "throughput ÷ reference throughput", "host-memory throughput / proto-frame-relay throughput", ">=", targetMemRefTput,
			func(i int) (float64, bool) { return div(mem[i].Throughput, protoRelay[i].Throughput) }, mem, protoRelay)
	}
	// CPU per round trip (all the scenario's processes, throughput phase): references. On
	// 2 cores the throughput ratios follow their inverse; they move far less between runs.
	// (Runs from before the figure existed have none: no ratio then.)
	addCPU := func(row, label, name string, a, b []Measurement) {
		if !slices.ContainsFunc(a, func(m Measurement) bool { return m.CPUPerRoundTripUS > 0 }) {
			return
		}
		add(row, label, name, "", 0, func(i int) (float64, bool) {
			if a[i].CPUPerRoundTripUS <= 0 {
				return 0, false
			}
			return div(a[i].CPUPerRoundTripUS, b[i].CPUPerRoundTripUS)
		}, a, b)
	}
	if r.hasScenario(keyHostMem) {
		addCPU(keyHostMem, "CPU ÷ relay CPU", "host-memory CPU per round trip / relay CPU per round trip", mem, relay)
	}
	if r.hasScenario(keyHostMem) && r.hasScenario(keyProtoRelay) {
		addCPU(keyHostMem, "CPU ÷ reference CPU", "host-memory CPU per round trip / proto-frame-relay CPU per round trip", mem, protoRelay)
	}
	if r.hasScenario(keyHostRedis) {
		addCPU(keyHostRedis, "CPU ÷ Redis CPU", "host-redis CPU per round trip / redis CPU per round trip", hostRedis, rds)
	}
	if r.hasScenario(keyHostRedis) {
		add(keyHostRedis, "p50 ÷ (relay p50 + Redis p50)", "host-redis p50 / (relay p50 + redis p50)", "<=", targetRedisP50,
			func(i int) (float64, bool) { return div(hostRedis[i].P50us, relay[i].P50us+rds[i].P50us) }, hostRedis, relay, rds)
		add(keyHostRedis, "throughput ÷ Redis throughput", "host-redis throughput / redis throughput", ">=", targetRedisTput,
			func(i int) (float64, bool) { return div(hostRedis[i].Throughput, rds[i].Throughput) }, hostRedis, rds)
	}
	if r.hasScenario(keyHostReplicas) {
		add(keyHostReplicas, "p50 ÷ same-replica p50", "host-redis-replicas p50 / host-redis p50", "", 0,
			func(i int) (float64, bool) { return div(replicas[i].P50us, hostRedis[i].P50us) }, replicas, hostRedis)
		add(keyHostReplicas, "throughput ÷ same-replica throughput", "host-redis-replicas throughput / host-redis throughput", "", 0,
			func(i int) (float64, bool) { return div(replicas[i].Throughput, hostRedis[i].Throughput) }, replicas, hostRedis)
	}
	for _, q := range []struct{ fan, p2p, name string }{
		{keyFanoutMem, keyHostMem, "fanout-memory deliveries/s / host-memory msg/s"},
		{keyFanoutRedis, keyHostRedis, "fanout-redis deliveries/s / host-redis msg/s"},
	} {
		if !r.hasScenario(q.fan) {
			continue
		}
		fan, p2p := r.runs(q.fan), r.runs(q.p2p)
		add(q.fan, "deliveries/s ÷ point-to-point msg/s", q.name, ">=", targetFanout,
			func(i int) (float64, bool) { return div(fan[i].Throughput, p2p[i].Throughput) }, fan, p2p)
	}
	if r.hasScenario(keyIdleSessions) {
		idle, conns, streams := r.runs(keyIdleSessions), r.runs(keyIdleConns), r.runs(keyIdleStreams)
		add(keyIdleSessions, "per session", "idle plugin session, server KiB (Go heap + stacks)", "<=", targetIdleKiB,
			func(i int) (float64, bool) { return idle[i].KiBPerSession, idle[i].Sessions > 0 }, idle)
		r.Ratios[len(r.Ratios)-1].Unit = "KiB"
		add(keyIdleStreams, "per stream", "idle bare grpc-go stream, server KiB (Go heap + stacks)", "", 0,
			func(i int) (float64, bool) { return streams[i].KiBPerSession, streams[i].Sessions > 0 }, streams)
		r.Ratios[len(r.Ratios)-1].Unit = "KiB"
		add(keyIdleSessions, "− bare grpc-go stream", "idle plugin session - idle bare grpc-go stream (KiB)", "", 0,
			func(i int) (float64, bool) {
				return idle[i].KiBPerSession - streams[i].KiBPerSession, idle[i].Sessions > 0 && streams[i].Sessions > 0
			}, idle, streams)
		r.Ratios[len(r.Ratios)-1].Unit = "KiB"
		add(keyIdleSessions, "÷ idle connection", "idle plugin session / idle HTTP/2 connection (KiB)", "", 0,
			func(i int) (float64, bool) { return div(idle[i].KiBPerSession, conns[i].KiBPerSession) }, idle, conns)
	}
	repos := r.runs(keyReadRepos)
	for _, q := range []struct{ key, name string }{{keyReadList, "plugin-list"}, {keyReadDetail, "plugin-detail"}} {
		if !r.hasScenario(q.key) || !r.hasScenario(keyReadRepos) {
			continue
		}
		runs := r.runs(q.key)
		add(q.key, "throughput ÷ repositories throughput", q.name+" throughput / repositories throughput", "", 0,
			func(i int) (float64, bool) { return div(runs[i].Throughput, repos[i].Throughput) }, runs, repos)
	}
	// Issue 15: each read against the bare server's same read, within each round.
	for _, q := range []struct {
		key, bare, name string
		target          float64 // 0: no target
	}{
		{keyReadList, keyReadListBase, "plugin-list", targetListBare},
		{keyReadDetail, keyReadDetailBase, "plugin-detail", targetDetailBare},
		{keyConnectList, keyConnectListBase, "connect-list", 0},
		{keyConnectDetail, keyConnectDetailBase, "connect-detail", 0},
	} {
		if !r.hasScenario(q.key) || !r.hasScenario(q.bare) {
			continue
		}
		runs, bare := r.runs(q.key), r.runs(q.bare)
		op := ""
		if q.target > 0 {
			op = ">="
		}
		add(q.key, "throughput ÷ bare throughput", q.name+" throughput / bare throughput", op, q.target,
			func(i int) (float64, bool) { return div(runs[i].Throughput, bare[i].Throughput) }, runs, bare)
		add(q.key, "p50 ÷ bare p50", q.name+" p50 / bare p50", "", 0,
			func(i int) (float64, bool) { return div(runs[i].LoadedP50us, bare[i].LoadedP50us) }, runs, bare)
		// The throughput ratio as the servers' CPU sees it: less moved by the machine's
		// other work than the throughput is.
		add(q.key, "bare CPU ÷ CPU per request", q.name+" bare server CPU per request / server CPU per request", "", 0,
			func(i int) (float64, bool) { return div(bare[i].ServerCPUus, runs[i].ServerCPUus) }, runs, bare)
	}
	if conns, bare := r.runs(keyReadConns), r.runs(keyReadConnsBase); r.hasScenario(keyReadConns) {
		add(keyReadConns, "p99 ÷ p50", "1000-connections p99 / p50", "<=", targetConnsTail,
			func(i int) (float64, bool) { return div(conns[i].LoadedP99us, conns[i].LoadedP50us) }, conns)
		if r.hasScenario(keyReadConnsBase) {
			add(keyReadConns, "p50 ÷ bare p50", "1000-connections p50 / bare p50", "", 0,
				func(i int) (float64, bool) { return div(conns[i].LoadedP50us, bare[i].LoadedP50us) }, conns, bare)
			add(keyReadConnsBase, "p99 ÷ p50", "1000-connections bare p99 / p50", "", 0,
				func(i int) (float64, bool) { return div(bare[i].LoadedP99us, bare[i].LoadedP50us) }, bare)
		}
	}
}

// fmtRatio prints a ratio with two decimals, or with two significant digits below 0.1 (the
// REST reads' ratios can be that small, and "0.00" would hide them).
func fmtRatio(v float64) string {
	if v != 0 && math.Abs(v) < 0.1 {
		return fmt.Sprintf("%.2g", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func opSign(op string) string {
	if op == "<=" {
		return "≤"
	}
	return "≥"
}

func (r *report) hasScenario(key string) bool {
	for _, s := range r.Scenarios {
		if s.Key == key {
			return true
		}
	}
	return false
}

// writeJSON prints the report as one indented JSON document.
func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeMarkdown prints the report: for the messaging scenarios and for the REST reads
// (those that ran), each a header line and a table, a row per scenario.
func (r *report) writeMarkdown(w io.Writer) error {
	bw := bufio.NewWriter(w)
	var messaging, reads, fanout, idle []scenarioOut
	for _, s := range r.Scenarios {
		switch {
		case isIdleKey(s.Key):
			idle = append(idle, s)
		case isReadKey(s.Key):
			reads = append(reads, s)
		case isFanoutKey(s.Key):
			fanout = append(fanout, s)
		default:
			messaging = append(messaging, s)
		}
	}
	machine := fmt.Sprintf("**%s** · %s · %s · %d cores · %s · load average %s at start",
		r.Date, r.Machine.OS, r.Machine.CPU, r.Machine.Cores, r.Machine.Go, orUnknown(r.Machine.LoadAvg))
	r.writeTargets(bw, machine)
	if len(messaging) > 0 {
		fmt.Fprintf(bw, "%s · payload %d B · %s per measurement (after %s warm-up) · throughput with %d in flight · median of %d rounds (scenarios back to back in each; ratios within each round)\n\n",
			machine, r.PayloadB, r.Duration, r.Warmup, r.Concurrency, r.Rounds)
		fmt.Fprintln(bw, "| scenario | p50 (µs) | p99 (µs) | samples (1 in flight) | throughput (msg/s) | round trips (64 in flight) | CPU µs per round trip (all processes, 64 in flight) | vs target |")
		fmt.Fprintln(bw, "|---|---:|---:|---:|---:|---:|---:|---|")
		for _, s := range messaging {
			if s.Result == nil {
				fmt.Fprintf(bw, "| %s | – | – | – | – | – | – | **failed to run**: %s |\n", s.Name, oneLine(s.Error, 160))
				continue
			}
			m := s.Result
			cpu := "–"
			if m.CPUPerRoundTripUS > 0 {
				cpu = fmt.Sprintf("%.0f", m.CPUPerRoundTripUS)
			}
			fmt.Fprintf(bw, "| %s | %.0f | %.0f | %d | %.0f | %d | %s | %s |\n",
				s.Name, m.P50us, m.P99us, m.Samples, m.Throughput, m.RoundTrips, cpu, r.ratioCell(s.Key))
		}
		writeCPUByProcess(bw, messaging)
	}
	if len(fanout) > 0 {
		r.writeFanout(bw, fanout)
	}
	if len(reads) > 0 && r.Reads != nil {
		if len(messaging) > 0 || len(fanout) > 0 {
			fmt.Fprintln(bw)
			machine = "**REST reads**"
		}
		fmt.Fprintf(bw, "%s · `nexus serve` with %d plugins installed (%d enabled), and a bare connect-go + vanguard process serving its answers · keep-alive HTTP/1.1 clients (REST, and Connect with the generated Go client in binary proto), %d requests in flight · %s per endpoint, the endpoints alternating in slices (%s per round; at most %d, each at least %d× the slowest warm-up p50), after %s warm-up shared by the endpoints · then the list over %s connections (a client and a connection each, dialled at once), on each server in turn, for max(%s, %s) · server limits: %s · median of %d rounds (ratios within each round)\n\n",
			machine, r.Reads.Plugins, r.Reads.Enabled, r.Reads.InFlight, r.Duration, r.readSlicesUsed(), r.Reads.MaxSlices, r.Reads.SliceLatencies, r.Warmup,
			thousands(r.Reads.Connections), r.Duration, readConnectionsMin, orUnknown(r.Reads.ServerLimits), r.Rounds)
		fmt.Fprintln(bw, "| endpoint | in flight | throughput (req/s) | p50 (µs) | p99 (µs) | server CPU (µs/req) | requests | vs target |")
		fmt.Fprintln(bw, "|---|---:|---:|---:|---:|---:|---:|---|")
		for _, s := range reads {
			if s.Result == nil {
				fmt.Fprintf(bw, "| %s | – | – | – | – | – | – | **failed to run**: %s |\n", s.Name, oneLine(s.Error, 160))
				continue
			}
			m := s.Result
			cpu := "–"
			if m.ServerCPUus > 0 {
				cpu = fmt.Sprintf("%.0f", m.ServerCPUus)
			}
			fmt.Fprintf(bw, "| %s | %d | %.0f | %.0f | %.0f | %s | %d | %s |\n",
				s.Name, m.InFlight, m.Throughput, m.LoadedP50us, m.LoadedP99us, cpu, m.RoundTrips, r.ratioCell(s.Key))
		}
	}
	if len(idle) > 0 {
		if len(messaging)+len(reads)+len(fanout) > 0 {
			fmt.Fprintln(bw)
		}
		r.writeIdleMarkdown(bw, idle)
	}
	return bw.Flush()
}

// writeFanout prints the fan-out table.
func (r *report) writeFanout(w io.Writer, rows []scenarioOut) {
	fmt.Fprintf(w, "\n**Fan-out** · one server, %d subscribing plugins and one emitter, each a session on the Go SDK (all in one process) · %d emits in flight, at most %d events queued per subscriber · deliveries counted by the subscribers (each event once, intact) · %s per measurement after %s warm-up · median of %d rounds (ratios to the point-to-point throughput of the same round)\n\n",
		fanoutSubscribers, fanoutEmitsInFlight, fanoutBacklog, r.Duration, r.Warmup, r.Rounds)
	fmt.Fprintln(w, "| scenario | deliveries/s | events/s | deliveries | CPU µs per delivery: host, plugins | setup (s): install + tokens + connect | vs target |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---|---|---|")
	for _, s := range rows {
		if s.Result == nil {
			fmt.Fprintf(w, "| %s | – | – | – | – | – | **failed to run**: %s |\n", s.Name, oneLine(s.Error, 160))
			continue
		}
		m := s.Result
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %d | %.1f, %.1f | %.1f: %.1f + %.1f + %.1f | %s |\n", s.Name, m.Throughput, m.EventsPerSecond, m.Deliveries,
			m.HostCPUPerDeliveryUS, m.PluginsCPUPerDeliveryUS, m.SetupSeconds, m.InstallSeconds, m.TokenSeconds, m.ConnectSeconds, r.ratioCell(s.Key))
	}
}

// writeTargets prints the targets first, one row each (the ratio, its median over the
// rounds and their range, the target, met or not), when any ratio of the run has one.
func (r *report) writeTargets(w io.Writer, machine string) {
	var rows []ratio
	for _, q := range r.Ratios {
		if q.Op != "" {
			rows = append(rows, q)
		}
	}
	if len(rows) == 0 {
		return
	}
	met := 0
	for _, q := range rows {
		if q.Met {
			met++
		}
	}
	fmt.Fprintf(w, "%s · median of %d rounds · **%d of %d targets met**\n\n", machine, r.Rounds, met, len(rows))
	fmt.Fprintln(w, "| figure | value | rounds | target | met |")
	fmt.Fprintln(w, "|---|---:|---|---:|---|")
	for _, q := range rows {
		value, spread, mark := "n/a", "–", "✗"
		if q.Value != nil {
			value = fmtRatio(*q.Value)
		}
		if len(q.PerRound) > 0 {
			spread = fmt.Sprintf("%s–%s", fmtRatio(slices.Min(q.PerRound)), fmtRatio(slices.Max(q.PerRound)))
		}
		if q.Met {
			mark = "✓"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s %g | %s |\n", q.Name, value, spread, opSign(q.Op), q.Target, mark)
	}
	fmt.Fprintln(w)
}

// readSlicesUsed is how many slices the REST reads' rounds were cut into: a count, or the
// range over the rounds.
func (r *report) readSlicesUsed() string {
	var used []int
	for _, m := range r.runs(keyReadRepos) {
		used = append(used, m.Slices)
	}
	if len(used) == 0 {
		return "–"
	}
	if lo, hi := slices.Min(used), slices.Max(used); lo != hi {
		return fmt.Sprintf("%d–%d", lo, hi)
	}
	return fmt.Sprint(used[0])
}

// ratioCell is the "vs target" cell of a row: its ratios, each with ✓ or ✗.
func (r *report) ratioCell(key string) string {
	var parts []string
	for _, q := range r.Ratios {
		if q.row != key {
			continue
		}
		spread := ""
		if len(q.PerRound) > 1 {
			spread = fmt.Sprintf(" (rounds %s–%s)", fmtRatio(slices.Min(q.PerRound)), fmtRatio(slices.Max(q.PerRound)))
		}
		if q.Unit != "" && q.Value != nil && q.Op == "" {
			// An absolute figure without a target.
			parts = append(parts, fmt.Sprintf("%s = %.1f %s%s, no target", q.label, *q.Value, q.Unit, spread))
			continue
		}
		if q.Unit != "" && q.Value != nil {
			// A figure with an absolute target.
			mark := "✗"
			if q.Met {
				mark = "✓"
			}
			parts = append(parts, fmt.Sprintf("%s = **%.1f %s**%s (target %s %g %s) %s", q.label, *q.Value, q.Unit, spread, opSign(q.Op), q.Target, q.Unit, mark))
			continue
		}
		switch {
		case q.Op == "" && q.Value == nil:
			parts = append(parts, fmt.Sprintf("%s n/a", q.label))
			continue
		case q.Op == "":
			parts = append(parts, fmt.Sprintf("%s = %s%s, no target", q.label, fmtRatio(*q.Value), spread))
			continue
		case q.Value == nil:
			parts = append(parts, fmt.Sprintf("%s n/a (target %s %g)", q.label, opSign(q.Op), q.Target))
			continue
		}
		mark := "✗"
		if q.Met {
			mark = "✓"
		}
		bounds := ""
		if len(q.PerRound) > 1 {
			bounds = fmt.Sprintf("rounds %s–%s; ", fmtRatio(slices.Min(q.PerRound)), fmtRatio(slices.Max(q.PerRound)))
		}
		parts = append(parts, fmt.Sprintf("%s = **%s** (%starget %s %g) %s", q.label, fmtRatio(*q.Value), bounds, opSign(q.Op), q.Target, mark))
	}
	if len(parts) == 0 {
		return "baseline"
	}
	return strings.Join(parts, "; ")
}

// describeMachine collects uname -sr, the CPU model and the core count.
func describeMachine() machine {
	m := machine{OS: runtime.GOOS, CPU: "unknown CPU", Cores: runtime.NumCPU(), Go: runtime.Version()}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.OS = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAvg = f[0]
		}
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// oneLine shortens s to one line of at most n characters, for a table cell.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.ReplaceAll(s, "|", "\\|")
	if rs := []rune(s); len(rs) > n {
		s = string(rs[:n]) + "…"
	}
	return s
}

// renderJSON prints the report a run wrote with -json (the file at path) as Markdown. The
// ratios are taken again from the rounds it holds, as the run took them.
func renderJSON(path string, w io.Writer) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s is not a report written with -json: %w", path, err)
	}
	r.Ratios = nil
	r.computeRatios()
	return r.writeMarkdown(w)
}

// medianByName is the median of each name's figure over the runs that have it (f gives a
// run's figures by name); nil when no run has any.
func medianByName(runs []Measurement, f func(Measurement) map[string]float64) map[string]float64 {
	byName := map[string][]float64{}
	for _, m := range runs {
		for name, v := range f(m) {
			byName[name] = append(byName[name], v)
		}
	}
	if len(byName) == 0 {
		return nil
	}
	out := make(map[string]float64, len(byName))
	for name, vs := range byName {
		out[name] = median(vs)
	}
	return out
}

// writeCPUByProcess prints, under the messaging table, each scenario's CPU per round trip
// split by process: where the CPU a row counts goes.
func writeCPUByProcess(w io.Writer, rows []scenarioOut) {
	var lines []string
	for _, s := range rows {
		if s.Result == nil || len(s.Result.CPUByProcessUS) == 0 {
			continue
		}
		names := slices.Sorted(maps.Keys(s.Result.CPUByProcessUS))
		parts := make([]string, len(names))
		for i, name := range names {
			parts[i] = fmt.Sprintf("%s %.0f", name, s.Result.CPUByProcessUS[name])
		}
		lines = append(lines, fmt.Sprintf("- %s: %s", s.Name, strings.Join(parts, " · ")))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\nCPU µs per round trip by process (throughput phase, median of the rounds for each process):\n\n%s\n", strings.Join(lines, "\n"))
}
