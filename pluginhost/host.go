// Package pluginhost is the domain of Nexus, wired together: the Host builds the registry,
// catalog, installer, runtime, presence, router, stream sessions and log sink, starts and
// stops their background work, and offers the API edge (package server) one place to call.
// Each concern lives in its own package; this one holds wiring and lifecycle only, plus the
// views that combine several of them.
package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/audit"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busmem"
	"github.com/nexus-platform/nexus/pluginhost/catalog"
	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/install"
	"github.com/nexus-platform/nexus/pluginhost/kv"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

// Options configures a Host. Store, DataDir and Secrets are required.
type Options struct {
	Store store.Store
	// DataDir holds plugins/ (installed packages), backups/ and plugin-data/.
	DataDir string
	// Secrets seals secret configuration values at rest.
	Secrets *secrets.Box
	// Policy decides the permissions granted at install.
	Policy permission.Policy
	// Limits bound package size and extraction.
	Limits archive.Limits
	Logger *slog.Logger
	// LogRetention is how many log records are kept per plugin (default 10000).
	LogRetention int
	// Runtime tunes how plugins are run and supervised.
	Runtime RuntimeConfig
	// Tokens issues the plugin tokens of launched plugins (required to run plugins). When
	// it also tells of revocations (OnRevoke, RevokedAmong), sessions opened with a
	// revoked token are ended.
	Tokens runtime.TokenIssuer
	// Repositories are the plugin repositories to sync and search.
	Repositories []catalog.Config
	// Bus carries messages, broadcasts and events; nil means an in-memory bus built with
	// BusOptions. The host closes it at Shutdown.
	Bus bus.Bus
	// BusOptions are the options the bus was built with (the host tells plugins the
	// processing timeout and attempts).
	BusOptions bus.Options
}

// Host is the domain, wired. It is safe for concurrent use. New builds it without I/O or
// goroutines; Start loads its state and starts its background loops; Shutdown stops the
// plugins and every loop, and waits for them.
type Host struct {
	log      *slog.Logger
	st       store.Store
	bus      bus.Bus
	reg      *registry.Registry
	repos    *catalog.Catalog
	logs     *logsink.Sink
	metrics  *metrics.Store
	pres     *presence.Presence
	router   *router.Router
	rt       *runtime.Runtime
	sessions *stream.Sessions
	inst     *install.Installer
	kv       *kv.Store
	tokens   runtime.TokenIssuer

	loops loops // the background loops, started by Start
	audit *audit.Writer
	// refreshAgain is set when a change of the shared store could not be applied: every
	// record is read again (retryRefresh).
	refreshAgain atomic.Bool

	mu      sync.Mutex // guards started and stopped
	started bool
	stopped bool
}

// New builds a Host. It does no I/O and starts no goroutine: call Start.
func New(opts Options) (*Host, error) {
	if opts.Store == nil || opts.DataDir == "" || opts.Secrets == nil {
		return nil, errors.New("pluginhost: Store, DataDir and Secrets are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Limits == (archive.Limits{}) {
		opts.Limits = archive.DefaultLimits()
	}
	if opts.LogRetention <= 0 {
		opts.LogRetention = 10000
	}
	if opts.Policy.Grant == nil && opts.Policy.Deny == nil {
		opts.Policy = permission.DefaultPolicy()
	}
	repos, err := catalog.New(opts.Store, opts.Repositories, Version)
	if err != nil {
		return nil, err
	}
	if opts.Bus == nil {
		opts.Bus = busmem.New(opts.BusOptions)
	}
	h := &Host{log: opts.Logger, st: opts.Store, bus: opts.Bus, repos: repos, tokens: opts.Tokens}
	h.reg = registry.New(opts.Store, opts.Secrets, opts.Logger)
	h.logs = logsink.New(opts.Store, opts.Logger, opts.LogRetention)
	h.audit = audit.New(opts.Store, opts.Logger)
	h.metrics = metrics.New()
	h.pres = presence.New()
	h.kv = kv.New(opts.Store, kv.Options{})
	h.router = router.New(router.Options{Registry: h.reg, Presence: h.pres, Bus: opts.Bus, BusOptions: opts.BusOptions, Logger: opts.Logger})
	// Servers sharing the store place each host-launched plugin on one of them, by lease.
	var leases store.Store
	if _, ok := opts.Store.(store.Feed); ok {
		leases = opts.Store
	}
	h.rt = runtime.New(runtime.Options{
		Leases: leases, Settings: opts.Store,
		Config: opts.Runtime, Registry: h.reg, Presence: h.pres, Logs: h.logs, Metrics: h.metrics, Tokens: opts.Tokens,
		Logger: opts.Logger, DataDir: opts.DataDir, Notify: h.router.System, EndpointConflict: h.router.EndpointConflict,
		// h.inst is set below, before anything starts.
		EnsurePackage: func(ctx context.Context, rec store.Plugin) error { return h.inst.EnsurePackage(ctx, rec) },
	})
	h.sessions = stream.New(stream.Options{
		Registry: h.reg, Presence: h.pres, Router: h.router, Logs: h.logs, KV: h.kv, Metrics: h.metrics, Logger: opts.Logger,
		HostVersion: Version, HealthInterval: h.rt.HealthInterval(), OnHealth: h.rt.ObserveHealth,
	})
	h.inst = install.New(install.Options{
		Registry: h.reg, Catalog: repos, Runtime: h.rt, Router: h.router, Logs: h.logs, KV: h.kv, Metrics: h.metrics,
		Logger: opts.Logger, DataDir: opts.DataDir, Policy: opts.Policy, Limits: opts.Limits,
		HostVersion: Version,
	})
	h.reg.Subscribe(h.onChange)
	return h, nil
}

// Start loads the registry and the catalogs' last good copies, undoes the updates a stopped
// server left in flight (the old version is put back: see install.Installer.Sweep), removes
// what an interrupted operation left on disk, marks every plugin as not running, revokes the
// launch tokens of plugin processes from an earlier run, and starts the background loops
// (log writer, reply reader, key-value expiry, token revocations and expiry). Plugins are
// started by StartEnabled. Start runs once.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.started || h.stopped {
		h.mu.Unlock()
		return errors.New("pluginhost: started twice, or after Shutdown")
	}
	h.started = true
	h.mu.Unlock()
	if err := h.reg.Load(ctx); err != nil {
		return fmt.Errorf("pluginhost: %w", err)
	}
	if err := h.inst.Sweep(ctx); err != nil {
		return err
	}
	if err := h.repos.Load(ctx); err != nil {
		return err
	}
	ids := make([]string, 0, len(h.reg.Snapshot().All()))
	for _, p := range h.reg.Snapshot().All() {
		ids = append(ids, p.ID())
	}
	if err := h.logs.Prime(ctx, ids); err != nil {
		return err
	}
	if err := h.rt.ResetStatuses(ctx); err != nil {
		return err
	}
	if err := h.revokeLaunchTokens(ctx); err != nil {
		return err
	}
	if err := h.router.ReloadSubscriptions(ctx); err != nil {
		return fmt.Errorf("pluginhost: %w", err)
	}
	h.router.Start()
	h.loops.start(h.logs.Run)
	h.loops.start(h.audit.Run)
	h.loops.start(h.sweepKV)
	if src, ok := h.tokens.(revocations); ok {
		src.OnRevoke(func(tokenID string) { h.pres.EndToken(tokenID, errRevoked) })
		h.loops.start(func(ctx context.Context) { h.watchRevocations(ctx, src) })
	}
	if feed, ok := h.st.(store.Feed); ok {
		// Servers sharing the store: what another one commits reaches this one's views.
		h.loops.start(func(ctx context.Context) { feed.Follow(ctx, func(c store.Change) { h.onStoreChange(ctx, c) }) })
		h.loops.start(h.retryRefresh)
	}
	return nil
}

// onStoreChange applies a change another server committed to the shared store (see
// store.Feed): the registry reads the plugin's record again, the router a plugin's run-time
// event subscriptions (all of both after a gap), a token revoked elsewhere stops
// authenticating here and ends its sessions at once, a new instance count is put in force,
// and a restart asked through another replica restarts the copy running here.
func (h *Host) onStoreChange(ctx context.Context, c store.Change) {
	var err error
	switch c.Kind {
	case store.ChangeAny:
		err = errors.Join(h.reg.Refresh(ctx), h.router.ReloadSubscriptions(ctx))
	case store.ChangePlugin:
		err = h.reg.Refresh(ctx, c.ID)
	case store.ChangeSetting:
		if plugin, ok := router.SubscriptionsPlugin(c.ID); ok {
			err = h.router.ReloadSubscriptions(ctx, plugin)
		}
		h.rt.InstancesChanged(c.ID)
		if strings.HasPrefix(c.ID, runtime.RestartKeyPrefix) {
			h.loops.start(func(ctx context.Context) { h.rt.RestartRequested(ctx, c.ID) })
		}
	case store.ChangeTokenRevoked:
		if src, ok := h.tokens.(revocations); ok {
			src.RevokedElsewhere([]string{c.ID}) // its OnRevoke hook ends the sessions
		} else {
			h.pres.EndToken(c.ID, errRevoked)
		}
	}
	if err != nil && ctx.Err() == nil {
		// Not lost: everything is read again (retryRefresh) until that succeeds.
		h.refreshAgain.Store(true)
		h.log.Warn("reading what another server changed failed; reading everything again shortly", "change", c, "error", err)
	}
}

// refreshRetryInterval is how often retryRefresh tries again after a failed read.
const refreshRetryInterval = 2 * time.Second

// retryRefresh reads every plugin record and subscription again while the last attempt to
// apply a change of the shared store failed, until ctx ends.
func (h *Host) retryRefresh(ctx context.Context) {
	every(ctx, refreshRetryInterval, func() {
		if !h.refreshAgain.Load() {
			return
		}
		h.refreshAgain.Store(false)
		h.onStoreChange(ctx, store.Change{Kind: store.ChangeAny})
	})
}

// StartEnabled announces the start (system.startup) and starts every enabled plugin in
// dependency load order. Failures are recorded on each plugin; they do not stop the others.
func (h *Host) StartEnabled(ctx context.Context) {
	h.router.System(ctx, "system.startup", map[string]any{"version": Version})
	h.rt.StartEnabled(ctx)
}

// Shutdown announces the shutdown (system.shutdown), stops every running plugin in reverse
// load order (gracefully, within timeout each), stops every background loop and closes the
// bus, and waits for all of it. Plugins stay enabled, so they start again with the server.
// It runs once; later calls return at once.
func (h *Host) Shutdown(ctx context.Context, timeout time.Duration) {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.stopped = true
	started := h.started
	h.mu.Unlock()
	if started {
		// Plugins still running hear of the shutdown before they are asked to stop.
		h.router.System(ctx, "system.shutdown", map[string]any{"version": Version})
	}
	h.rt.Shutdown(ctx, timeout)
	h.router.Close()
	h.loops.stop() // the log writer stores what the stops logged before it returns
}

// onChange ends the sessions of a plugin that was disabled or uninstalled: from then on it
// may not act through the host.
func (h *Host) onChange(c registry.Change) {
	if c.Remote {
		h.onRemoteChange(c)
	}
	if !c.Disabled() {
		return
	}
	why := errs.New(errs.PluginUnavailable, "plugin %s was disabled", c.ID)
	if c.Removed() {
		why = errs.New(errs.PluginUnavailable, "plugin %s was uninstalled", c.ID)
	}
	h.pres.EndPlugin(c.ID, why)
}

// remoteStopTimeout bounds the stop of a process this server runs for a plugin disabled
// through another server.
const remoteStopTimeout = 10 * time.Second

// onRemoteChange does on this server what a change made through another one asks of it:
// a plugin disabled or uninstalled there stops here too (its sessions end at once, in
// onChange; its process, if this server runs one, is stopped), and a new configuration
// reaches the instances connected here. It runs on the registry's writer: the slow work
// goes to the background.
func (h *Host) onRemoteChange(c registry.Change) {
	switch {
	case c.Disabled():
		h.loops.start(func(ctx context.Context) {
			defer h.rt.Lock(c.ID)()
			h.rt.StopLocked(ctx, c.ID, runtime.DisableOptions{Reason: "disabled through another server", Timeout: remoteStopTimeout})
		})
	case c.Old != nil && c.New != nil && c.New.Enabled() && c.Old.Record().Version != c.New.Record().Version:
		// Updated (or rolled back) through another server: a copy running here runs the
		// version on record from now on.
		h.loops.start(func(ctx context.Context) {
			h.rt.RestartHere(ctx, c.ID, "version "+c.New.Record().Version+" installed through another server")
		})
	case c.Old != nil && c.New != nil && c.New.Enabled() && string(c.Old.Record().Config) != string(c.New.Record().Config):
		cfg := c.New.Config()
		updated, restart := changedFields(c.New.Schema(), c.Old.Config(), cfg)
		if len(updated) == 0 {
			return
		}
		h.logs.SetSecrets(c.ID, registry.SecretValues(cfg, c.New.Schema().SecretFields()))
		h.loops.start(func(ctx context.Context) {
			// Stored already: an instance that rejects it is told again when it reconnects,
			// as any instance is; the rejection is only logged here.
			if err := h.rt.PushConfig(ctx, c.ID, cfg, updated, restart); err != nil && ctx.Err() == nil {
				h.log.Warn("an instance did not take the configuration set through another server", "plugin_id", c.ID, "error", err)
			}
		})
	}
}

// changedFields lists the configuration fields whose values differ, sorted, and whether one
// of them needs a restart.
func changedFields(schema configschema.Schema, old, cur map[string]any) (updated []string, restart bool) {
	for k, v := range cur {
		if ov, ok := old[k]; !ok || !reflect.DeepEqual(ov, v) {
			updated = append(updated, k)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			updated = append(updated, k)
		}
	}
	slices.Sort(updated)
	for _, k := range updated {
		if f, ok := schema.Field(k); ok && f.RestartRequired {
			restart = true
		}
	}
	return updated, restart
}

// errRevoked is why a session whose token was revoked (or, found by watchRevocations, has
// expired) ends.
var errRevoked = errs.New(errs.Unauthenticated, "the token of this session was revoked or has expired")

// namedRevoker is implemented by a token issuer that can revoke tokens by name.
type namedRevoker interface {
	RevokeMatching(ctx context.Context, role store.Role, match func(name string) bool) ([]string, error)
}

// revokeLaunchTokens revokes the launch tokens still valid from an earlier run of this
// server. The runtime revokes a launch token when its process ends, but a server that
// crashed (or lost its store mid-stop) could not; no process of that run is this server's
// to supervise, so none of its tokens may stay valid (a process that outlived its server
// could otherwise keep acting as its plugin). Plugins started from now on get new tokens.
//
// Servers sharing the store each revoke only their own: the tokens named with this
// replica's id (runtime.LaunchTokenPrefix), which the plugins other replicas run do not
// carry. Tokens named before launch tokens carried a replica id ("runtime:<plugin id>")
// are revoked too: the servers that issued them could not share a store (each revoked
// every launch token when it started), so they belong to an earlier run.
func (h *Host) revokeLaunchTokens(ctx context.Context) error {
	r, ok := h.tokens.(namedRevoker)
	if !ok {
		return nil
	}
	replica := h.rt.Replica()
	prefix := runtime.LaunchTokenPrefix(replica)
	revoked, err := r.RevokeMatching(ctx, store.RolePlugin, func(name string) bool {
		return strings.HasPrefix(name, prefix) || runtime.IsUnscopedLaunchToken(name)
	})
	if err != nil {
		return fmt.Errorf("pluginhost: revoke the launch tokens of the previous run: %w", err)
	}
	if len(revoked) > 0 {
		h.log.Info("revoked the launch tokens left valid by the previous run", "count", len(revoked), "replica", replica)
	}
	return nil
}

// revocations is implemented by a token issuer that tells of revoked tokens.
type revocations interface {
	// OnRevoke announces the tokens revoked through this issuer.
	OnRevoke(fn func(tokenID string))
	// RevokedAmong finds tokens revoked elsewhere (another process on the same store).
	RevokedAmong(ctx context.Context, ids []string) ([]string, error)
	// RevokedElsewhere forgets what it knows of tokens another server revoked.
	RevokedElsewhere(ids []string)
}

// revocationCheckInterval is how often the tokens of open sessions are checked for
// revocations made outside this server (the CLI's `nexus token revoke`) and for expiry: a
// session whose token expires is ended within this interval of the expiry.
const revocationCheckInterval = 2 * time.Second

// watchRevocations ends the sessions whose token was revoked outside this server or has
// expired, until ctx ends.
func (h *Host) watchRevocations(ctx context.Context, src revocations) {
	every(ctx, revocationCheckInterval, func() {
		revoked, err := src.RevokedAmong(ctx, h.pres.TokenIDs())
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("checking the tokens of plugin sessions failed", "error", err)
			}
			return
		}
		for _, id := range revoked {
			h.pres.EndToken(id, errRevoked)
		}
	})
}

// kvSweepInterval is how often expired key-value entries are removed.
const kvSweepInterval = time.Minute

// sweepKV removes expired key-value entries until ctx ends.
func (h *Host) sweepKV(ctx context.Context) {
	every(ctx, kvSweepInterval, func() {
		if _, err := h.kv.Sweep(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("sweeping expired key-value entries failed", "error", err)
		}
	})
}

// every runs fn on every tick of interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// loops owns the host's background loops: each runs until the context stop cancels, and stop
// waits for all of them. A loop started after stop does not run.
type loops struct {
	mu      sync.Mutex // guards the fields below
	ctx     context.Context
	cancel  context.CancelFunc
	stopped bool
	wg      sync.WaitGroup
}

func (l *loops) start(fn func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	if l.ctx == nil {
		l.ctx, l.cancel = context.WithCancel(context.Background())
	}
	l.wg.Add(1)
	go func(ctx context.Context) {
		defer l.wg.Done()
		fn(ctx)
	}(l.ctx)
}

func (l *loops) stop() {
	l.mu.Lock()
	l.stopped = true
	cancel := l.cancel
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	l.wg.Wait()
}

// Installer installs, updates, rolls back and uninstalls plugins.
func (h *Host) Installer() *install.Installer { return h.inst }

// Runtime runs, supervises, enables, disables and restarts plugins.
func (h *Host) Runtime() *runtime.Runtime { return h.rt }

// Router carries messages, broadcasts and events, and answers discovery.
func (h *Host) Router() *router.Router { return h.router }

// Granted returns the permissions granted to plugin id (none when it is not installed).
func (h *Host) Granted(id string) []string {
	p, err := h.reg.Get(id)
	if err != nil {
		return nil
	}
	return p.Record().Granted
}

// Sessions serves the plugins' streams.
func (h *Host) Sessions() *stream.Sessions { return h.sessions }

// Catalog keeps the plugin repositories.
func (h *Host) Catalog() *catalog.Catalog { return h.repos }

// TailLogs streams an installed plugin's log records as they are stored, after up to
// q.Backlog stored ones. The channel is closed when ctx ends.
func (h *Host) TailLogs(ctx context.Context, q TailQuery) (<-chan store.LogRecord, error) {
	if _, err := h.reg.Get(q.PluginID); err != nil {
		return nil, err
	}
	return h.logs.Tail(ctx, q)
}

// MetricsCollector exposes the per-plugin Prometheus series.
func (h *Host) MetricsCollector() prometheus.Collector { return h.metrics.Collector() }

// MetricsSummary returns a plugin's current figures.
func (h *Host) MetricsSummary(id string) metrics.Summary { return h.metrics.Summary(id) }

// MetricsSeries returns an installed plugin's metric series (see metrics.Store.Series).
func (h *Host) MetricsSeries(_ context.Context, id string, start, end time.Time, resolution time.Duration, names []string) (map[string][]metrics.Point, error) {
	if _, err := h.reg.Get(id); err != nil {
		return nil, err
	}
	return h.metrics.Series(id, start, end, resolution, names)
}

// Ready reports whether the host can serve: its store answers, and so does its bus's
// backend when it has one (Redis). The error wraps ErrStoreUnavailable or
// ErrBusUnavailable.
func (h *Host) Ready(ctx context.Context) error {
	err := h.st.Read(ctx, func(tx store.Tx) error {
		_, err := tx.Setting("ready-probe")
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	if p, ok := h.bus.(bus.Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrBusUnavailable, err)
		}
	}
	return nil
}

// The reasons Ready gives.
var (
	ErrStoreUnavailable = errors.New("store unavailable")
	ErrBusUnavailable   = errors.New("bus unavailable")
)
