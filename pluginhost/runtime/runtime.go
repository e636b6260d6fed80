// Package runtime runs and supervises the host-launched plugins and tracks the state of the
// external ones: launch and readiness, crashes with backoff and quarantine, the health loop,
// resource limits, the escalating stop, enable, disable and restart, the start order, and the
// per-plugin lifecycle locks that serialise every lifecycle operation of a plugin. With a
// store several servers share, it places each host-launched plugin on one of them by lease
// (placement.go).
package runtime

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/sandbox"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// Config tunes how plugins are run and supervised. Zero fields take defaults.
type Config struct {
	// HostURL returns the URL plugins connect back to (NEXUS_HOST); it is called at each
	// launch, so it may be set once the server listens.
	HostURL func() string
	// HealthInterval is how often running plugins are asked for their health (10s).
	HealthInterval time.Duration
	// HealthTimeout bounds one health check (5s).
	HealthTimeout time.Duration
	// HealthMisses is how many health checks in a row a plugin may miss before it is
	// restarted (3).
	HealthMisses int
	// CrashLoopCount crashes within CrashLoopWindow quarantine a plugin (5 within 2m).
	CrashLoopCount  int
	CrashLoopWindow time.Duration
	// BackoffMin and BackoffMax bound the delay before restarting a crashed plugin
	// (500ms, 30s); it doubles with each crash, with jitter.
	BackoffMin, BackoffMax time.Duration
	// KillGrace is how long a plugin may take to exit after SIGTERM before SIGKILL (5s).
	KillGrace time.Duration
	// MaxLogLineBytes cuts longer output lines (16 KiB).
	MaxLogLineBytes int
	// Confinement, when not nil, confines host-launched plugins; nil runs them with the
	// host's privileges (and their reports say so).
	Confinement *Confinement
	// Replica is the id of this server among the servers sharing its store ("local"): it
	// names the launch tokens (LaunchTokenName) and the replica of the connected instances
	// (Info.Connected).
	Replica string
	// LeaseTTL is how long a plugin's lease lasts unless renewed (10s); renewals and
	// takeovers run every third of it. Used only with Options.Leases.
	LeaseTTL time.Duration
}

// DefaultReplica is the replica id of a Runtime configured without one.
const DefaultReplica = "local"

// LaunchTokenRoot starts the name of every token issued for a plugin launch; the admin CLI
// refuses it for the tokens it creates.
const LaunchTokenRoot = "runtime:"

// LaunchTokenName is the name of the token of a launch of plugin pluginID by replica:
// "runtime:<replica>:<plugin id>". Replica ids hold no ':', so the names of one replica's
// tokens start with LaunchTokenPrefix(replica) and no other replica's do.
func LaunchTokenName(replica, pluginID string) string { return LaunchTokenPrefix(replica) + pluginID }

// LaunchTokenPrefix starts the names of replica's launch tokens.
func LaunchTokenPrefix(replica string) string { return LaunchTokenRoot + replica + ":" }

// IsUnscopedLaunchToken reports whether name is a launch token named before launch tokens
// were scoped by replica ("runtime:<plugin id>": plugin ids hold no ':'). Only a server
// alone on its store issued those.
func IsUnscopedLaunchToken(name string) bool {
	rest, ok := strings.CutPrefix(name, LaunchTokenRoot)
	return ok && rest != "" && !strings.Contains(rest, ":")
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HealthInterval, 10*time.Second)
	def(&c.HealthTimeout, 5*time.Second)
	def(&c.CrashLoopWindow, 2*time.Minute)
	def(&c.BackoffMin, 500*time.Millisecond)
	def(&c.BackoffMax, 30*time.Second)
	def(&c.KillGrace, 5*time.Second)
	def(&c.LeaseTTL, 10*time.Second)
	if c.HealthMisses <= 0 {
		c.HealthMisses = 3
	}
	if c.CrashLoopCount <= 0 {
		c.CrashLoopCount = 5
	}
	if c.MaxLogLineBytes <= 0 {
		c.MaxLogLineBytes = 16 << 10
	}
	if c.HostURL == nil {
		c.HostURL = func() string { return "http://127.0.0.1:8080" }
	}
	if c.Replica == "" {
		c.Replica = DefaultReplica
	}
	return c
}

// TokenIssuer mints and revokes the plugin tokens handed to launched plugins.
type TokenIssuer interface {
	Create(ctx context.Context, name string, role store.Role, pluginID string) (string, store.Token, error)
	Revoke(ctx context.Context, id string) error
}

// Options configures a Runtime. Registry, Presence, Logs, Metrics, Tokens and DataDir are
// required.
type Options struct {
	Config   Config
	Registry *registry.Registry
	Presence *presence.Presence
	Logs     *logsink.Sink
	Metrics  *metrics.Store
	Tokens   TokenIssuer
	Logger   *slog.Logger
	// DataDir is the server's data directory: packages' recorded directories are relative
	// to it, and each plugin's own data directory is under plugin-data/.
	DataDir string
	// Notify emits a host event (plugin.enabled, plugin.error, ...); it must not fail the
	// operation that caused it.
	Notify func(ctx context.Context, typ string, data map[string]any)
	// EndpointConflict, if not nil, says why a plugin may not serve its HTTP endpoints
	// (a path of Nexus's own API, or one another active plugin serves): such a plugin is
	// not started.
	EndpointConflict func(id string, endpoints []manifest.APIEndpoint) error
	// EnsurePackage, if not nil, makes sure a host-launched plugin's files are in the data
	// directory before it starts (a plugin installed through another server sharing the
	// store is unpacked from the store's copy of its package).
	EnsurePackage func(ctx context.Context, rec store.Plugin) error
	// Leases, if not nil, is a store several servers share (one that implements
	// store.Feed): each host-launched plugin then runs on the one replica that holds its
	// lease there (see placement.go). Nil: every enabled plugin runs here.
	Leases store.Store
	// Settings is the server's store, where SetInstances records instance counts, for a
	// server without placement (with placement: Leases).
	Settings store.Store
}

// Runtime runs and supervises plugins: launch, readiness, crashes and backoff, quarantine,
// health checks, resource limits, and the escalating stop. Each plugin's live state is a
// *running, guarded by its own mutex; the lifecycle operations of each plugin are serialised
// by its lifecycle lock (see lifecycleLocks). It is safe for concurrent use.
type Runtime struct {
	cfg     Config
	reg     *registry.Registry
	pres    *presence.Presence
	logs    *logsink.Sink
	metrics *metrics.Store
	tokens  TokenIssuer
	log     *slog.Logger
	dataDir string
	uidMu   sync.Mutex // serialises the choice of plugin uids
	// endpointConflict is Options.EndpointConflict, or a check that finds none.
	endpointConflict func(id string, endpoints []manifest.APIEndpoint) error
	notify           func(ctx context.Context, typ string, data map[string]any)
	ensurePackage    func(ctx context.Context, rec store.Plugin) error
	locks            *lifecycleLocks

	ctx    context.Context // the runtime's lifetime, ended by Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup // supervision, health and readiness goroutines (see spawn)
	goMu   sync.Mutex     // guards closed, and orders wg.Add before Shutdown's wg.Wait
	closed bool
	// shuttingDown is set when Shutdown begins: StartLocked refuses from then on.
	shuttingDown atomic.Bool

	// leases is Options.Leases: nil without placement. Assigned once.
	leases       store.Store
	settings     store.Store // Options.Settings
	renewalOnce  sync.Once   // starts the renewal of the leases held here, at the first taken
	takeoverOnce sync.Once   // starts the takeover loop (StartEnabled)

	mu      sync.Mutex // guards plugins, held and placement
	plugins map[string]*running
	// held are the plugins of which this replica holds a lease slot (taken, not yet released
	// or lost), with the slot.
	held map[string]int
	// placement is the plugins' placement as last read (see PlacementOf).
	placement map[string]Placement
	// restartsSeen is when the last restart asked through another replica, per plugin, was
	// asked (RestartRequested applies each once).
	restartsSeen map[string]time.Time
	renewMu      sync.Mutex // one renewLeases round at a time
}

// running is the live state of one plugin.
type running struct {
	id string

	mu        sync.Mutex // guards everything below
	proc      *supervisor.Process
	gen       int // launch generation: events of older launches are ignored
	stopping  bool
	ready     chan struct{} // closed when the current launch is ready
	startedAt time.Time
	restarts  int
	crashes   []time.Time
	backoff   time.Duration
	tokenID   string
	lastLines []string // the newest output lines, for failure reasons
	health    healthState
	stopSup   chan struct{} // closed to stop the supervision loop of the current run
	// overLimit is why the host stopped the current process for exceeding a resource
	// limit; supervise then keeps it stopped, in error.
	overLimit string
	// usage is the current process's resource use at its last sample (at launch, then on
	// every health interval), taken at usageAt: views read it instead of /proc.
	usage   supervisor.Usage
	usageAt time.Time
	// report is the confinement of the current process, as it was applied.
	report sandbox.Report
}

type healthState struct {
	status    string
	lastCheck time.Time
	checks    []presence.Check
	misses    int
}

const lastLinesKept = 10

// New returns a Runtime. It starts nothing: plugins start with StartEnabled and Enable.
func New(opts Options) *Runtime {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Notify == nil {
		opts.Notify = func(context.Context, string, map[string]any) {}
	}
	if opts.EndpointConflict == nil {
		opts.EndpointConflict = func(string, []manifest.APIEndpoint) error { return nil }
	}
	if opts.EnsurePackage == nil {
		opts.EnsurePackage = func(context.Context, store.Plugin) error { return nil }
	}
	if opts.Settings == nil || opts.Leases != nil {
		opts.Settings = opts.Leases // with placement, counts and leases are read in one store
	}
	ctx, cancel := context.WithCancel(context.Background())
	rt := &Runtime{
		cfg: opts.Config.withDefaults(), reg: opts.Registry, pres: opts.Presence, logs: opts.Logs, metrics: opts.Metrics,
		tokens: opts.Tokens, log: opts.Logger, dataDir: opts.DataDir, notify: opts.Notify, locks: newLifecycleLocks(),
		ctx: ctx, cancel: cancel, plugins: map[string]*running{}, endpointConflict: opts.EndpointConflict,
		ensurePackage: opts.EnsurePackage, leases: opts.Leases, held: map[string]int{}, settings: opts.Settings,
		placement: map[string]Placement{}, restartsSeen: map[string]time.Time{},
	}
	opts.Presence.OnAttach(rt.attach)
	opts.Presence.OnDetach(rt.detach)
	return rt
}

// HealthInterval is how often running plugins are asked for their health.
func (rt *Runtime) HealthInterval() time.Duration { return rt.cfg.HealthInterval }

// Replica is the id of this server among the replicas (Config.Replica).
func (rt *Runtime) Replica() string { return rt.cfg.Replica }

// Lock takes the lifecycle locks of the given plugins, in lock order, and returns the
// function that releases them (see lifecycleLocks).
func (rt *Runtime) Lock(ids ...string) (unlock func()) { return rt.locks.lock(ids...) }

func (rt *Runtime) get(id string) *running {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	r := rt.plugins[id]
	if r == nil {
		r = &running{id: id}
		rt.plugins[id] = r
	}
	return r
}

// Forget drops the live state of an uninstalled plugin (it has been stopped).
func (rt *Runtime) Forget(id string) {
	rt.mu.Lock()
	delete(rt.plugins, id)
	delete(rt.placement, id)
	rt.mu.Unlock()
}

// SetStatus records a plugin's status and reason (and enabled, when not nil). Entering the
// error status emits plugin.error, with the reason as PublicReason gives it: events reach
// users and other plugins, never the plugin's output.
func (rt *Runtime) SetStatus(ctx context.Context, id, status, reason string, enabled *bool) error {
	var was string
	_, err := rt.reg.Modify(ctx, id, func(rec *store.Plugin) error {
		was = rec.Status
		rec.Status, rec.StatusReason = status, reason
		if enabled != nil {
			rec.Enabled = *enabled
		}
		return nil
	})
	if err != nil || status == was {
		return err
	}
	if status == registry.StatusError {
		rt.notify(ctx, "plugin.error", map[string]any{"plugin_id": id, "reason": PublicReason(reason)})
	}
	// Every change of state, so that watchers (the console's lists) need not poll.
	rt.notify(ctx, "plugin.status_changed", map[string]any{"plugin_id": id, "status": status, "previous": was})
	return nil
}

// loaded is an installed plugin with its record and manifest at hand.
type loaded struct {
	rec store.Plugin
	man *manifest.Manifest
	p   *registry.Plugin
}

// load returns an installed plugin from the registry, or PLUGIN_NOT_FOUND.
func (rt *Runtime) load(id string) (loaded, error) {
	p, err := rt.reg.Get(id)
	if err != nil {
		return loaded{}, err
	}
	return loaded{rec: p.Record(), man: p.Manifest(), p: p}, nil
}

// abs resolves a directory recorded relative to the data directory.
func (rt *Runtime) abs(dir string) string {
	if filepath.IsAbs(dir) {
		return filepath.Clean(dir)
	}
	return filepath.Join(rt.dataDir, dir)
}

// spawn runs fn on a goroutine the runtime owns: Shutdown waits for it. Once Shutdown has
// begun it runs nothing and returns false.
func (rt *Runtime) spawn(fn func()) bool {
	rt.goMu.Lock()
	defer rt.goMu.Unlock()
	if rt.closed {
		return false
	}
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		fn()
	}()
	return true
}

func errorMessage(err error) string { return errs.MessageOf(err) }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// problemsText joins configuration problems for a message.
func problemsText(problems []errs.FieldViolation) string {
	parts := make([]string, 0, len(problems))
	for _, p := range problems {
		parts = append(parts, p.String())
	}
	return strings.Join(parts, "; ")
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}
