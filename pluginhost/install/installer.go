// Package install installs, updates, rolls back and uninstalls plugins: each is one staged
// pipeline (fetch the package, inspect its manifest, plan against the installed plugins under
// their lifecycle locks, stage the files beside the running version, commit the record in
// one transaction, activate), with the data directory's layout and the sweep of what an
// interrupted operation left on disk.
package install

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"slices"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/catalog"
	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/kv"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Options configures an Installer. Every field but Logger is required.
type Options struct {
	Registry *registry.Registry
	Catalog  *catalog.Catalog
	Runtime  *runtime.Runtime
	Router   *router.Router
	Logs     *logsink.Sink
	KV       *kv.Store
	Metrics  *metrics.Store
	Logger   *slog.Logger
	// DataDir holds plugins/ (installed packages) and backups/.
	DataDir string
	// Policy decides the permissions granted at install.
	Policy permission.Policy
	// Limits bound package size and extraction.
	Limits archive.Limits
	// HostVersion is the server's version, checked against manifests' nexus_version.
	HostVersion string
	// OnStep, when set, is called as a pipeline reaches each of its steps, with the
	// pipeline ("install", "update", "rollback") and the step's name (see pipeline.go).
	// Tests use it to stop the server at every step; nil in production.
	OnStep func(op, step string)
}

// Installer runs the install, update, rollback and uninstall pipelines. It is safe for
// concurrent use: each pipeline holds the lifecycle locks of the plugins it plans against
// (see runtime.Runtime.Lock), and downloads before taking any.
type Installer struct {
	reg         *registry.Registry
	repos       *catalog.Catalog
	rt          *runtime.Runtime
	router      *router.Router
	logs        *logsink.Sink
	kv          *kv.Store
	metrics     *metrics.Store
	log         *slog.Logger
	dataDir     string
	policy      permission.Policy
	limits      archive.Limits
	hostVersion string
	onStep      func(op, step string)
	now         func() time.Time
}

// New returns an Installer. It does no I/O: see Sweep.
func New(opts Options) *Installer {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Installer{
		reg: opts.Registry, repos: opts.Catalog, rt: opts.Runtime, router: opts.Router, logs: opts.Logs, kv: opts.KV,
		metrics: opts.Metrics, log: opts.Logger, dataDir: opts.DataDir, policy: opts.Policy, limits: opts.Limits,
		hostVersion: opts.HostVersion, onStep: opts.OnStep, now: func() time.Time { return time.Now().UTC() },
	}
}

// loaded is an installed plugin with its record and manifest at hand.
type loaded struct {
	rec store.Plugin
	man *manifest.Manifest
	p   *registry.Plugin
}

func loadedOf(p *registry.Plugin) loaded { return loaded{rec: p.Record(), man: p.Manifest(), p: p} }

// loadAll returns every installed plugin, from the registry's memory.
func (h *Installer) loadAll(context.Context) ([]loaded, *registry.Snapshot, error) {
	snap := h.reg.Snapshot()
	out := make([]loaded, 0, len(snap.All()))
	for _, p := range snap.All() {
		out = append(out, loadedOf(p))
	}
	return out, snap, nil
}

// load returns an installed plugin, or PLUGIN_NOT_FOUND.
func (h *Installer) load(_ context.Context, id string) (loaded, error) {
	p, err := h.reg.Get(id)
	if err != nil {
		return loaded{}, err
	}
	return loadedOf(p), nil
}

// write runs fn in one transaction through the registry (the single writer of records).
func (h *Installer) write(ctx context.Context, fn func(tx store.Tx) error) error {
	return h.reg.Update(ctx, func(tx *registry.Tx) error { return fn(tx) })
}

func (h *Installer) openConfig(p loaded) (map[string]any, error) { return p.p.Config(), nil }

func (h *Installer) sealConfig(schema configschema.Schema, values map[string]any) ([]byte, error) {
	return h.reg.SealConfig(schema, values)
}

// carryConfig moves an installed plugin's configuration to a new schema (see
// registry.CarryConfig).
func (h *Installer) carryConfig(old loaded, schema configschema.Schema, patch map[string]any) (map[string]any, error) {
	return registry.CarryConfig(old.p.Config(), schema, patch)
}

// step tells Options.OnStep that pipeline op reached step.
func (h *Installer) step(op, step string) {
	if h.onStep != nil {
		h.onStep(op, step)
	}
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

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}
