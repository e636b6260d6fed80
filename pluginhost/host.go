// Package pluginhost is the domain of Nexus: the registry of installed plugins, packages and
// installs, configuration, permissions, logs and backups. It works on plain Go types; the
// transport edge (package server) converts to and from the API.
package pluginhost

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busmem"
	"github.com/nexus-platform/nexus/pluginhost/catalog"
	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/kv"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/repository"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// Options configures a Host. Store, DataDir and Secrets are required.
type Options struct {
	Store store.Store
	// DataDir holds plugins/ (installed packages), backups/ and tmp/.
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
	// Tokens issues the plugin tokens of launched plugins (required to run plugins).
	Tokens tokenIssuer
	// Repositories are the plugin repositories to sync and search.
	Repositories []catalog.Config
	// Bus carries messages, broadcasts and events; nil means an in-memory bus built with
	// BusOptions. The host closes it at Shutdown.
	Bus bus.Bus
	// BusOptions are the options the bus was built with (the host tells plugins the
	// processing timeout and attempts).
	BusOptions bus.Options
}

// Host is the plugin registry. It is safe for concurrent use: the lifecycle operations of
// each plugin are serialised by its lifecycle lock (see lifecycleLocks); reads are served
// from the registry's memory.
type Host struct {
	st      store.Store
	dataDir string
	box     *secrets.Box
	policy  permission.Policy
	limits  archive.Limits
	log     *slog.Logger
	keep    int
	now     func() time.Time
	rt      *pluginRuntime
	logs    *logsink.Sink
	// stopLogs stops the log sink's writer, and logsDone is closed when it has stopped.
	stopLogs context.CancelFunc
	logsDone chan struct{}
	metrics  *metrics.Store
	repos    *catalog.Catalog
	reg      *registry.Registry
	dir      *directory
	msg      *messenger
	kv       *kv.Store

	locks        *lifecycleLocks
	shutdownOnce sync.Once
}

// New returns a Host and removes what an interrupted install or uninstall left on disk.
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
	h := &Host{
		dataDir: opts.DataDir, box: opts.Secrets, policy: opts.Policy,
		limits: opts.Limits, log: opts.Logger, keep: opts.LogRetention,
		now: func() time.Time { return time.Now().UTC() },
	}
	h.st = opts.Store
	h.locks = newLifecycleLocks()
	h.reg = registry.New(opts.Store, opts.Secrets, opts.Logger)
	if err := h.reg.Load(context.Background()); err != nil {
		return nil, fmt.Errorf("pluginhost: %w", err)
	}
	h.dir = newDirectory(h)
	h.reg.Subscribe(h.dir.forget)
	h.reg.Subscribe(h.onChange)
	for _, d := range []string{h.pluginsDir(), h.backupsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("pluginhost: create %s: %w", d, err)
		}
	}
	if err := h.sweep(context.Background()); err != nil {
		return nil, err
	}
	repos, err := catalog.New(h.st, opts.Repositories, Version)
	if err != nil {
		return nil, err
	}
	if err := repos.Load(context.Background()); err != nil {
		return nil, err
	}
	h.repos = repos
	h.logs = logsink.New(h.st, h.log, h.keep)
	ids := make([]string, 0, len(h.reg.Snapshot().All()))
	for _, p := range h.reg.Snapshot().All() {
		ids = append(ids, p.ID())
	}
	if err := h.logs.Prime(context.Background(), ids); err != nil {
		return nil, err
	}
	logsCtx, stopLogs := context.WithCancel(context.Background())
	h.stopLogs, h.logsDone = stopLogs, make(chan struct{})
	go func() {
		defer close(h.logsDone)
		h.logs.Run(logsCtx)
	}()
	h.metrics = metrics.New()
	h.rt = newRuntime(h, opts.Runtime, opts.Tokens)
	if err := h.resetStatuses(context.Background()); err != nil {
		h.closeLogs()
		return nil, err
	}
	b := opts.Bus
	if b == nil {
		b = busmem.New(opts.BusOptions)
	}
	h.msg = newMessenger(h, b, opts.BusOptions)
	h.kv = kv.New(h.st, kv.Options{})
	h.rt.wg.Add(1)
	go h.sweepKV()
	if src, ok := opts.Tokens.(revocations); ok {
		src.OnRevoke(h.rt.endTokenSessions)
		h.rt.wg.Add(1)
		go h.watchRevocations(src)
	}
	return h, nil
}

// revocations is implemented by a token issuer that tells of revoked tokens.
type revocations interface {
	// OnRevoke announces the tokens revoked through this issuer.
	OnRevoke(fn func(tokenID string))
	// RevokedAmong finds tokens revoked elsewhere (another process on the same store).
	RevokedAmong(ctx context.Context, ids []string) ([]string, error)
}

// revocationCheckInterval is how often the tokens of open sessions are checked for
// revocations made outside this server (the CLI's `nexus token revoke`).
const revocationCheckInterval = 2 * time.Second

// watchRevocations ends the sessions whose token was revoked outside this server, until the
// host stops.
func (h *Host) watchRevocations(src revocations) {
	defer h.rt.wg.Done()
	t := time.NewTicker(revocationCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-h.rt.ctx.Done():
			return
		case <-t.C:
		}
		ids := h.rt.sessionTokens()
		revoked, err := src.RevokedAmong(h.rt.ctx, ids)
		if err != nil {
			if h.rt.ctx.Err() == nil {
				h.log.Warn("checking the tokens of plugin sessions failed", "error", err)
			}
			continue
		}
		for _, id := range revoked {
			h.rt.endTokenSessions(id)
		}
	}
}

// onChange ends the sessions of a plugin that was disabled or uninstalled: from then on it
// may not act through the host.
func (h *Host) onChange(c registry.Change) {
	if !c.Disabled() {
		return
	}
	why := errs.New(errs.PluginUnavailable, "plugin %s was disabled", c.ID)
	if c.Removed() {
		why = errs.New(errs.PluginUnavailable, "plugin %s was uninstalled", c.ID)
	}
	h.rt.endSessions(c.ID, why)
}

// closeLogs stores what the log sink holds and stops it.
func (h *Host) closeLogs() {
	h.stopLogs()
	<-h.logsDone
}

func (h *Host) pluginsDir() string { return filepath.Join(h.dataDir, "plugins") }
func (h *Host) backupsDir() string { return filepath.Join(h.dataDir, "backups") }

// sweep removes what an interrupted install, uninstall or backup left on disk: package
// and backup directories that no record references, and unfinished ".extract-*" and
// ".tmp" directories. When a record points outside the data directory (an older layout),
// nothing is removed.
func (h *Host) sweep(ctx context.Context) error {
	referenced := map[string]bool{}
	outside := ""
	for _, p := range h.reg.Snapshot().All() {
		dir := h.abs(p.Record().Dir)
		referenced[dir] = true
		if !h.inDataDir(dir) {
			outside = dir
		}
	}
	if outside != "" {
		h.log.Warn("a plugin record points outside the data directory; leftover directories are not removed", "dir", outside)
		return nil
	}
	isBackup := func(dir string) bool {
		var found bool
		_ = h.st.Read(ctx, func(tx store.Tx) error {
			b, err := tx.Backup(filepath.Base(dir))
			found = err == nil && h.abs(b.Dir) == dir
			return nil
		})
		return found
	}
	for _, root := range []struct {
		dir  string
		keep func(string) bool
	}{
		{h.pluginsDir(), func(d string) bool { return referenced[d] }},
		{h.backupsDir(), isBackup},
	} {
		if err := h.sweepDir(root.dir, root.keep); err != nil {
			return fmt.Errorf("pluginhost: sweep: %w", err)
		}
	}
	return nil
}

// sweepDir removes the entries of root/<id>/ that keep rejects, and empty <id> directories.
func (h *Host) sweepDir(root string, keep func(string) bool) error {
	ids, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !id.IsDir() {
			continue
		}
		idDir := filepath.Join(root, id.Name())
		entries, err := os.ReadDir(idDir)
		if err != nil {
			return err
		}
		left := 0
		for _, e := range entries {
			dir := filepath.Join(idDir, e.Name())
			if keep(dir) {
				left++
				continue
			}
			h.log.Warn("removing a directory left by an interrupted operation", "dir", dir)
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
		if left == 0 {
			_ = os.Remove(idDir)
		}
	}
	return nil
}

// abs resolves a directory recorded relative to the data directory (records keep relative
// paths, so the data directory can move).
func (h *Host) abs(dir string) string {
	if filepath.IsAbs(dir) {
		return filepath.Clean(dir)
	}
	return filepath.Join(h.dataDir, dir)
}

// rel is the recorded form of a directory inside the data directory.
func (h *Host) rel(dir string) string {
	if r, err := filepath.Rel(h.dataDir, dir); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return dir
}

func (h *Host) inDataDir(dir string) bool {
	r, err := filepath.Rel(h.dataDir, dir)
	return err == nil && r != "." && !strings.HasPrefix(r, "..")
}

// resetStatuses marks every plugin inactive at start: no plugin runs before the host starts
// it (enabled plugins are started by StartEnabled).
func (h *Host) resetStatuses(ctx context.Context) error {
	return h.write(ctx, func(tx store.Tx) error {
		for _, rp := range h.reg.Snapshot().All() {
			p := rp.Record()
			if p.Status == StatusActive || p.Status == StatusLoading {
				p.Status, p.StatusReason = StatusInactive, "the server restarted"
				if err := tx.PutPlugin(p); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// loaded is an installed plugin as the registry holds it, with its record and manifest at
// hand.
type loaded struct {
	rec store.Plugin
	man *manifest.Manifest
	p   *registry.Plugin
}

func loadedOf(p *registry.Plugin) loaded { return loaded{rec: p.Record(), man: p.Manifest(), p: p} }

// loadAll returns every installed plugin, from memory, and the snapshot they come from.
func (h *Host) loadAll(context.Context) ([]loaded, *registry.Snapshot, error) {
	snap := h.reg.Snapshot()
	out := make([]loaded, 0, len(snap.All()))
	for _, p := range snap.All() {
		out = append(out, loadedOf(p))
	}
	return out, snap, nil
}

// load returns an installed plugin from memory, or PLUGIN_NOT_FOUND.
func (h *Host) load(_ context.Context, id string) (loaded, error) {
	p, err := h.reg.Get(id)
	if err != nil {
		return loaded{}, err
	}
	return loadedOf(p), nil
}

// write runs fn in one store transaction through the registry, the single writer of plugin
// records.
func (h *Host) write(ctx context.Context, fn func(tx store.Tx) error) error {
	return h.reg.Update(ctx, func(tx *registry.Tx) error { return fn(tx) })
}

// List returns the installed plugins that pass the filter, in load order, and counts over
// all installed plugins.
func (h *Host) List(ctx context.Context, f ListFilter) ([]PluginView, Summary, error) {
	all, g, err := h.loadAll(ctx)
	if err != nil {
		return nil, Summary{}, err
	}
	var sum Summary
	var out []PluginView
	search := strings.ToLower(f.Search)
	for _, p := range all {
		sum.Total++
		switch p.rec.Status {
		case StatusActive:
			sum.Active++
		case StatusError:
			sum.Error++
		default:
			sum.Inactive++
		}
		if !p.rec.Enabled {
			sum.Disabled++
		}
		if f.Status != "" && p.rec.Status != f.Status ||
			f.Category != "" && !strings.EqualFold(p.man.Category, f.Category) ||
			!f.IncludeDisabled && !p.rec.Enabled {
			continue
		}
		if search != "" && !strings.Contains(strings.ToLower(p.rec.ID+"\n"+p.man.Name+"\n"+p.man.Description), search) {
			continue
		}
		v, err := h.view(p, g)
		if err != nil {
			return nil, Summary{}, err
		}
		out = append(out, v)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].LoadOrder != out[j].LoadOrder {
			return out[i].LoadOrder < out[j].LoadOrder
		}
		return out[i].ID < out[j].ID
	})
	return out, sum, nil
}

// Get returns one plugin; with detail it also carries the most recent log records.
func (h *Host) Get(ctx context.Context, id string, detail bool) (PluginView, error) {
	snap := h.reg.Snapshot()
	p, err := snap.Get(id)
	if err != nil {
		return PluginView{}, err
	}
	v, err := h.view(loadedOf(p), snap)
	if err != nil || !detail {
		return v, err
	}
	v.RecentLogs = h.logs.Recent(id)
	return v, nil
}

func (h *Host) view(p loaded, g *registry.Snapshot) (PluginView, error) {
	m := p.man
	schema := p.p.Schema()
	v := PluginView{
		ID: p.rec.ID, Name: m.Name, Version: p.rec.Version, Description: m.Description, Author: m.Author,
		Email: m.Email, Homepage: m.Homepage, Category: m.Category, License: m.License, Tags: m.Tags,
		Status: p.rec.Status, StatusReason: p.rec.StatusReason, Enabled: p.rec.Enabled,
		Runtime: h.Runtime(p.rec.ID), LoadOrder: g.Order(p.rec.ID),
		EntryPoint: m.EntryPoint, NexusVersion: m.NexusVersion, PythonVersion: m.PythonVersion,
		PackageDeps: m.Dependencies.Packages, PluginDeps: m.Dependencies.Plugins,
		Dependencies: m.DependencyIDs(), Dependents: g.Dependents(p.rec.ID),
		Permissions: p.rec.Granted,
		Schema:      schema.Raw(), Config: p.p.MaskedConfig(),
		Metrics:     h.metrics.Summary(p.rec.ID),
		InstalledAt: p.rec.InstalledAt, UpdatedAt: p.rec.UpdatedAt,
	}
	v.Health = v.Runtime.Health
	for _, e := range m.APIEndpoints {
		v.Endpoints = append(v.Endpoints, EndpointInfo{Path: e.Path, Methods: e.Methods, Description: e.Description})
	}
	for _, e := range m.Events.Emits {
		v.Emits = append(v.Emits, EventInfo{Type: e.Type, Description: e.Description})
	}
	for _, e := range m.Events.Subscribes {
		v.Subscribes = append(v.Subscribes, EventInfo{Type: e.Type, Description: e.Description})
	}
	return v, nil
}

// openConfig returns a copy of a plugin's configuration with its secrets opened.
func (h *Host) openConfig(p loaded) (map[string]any, error) { return p.p.Config(), nil }

// sealConfig seals secrets and encodes a configuration for the store.
func (h *Host) sealConfig(schema configschema.Schema, values map[string]any) ([]byte, error) {
	return h.reg.SealConfig(schema, values)
}

// applyConfig merges patch into current and validates the result. Required fields that
// have no value yet are allowed here (a plugin can be installed and configured step by
// step); they are enforced when the plugin is started.
func applyConfig(schema configschema.Schema, current, patch map[string]any) (map[string]any, []string, bool, error) {
	merged, updated, restart, problems := schema.Apply(current, patch)
	var kept []errs.FieldViolation
	for _, p := range problems {
		if v, ok := merged[p.Field]; (!ok || v == nil) && isRequiredField(schema, p.Field) {
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) > 0 {
		return nil, nil, false, errs.WithFields(errs.PluginConfigurationError, configProblemMessage(kept), kept)
	}
	return merged, updated, restart, nil
}

func isRequiredField(schema configschema.Schema, name string) bool {
	f, ok := schema.Field(name)
	return ok && f.Required
}

func configProblemMessage(problems []errs.FieldViolation) string {
	parts := make([]string, 0, len(problems))
	for _, p := range problems {
		parts = append(parts, p.String())
	}
	return "invalid configuration: " + strings.Join(parts, "; ")
}

// Install installs a plugin package.
func (h *Host) Install(ctx context.Context, req InstallRequest) (InstallResult, error) {
	start := time.Now()
	if req.Source == "repository" {
		// Missing dependencies are installed first, resolved from the repositories.
		if err := h.installDependencies(ctx, req.PluginName, req.Version, nil); err != nil {
			return InstallResult{}, err
		}
	}
	data, err := h.fetchPackage(ctx, req.Source, req.PluginName, req)
	if err != nil {
		return InstallResult{}, err
	}
	rawManifest, sha, err := archive.ReadManifest(bytes.NewReader(data), h.limits)
	if err != nil {
		return InstallResult{}, packageError(err)
	}
	m, err := manifest.Parse(rawManifest)
	if err != nil {
		return InstallResult{}, err
	}
	if err := m.CheckCompatible(Version); err != nil {
		return InstallResult{}, err
	}
	if err := checkPlatform(m); err != nil {
		return InstallResult{}, err
	}
	schema := m.Schema()
	cfg, _, _, err := applyConfig(schema, schema.Defaults(), orEmptyMap(req.Config))
	if err != nil {
		return InstallResult{}, err
	}
	sealed, err := h.sealConfig(schema, cfg)
	if err != nil {
		return InstallResult{}, err
	}

	unlock := sync.OnceFunc(h.locks.lock(append(m.DependencyIDs(), m.ID)...))
	defer unlock()
	all, _, err := h.loadAll(ctx)
	if err != nil {
		return InstallResult{}, err
	}
	var existing *loaded
	for i := range all {
		if all[i].rec.ID == m.ID {
			existing = &all[i]
		}
	}
	if existing != nil && !req.ForceReinstall {
		return InstallResult{}, errs.New(errs.PluginAlreadyInstalled,
			"plugin %q is already installed (version %s); pass force_reinstall to replace it", m.ID, existing.rec.Version).
			WithDetail("installed_version", existing.rec.Version)
	}
	if err := checkDependencies(m, all); err != nil {
		return InstallResult{}, err
	}
	var backup *store.Backup
	if existing != nil {
		if existing.rec.Enabled {
			return InstallResult{}, errs.New(errs.PluginDependencyError, "plugin %s is enabled; disable it before reinstalling", m.ID)
		}
		if err := checkDependents(m, all); err != nil {
			return InstallResult{}, err
		}
		// A reinstall keeps the configuration (revalidated against the new schema) and
		// the administrator's permission decisions, and backs up what it replaces.
		if cfg, err = h.carryConfig(*existing, schema, orEmptyMap(req.Config)); err != nil {
			return InstallResult{}, err
		}
		if sealed, err = h.sealConfig(schema, cfg); err != nil {
			return InstallResult{}, err
		}
	}
	dir := filepath.Join(h.pluginsDir(), m.ID, m.Version+"-"+randomHex(6))
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return InstallResult{}, errs.Wrap(errs.PluginInstallationFailed, err, "could not prepare the plugin directory")
	}
	if _, err := archive.Extract(ctx, bytes.NewReader(data), dir, h.limits); err != nil {
		return InstallResult{}, packageError(err)
	}
	if err := checkEntryPoint(dir, m); err != nil {
		_ = os.RemoveAll(dir)
		return InstallResult{}, err
	}
	// The package must be on disk before the registry says it is installed.
	if err := syncTree(dir); err != nil {
		_ = os.RemoveAll(dir)
		return InstallResult{}, errs.Wrap(errs.PluginInstallationFailed, err, "could not write the package to disk")
	}
	if existing != nil {
		b, err := h.copyToBackup(existing.rec, "reinstall", h.now())
		if err != nil {
			_ = os.RemoveAll(dir)
			return InstallResult{}, err
		}
		backup = &b
	}
	granted, denied := h.policy.Decide(m.Permissions)
	if existing != nil {
		granted, denied = keepDecisions(granted, denied, existing.rec, m.Permissions)
	}
	now := h.now()
	rec := store.Plugin{
		ID: m.ID, Version: m.Version, Manifest: rawManifest, Dir: h.rel(dir), Source: req.Source,
		PackageSHA256: sha, Enabled: false, Status: StatusInactive,
		Config: sealed, ConfigUpdatedAt: now,
		Requested: sortedCopy(m.Permissions), Granted: granted, Denied: denied,
		SecurityLevel: string(m.SecurityLevel), SandboxEnabled: m.Sandbox,
		Limits: store.ResourceLimits{
			MemoryMB: m.ResourceLimits.MemoryMB, CPUPercent: m.ResourceLimits.CPUPercent, FileHandles: m.ResourceLimits.FileHandles,
		},
		InstalledAt: now, UpdatedAt: now,
	}
	verb := "installed"
	if existing != nil {
		verb = "reinstalled"
	}
	if existing != nil {
		rec.SecurityLevel, rec.SandboxEnabled, rec.Limits = existing.rec.SecurityLevel, existing.rec.SandboxEnabled, existing.rec.Limits
		rec.InstalledAt = existing.rec.InstalledAt
	}
	err = h.write(ctx, func(tx store.Tx) error {
		if err := tx.PutPlugin(rec); err != nil {
			return err
		}
		if backup != nil {
			if err := tx.PutBackup(*backup); err != nil {
				return err
			}
		}
		return h.appendLogs(tx, []store.LogRecord{{
			PluginID: m.ID, Time: now, Level: "INFO",
			Message:  fmt.Sprintf("Plugin %s (version %s)", verb, m.Version),
			Metadata: mustJSON(map[string]any{"source": req.Source, "sha256": sha, "granted": granted, "denied": denied}),
		}})
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		if backup != nil {
			_ = os.RemoveAll(h.abs(backup.Dir))
		}
		return InstallResult{}, errs.Wrap(errs.PluginInstallationFailed, err, "could not record the installation")
	}
	if existing != nil && h.abs(existing.rec.Dir) != dir {
		if err := os.RemoveAll(h.abs(existing.rec.Dir)); err != nil {
			h.log.Warn("could not remove the replaced plugin directory", "dir", existing.rec.Dir, "error", err)
		}
	}
	h.log.Info("plugin installed", "plugin_id", m.ID, "version", m.Version, "source", req.Source, "granted", granted, "denied", denied)
	h.system(ctx, "plugin.installed", map[string]any{"plugin_id": m.ID, "version": m.Version, "source": req.Source})
	res := InstallResult{
		PluginID: m.ID, Name: m.Name, Version: m.Version, Status: StatusInactive, Enabled: false,
		InstalledAt: now,
	}
	if req.AutoEnable {
		// Installed either way; the answer says whether it started.
		unlock()
		status, err := h.Enable(ctx, m.ID, EnableOptions{})
		if err != nil {
			return InstallResult{}, err
		}
		res.Status, res.Enabled = status, true
	}
	res.Duration = time.Since(start)
	return res, nil
}

// checkDependents makes sure the installed plugins that depend on m accept its version.
func checkDependents(m *manifest.Manifest, all []loaded) error {
	v, err := semver.NewVersion(m.Version)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "internal error")
	}
	var problems []errs.FieldViolation
	for _, p := range all {
		constraint, ok := p.man.Dependencies.Plugins[m.ID]
		if !ok {
			continue
		}
		if c, err := semver.NewConstraint(constraint); err != nil || !c.Check(v) {
			problems = append(problems, errs.FieldViolation{Field: "dependents." + p.rec.ID, Description: fmt.Sprintf("needs %s %s, not %s", m.ID, constraint, m.Version)})
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errs.WithFields(errs.PluginDependencyError, fmt.Sprintf("installed plugins do not accept %s %s", m.ID, m.Version), problems)
}

// carryConfig moves an installed plugin's configuration to a new schema: values of fields
// the new schema still declares, and that still pass it, are kept; patch goes on top.
func (h *Host) carryConfig(old loaded, schema configschema.Schema, patch map[string]any) (map[string]any, error) {
	current, err := h.openConfig(old)
	if err != nil {
		return nil, err
	}
	kept := map[string]any{}
	for k, v := range current {
		if _, ok := schema.Field(k); !ok {
			continue
		}
		if _, _, _, problems := schema.Apply(schema.Defaults(), map[string]any{k: v}); hasFieldProblem(problems, k) {
			continue
		}
		kept[k] = v
	}
	base, _, _, err := applyConfig(schema, schema.Defaults(), kept)
	if err != nil {
		return nil, err
	}
	merged, _, _, err := applyConfig(schema, base, patch)
	return merged, err
}

func hasFieldProblem(problems []errs.FieldViolation, field string) bool {
	for _, p := range problems {
		if p.Field == field {
			return true
		}
	}
	return false
}

// keepDecisions applies an administrator's earlier grants and revocations to the policy's
// decisions for a new version's requests.
func keepDecisions(granted, denied []string, old store.Plugin, requested []string) ([]string, []string) {
	for _, g := range old.Granted {
		granted = append(granted, g)
		denied = slices.DeleteFunc(denied, func(d string) bool { return d == g })
	}
	for _, d := range old.Denied {
		if slices.Contains(requested, d) && !slices.Contains(old.Granted, d) {
			denied = append(denied, d)
			granted = slices.DeleteFunc(granted, func(g string) bool { return g == d })
		}
	}
	return sortedCopy(granted), sortedCopy(denied)
}

// fetchPackage returns the bytes of a package from its source: "file" (FilePath or
// PackageData), "repository" (name at Version) or "url" (DownloadURL, optional SHA256).
func (h *Host) fetchPackage(ctx context.Context, source, name string, req InstallRequest) ([]byte, error) {
	switch source {
	case "file":
		return h.readPackage(req)
	case "repository":
		return h.repos.Fetch(ctx, name, req.Version, h.limits.MaxPackageBytes)
	case "url":
		return h.fetchURL(ctx, req.DownloadURL, req.SHA256)
	}
	return nil, errs.New(errs.ValidationError, "source must be repository, file or url")
}

// installDependencies installs, from the repositories and depth first, the dependencies of
// name (at the version constraint would pick) that are not installed yet. chain is the path
// of plugins that led here, for cycles and for errors. Installed dependencies must satisfy
// their constraints.
func (h *Host) installDependencies(ctx context.Context, name, constraint string, chain []string) error {
	chain = append(slices.Clone(chain), name)
	v, err := h.repos.Resolve(name, constraint)
	if err != nil {
		if len(chain) > 1 {
			return errs.New(errs.PluginDependencyError, "dependency %s (%s) cannot be resolved: %s", strings.Join(chain, " -> "), orDefault(constraint, "latest"), errorMessage(err)).
				WithDetail("chain", chain)
		}
		return err
	}
	deps := make([]string, 0, len(v.Dependencies))
	for id := range v.Dependencies {
		deps = append(deps, id)
	}
	sort.Strings(deps)
	for _, dep := range deps {
		want := v.Dependencies[dep]
		if slices.Contains(chain, dep) {
			cycle := append(slices.Clone(chain), dep)
			return errs.New(errs.PluginDependencyError, "dependency cycle: %s", strings.Join(cycle, " -> ")).WithDetail("chain", cycle)
		}
		if p, err := h.load(ctx, dep); err == nil {
			c, cerr := semver.NewConstraint(want)
			have, verr := semver.NewVersion(p.rec.Version)
			if cerr != nil || verr != nil || !c.Check(have) {
				path := append(slices.Clone(chain), dep)
				return errs.New(errs.PluginDependencyError, "%s needs %s %s, but %s is installed", strings.Join(path, " -> "), dep, want, p.rec.Version).
					WithDetail("chain", path)
			}
			continue
		}
		if err := h.installDependencies(ctx, dep, want, chain); err != nil {
			return err
		}
		if _, err := h.Install(ctx, InstallRequest{Source: "repository", PluginName: dep, Version: want}); err != nil && !errs.Is(err, errs.PluginAlreadyInstalled) {
			return errs.New(errs.PluginDependencyError, "installing dependency %s failed: %s", strings.Join(append(slices.Clone(chain), dep), " -> "), errorMessage(err)).
				WithDetail("chain", append(slices.Clone(chain), dep))
		}
	}
	return nil
}

// fetchURL downloads a package from an http(s) URL, checking its sha256 when given.
func (h *Host) fetchURL(ctx context.Context, url, sha string) ([]byte, error) {
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		return nil, errs.WithFields(errs.ValidationError, "download_url must be an http or https URL",
			[]errs.FieldViolation{{Field: "download_url", Description: "must be an http or https URL"}})
	}
	data, err := repository.Fetch(ctx, url, url, h.limits.MaxPackageBytes, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	if sha != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != sha {
			return nil, errs.New(errs.PluginInstallationFailed, "checksum mismatch: the download's sha256 is %s, not %s", got, sha)
		}
	}
	return data, nil
}

// readPackage returns the package bytes of a file install, bounded by the package limit.
func (h *Host) readPackage(req InstallRequest) ([]byte, error) {
	max := h.limits.MaxPackageBytes
	if len(req.PackageData) > 0 {
		if req.FilePath != "" {
			return nil, errs.New(errs.ValidationError, "give either file_path or package_data, not both")
		}
		if int64(len(req.PackageData)) > max {
			return nil, errs.New(errs.PluginInstallationFailed, "the package is larger than %d bytes", max)
		}
		return req.PackageData, nil
	}
	if req.FilePath == "" {
		return nil, errs.New(errs.ValidationError, "source file needs file_path or package_data")
	}
	if !filepath.IsAbs(req.FilePath) {
		return nil, errs.WithFields(errs.ValidationError, "file_path must be an absolute path on the server",
			[]errs.FieldViolation{{Field: "file_path", Description: "must be an absolute path"}})
	}
	// Non-blocking, so that a FIFO or device cannot hang the request; only regular files
	// are read.
	f, err := os.OpenFile(req.FilePath, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, errs.New(errs.PluginInstallationFailed, "cannot open the package file %s: %s", req.FilePath, osReason(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, errs.New(errs.PluginInstallationFailed, "the package file %s is not a regular file", req.FilePath)
	}
	if st.Size() > max {
		return nil, errs.New(errs.PluginInstallationFailed, "the package is larger than %d bytes", max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, errs.New(errs.PluginInstallationFailed, "cannot read the package file %s: %s", req.FilePath, osReason(err))
	}
	if int64(len(data)) > max {
		return nil, errs.New(errs.PluginInstallationFailed, "the package is larger than %d bytes", max)
	}
	return data, nil
}

func osReason(err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "no such file"
	case errors.Is(err, os.ErrPermission):
		return "permission denied"
	}
	return "I/O error"
}

// packageError reports an unusable package (unsafe, corrupt, too large, no manifest).
func packageError(err error) error {
	var de *errs.Error
	if errors.As(err, &de) {
		return de
	}
	return errs.Wrap(errs.PluginInstallationFailed, err, "the package was refused: %v", err)
}

// checkEntryPoint makes sure a host-launched plugin's entry point is an executable file of
// the package.
func checkEntryPoint(dir string, m *manifest.Manifest) error {
	if m.External {
		return nil
	}
	st, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(m.EntryPoint)))
	switch {
	case err != nil:
		return errs.New(errs.PluginInstallationFailed, "the entry point %s is not in the package", m.EntryPoint)
	case !st.Mode().IsRegular():
		return errs.New(errs.PluginInstallationFailed, "the entry point %s is not a regular file", m.EntryPoint)
	case st.Mode().Perm()&0o111 == 0:
		return errs.New(errs.PluginInstallationFailed, "the entry point %s is not executable", m.EntryPoint)
	}
	return nil
}

func checkPlatform(m *manifest.Manifest) error {
	if len(m.OS) > 0 && !slices.Contains(m.OS, runtime.GOOS) {
		return errs.New(errs.PluginIncompatible, "plugin %s is built for %s, not %s", m.ID, strings.Join(m.OS, ", "), runtime.GOOS)
	}
	if len(m.Arch) > 0 && !slices.Contains(m.Arch, runtime.GOARCH) {
		return errs.New(errs.PluginIncompatible, "plugin %s is built for %s, not %s", m.ID, strings.Join(m.Arch, ", "), runtime.GOARCH)
	}
	return nil
}

// checkDependencies makes sure every plugin m depends on is installed in a version that
// satisfies its constraint.
func checkDependencies(m *manifest.Manifest, all []loaded) error {
	installed := map[string]string{}
	for _, p := range all {
		installed[p.rec.ID] = p.rec.Version
	}
	var problems []errs.FieldViolation
	var missing []string
	for _, dep := range m.DependencyIDs() {
		constraint := m.Dependencies.Plugins[dep]
		have, ok := installed[dep]
		if !ok {
			missing = append(missing, dep)
			problems = append(problems, errs.FieldViolation{Field: "dependencies.plugins." + dep, Description: "is not installed (needs " + constraint + ")"})
			continue
		}
		c, err := semver.NewConstraint(constraint)
		v, verr := semver.NewVersion(have)
		if err != nil || verr != nil || !c.Check(v) {
			problems = append(problems, errs.FieldViolation{Field: "dependencies.plugins." + dep, Description: fmt.Sprintf("version %s is installed, needs %s", have, constraint)})
		}
	}
	if len(problems) == 0 {
		return nil
	}
	e := errs.WithFields(errs.PluginDependencyError, fmt.Sprintf("plugin %s has unmet dependencies: %s", m.ID, configProblemMessage(problems)[len("invalid configuration: "):]), problems)
	if len(missing) > 0 {
		e.WithDetail("missing", missing)
	}
	return e
}

// Uninstall removes a plugin.
func (h *Host) Uninstall(ctx context.Context, id string, opts UninstallOptions) (UninstallResult, error) {
	unlock, dependents := h.lockWithDependents(id)
	defer unlock()
	all, g, err := h.loadAll(ctx)
	if err != nil {
		return UninstallResult{}, err
	}
	idx := slices.IndexFunc(all, func(p loaded) bool { return p.rec.ID == id })
	if idx < 0 {
		return UninstallResult{}, errs.New(errs.PluginNotFound, "plugin %q is not installed", id)
	}
	p := all[idx]
	if deps := g.Dependents(id); len(deps) > 0 && !opts.Force {
		return UninstallResult{}, errs.New(errs.PluginDependencyError,
			"plugins %s depend on %s; uninstall them first or pass force", strings.Join(deps, ", "), id).
			WithDetail("dependents", deps)
	}
	// Its dependents (uninstalled by force) and the plugin itself are stopped first,
	// gracefully.
	h.stopDependents(ctx, id, dependents, "uninstalled")
	h.rt.stop(ctx, h.rt.get(id), DisableOptions{Reason: "uninstalled", Graceful: true, Timeout: uninstallGrace})
	now := h.now()
	res := UninstallResult{PluginID: id, UninstalledAt: now, DataRemoved: opts.CleanupData}
	var backup *store.Backup
	if opts.Backup {
		b, err := h.copyToBackup(p.rec, "uninstall", now)
		if err != nil {
			return UninstallResult{}, err
		}
		backup = &b
		res.BackupCreated, res.BackupID = true, b.ID
	}
	err = h.write(ctx, func(tx store.Tx) error {
		if err := tx.DeletePlugin(id); err != nil {
			return err
		}
		if err := tx.DeletePluginTokens(id); err != nil {
			return err
		}
		if backup != nil {
			if err := tx.PutBackup(*backup); err != nil {
				return err
			}
		}
		if opts.CleanupData {
			return tx.DeleteLogs(id)
		}
		return h.appendLogs(tx, []store.LogRecord{{PluginID: id, Time: now, Level: "INFO", Message: "Plugin uninstalled (version " + p.rec.Version + ")"}})
	})
	if err != nil {
		if backup != nil {
			_ = os.RemoveAll(h.abs(backup.Dir))
		}
		return UninstallResult{}, errs.Wrap(errs.Internal, err, "could not record the uninstallation")
	}
	if err := os.RemoveAll(h.abs(p.rec.Dir)); err != nil {
		h.log.Warn("could not remove the plugin directory; it is removed at the next start", "dir", p.rec.Dir, "error", err)
	}
	_ = os.Remove(filepath.Dir(h.abs(p.rec.Dir)))
	h.metrics.Forget(id)
	h.rt.forget(id)
	h.msg.forget(id)
	if opts.CleanupData {
		// Lines the plugin wrote last may still be queued: they go too.
		if err := h.logs.Purge(context.WithoutCancel(ctx), id); err != nil {
			h.log.Warn("could not remove the plugin's logs", "plugin_id", id, "error", err)
		}
		if err := h.kv.DeleteAll(ctx, id); err != nil {
			h.log.Warn("could not remove the plugin's key-value data", "plugin_id", id, "error", err)
		}
		if err := h.msg.bus.Purge(ctx, id); err != nil {
			h.log.Warn("could not remove the plugin's inbox and dead letters", "plugin_id", id, "error", err)
		}
	}
	h.log.Info("plugin uninstalled", "plugin_id", id, "backup_id", res.BackupID, "data_removed", opts.CleanupData)
	h.system(ctx, "plugin.uninstalled", map[string]any{"plugin_id": id, "version": p.rec.Version, "data_removed": opts.CleanupData})
	return res, nil
}

// uninstallGrace is how long an uninstalled plugin's instances may take to shut down after
// the shutdown frame, before their process is signalled and their sessions are ended.
const uninstallGrace = 10 * time.Second

// copyToBackup copies a plugin's package directory into a new backup directory.
func (h *Host) copyToBackup(rec store.Plugin, reason string, now time.Time) (store.Backup, error) {
	id := "backup_" + now.Format("20060102T150405") + "_" + randomHex(4)
	dir := filepath.Join(h.backupsDir(), rec.ID, id)
	tmp := dir + ".tmp"
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return store.Backup{}, errs.Wrap(errs.Internal, err, "could not create the backup")
	}
	size, err := copyTree(h.abs(rec.Dir), tmp)
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return store.Backup{}, errs.Wrap(errs.Internal, err, "could not create the backup")
	}
	return store.Backup{ID: id, PluginID: rec.ID, Version: rec.Version, Reason: reason, CreatedAt: now, Dir: h.rel(dir), SizeBytes: size, Plugin: rec}, nil
}

// syncTree flushes every file and directory of dir, and dir's entry in its parent, to disk.
func syncTree(dir string) error {
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink != 0 {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
	if err != nil {
		return err
	}
	parent, err := os.Open(filepath.Dir(dir))
	if err != nil {
		return err
	}
	defer parent.Close()
	return parent.Sync()
}

// copyTree copies regular files, directories and symlinks from src to a new dst.
func copyTree(src, dst string) (int64, error) {
	var total int64
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, info.Mode().Perm())
			if err != nil {
				return err
			}
			n, err := io.Copy(out, in)
			total += n
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			return err
		}
		return nil
	})
	return total, err
}

// Config returns a plugin's configuration; secrets are masked unless includeSecrets.
func (h *Host) Config(ctx context.Context, id string, includeSecrets bool) (ConfigView, error) {
	p, err := h.load(ctx, id)
	if err != nil {
		return ConfigView{}, err
	}
	values, err := h.openConfig(p)
	if err != nil {
		return ConfigView{}, err
	}
	schema := p.man.Schema()
	if !includeSecrets {
		values = schema.Mask(values)
	}
	return ConfigView{Values: values, Schema: schema.Raw(), LastUpdated: p.rec.ConfigUpdatedAt}, nil
}

// UpdateConfig merges patch into a plugin's configuration after validating the result
// against its schema. Nothing is stored when a value is invalid.
func (h *Host) UpdateConfig(ctx context.Context, id string, patch map[string]any) (ConfigUpdate, error) {
	defer h.locks.lock(id)()
	p, err := h.load(ctx, id)
	if err != nil {
		return ConfigUpdate{}, err
	}
	current, err := h.openConfig(p)
	if err != nil {
		return ConfigUpdate{}, err
	}
	schema := p.man.Schema()
	merged, updated, restart, err := applyConfig(schema, current, orEmptyMap(patch))
	if err != nil {
		return ConfigUpdate{}, err
	}
	now := h.now()
	if len(updated) > 0 {
		// A running plugin gets the change first: if it rejects it, nothing is stored.
		if err := h.rt.pushConfig(ctx, id, merged, updated, restart); err != nil {
			return ConfigUpdate{}, err
		}
		h.logs.SetSecrets(id, secretStrings(merged, schema.SecretFields()))
		sealed, err := h.sealConfig(schema, merged)
		if err != nil {
			return ConfigUpdate{}, err
		}
		rec := p.rec
		rec.Config, rec.ConfigUpdatedAt, rec.UpdatedAt = sealed, now, now
		err = h.write(ctx, func(tx store.Tx) error {
			if err := tx.PutPlugin(rec); err != nil {
				return err
			}
			return h.appendLogs(tx, []store.LogRecord{{
				PluginID: id, Time: now, Level: "INFO", Message: "Configuration updated",
				Metadata: mustJSON(map[string]any{"updated_fields": updated, "restart_required": restart}),
			}})
		})
		if err != nil {
			return ConfigUpdate{}, errs.Wrap(errs.Internal, err, "could not store the configuration")
		}
	}
	if len(updated) == 0 {
		now = p.rec.ConfigUpdatedAt // nothing changed
	}
	return ConfigUpdate{Values: schema.Mask(merged), UpdatedFields: updated, RestartRequired: restart, UpdatedAt: now}, nil
}

// Permissions returns a plugin's permissions.
func (h *Host) Permissions(ctx context.Context, id string) (Permissions, error) {
	p, err := h.load(ctx, id)
	if err != nil {
		return Permissions{}, err
	}
	return permissionsOf(p.rec), nil
}

func permissionsOf(r store.Plugin) Permissions {
	caps := supervisor.Capabilities()
	var e LimitEnforcement
	if r.Limits.MemoryMB > 0 {
		e.Memory = memoryEnforcement(caps)
	}
	if r.Limits.CPUPercent > 0 {
		e.CPU = caps.CPU
	}
	if r.Limits.FileHandles > 0 {
		e.FileHandles = caps.FileHandles
	}
	return Permissions{
		Requested: r.Requested, Granted: r.Granted, Denied: r.Denied,
		SecurityLevel: r.SecurityLevel, SandboxEnabled: r.SandboxEnabled, Limits: r.Limits, Enforcement: e,
	}
}

// UpdatePermissions grants and revokes permissions and changes security settings. A
// revoked permission that the plugin requested is listed as denied; a granted one is no
// longer denied.
func (h *Host) UpdatePermissions(ctx context.Context, id string, c PermissionChange) (Permissions, error) {
	for _, g := range c.Grant {
		if slices.Contains(c.Revoke, g) {
			return Permissions{}, errs.WithFields(errs.ValidationError, "a permission cannot be granted and revoked at once",
				[]errs.FieldViolation{{Field: "grant", Description: g + " is also in revoke"}})
		}
	}
	defer h.locks.lock(id)()
	p, err := h.load(ctx, id)
	if err != nil {
		return Permissions{}, err
	}
	rec := p.rec
	granted := slices.Clone(rec.Granted)
	denied := slices.Clone(rec.Denied)
	for _, g := range c.Grant {
		granted = append(granted, g)
		denied = slices.DeleteFunc(denied, func(d string) bool { return d == g })
	}
	for _, r := range c.Revoke {
		granted = slices.DeleteFunc(granted, func(x string) bool { return x == r })
		if slices.Contains(rec.Requested, r) {
			denied = append(denied, r)
		}
	}
	for _, r := range c.Revoke {
		if cover := permission.Covering(granted, r); len(cover) > 0 {
			return Permissions{}, errs.WithFields(errs.ValidationError, "a revoked permission is still covered by a wider grant",
				[]errs.FieldViolation{{Field: "revoke", Description: fmt.Sprintf("%s is covered by the grant %s; revoke that instead", r, strings.Join(cover, ", "))}})
		}
	}
	rec.Granted, rec.Denied = sortedCopy(granted), sortedCopy(denied)
	if c.SecurityLevel != "" {
		rec.SecurityLevel = c.SecurityLevel
	}
	if c.SandboxEnabled != nil {
		rec.SandboxEnabled = *c.SandboxEnabled
	}
	if c.Limits != nil {
		rec.Limits = *c.Limits
	}
	now := h.now()
	rec.UpdatedAt = now
	err = h.write(ctx, func(tx store.Tx) error {
		if err := tx.PutPlugin(rec); err != nil {
			return err
		}
		return h.appendLogs(tx, []store.LogRecord{{
			PluginID: id, Time: now, Level: "INFO", Message: "Permissions updated",
			Metadata: mustJSON(map[string]any{"granted": rec.Granted, "denied": rec.Denied, "security_level": rec.SecurityLevel}),
		}})
	})
	if err != nil {
		return Permissions{}, errs.Wrap(errs.Internal, err, "could not store the permissions")
	}
	return permissionsOf(rec), nil
}

// Logs returns one page of an installed plugin's logs, newest first, and the total.
func (h *Host) Logs(ctx context.Context, q LogQuery) ([]store.LogRecord, int, error) {
	if _, err := h.load(ctx, q.PluginID); err != nil {
		return nil, 0, err
	}
	if !q.Start.IsZero() && !q.End.IsZero() && q.End.Before(q.Start) {
		return nil, 0, errs.WithFields(errs.ValidationError, "end_time is before start_time",
			[]errs.FieldViolation{{Field: "end_time", Description: "must not be before start_time"}})
	}
	var recs []store.LogRecord
	var total int
	err := h.st.Read(ctx, func(tx store.Tx) error {
		var err error
		recs, total, err = tx.Logs(q)
		return err
	})
	if err != nil {
		return nil, 0, errs.Wrap(errs.Internal, err, "could not read the logs")
	}
	return recs, total, nil
}

// Backups lists the backups of a plugin (installed or not), newest first.
func (h *Host) Backups(ctx context.Context, id string) ([]store.Backup, error) {
	var out []store.Backup
	err := h.st.Read(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Backups(id)
		return err
	})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "could not read the backups")
	}
	return out, nil
}

// Audit appends an entry to the audit log.
func (h *Host) Audit(ctx context.Context, e store.AuditEntry) error {
	if e.ID == "" {
		e.ID = "aud_" + randomHex(8)
	}
	if e.Time.IsZero() {
		e.Time = h.now()
	}
	return h.st.Write(ctx, func(tx store.Tx) error { return tx.AppendAudit(e) }) // not a plugin record
}

// MetricsCollector exposes the per-plugin Prometheus series.
func (h *Host) MetricsCollector() prometheus.Collector { return h.metrics.Collector() }

// MetricsSummary returns a plugin's current figures.
func (h *Host) MetricsSummary(id string) metrics.Summary { return h.metrics.Summary(id) }

// MetricsSeries returns an installed plugin's metric series (see metrics.Store.Series).
func (h *Host) MetricsSeries(ctx context.Context, id string, start, end time.Time, resolution time.Duration, names []string) (map[string][]metrics.Point, error) {
	if _, err := h.load(ctx, id); err != nil {
		return nil, err
	}
	return h.metrics.Series(id, start, end, resolution, names)
}

// Ready reports whether the host can serve: its store answers.
func (h *Host) Ready(ctx context.Context) error {
	return h.st.Read(ctx, func(tx store.Tx) error {
		_, err := tx.Setting("ready-probe")
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
}

// appendLogs appends log records in a registry transaction, trims the plugin's logs to the
// retention bound, and tells the log sink of them once the transaction commits.
func (h *Host) appendLogs(tx store.Tx, recs []store.LogRecord) error {
	if err := logsink.Append(tx, recs, h.keep); err != nil {
		return err
	}
	if rtx, ok := tx.(*registry.Tx); ok {
		rtx.AfterCommit(func() { h.logs.Stored(recs) })
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func orEmptyMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// TailQuery selects the log records to stream.
type TailQuery = logsink.TailQuery

// TailLogs streams an installed plugin's log records as they are stored, after up to
// q.Backlog stored ones. The channel is closed when ctx ends.
func (h *Host) TailLogs(ctx context.Context, q TailQuery) (<-chan store.LogRecord, error) {
	if _, err := h.load(ctx, q.PluginID); err != nil {
		return nil, err
	}
	return h.logs.Tail(ctx, q)
}

// Repositories lists the configured repositories with their sync state.
func (h *Host) Repositories() []catalog.View { return h.repos.Repositories() }

// SyncRepositories syncs every enabled repository now and returns their state.
func (h *Host) SyncRepositories(ctx context.Context) []catalog.View { return h.repos.Sync(ctx) }

// RunRepositorySync syncs at once and then on every interval until ctx ends.
func (h *Host) RunRepositorySync(ctx context.Context, interval time.Duration) {
	h.repos.RunSync(ctx, interval)
}

// Search searches the synced catalogs of the enabled repositories.
func (h *Host) Search(q catalog.Query) ([]catalog.Entry, int, error) { return h.repos.Search(q) }
