package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nexus-platform/nexus/clients/go/plugin"
)

// The idle sessions scenario (issue 15): the memory a server spends per connected, idle
// plugin session. Each phase starts `nexus serve` of its own (in memory, fresh data
// directory, GOGC=10 so that collections come often) and installs one external plugin,
// bench-idle, then runs a child process of its own; the phase's server and child are
// stopped before the next phase:
//
//   - baseline: idleSessions grpc-go connections to the server, each having made one call
//     (grpc.health.v1.Health/Check, served by net/http) and then left idle: what an idle
//     HTTP/2 connection costs the server;
//   - sessions: idleSessions instances of bench-idle, each a plugin.Run of the Go plugin
//     SDK (clients/go/plugin) with an instance id of its own: the path plugins use, a
//     grpc-go connection per instance served by the host's grpc-go server. Once every
//     instance has its welcome (OnStart) nothing more is sent but what the SDK and the
//     host exchange on their own (health checks, keepalive pings).
//
// Each phase's figure is the growth of the server's live Go heap (as the first collection
// to end after the read found it: settledMemory) plus goroutine stacks, read from its
// /metrics before the child starts and idleSettle after it is ready, divided by
// idleSessions; the growth of its resident memory is reported beside it. (With one server
// for both phases, the sessions' "before" was read while the baseline's 1,000 connections
// were still being torn down, which took 5 to 19 KiB per session off their figure,
// differently in every round.) The target is absolute (targetIdleKiB per session, the
// session's connection included). The baselines, with no target, give the ratio of a
// session to an idle HTTP/2 connection and its difference from an idle bare grpc-go stream
// (idlegrpc.go), whose phase has a server process of its own instead of nexus serve.

// The rows of the idle scenario.
const (
	keyIdleConns    = "idle_http2_connections"
	keyIdleStreams  = "idle_grpc_streams"
	keyIdleSessions = "idle_plugin_sessions"
)

// isIdleKey reports whether key is a row of the idle scenario, whose figure is memory per
// session.
func isIdleKey(key string) bool {
	return key == keyIdleConns || key == keyIdleStreams || key == keyIdleSessions
}

const (
	// idlePluginID is the plugin whose instances are the idle sessions.
	idlePluginID = "bench-idle"
	// idleSessions is how many sessions (and baseline connections) each phase opens.
	idleSessions = 1000
	// idleSettle is how long a phase waits, once its child is ready, before the server's
	// memory is read.
	idleSettle = 2 * time.Second
	// idleOpenTimeout bounds the opening of a phase's sessions.
	idleOpenTimeout = 2 * time.Minute
	// targetIdleKiB is the target: KiB of server memory per idle plugin session,
	// at most.
	targetIdleKiB = 32
)

// The child roles of the idle scenario.
const (
	roleIdleConns   = "idle-conns"   // baseline: idle grpc-go connections
	roleIdlePlugins = "idle-plugins" // idle plugin instances on the Go SDK
)

// idleRows are the idle scenario's rows, the baseline first.
func idleRows() []row {
	return []row{
		{keyIdleConns, fmt.Sprintf("idle HTTP/2 connection (%d, one gRPC call each)", idleSessions)},
		{keyIdleStreams, fmt.Sprintf("idle grpc-go stream, bare (%d, host's server options, a connection each)", idleSessions)},
		{keyIdleSessions, fmt.Sprintf("idle plugin session (%d Go SDK instances, a connection each)", idleSessions)},
	}
}

// runIdle runs the idle scenario: the two baselines' phases, then the sessions phase, each
// on a server of its own.
func (b *bench) runIdle(ctx context.Context) (ms []Measurement, err error) {
	ps := newProcs(b.stderr)
	defer ps.stopAll()
	for _, r := range idleRows() {
		var m Measurement
		if r.key == keyIdleStreams {
			m, err = b.idleGRPCPhase(ctx, ps, r.key)
		} else {
			m, err = b.idleServerPhase(ctx, ps, r.key, r.key == keyIdleConns)
		}
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// idleServerPhase starts a server, installs bench-idle, runs one phase (the baseline's
// connections when baseline is set, else the plugin's sessions) and stops the server.
func (b *bench) idleServerPhase(ctx context.Context, ps *procs, name string, baseline bool) (m Measurement, err error) {
	h, err := b.startHost(ctx, ps, hostOptions{env: []string{"GOGC=10"}})
	if err != nil {
		return Measurement{}, err
	}
	defer h.proc.stop()
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, h.logTail())
		}
	}()
	if err := h.installExternal(ctx, idlePluginID); err != nil {
		return Measurement{}, err
	}
	token, err := h.pluginToken(ctx, b.cfg.nexus, idlePluginID)
	if err != nil {
		return Measurement{}, err
	}
	cmd := b.pluginCmd(roleIdlePlugins, h, idlePluginID, token, "-n", strconv.Itoa(idleSessions))
	if baseline {
		cmd = b.selfCmd(roleIdleConns, "-host", h.url, "-n", strconv.Itoa(idleSessions))
	}
	return idlePhase(ctx, ps, name, cmd, h.url+"/metrics", h.proc.cmd.Process.Pid)
}

// idlePhase runs one phase's child and measures what its idleSessions sessions (or
// connections) cost the server, then stops the child.
func idlePhase(ctx context.Context, ps *procs, name string, cmd *exec.Cmd, metricsURL string, pid int) (Measurement, error) {
	before, err := settledMemory(ctx, metricsURL, time.Now())
	if err != nil {
		return Measurement{}, err
	}
	rssBefore, err := rssOf(pid)
	if err != nil {
		return Measurement{}, err
	}
	child, err := ps.start(name, cmd, stopGrace)
	if err != nil {
		return Measurement{}, err
	}
	defer child.stop()
	if err := child.readJSON(ctx, idleOpenTimeout, &ready{}); err != nil {
		return Measurement{}, err
	}
	if err := sleep(ctx, idleSettle); err != nil {
		return Measurement{}, err
	}
	after, err := settledMemory(ctx, metricsURL, time.Now())
	if err != nil {
		return Measurement{}, err
	}
	rssAfter, err := rssOf(pid)
	if err != nil {
		return Measurement{}, err
	}
	if !child.running() {
		return Measurement{}, fmt.Errorf("%s exited while measured: %s", name, exitText(child.waitErr))
	}
	return idleMeasurement(idleSessions, after.heap-before.heap, after.stacks-before.stacks, rssAfter-rssBefore), nil
}

// idleMeasurement is the figure of n sessions that grew the server's live heap by
// heapBytes, its goroutine stacks by stackBytes and its resident memory by rssBytes.
func idleMeasurement(n int, heapBytes, stackBytes, rssBytes int64) Measurement {
	perSession := func(b int64) float64 { return float64(b) / 1024 / float64(n) }
	return Measurement{
		Sessions:           n,
		KiBPerSession:      perSession(heapBytes + stackBytes),
		HeapKiBPerSession:  perSession(heapBytes),
		StackKiBPerSession: perSession(stackBytes),
		RSSKiBPerSession:   perSession(rssBytes),
	}
}

// goMemory is what a server's Go runtime holds, from its /metrics.
type goMemory struct {
	heap     int64   // go_gc_heap_live_bytes: the heap live at the end of the last collection
	stacks   int64   // go_memstats_stack_inuse_bytes: goroutine stacks
	lastGCAt float64 // go_memstats_last_gc_time_seconds: when the last collection ended (Unix)
}

// settledMemoryTimeout bounds settledMemory's wait for a collection.
const settledMemoryTimeout = time.Minute

// settledMemory reads a server's Go memory from its metrics (metricsURL) once a
// collection has ended after since, so that its live heap counts what the server holds
// then: neither garbage waiting for a collection (as the allocated heap,
// go_memstats_heap_alloc_bytes, does: that made the figure depend on when the last
// collection ran, 35 to 51 KiB per session in two runs of the same code) nor less than it
// holds (a live heap marked before the sessions were all open). It polls the metrics every
// pollEvery; each read makes a little garbage, so a collection comes soon (GOGC=10) even
// in an idle server.
func settledMemory(ctx context.Context, metricsURL string, since time.Time) (goMemory, error) {
	const pollEvery = 100 * time.Millisecond
	deadline := time.Now().Add(settledMemoryTimeout)
	for {
		m, err := readGoMemory(ctx, metricsURL)
		if err != nil {
			return goMemory{}, err
		}
		if m.lastGCAt >= float64(since.UnixNano())/1e9 {
			return m, nil
		}
		if time.Now().After(deadline) {
			return goMemory{}, fmt.Errorf("no garbage collection ended in the server within %s of %s", settledMemoryTimeout, since.Format(time.TimeOnly))
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return goMemory{}, err
		}
	}
}

// readGoMemory reads a server's Go memory from its metrics (metricsURL, a Prometheus text
// exposition).
func readGoMemory(ctx context.Context, metricsURL string) (goMemory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return goMemory{}, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return goMemory{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return goMemory{}, fmt.Errorf("GET %s: %s", metricsURL, res.Status)
	}
	return parseGoMemory(res.Body)
}

// parseGoMemory reads a goMemory from a Prometheus text exposition.
func parseGoMemory(r io.Reader) (goMemory, error) {
	const (
		heapLive = "go_gc_heap_live_bytes"
		stacks   = "go_memstats_stack_inuse_bytes"
		lastGC   = "go_memstats_last_gc_time_seconds"
	)
	values := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || (name != heapLive && name != stacks && name != lastGC) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return goMemory{}, fmt.Errorf("/metrics: %s: %w", name, err)
		}
		values[name] = v
	}
	if err := sc.Err(); err != nil {
		return goMemory{}, err
	}
	for _, name := range []string{heapLive, stacks, lastGC} {
		if _, ok := values[name]; !ok {
			return goMemory{}, fmt.Errorf("/metrics lacks %s", name)
		}
	}
	return goMemory{heap: int64(values[heapLive]), stacks: int64(values[stacks]), lastGCAt: values[lastGC]}, nil
}

// rssOf reads a process's resident memory in bytes (Linux).
func rssOf(pid int) (int64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// idleConnsMain is the baseline's child: n grpc-go connections to -host, each makes one
// Health/Check call; then it says ready and holds them until it is stopped.
func idleConnsMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(roleIdleConns, flag.ContinueOnError)
	host := fs.String("host", "", "the server's URL")
	n := fs.Int("n", idleSessions, "connections")
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	u, err := url.Parse(*host)
	if err != nil {
		return err
	}
	for i := 0; i < *n; i++ {
		conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, readyTimeout)
		_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil {
			return fmt.Errorf("connection %d: health check: %w", i, err)
		}
	}
	if err := writeJSON(out, ready{}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// idlePluginsMain is the sessions' child: n instances of the plugin, each a plugin.Run
// with instance id idle-<i>; it says ready once every one has its welcome, and holds them
// until it is stopped. An instance whose Run ends before that fails the child.
func idlePluginsMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(roleIdlePlugins, flag.ContinueOnError)
	var pf pluginFlags
	pf.register(fs)
	n := fs.Int("n", idleSessions, "instances")
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var started atomic.Int64
	all := make(chan struct{})
	failed := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; i < *n; i++ {
		wg.Go(func() {
			err := plugin.Run(ctx, plugin.Plugin{
				Version: "1.0.0",
				OnStart: func(context.Context, *plugin.Session) error {
					if started.Add(1) == int64(*n) {
						close(all)
					}
					return nil
				},
			}, pf.options(plugin.WithInstanceID("idle-"+strconv.Itoa(i)), plugin.WithLogLevel(slog.LevelWarn))...)
			if ctx.Err() == nil {
				select {
				case failed <- fmt.Errorf("instance %d ended: %v", i, err):
				default:
				}
			}
		})
	}
	select {
	case <-all:
	case err := <-failed:
		return err
	case <-ctx.Done():
		return nil
	}
	if err := writeJSON(out, ready{}); err != nil {
		return err
	}
	select {
	case err := <-failed:
		return err
	case <-ctx.Done():
		return nil
	}
}

// writeIdleMarkdown prints the idle scenario's table.
func (r *report) writeIdleMarkdown(w io.Writer, rows []scenarioOut) {
	fmt.Fprintf(w, "**Idle plugin sessions** · a fresh server per phase (GOGC=10), %d sessions or connections per phase · server live Go heap (after a collection) + goroutine stacks (from /metrics) and resident memory, growth per session · median of %d rounds\n\n",
		idleSessions, r.Rounds)
	fmt.Fprintln(w, "| scenario | KiB per session (Go heap + stacks) | heap KiB | stacks KiB | RSS KiB per session | vs target |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|")
	for _, s := range rows {
		if s.Result == nil {
			fmt.Fprintf(w, "| %s | – | – | – | – | **failed to run**: %s |\n", s.Name, oneLine(s.Error, 160))
			continue
		}
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | %.1f | %s |\n", s.Name, s.Result.KiBPerSession,
			s.Result.HeapKiBPerSession, s.Result.StackKiBPerSession, s.Result.RSSKiBPerSession, r.ratioCell(s.Key))
	}
}
