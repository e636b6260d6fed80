// Command nexus-bench measures plugin-to-plugin messaging routed by the Nexus host, in
// memory and over Redis (the two plugins on one server, and on two replicas sharing
// PostgreSQL and Redis), beside two baselines measured in the same run on the same payload;
// the fan-out of events to 1,000 subscribing plugins beside the point-to-point message
// rate; and the API's plugin reads (REST and Connect) beside a bare connect-go + vanguard
// server serving the same answers, and over 1,000 connections. It prints a Markdown report
// (or JSON with -json). It is a command, not a timed test: its figures are a report, and it
// exits 0 even when a target is missed (non-zero only when a scenario fails to run).
//
//	go run ./server/cmd/nexus-bench [-nexus bin/nexus] [-duration 3s] [-rounds 3] [-payload 256] [-skip-redis] [-only messaging|reads|fanout|idle] [-skip-reads] [-skip-idle] [-json]
//	go run ./server/cmd/nexus-bench -render run.json   # a run saved with -json, as Markdown
//
// `make bench` runs it after the Go benchmarks, with the freshly built bin/nexus, and runs
// every scenario; -only reads runs the reads alone, -only messaging the messaging
// scenarios alone (without the fan-out), -only fanout the fan-out scenarios with the host
// scenarios they are compared with, and -skip-reads everything but the REST reads.
//
// # Messaging scenarios
//
// Every scenario is a set of processes on 127.0.0.1 (free ports), started for it and stopped
// before the next one, so that scenarios never compete for the CPU:
//
//   - raw grpc-go relay (baseline A): client -> relay -> echo, three processes, plain
//     google.golang.org/grpc with a hand-written service descriptor and a raw-bytes codec.
//     The client holds ONE bidi stream to the relay, the relay ONE bidi stream to the echo;
//     every request carries an id; the relay forwards requests upstream under its own ids
//     and routes replies back by id, multiplexing everything in flight over the one stream
//     on each side, as the host does with plugin streams. This is the floor for a message
//     routed through a middle process.
//   - reference C: baseline A's three processes speaking the plugin protocol's
//     own frames (send → deliver → reply → reply, ConnectRequest/ConnectResponse with
//     string ids) through grpc-go's protobuf codec, the payload carried undecoded as the
//     host carries it (protorelay.go). It has none of the host's work and no SDK, so it
//     shows what the protocol's framing alone costs against baseline A.
//   - raw Redis Streams round trip (baseline B): a requester XADDs the payload (with its id
//     and the name of its reply stream) to a request stream; a responder reads it with
//     XREADGROUP BLOCK (COUNT 64) and, in one pipeline, XADDs the reply to the reply stream
//     and XACKs; the requester reads its reply stream with XREAD BLOCK from its last id and
//     matches replies by id. github.com/redis/go-redis/v9, a redis-server of its own.
//   - host, in memory: `nexus serve` with two external plugins installed through the REST
//     API and run as processes on the Go plugin SDK (clients/go/plugin): bench-echo answers
//     every message with its data; bench-sender sends with Session.Send and waits for the
//     reply. The path is sender -> host -> echo -> host -> sender, over the plugins' streams.
//   - host, over Redis: the same with `nexus serve --redis-url` (a redis-server of its own).
//   - host, over Redis, two replicas (replicas.go): the same plugins and payload, but two
//     `nexus serve` processes, replicas A and B, on one PostgreSQL database (--database-url)
//     and one redis-server, each of the scenario's own (PostgreSQL started by pgtest's
//     StartServer, as the tests start theirs), with the same --redis-prefix, the same
//     secrets key (secret.key, copied into B's data directory before its first start) and
//     the same bootstrap admin token. The plugins are installed, enabled and given their
//     tokens through A only; B sees them through the shared database (the run waits until
//     it does). bench-sender connects to A and bench-echo to B: a message goes sender -> A
//     -> B's inbox in Redis -> B -> echo, and its reply echo -> B -> A's reply stream in
//     Redis -> A -> sender (on one server, the reply goes to its waiter in process). A
//     missing PostgreSQL fails the scenario, as a missing Redis does; -skip-redis skips it.
//
// # Payload
//
// Every scenario carries the same payload of -payload bytes (default 256) each way: the raw
// baselines that many random bytes (plus an 8-byte id, or the id and reply fields), the host
// path and reference C the JSON-ish object {"blob": "<-payload characters>"}. Every reply
// is checked: a round trip counts only when the reply carries the payload back intact.
//
// # Method
//
// The client process of each scenario (relay client, Redis requester, reference client,
// bench-sender) first warms up (-warmup of round trips, 64 in flight), then measures, each
// phase for -duration:
//
//   - latency: one round trip in flight, every round trip timed; p50 and p99 are the
//     nearest-rank percentiles over all of them (the sample count is reported);
//   - throughput: 64 goroutines each doing sequential round trips; round trips completed per
//     second of the phase's wall time (from the start until the last goroutine is done);
//     and the CPU time (user and system) every process of the scenario used during the
//     phase, per round trip: the client, the relay or servers and plugins on the path, and
//     redis-server (INFO cpu; not PostgreSQL, which no message touches), read from /proc by
//     the client (cpu.go). On 2 shared cores it moves far less than the rate, which is
//     about the cores' time divided by it: the report gives it, and the host rows' CPU
//     divided by their baselines', as references without a target.
//
// The whole set of scenarios runs -rounds times (3 by default), back to back in each
// round. The machine is noisy (2 cores, shared): a single round's ratios swing by about a
// fifth. The report gives, per scenario, the median of each figure over the rounds, and each
// target's ratio is taken within every round (host and baselines measured minutes apart
// would compare different machine states) and reported as the median, with its range.
//
// Any failed round trip fails the scenario loudly (nothing is retried or skipped once the
// warm-up starts). The client reports its figures as one JSON line on stdout.
//
// The targets (issue 15's, which re-based the messaging issue's) compare the host with the
// baselines: in memory, p50 within 1.35x of the raw relay's, throughput at least 0.45x the
// raw relay's and 0.8x reference C's; over Redis, p50 within 1.2x of the raw relay's p50
// plus the raw Redis round trip's p50, and throughput at least 0.4x the raw Redis round
// trip's. The two-replica row has no target: its p50 and throughput are given as ratios to
// the same-replica over-Redis row of the same round.
//
// # Fan-out
//
// The fan-out scenarios (fanout.go) start `nexus serve` in memory, and over Redis (--redis-url,
// a redis-server of its own), and install 1,001 external plugins through the REST API, 32
// install requests in flight, each installed and enabled in one request (auto_enable; the
// API has no batch install): 1,000 subscribers (events:subscribe, subscribed to the event
// type bench.fanout in their manifests) and one emitter (events:emit). Their tokens are
// created in the server's database as `nexus token create` does, but in this process (a
// thousand runs of the CLI would be slower than the installs). One child process
// (fanout-plugins) then runs every plugin as a session of its own on the Go plugin SDK, each
// with its own token and its own connection: the host sees 1,001 connected plugins, and an
// event goes to each subscriber's own inbox, a copy for each. The run waits until the host
// has made every plugin active, sends a first event to every subscriber, warms up
// (-warmup), and measures for -duration:
//
//   - the emitter emits with 16 Emit calls in flight, each one accepted when the host has
//     queued it for every subscriber (an event that reaches fewer than all of them fails
//     the run); a new event waits while the slowest subscriber is 128 events behind, so
//     that the inboxes stay small (the host accepts an event once it is queued, and
//     without that bound would fill its 1,000 inboxes and refuse recipients);
//   - each subscriber counts the events its OnEvent receives intact (type, payload, a
//     sequence number it has not seen): a damaged or duplicate delivery fails the run;
//   - the figure is deliveries per second: the subscribers' counts summed over the phase,
//     per second of its wall time; beside it the events accepted per second, and the CPU
//     time (user and system, from /proc) the server and the plugins' process used in the
//     phase per delivery, a figure that the other work on a shared machine moves less than
//     the rate. After the phase the run waits until every subscriber has every event.
//
// The setup's time is reported (install, tokens, connect until every plugin is active).
// The target (issue 15), within each round: fan-out deliveries per second at least the
// point-to-point messages per second of the host scenario on the same bus (host_memory,
// host_redis), which -only fanout runs too.
//
// # REST and Connect reads
//
// The reads scenario (reads.go) starts `nexus serve` (in memory, fresh data directory)
// and installs 100 external plugins through the REST API (no process is launched for them;
// every 20th is enabled, every 10th depends on the first), each with API endpoints (under a
// prefix of its own: enabled plugins may not share paths), events, a message type,
// permissions and a configuration schema whose secret field is set, so that the views have
// realistic content. It then fetches the list and every plugin's detail once over Connect
// and starts the bare server (readsbase.go, issue 15's baseline): this binary as a process
// of its own, as `nexus serve` is, serving those answers as prebuilt messages through the
// generated PluginService handler and vanguard configured as the server configures them,
// on HTTP/1.1 and h2c, REST answers wrapped in the same envelope, and no Nexus work (no
// authentication, interceptors, validation, logging, metrics or views). The run checks that
// both answer the same (the REST data compared as JSON values, the Connect messages with
// proto.Equal). Keep-alive HTTP/1.1 clients in this process (the admin token on every
// request; one transport keeping 32 idle connections per server) then read, 32 requests in
// flight:
//
//   - GET /api/v1/plugins/repositories of the server (issue 11's baseline): no repository
//     is configured, so this is the REST stack alone (authentication, routing, transcoding,
//     the envelope);
//   - GET /api/v1/plugins (the list of the 100 plugins) and GET /api/v1/plugins/{id} (a
//     plugin's detail, the ids taken in turn), of the server and of the bare server;
//   - ListPlugins and GetPlugin over Connect (the generated Go client, the Connect protocol,
//     binary proto), of the server and of the bare server.
//
// One answer of each is first checked in full (every plugin listed, secrets masked, the
// detail of the plugin asked for); after that every REST answer must have status 200 and
// begin with the success envelope, its body read to the end (so the connection is reused),
// and every Connect answer must list every plugin or be the detail asked for. After a
// warm-up (-warmup, shared by the endpoints), each endpoint is read for -duration in all,
// in up to 6 slices; the slices alternate between the endpoints, each cycle starting with
// the next one (A B C ..., B C ... A, ...), so that drift on the machine hits them alike.
// A slice ends when its last request does, so a slice lasts at least 5 times the slowest
// endpoint's warm-up p50 (fewer slices, down to one, when an endpoint is slow). Each
// endpoint's figures are its requests per second over the wall time of its slices, the p50
// and p99 latencies of all its requests (32 in flight: latencies under load), and the CPU
// time the answering server process used per request over its slices (utime + stime from
// /proc/PID/stat; on a shared machine it moves less than the throughput).
//
// Then the list is read over 1,000 connections, on the server and then on the bare
// server: 1,000 clients, each with a transport and so a TCP connection of its own (kept
// alive), each with one request in flight, all dialling at once, for max(-duration, 5s);
// every client completes at least one request. The figures are the requests per second and
// the p50 and p99 of all the requests (the first of each connection, dial included, are
// also written to stderr). This process raises its descriptor limit (setrlimit) when it
// is below what 1,000 connections need; the report gives the server's limits (its open
// files, from /proc/PID/limits: Go raises the soft limit to the hard one at start, and the
// kernel's somaxconn and tcp_max_syn_backlog).
//
// Every round starts fresh servers. The targets are issue 15's, within each round: the
// REST list and the REST detail each at least 0.5x the bare server's same read in
// throughput, and over 1,000 connections the server's p99 at most 10x its p50. The list's
// and the detail's throughput against the repositories endpoint (issue 11's targets, which
// compared a 96 KB answer with an empty one), the Connect reads' ratios to the bare server,
// the latency ratios and the CPU ratios (bare CPU per request over the server's) are given
// without target.
//
// # Idle plugin sessions
//
// The idle scenario (idle.go) measures the server memory an idle plugin session costs: 1,000
// instances of one external plugin on the Go plugin SDK (a grpc-go connection each, as
// plugin processes connect), against 1,000 idle HTTP/2 connections to a server of the
// same binary in the same round (each phase on a fresh server); the target (issue 15) is at most 32 KiB per session, its connection
// included, in the server's Go heap plus stacks.
//
// # Processes
//
// The binary re-executes itself for its child processes (a hidden first argument, "child",
// names the role). Children are started with Pdeathsig (SIGKILL) on Linux and are also
// stopped explicitly (SIGTERM, then SIGKILL after a bounded wait) when their scenario ends or
// the run is interrupted; temporary directories are removed. NEXUS_* variables of the
// caller's environment are not passed on, so they cannot change what is measured.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// Defaults of the flags and fixed parameters of the method.
const (
	defaultDuration = 3 * time.Second
	defaultWarmup   = time.Second
	defaultPayload  = 256
	// defaultRounds is how many times each scenario runs: the machine is noisy, and one
	// round's ratios swing by a fifth.
	defaultRounds = 3
	// concurrency is the number of round trips in flight in the throughput phase.
	concurrency = 64
	// maxPayload keeps the host path's payload well under the server's default
	// max-message-bytes (4 MiB).
	maxPayload = 1 << 20
)

// The values of -only.
const (
	onlyMessaging = "messaging"
	onlyReads     = "reads"
	// onlyFanout runs the fan-out scenarios and, for their ratios, the host scenarios.
	onlyFanout = "fanout"
	// onlyIdle runs the idle plugin sessions scenario.
	onlyIdle = "idle"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is the orchestrator's configuration, from its flags.
type config struct {
	nexus     string        // the nexus binary; built into the temp dir when empty
	duration  time.Duration // each measured phase
	warmup    time.Duration // before the measured phases
	payload   int           // bytes
	skipRedis bool
	only      string // "" (everything), onlyMessaging, onlyReads or onlyFanout
	skipReads bool
	skipIdle  bool
	jsonOut   bool
	rounds    int    // times every scenario runs, back to back in each round
	render    string // a report written with -json, to print as Markdown instead of running
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == childArg {
		return runChild(args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nexus-bench:", err)
		return 2
	}
	if cfg.render != "" {
		if err := renderJSON(cfg.render, stdout); err != nil {
			fmt.Fprintln(stderr, "nexus-bench:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep, err := orchestrate(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "nexus-bench:", err)
		return 1
	}
	if cfg.jsonOut {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeMarkdown(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "nexus-bench:", err)
		return 1
	}
	if failed := rep.failed(); len(failed) > 0 {
		fmt.Fprintf(stderr, "nexus-bench: %d scenario(s) failed to run: %v\n", len(failed), failed)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("nexus-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: nexus-bench [flags]\n\n"+
			"Round-trip latency (p50, p99; 1 in flight) and throughput (%d in flight) of plugin-to-plugin\n"+
			"messages routed by the Nexus host, in memory and over Redis (on one server and across two\n"+
			"replicas sharing PostgreSQL and Redis), beside a raw grpc-go relay and a raw go-redis\n"+
			"Streams round trip; and the REST and Connect reads of the plugin list (%d plugins installed)\n"+
			"and a plugin's detail beside a bare connect-go + vanguard server serving the same answers\n"+
			"(%d in flight), then the list over 1,000 connections.\n"+
			"Prints a Markdown report.\n\nFlags:\n", concurrency, readPlugins, readConcurrency)
		fs.PrintDefaults()
	}
	var cfg config
	fs.StringVar(&cfg.nexus, "nexus", "", "the nexus server binary (e.g. bin/nexus); built with go build when empty")
	fs.DurationVar(&cfg.duration, "duration", defaultDuration, "duration of each measurement (latency, throughput)")
	fs.DurationVar(&cfg.warmup, "warmup", defaultWarmup, "warm-up before the measurements of each scenario")
	fs.IntVar(&cfg.payload, "payload", defaultPayload, "payload bytes carried each way")
	fs.BoolVar(&cfg.skipRedis, "skip-redis", false, "skip the Redis scenarios (baseline, host over Redis, and two replicas on PostgreSQL and Redis)")
	fs.StringVar(&cfg.only, "only", "", "run only the messaging scenarios (\""+onlyMessaging+"\"), only the REST reads (\""+onlyReads+"\"), only the fan-out scenarios and the host scenarios they compare with (\""+onlyFanout+"\"), or only the idle plugin sessions (\""+onlyIdle+"\")")
	fs.BoolVar(&cfg.skipReads, "skip-reads", false, "skip the REST reads scenario")
	fs.BoolVar(&cfg.skipIdle, "skip-idle", false, "skip the idle plugin sessions scenario")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print machine-readable JSON instead of Markdown")
	fs.StringVar(&cfg.render, "render", "", "print the report a run wrote with -json (this file) as Markdown, and run nothing")
	fs.IntVar(&cfg.rounds, "rounds", defaultRounds, "rounds: every scenario runs once per round, and the report gives medians")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case cfg.duration <= 0:
		return cfg, fmt.Errorf("-duration must be positive")
	case cfg.warmup < 0:
		return cfg, fmt.Errorf("-warmup must not be negative")
	case cfg.rounds < 1:
		return cfg, fmt.Errorf("-rounds must be at least 1")
	case cfg.payload < 1 || cfg.payload > maxPayload:
		return cfg, fmt.Errorf("-payload must be between 1 and %d", maxPayload)
	case cfg.only != "" && cfg.only != onlyMessaging && cfg.only != onlyReads && cfg.only != onlyFanout && cfg.only != onlyIdle:
		return cfg, fmt.Errorf("-only must be %q, %q, %q or %q", onlyMessaging, onlyReads, onlyFanout, onlyIdle)
	case cfg.only == onlyReads && cfg.skipReads:
		return cfg, fmt.Errorf("-only %s and -skip-reads leave nothing to run", onlyReads)
	case cfg.only == onlyIdle && cfg.skipIdle:
		return cfg, fmt.Errorf("-only %s and -skip-idle leave nothing to run", onlyIdle)
	}
	if cfg.nexus != "" {
		abs, err := filepath.Abs(cfg.nexus)
		if err != nil {
			return cfg, err
		}
		if _, err := os.Stat(abs); err != nil {
			return cfg, fmt.Errorf("-nexus: %w", err)
		}
		cfg.nexus = abs
	}
	return cfg, nil
}

// bench is one run of the orchestrator.
type bench struct {
	cfg    config
	self   string    // this executable, re-run for the children
	tmp    string    // removed when the run ends
	stderr io.Writer // progress and the children's diagnostics
	// readsLimits is set by the REST reads scenario: what bounds the server's connections
	// (readsParams.ServerLimits).
	readsLimits string
}

// runsMessaging, runsReads, runsFanout and runsIdle say which scenarios the flags select.
func (c config) runsMessaging() bool { return c.only == "" || c.only == onlyMessaging }
func (c config) runsReads() bool     { return (c.only == "" || c.only == onlyReads) && !c.skipReads }
func (c config) runsFanout() bool    { return c.only == "" || c.only == onlyFanout }
func (c config) runsIdle() bool      { return (c.only == "" || c.only == onlyIdle) && !c.skipIdle }

// scenario is one step of a round: its processes are started for it and stopped before the
// next step. It measures one row of the report, or several (the REST reads: three
// endpoints of one server), which share its processes and its failure.
type scenario struct {
	name string // in the progress lines
	rows []row
	run  func(ctx context.Context) ([]Measurement, error) // one per row, in their order
}

// row is a row of the report.
type row struct {
	key, name string
}

// oneRow is the scenario of a single row.
func oneRow(key, name string, run func(ctx context.Context) (Measurement, error)) scenario {
	return scenario{name: name, rows: []row{{key, name}}, run: func(ctx context.Context) ([]Measurement, error) {
		m, err := run(ctx)
		return []Measurement{m}, err
	}}
}

// orchestrate runs every scenario in turn and collects the report. A scenario that fails is
// recorded as failed and the others still run; only a failure to prepare the run is an error.
func orchestrate(ctx context.Context, cfg config, stderr io.Writer) (*report, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable: %w", err)
	}
	tmp, err := os.MkdirTemp("", "nexus-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	b := &bench{cfg: cfg, self: self, tmp: tmp, stderr: stderr}

	if b.cfg.nexus == "" {
		if b.cfg.nexus, err = b.buildNexus(ctx); err != nil {
			return nil, err
		}
	}

	rep := newReport(cfg)
	var scenarios []scenario
	if cfg.runsMessaging() {
		scenarios = append(scenarios,
			oneRow(keyRelay, "raw grpc-go relay (client → relay → echo)", b.runRelay),
			oneRow(keyProtoRelay, "reference: the same relay with the plugin protocol's frames", b.runProtoRelay))
		if !cfg.skipRedis {
			scenarios = append(scenarios, oneRow(keyRedis, "raw go-redis Streams round trip", b.runRedis))
		}
		scenarios = append(scenarios, oneRow(keyHostMem, "host, in memory (sender → nexus → echo)", b.runHostMemory))
		if !cfg.skipRedis {
			scenarios = append(scenarios,
				oneRow(keyHostRedis, "host, over Redis (sender → nexus → Redis → nexus → echo)", b.runHostRedis),
				oneRow(keyHostReplicas, "host, over Redis, two replicas (sender → nexus A → Redis → nexus B → echo)", b.runHostReplicas))
		}
	}
	if cfg.runsFanout() {
		if !cfg.runsMessaging() { // the point-to-point rates the fan-out compares with
			scenarios = append(scenarios, oneRow(keyHostMem, "host, in memory (sender → nexus → echo)", b.runHostMemory))
		}
		scenarios = append(scenarios, oneRow(keyFanoutMem, fmt.Sprintf("fan-out, in memory (emitter → nexus → %d subscribers)", fanoutSubscribers), b.runFanoutMemory))
		if !cfg.skipRedis {
			if !cfg.runsMessaging() {
				scenarios = append(scenarios, oneRow(keyHostRedis, "host, over Redis (sender → nexus → Redis → nexus → echo)", b.runHostRedis))
			}
			scenarios = append(scenarios, oneRow(keyFanoutRedis, fmt.Sprintf("fan-out, over Redis (emitter → nexus → Redis → nexus → %d subscribers)", fanoutSubscribers), b.runFanoutRedis))
		}
	}
	if cfg.runsReads() {
		scenarios = append(scenarios, scenario{
			name: fmt.Sprintf("REST and Connect reads (%d plugins installed, %d in flight; then %s connections)", readPlugins, readConcurrency, thousands(readConnections)),
			rows: readRows(),
			run:  b.runReads,
		})
	}
	if cfg.runsIdle() {
		scenarios = append(scenarios, scenario{name: fmt.Sprintf("idle plugin sessions (%d)", idleSessions), rows: idleRows(), run: b.runIdle})
	}
	runs := make([][][]Measurement, len(scenarios)) // runs[i][j]: scenario i's row j, by round
	errs := make([]error, len(scenarios))
	for i, s := range scenarios {
		runs[i] = make([][]Measurement, len(s.rows))
	}
	for round := 1; round <= cfg.rounds; round++ {
		for i, s := range scenarios {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if errs[i] != nil {
				continue // failed in an earlier round
			}
			fmt.Fprintf(stderr, "nexus-bench: round %d/%d: %s ...\n", round, cfg.rounds, s.name)
			start := time.Now()
			ms, err := s.run(ctx)
			if err == nil && len(ms) != len(s.rows) {
				err = fmt.Errorf("%d measurements for %d rows", len(ms), len(s.rows))
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				fmt.Fprintf(stderr, "nexus-bench: %s FAILED: %v\n", s.name, err)
				errs[i] = err
				continue
			}
			for j, m := range ms {
				fmt.Fprintf(stderr, "nexus-bench: %s: %s (%.1fs)\n", s.rows[j].name, progressFigures(s.rows[j].key, m), time.Since(start).Seconds())
				runs[i][j] = append(runs[i][j], m)
			}
		}
	}
	for i, s := range scenarios {
		for j, r := range s.rows {
			rep.add(r.key, r.name, runs[i][j], errs[i])
		}
	}
	if rep.Reads != nil {
		rep.Reads.ServerLimits = b.readsLimits
	}
	rep.computeRatios()
	return rep, nil
}

// progressFigures are a measurement's figures for its progress line.
func progressFigures(key string, m Measurement) string {
	if isIdleKey(key) {
		return fmt.Sprintf("%.1f KiB per session (Go heap %.1f + stacks %.1f), RSS %.1f KiB",
			m.KiBPerSession, m.HeapKiBPerSession, m.StackKiBPerSession, m.RSSKiBPerSession)
	}
	if isReadKey(key) {
		return fmt.Sprintf("%.0f req/s, p50 %.0f µs, p99 %.0f µs, server CPU %.0f µs/req (%d in flight; slices: %d)", m.Throughput, m.LoadedP50us, m.LoadedP99us, m.ServerCPUus, m.InFlight, m.Slices)
	}
	if isFanoutKey(key) {
		return fmt.Sprintf("%.0f deliveries/s, %.0f events/s to %d subscribers; CPU per delivery: host %.1f µs, plugins %.1f µs; setup %.1fs (install %.1fs, tokens %.1fs, connect %.1fs)",
			m.Throughput, m.EventsPerSecond, m.Subscribers, m.HostCPUPerDeliveryUS, m.PluginsCPUPerDeliveryUS, m.SetupSeconds, m.InstallSeconds, m.TokenSeconds, m.ConnectSeconds)
	}
	return fmt.Sprintf("p50 %.0f µs, p99 %.0f µs, %.0f msg/s", m.P50us, m.P99us, m.Throughput)
}

// buildNexus builds the server binary into the run's temp dir.
func (b *bench) buildNexus(ctx context.Context) (string, error) {
	out := filepath.Join(b.tmp, "nexus")
	fmt.Fprintln(b.stderr, "nexus-bench: building the nexus server (go build ./server/cmd/nexus) ...")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/nexus-platform/nexus/server/cmd/nexus")
	cmd.Stdout, cmd.Stderr = b.stderr, b.stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the nexus server (or pass -nexus): %w", err)
	}
	return out, nil
}

// loadArgs are the flags that pass the method's parameters to a measuring child.
func (b *bench) loadArgs() []string {
	return []string{
		"-payload", fmt.Sprint(b.cfg.payload),
		"-duration", b.cfg.duration.String(),
		"-warmup", b.cfg.warmup.String(),
		"-concurrency", fmt.Sprint(concurrency),
	}
}

// measureTimeout bounds the wait for a measuring child's result.
func (b *bench) measureTimeout() time.Duration {
	return b.cfg.warmup + 2*b.cfg.duration + settleTimeout + 2*stallTimeout
}
