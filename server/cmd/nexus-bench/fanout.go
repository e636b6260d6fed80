package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// The fan-out scenarios: `nexus serve` (in memory, or over Redis with a redis-server of its
// own) with fanoutSubscribers external plugins subscribed to one event type and one
// emitter plugin, all installed through the REST API; every plugin is a session of its own
// on the Go plugin SDK, with its own token, all of them in one child process
// (fanout-plugins). The emitter emits events of that type with fanoutEmitsInFlight Emit
// calls in flight; every subscriber counts the events it receives intact, once each. The
// figure is deliveries per second: the sum over the subscribers of the events they got,
// per second of wall time.

// Parameters of the fan-out scenarios.
const (
	// fanoutSubscribers is the number of subscribing plugins.
	fanoutSubscribers = 1000
	// fanoutEmitterID is the emitting plugin.
	fanoutEmitterID = "bench-emitter"
	// fanoutEventType is the one event type emitted and subscribed to.
	fanoutEventType = "bench.fanout"
	// fanoutEmitsInFlight is the number of Emit calls in flight.
	fanoutEmitsInFlight = 16
	// fanoutBacklog bounds the events emitted but not yet received by the slowest
	// subscriber: the host accepts an event once it is queued in every inbox, so without a
	// bound the inboxes would fill (1,000 inboxes of up to 10,000 entries) and the host
	// would drop recipients. With it, the emitter runs as fast as the subscribers take the
	// events, with fanoutBacklog events queued per inbox at most.
	fanoutBacklog = 128
	// fanoutInstallers is the number of install requests in flight during the setup.
	fanoutInstallers = 32
	// fanoutDrainTimeout bounds the wait, after the last emit, for every subscriber to
	// have received every event.
	fanoutDrainTimeout = 60 * time.Second
	// fanoutConnectTimeout bounds the wait for every session to have started.
	fanoutConnectTimeout = 120 * time.Second
	// fanoutActiveTimeout bounds the wait, after that, for the host to make every plugin
	// active.
	fanoutActiveTimeout = 60 * time.Second
)

// fanoutSubscriberID is the id of the i-th subscriber (0-based): bench-sub-0000 ...
func fanoutSubscriberID(i int) string { return fmt.Sprintf("bench-sub-%04d", i) }

// runFanoutMemory runs the fan-out scenario on the in-memory bus.
func (b *bench) runFanoutMemory(ctx context.Context) (Measurement, error) {
	return b.runFanout(ctx, "")
}

// runFanoutRedis runs the fan-out scenario on the Redis Streams bus, with a redis-server
// of its own.
func (b *bench) runFanoutRedis(ctx context.Context) (Measurement, error) {
	return overRedis(ctx, b.runFanout)
}

// runFanout starts the server, installs the plugins and gives them tokens (the setup,
// timed), runs the fanout-plugins child and returns its measurement.
func (b *bench) runFanout(ctx context.Context, redisURL string) (m Measurement, err error) {
	ps := newProcs(b.stderr)
	defer ps.stopAll()
	h, err := b.startHost(ctx, ps, hostOptions{redisURL: redisURL})
	if err != nil {
		return m, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, h.logTail())
		}
	}()

	start := time.Now()
	ids := make([]string, 0, fanoutSubscribers+1)
	ids = append(ids, fanoutEmitterID)
	for i := range fanoutSubscribers {
		ids = append(ids, fanoutSubscriberID(i))
	}
	if err := h.installAll(ctx, ids, fanoutInstallers); err != nil {
		return m, err
	}
	installed := time.Now()
	fmt.Fprintf(b.stderr, "nexus-bench: fan-out: %d plugins installed and enabled in %.1fs\n", len(ids), installed.Sub(start).Seconds())
	tokens, err := h.pluginTokens(ctx, ids)
	if err != nil {
		return m, err
	}
	tokenFile := filepath.Join(b.tmp, fmt.Sprintf("fanout-tokens-%d", time.Now().UnixNano()))
	if err := writeTokenFile(tokenFile, ids, tokens); err != nil {
		return m, err
	}
	defer os.Remove(tokenFile)
	tokened := time.Now()

	args := append([]string{"-host", h.url, "-tokens", tokenFile, "-host-pid", fmt.Sprint(h.proc.cmd.Process.Pid)}, b.loadArgs()...)
	cmd := b.selfCmd(roleFanoutPlugins, args...)
	goAhead, err := cmd.StdinPipe()
	if err != nil {
		return m, err
	}
	defer goAhead.Close()
	child, err := ps.start("fanout-plugins", cmd, stopGrace)
	if err != nil {
		return m, err
	}
	var rd fanoutReady
	if err := child.readJSON(ctx, fanoutConnectTimeout, &rd); err != nil {
		return m, err
	}
	// The host makes an external plugin active once its first instance reports healthy,
	// after the session started: the measurement waits until all of them are, so that the
	// activations do not run during it. Events go to enabled plugins whatever their status,
	// so a plugin left inactive (its first health check timed out on a loaded machine) is
	// still a subscriber: it is reported, not a failure.
	if active, err := h.waitActive(ctx, len(ids)); err != nil {
		return m, err
	} else if active < len(ids) {
		fmt.Fprintf(b.stderr, "nexus-bench: fan-out: only %d of %d plugins became active within %v; measuring anyway (events go to enabled plugins)\n", active, len(ids), fanoutActiveTimeout)
	}
	connected := time.Now()
	fmt.Fprintf(b.stderr, "nexus-bench: fan-out: %d sessions connected and active after %.1fs more; measuring\n", len(ids), connected.Sub(tokened).Seconds())
	if _, err := io.WriteString(goAhead, "go\n"); err != nil {
		return m, fmt.Errorf("tell fanout-plugins to start: %w", err)
	}
	if err := child.readJSON(ctx, b.measureTimeout()+fanoutDrainTimeout, &m); err != nil {
		return m, err
	}
	m.InstallSeconds = installed.Sub(start).Seconds()
	m.TokenSeconds = tokened.Sub(installed).Seconds()
	m.ConnectSeconds = connected.Sub(tokened).Seconds()
	m.SetupSeconds = connected.Sub(start).Seconds()
	return m, nil
}

// fanoutReady is the first report of the fanout-plugins child: every session started.
type fanoutReady struct {
	Sessions int `json:"sessions"`
}

// waitActive waits until n plugins are active on h, at most fanoutActiveTimeout, and
// returns how many are.
func (h *hostServer) waitActive(ctx context.Context, n int) (int, error) {
	deadline := time.Now().Add(fanoutActiveTimeout)
	for {
		var list struct {
			Summary struct {
				Active int `json:"active"`
			} `json:"summary"`
		}
		// The search matches no plugin: the summary counts them all, and the list is empty.
		err := h.getData(ctx, pathPlugins+"?search=no-such-plugin", &list)
		if err == nil && list.Summary.Active == n {
			return n, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return 0, fmt.Errorf("%s: the plugin list: %w", h.name, err)
			}
			return list.Summary.Active, nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// installAll installs the fan-out plugins (enabled) with n install requests in flight.
// The emitter is ids[0].
func (h *hostServer) installAll(ctx context.Context, ids []string, n int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan string)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for id := range next {
				if err := h.installFanoutPlugin(ctx, id, id == fanoutEmitterID); err != nil {
					cancel(err)
				}
			}
		})
	}
	for _, id := range ids {
		select {
		case next <- id:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// fanoutManifest is the manifest of a fan-out plugin: the emitter may emit the event type,
// a subscriber subscribes to it (in its manifest, so that the host routes the events to it
// from the moment it is enabled).
func fanoutManifest(id string, emitter bool) map[string]any {
	m := map[string]any{
		"id": id, "name": "Benchmark " + id, "version": "1.0.0",
		"description": "nexus-bench fan-out plugin", "category": "testing",
		"external": true, "nexus_version": ">=1.0.0",
	}
	if emitter {
		m["permissions"] = []string{"events:emit"}
		m["events"] = map[string]any{"emits": []string{fanoutEventType}}
	} else {
		m["permissions"] = []string{"events:subscribe"}
		m["events"] = map[string]any{"subscribes": []string{fanoutEventType}}
	}
	return m
}

// installFanoutPlugin installs and enables one fan-out plugin in one request.
func (h *hostServer) installFanoutPlugin(ctx context.Context, id string, emitter bool) error {
	pkg, err := manifestPackage(fanoutManifest(id, emitter))
	if err != nil {
		return err
	}
	req := map[string]any{"source": "file", "package_data": pkg, "auto_enable": true}
	if err := h.mustOK(ctx, http.MethodPost, "/api/v1/plugins/install", req); err != nil {
		return fmt.Errorf("install %s: %w", id, err)
	}
	return nil
}

// pluginTokens creates a plugin token for each of ids in h's database, as `nexus token
// create` does (which works while the server runs), but in this process: a thousand runs
// of the CLI would take longer than the installs.
func (h *hostServer) pluginTokens(ctx context.Context, ids []string) (map[string]string, error) {
	if h.databaseURL != "" {
		return nil, errors.New("plugin tokens: only the SQLite store is supported here")
	}
	st, err := storesqlite.Open(ctx, filepath.Join(h.dataDir, storesqlite.FileName))
	if err != nil {
		return nil, fmt.Errorf("open the server's database: %w", err)
	}
	defer st.Close()
	svc := identity.New(st)
	tokens := make(map[string]string, len(ids))
	for _, id := range ids {
		plain, _, err := svc.Create(ctx, "nexus-bench "+id, store.RolePlugin, id)
		if err != nil {
			return nil, fmt.Errorf("create the token of %s: %w", id, err)
		}
		tokens[id] = plain
	}
	return tokens, nil
}

// writeTokenFile writes "id token" lines, readable by this user only (tokens never go in
// arguments, which anyone may read in ps).
func writeTokenFile(path string, ids []string, tokens map[string]string) error {
	var sb strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&sb, "%s %s\n", id, tokens[id])
	}
	return os.WriteFile(path, []byte(sb.String()), 0o600)
}

// readTokenFile reads what writeTokenFile wrote, in order.
func readTokenFile(path string) (ids []string, tokens map[string]string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	tokens = map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, tok, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok || id == "" || tok == "" {
			return nil, nil, fmt.Errorf("%s: malformed line %q", path, sc.Text())
		}
		if _, dup := tokens[id]; dup {
			return nil, nil, fmt.Errorf("%s: %s listed twice", path, id)
		}
		ids = append(ids, id)
		tokens[id] = tok
	}
	return ids, tokens, sc.Err()
}

// fanoutPluginsMain is the fanout-plugins child: it runs the emitter and every subscriber
// listed in the token file as sessions of their own, reports fanoutReady once every
// session started, waits for a line on stdin (the host made them all active), sends a first
// event to every subscriber, then measures and reports its Measurement.
func fanoutPluginsMain(ctx context.Context, args []string, out io.Writer) error {
	return fanoutPlugins(ctx, args, os.Stdin, out)
}

func fanoutPlugins(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet(roleFanoutPlugins, flag.ContinueOnError)
	host := fs.String("host", "", "the server's URL")
	tokenPath := fs.String("tokens", "", "the file of \"id token\" lines (the emitter, then the subscribers)")
	hostPID := fs.Int("host-pid", 0, "the server's process id, whose CPU time is measured (Linux)")
	var l loadFlags
	l.register(fs)
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	ids, tokens, err := readTokenFile(*tokenPath)
	if err != nil {
		return err
	}
	if len(ids) < 2 || ids[0] != fanoutEmitterID {
		return fmt.Errorf("%s: want the emitter %s first, then the subscribers", *tokenPath, fanoutEmitterID)
	}
	blob := payloadText(l.payload)
	subs := newFanoutCounters(len(ids)-1, blob)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	runErrs := make(chan error, len(ids))
	var startedN atomic.Int64
	allStarted := make(chan struct{})
	started := func() {
		if startedN.Add(1) == int64(len(ids)) {
			close(allStarted)
		}
	}
	emitter := make(chan *plugin.Session, 1)
	run := func(id string, p plugin.Plugin) {
		wg.Go(func() {
			err := plugin.Run(runCtx, p, plugin.WithHost(*host), plugin.WithToken(tokens[id]), plugin.WithPluginID(id))
			if err != nil && runCtx.Err() == nil {
				runErrs <- fmt.Errorf("%s: plugin.Run: %w", id, err)
			}
		})
	}
	run(ids[0], plugin.Plugin{Version: "1.0.0", OnStart: func(_ context.Context, s *plugin.Session) error {
		emitter <- s
		started()
		return nil
	}})
	for i, id := range ids[1:] {
		run(id, plugin.Plugin{
			Version: "1.0.0",
			OnStart: func(context.Context, *plugin.Session) error { started(); return nil },
			OnEvent: func(_ context.Context, e plugin.Event) error { return subs.receive(i, e) },
		})
	}
	stop := func(err error) error {
		cancel()
		wg.Wait()
		select {
		case runErr := <-runErrs:
			if err == nil {
				err = runErr
			}
		default:
		}
		return err
	}

	select {
	case <-allStarted:
	case err := <-runErrs:
		return stop(err)
	case <-time.After(fanoutConnectTimeout):
		return stop(fmt.Errorf("%d of %d sessions started within %v", startedN.Load(), len(ids), fanoutConnectTimeout))
	case <-ctx.Done():
		return stop(ctx.Err())
	}
	if err := writeJSON(out, fanoutReady{Sessions: len(ids)}); err != nil {
		return stop(err)
	}
	goAhead := make(chan error, 1)
	go func() { // ends with the process when stdin stays open
		_, err := bufio.NewReader(in).ReadString('\n')
		goAhead <- err
	}()
	select {
	case err := <-goAhead:
		if err != nil {
			return stop(fmt.Errorf("waiting for the go-ahead on stdin: %w", err))
		}
	case err := <-runErrs:
		return stop(err)
	case <-ctx.Done():
		return stop(ctx.Err())
	}
	em := &fanoutEmitter{s: <-emitter, subs: subs, blob: blob, failed: runErrs, hostPID: *hostPID}
	// The first event, emitted alone, reaches every subscriber before the measurement.
	if err := em.settle(ctx); err != nil {
		return stop(err)
	}
	m, err := em.measure(ctx, l)
	if err := stop(err); err != nil {
		return err
	}
	return writeJSON(out, m)
}

// fanoutCounters are the subscribers' counts. Each subscriber records the sequence numbers
// it received (so that a duplicate is not counted twice) and counts, apart, the events
// that did not arrive intact.
type fanoutCounters struct {
	blob string
	subs []fanoutSubscriber
	// total is the sum of the subscribers' counts.
	total atomic.Int64
	// bad counts the events not received intact (wrong type, payload or sequence number);
	// dups the duplicates. Either fails the measurement.
	bad, dups atomic.Int64
}

// fanoutSubscriber is one subscriber's record; handlers of one subscriber run concurrently.
type fanoutSubscriber struct {
	count atomic.Int64 // distinct events received intact
	mu    sync.Mutex   // guards seen
	seen  []bool       // by sequence number
}

func newFanoutCounters(n int, blob string) *fanoutCounters {
	return &fanoutCounters{blob: blob, subs: make([]fanoutSubscriber, n)}
}

// receive records that subscriber i received e. It always acknowledges e: a bad or
// duplicate event is counted, and fails the measurement.
func (c *fanoutCounters) receive(i int, e plugin.Event) error {
	seq, ok := fanoutSeq(e, c.blob)
	if !ok {
		c.bad.Add(1)
		return nil
	}
	s := &c.subs[i]
	s.mu.Lock()
	if seq >= len(s.seen) {
		s.seen = append(s.seen, make([]bool, seq+1-len(s.seen)+64)...)
	}
	dup := s.seen[seq]
	s.seen[seq] = true
	s.mu.Unlock()
	if dup {
		c.dups.Add(1)
		return nil
	}
	s.count.Add(1)
	c.total.Add(1)
	return nil
}

// fanoutSeq is the sequence number an event carries, if it arrived intact: the event type,
// the payload and a sequence number below maxFanoutSeq.
func fanoutSeq(e plugin.Event, blob string) (int, bool) {
	if e.Type != fanoutEventType {
		return 0, false
	}
	if got, _ := e.Data["blob"].(string); got != blob {
		return 0, false
	}
	f, ok := e.Data["seq"].(float64)
	if !ok || f < 0 || f >= maxFanoutSeq || f != float64(int(f)) {
		return 0, false
	}
	return int(f), true
}

// maxFanoutSeq bounds the sequence numbers a subscriber keeps track of.
const maxFanoutSeq = 1 << 24

// min is the smallest count of a subscriber.
func (c *fanoutCounters) min() int64 {
	low := int64(-1)
	for i := range c.subs {
		if n := c.subs[i].count.Load(); low < 0 || n < low {
			low = n
		}
	}
	return low
}

// check fails when an event arrived damaged or twice.
func (c *fanoutCounters) check() error {
	if n := c.bad.Load(); n > 0 {
		return fmt.Errorf("%d deliveries did not arrive intact", n)
	}
	if n := c.dups.Load(); n > 0 {
		return fmt.Errorf("%d deliveries reached a subscriber's handler twice", n)
	}
	return nil
}

// fanoutEmitter emits the events and measures.
type fanoutEmitter struct {
	s       *plugin.Session
	subs    *fanoutCounters
	blob    string
	failed  <-chan error // a session's plugin.Run failed
	hostPID int          // the server's process, for its CPU time; 0: not measured

	next     atomic.Int64 // the next sequence number
	accepted atomic.Int64 // events the host accepted for every subscriber
}

// emit emits the event with sequence number seq and checks that it went to every
// subscriber.
func (em *fanoutEmitter) emit(ctx context.Context, seq int64) error {
	res, err := em.s.Emit(ctx, fanoutEventType, map[string]any{"blob": em.blob, "seq": seq})
	if err != nil {
		return fmt.Errorf("emit: %w", err)
	}
	if len(res.Recipients) != len(em.subs.subs) {
		return fmt.Errorf("event %s went to %d recipients, not %d", res.ID, len(res.Recipients), len(em.subs.subs))
	}
	em.accepted.Add(1)
	return nil
}

// settle emits one event and waits until every subscriber received it.
func (em *fanoutEmitter) settle(ctx context.Context) error {
	if err := em.emit(ctx, em.next.Add(1)-1); err != nil {
		return err
	}
	return em.drain(ctx, settleTimeout)
}

// drain waits until every subscriber received every accepted event, at most timeout.
func (em *fanoutEmitter) drain(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	want := em.accepted.Load()
	for {
		if err := em.subs.check(); err != nil {
			return err
		}
		low := em.subs.min()
		if low == want {
			return nil
		}
		if low > want {
			return fmt.Errorf("a subscriber counted %d events of %d emitted", low, want)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v the slowest subscriber has %d of %d events (%d deliveries of %d in all)",
				timeout, low, want, em.subs.total.Load(), want*int64(len(em.subs.subs)))
		}
		select {
		case err := <-em.failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// run emits with fanoutEmitsInFlight calls in flight until d has passed, each new event
// waiting until the slowest subscriber is less than fanoutBacklog events behind.
func (em *fanoutEmitter) run(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	end := time.Now().Add(d)
	var floor atomic.Int64 // the slowest subscriber's count, refreshed by the gate below
	floor.Store(em.subs.min())
	gateDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // refreshes floor every 200 µs until the emitters are done
		t := time.NewTicker(200 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-gateDone:
				return
			case <-t.C:
				floor.Store(em.subs.min())
			}
		}
	})
	var emitters sync.WaitGroup
	for range fanoutEmitsInFlight {
		emitters.Go(func() {
			for ctx.Err() == nil && time.Now().Before(end) {
				seq := em.next.Add(1) - 1
				for seq-floor.Load() >= fanoutBacklog {
					if ctx.Err() != nil || !time.Now().Before(end) {
						return // seq is never emitted: the counts compare with accepted
					}
					time.Sleep(100 * time.Microsecond)
				}
				if err := em.emit(ctx, seq); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	emitters.Wait()
	close(gateDone)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := em.subs.check(); err != nil {
		return err
	}
	return ctx.Err()
}

// measure warms up, then emits for l.duration and counts the deliveries of that phase, then
// waits for every subscriber to have received every event.
func (em *fanoutEmitter) measure(ctx context.Context, l loadFlags) (Measurement, error) {
	m := Measurement{Subscribers: len(em.subs.subs), InFlight: fanoutEmitsInFlight}
	if l.warmup > 0 {
		if err := em.run(ctx, l.warmup); err != nil {
			return m, fmt.Errorf("warm-up: %w", err)
		}
	}
	hostCPU0, hostOK := cpuOf(em.hostPID)
	ownCPU0, ownOK := cpuOf(os.Getpid())
	d0, e0, t0 := em.subs.total.Load(), em.accepted.Load(), time.Now()
	if err := em.run(ctx, l.duration); err != nil {
		return m, fmt.Errorf("fan-out: %w", err)
	}
	d1, e1, t1 := em.subs.total.Load(), em.accepted.Load(), time.Now()
	hostCPU1, hostOK1 := cpuOf(em.hostPID)
	ownCPU1, ownOK1 := cpuOf(os.Getpid())
	if d := d1 - d0; d > 0 {
		if hostOK && hostOK1 && em.hostPID > 0 {
			m.HostCPUPerDeliveryUS = float64(hostCPU1-hostCPU0) / float64(time.Microsecond) / float64(d)
		}
		if ownOK && ownOK1 {
			m.PluginsCPUPerDeliveryUS = float64(ownCPU1-ownCPU0) / float64(time.Microsecond) / float64(d)
		}
	}
	m.WarmupRoundTrips = int(d0)
	m.Deliveries = int(d1 - d0)
	m.Events = int(e1 - e0)
	m.Seconds = t1.Sub(t0).Seconds()
	m.Throughput = float64(m.Deliveries) / m.Seconds
	m.EventsPerSecond = float64(m.Events) / m.Seconds
	if err := em.drain(ctx, fanoutDrainTimeout); err != nil {
		return m, fmt.Errorf("after the fan-out: %w", err)
	}
	return m, nil
}

// cpuOf is the CPU time (user and system) process pid has used so far (processCPU); ok
// false where it cannot be read.
func cpuOf(pid int) (cpu time.Duration, ok bool) {
	if pid <= 0 {
		return 0, false
	}
	clock := processCPU(pid)
	if clock == nil {
		return 0, false
	}
	cpu, err := clock()
	return cpu, err == nil
}
