package plugintest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"buf.build/go/protovalidate"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// DefaultPluginID is the plugin id of a Host whose Options name none.
const DefaultPluginID = "test-plugin"

// DefaultTimeout bounds the waits of a Host whose Options set no Timeout.
const DefaultTimeout = 10 * time.Second

// Options configures a Host. The zero value is a working host for a plugin named
// DefaultPluginID with no configuration and no permissions.
type Options struct {
	// PluginID is the id of the plugin under test, as in its manifest (kebab-case, e.g.
	// "analytics-plugin"); DefaultPluginID when empty.
	PluginID string
	// Config is the plugin's configuration (Session.Config), secrets included. Values go
	// through JSON, so numbers reach the plugin as float64.
	Config map[string]any
	// Granted are the permissions the plugin is granted (Session.Permissions), with the
	// host's wildcards (`messages:*`, `*:read`). The host checks each of the plugin's
	// requests against them: messages:send to send and broadcast, events:emit,
	// events:subscribe (also to receive events), database:read and database:write.
	Granted []string
	// Subscriptions are event type patterns the plugin is subscribed to as its manifest's
	// `events.subscribes` would subscribe it, beside Plugin.Subscriptions and
	// Session.Subscribe.
	Subscriptions []string
	// RestartRequired names the configuration fields that take effect only after a restart
	// (`restart_required` in the manifest's schema): an UpdateConfig that changes one of
	// them tells the plugin so (ConfigChange.RestartRequired).
	RestartRequired []string
	// Providers are the other plugins that Session.Discover finds, beside the plugin under
	// test. A message type's RequiredPermission is checked when the plugin sends that
	// message to the provider; a provider without a HandlePlugin handler is installed but
	// unreachable (PLUGIN_UNAVAILABLE).
	Providers []plugin.Provider
	// Now is the key-value store's clock, for expiry and Entry.UpdatedAt; time.Now when
	// nil. A test of expiry sets it instead of sleeping.
	Now func() time.Time
	// Timeout bounds every wait that has no deadline of its own: Start, the methods given a
	// context without a deadline, and the cleanup. DefaultTimeout when 0.
	Timeout time.Duration
}

// Host is an in-process Nexus host for one plugin under test. NewHost makes it; Start runs
// the plugin on it. Its methods are safe for concurrent use.
type Host struct {
	// These fields are assigned once, by NewHost, and only read afterwards.
	t         testing.TB
	opts      Options
	token     string
	url       string
	srv       *http.Server
	served    chan struct{} // closed when srv.Serve has returned
	validator protovalidate.Validator
	log       *testLog
	// ready is closed, through readyOnce, once the plugin's OnStart has returned nil.
	ready     chan struct{}
	readyOnce sync.Once
	// runDone is closed when plugin.Run has returned; runErr is written (under mu) before.
	runDone chan struct{}
	ids     atomic.Uint64

	// calls tracks the running Connect calls; work the goroutines that run HandlePlugin
	// handlers. Both are added to only under mu while closed is false, so that the
	// cleanup's Wait never races with an Add.
	calls sync.WaitGroup
	work  sync.WaitGroup

	// http routes the frames of HTTP calls (see HTTP).
	http httpCalls

	// mu guards the fields below.
	mu      sync.Mutex
	closed  bool
	started bool
	stopRun context.CancelFunc
	runErr  error
	// runSeen says that the test has seen Run's result (Wait, Shutdown).
	runSeen bool
	// sess is the plugin's current session; nil while it is not connected.
	sess   *session
	config map[string]any
	// subs are the subscriptions made at run time (hello and Session.Subscribe).
	subs     map[string]bool
	handlers map[string]PluginHandler
	kv       map[string]*namespace
	// waits are the answers the host waits for, by delivery id, check id or change id;
	// events maps the id of an event or broadcast waiting for its ack to its delivery id.
	waits  map[string]chan answer
	events map[string]string
	// The records of what the plugin did.
	sent       []SentMessage
	emitted    []EmittedEvent
	broadcasts []SentBroadcast
	logs       []LogEntry
	// changed is closed, and replaced, whenever something is recorded (see WaitFor).
	changed chan struct{}
}

var pluginIDPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}[a-z0-9]$`)

// NewHost starts a host for the plugin that opts describes, serving PluginHostService on a
// free port of 127.0.0.1. The test's cleanup stops the plugin (if Start ran it) and then
// the host, and fails the test if either does not end within Options.Timeout. Invalid
// options fail the test at once.
func NewHost(t testing.TB, opts Options) *Host {
	t.Helper()
	if opts.PluginID == "" {
		opts.PluginID = DefaultPluginID
	}
	if !pluginIDPattern.MatchString(opts.PluginID) {
		t.Fatalf("plugintest: plugin id %q is not a plugin id (kebab-case, 3 to 64 characters)", opts.PluginID)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	config, err := normalize(opts.Config)
	if err != nil {
		t.Fatalf("plugintest: Options.Config: %v", err)
	}
	validator, err := protovalidate.New()
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	h := &Host{
		t:         t,
		opts:      opts,
		token:     "nxt_plugintest-" + randomHex(8),
		served:    make(chan struct{}),
		validator: validator,
		log:       &testLog{t: t},
		ready:     make(chan struct{}),
		runDone:   make(chan struct{}),
		config:    config,
		subs:      map[string]bool{},
		handlers:  map[string]PluginHandler{},
		kv:        map[string]*namespace{},
		waits:     map[string]chan answer{},
		events:    map[string]string{},
		changed:   make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.Handle(pluginhostv1connect.NewPluginHostServiceHandler(&service{h: h}))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // bidirectional streams need HTTP/2
	h.srv = &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: opts.Timeout}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	h.url = "http://" + ln.Addr().String()
	go func() {
		defer close(h.served)
		if err := h.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			h.t.Errorf("plugintest: serving: %v", err)
		}
	}()
	t.Cleanup(h.close)
	return h
}

// Start runs p with plugin.Run, in a goroutine of the host's, connected to the host as the
// plugin under test, and waits until the plugin is ready: it has connected, been welcomed
// with its configuration and permissions, and its OnStart has returned. It also returns
// when Run returns first (an OnStart that fails, for one: see Wait). It fails the test
// when neither happens within Options.Timeout, or when called twice.
//
// opts are passed to plugin.Run after the host's own (WithHost, WithToken, WithPluginID,
// a fast reconnection backoff, and the SDK's diagnostics and fallback logs written to the
// test's log), so they may add to them (WithConcurrency, WithLogLevel...) but must not
// point the plugin elsewhere. The test's cleanup cancels Run's context and waits for Run
// to return.
//
// Start wraps p's OnStart, OnEvent and OnBroadcast, without changing what they receive or
// return, to learn when the plugin is ready and when an event handler fails.
func (h *Host) Start(p plugin.Plugin, opts ...plugin.Option) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.mu.Lock()
	if h.started || h.closed {
		h.mu.Unlock()
		cancel()
		h.t.Fatalf("plugintest: Start called twice, or after the test ended")
		return
	}
	h.started, h.stopRun = true, cancel
	h.mu.Unlock()
	base := []plugin.Option{
		plugin.WithHost(h.url),
		plugin.WithToken(h.token),
		plugin.WithPluginID(h.opts.PluginID),
		plugin.WithReconnectBackoff(10*time.Millisecond, 100*time.Millisecond),
		plugin.WithLogger(slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelWarn}))),
		plugin.WithStderr(h.log),
	}
	p = h.instrument(p)
	go func() {
		err := plugin.Run(ctx, p, append(base, opts...)...)
		h.mu.Lock()
		h.runErr = err
		h.notifyLocked()
		h.mu.Unlock()
		close(h.runDone)
	}()
	timer := time.NewTimer(h.opts.Timeout)
	defer timer.Stop()
	select {
	case <-h.ready:
	case <-h.runDone:
	case <-timer.C:
		h.t.Fatalf("plugintest: plugin %s was not ready within %s", h.opts.PluginID, h.opts.Timeout)
	}
}

// Wait waits for plugin.Run to return, and returns its result: nil after a shutdown or
// the end of its context, the error of a failed OnStart, a refusal by the host... A Run
// error that no Wait (or Shutdown) has returned fails the test in its cleanup.
func (h *Host) Wait(ctx context.Context) error {
	h.mu.Lock()
	started := h.started
	h.mu.Unlock()
	if !started {
		return errors.New("plugintest: Wait before Start")
	}
	ctx, cancel := h.bound(ctx)
	defer cancel()
	select {
	case <-h.runDone:
		h.mu.Lock()
		defer h.mu.Unlock()
		h.runSeen = true
		return h.runErr
	case <-ctx.Done():
		return fmt.Errorf("plugintest: plugin.Run has not returned: %w", ctx.Err())
	}
}

// URL returns the host's base URL (NEXUS_HOST), e.g. "http://127.0.0.1:41234".
func (h *Host) URL() string { return h.url }

// Token returns the plugin token the host accepts (NEXUS_PLUGIN_TOKEN).
func (h *Host) Token() string { return h.token }

// PluginID returns the id of the plugin under test (NEXUS_PLUGIN_ID).
func (h *Host) PluginID() string { return h.opts.PluginID }

// Config returns the plugin's current configuration, as accepted through UpdateConfig.
func (h *Host) Config() map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return cloneMap(h.config)
}

// close is the test's cleanup: it stops the plugin, then the server, and waits for every
// goroutine the host started.
func (h *Host) close() {
	timeout := h.opts.Timeout
	h.mu.Lock()
	started, stop := h.started, h.stopRun
	h.mu.Unlock()
	if started {
		stop()
		if !waitChan(h.runDone, timeout) {
			h.t.Errorf("plugintest: plugin.Run did not return within %s of its context's end", timeout)
		} else {
			h.mu.Lock()
			err, seen := h.runErr, h.runSeen
			h.mu.Unlock()
			if err != nil && !seen {
				h.t.Errorf("plugintest: plugin.Run returned an error the test did not check (see Host.Wait): %v", err)
			}
		}
	}
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	_ = h.srv.Close()
	<-h.served
	if !waitGroup(&h.calls, timeout) {
		h.t.Errorf("plugintest: a plugin stream was still open %s after the host closed", timeout)
	}
	if !waitGroup(&h.work, timeout) {
		h.t.Errorf("plugintest: a HandlePlugin handler had not returned %s after the host closed", timeout)
	}
	h.log.close()
}

// bound returns ctx, bounded by Options.Timeout when it has no deadline.
func (h *Host) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, h.opts.Timeout)
}

// newID returns a new id with a prefix, unique within the host.
func (h *Host) newID(prefix string) string {
	return prefix + "-" + strconv.FormatUint(h.ids.Add(1), 10)
}

// can reports whether the plugin holds permission perm.
func (h *Host) can(perm string) bool { return allowed(h.opts.Granted, perm) }

// track starts fn in a goroutine that the cleanup waits for, unless the host is closing.
func (h *Host) track(fn func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.work.Add(1)
	go func() {
		defer h.work.Done()
		fn()
	}()
	return true
}

// testLog writes the SDK's diagnostics to the test's log until the test ends.
type testLog struct {
	// mu guards closed, and orders each write before the end of the test.
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Logf("plugin %s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}

func cloneMap(m map[string]any) map[string]any {
	out, err := normalize(m)
	if err != nil {
		return map[string]any{}
	}
	return out
}

// waitChan waits for ch to be closed for at most d.
func waitChan(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// waitGroup waits for wg for at most d. When it does not finish, the waiting goroutine
// lingers until it does.
func waitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return waitChan(done, d)
}
