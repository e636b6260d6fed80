package registry

import (
	"maps"
	"slices"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Plugin is one installed plugin as the registry holds it: its record, its parsed manifest
// and its configuration (secrets opened, and masked for display). It is immutable: a
// change to the plugin replaces it. Slices and maps it returns are shared and must not be
// modified, except where a method says it returns a copy.
type Plugin struct {
	rec    store.Plugin
	man    *manifest.Manifest
	schema configschema.Schema
	// config is the configuration with secrets opened; masked is it with secrets hidden.
	config, masked map[string]any
}

// ID is the plugin's id.
func (p *Plugin) ID() string { return p.rec.ID }

// Version is the installed version.
func (p *Plugin) Version() string { return p.rec.Version }

// Record returns a copy of the stored record (the copy shares its slices: do not modify
// them).
func (p *Plugin) Record() store.Plugin { return p.rec }

// Manifest is the parsed manifest (shared: do not modify).
func (p *Plugin) Manifest() *manifest.Manifest { return p.man }

// Schema is the configuration schema of the installed version.
func (p *Plugin) Schema() configschema.Schema { return p.schema }

// Config returns a copy of the configuration with its secrets opened. The values inside are
// shared: replace them, never modify them.
func (p *Plugin) Config() map[string]any { return maps.Clone(p.config) }

// MaskedConfig is the configuration with every secret hidden (shared: do not modify).
func (p *Plugin) MaskedConfig() map[string]any { return p.masked }

// Enabled reports whether the plugin is enabled.
func (p *Plugin) Enabled() bool { return p.rec.Enabled }

// Status is the recorded status (inactive, loading, active or error).
func (p *Plugin) Status() string { return p.rec.Status }

// StatusReason says why the plugin is in its status, when that needs saying.
func (p *Plugin) StatusReason() string { return p.rec.StatusReason }

// External reports whether the plugin runs elsewhere and connects to the host itself.
func (p *Plugin) External() bool { return p.man.External }

// Granted are the permissions granted to the plugin (shared: do not modify).
func (p *Plugin) Granted() []string { return p.rec.Granted }

// Can reports whether the plugin holds permission perm.
func (p *Plugin) Can(perm string) bool { return permission.Allowed(p.rec.Granted, perm) }

// ConfigUpdatedAt is when the configuration last changed.
func (p *Plugin) ConfigUpdatedAt() time.Time { return p.rec.ConfigUpdatedAt }

// Endpoint is an HTTP endpoint a plugin declares.
type Endpoint struct {
	Path        string
	Methods     []string
	Description string
}

// Endpoints returns the endpoints the manifest declares (a new slice).
func (p *Plugin) Endpoints() []Endpoint {
	out := make([]Endpoint, 0, len(p.man.APIEndpoints))
	for _, e := range p.man.APIEndpoints {
		out = append(out, Endpoint{Path: e.Path, Methods: slices.Clone(e.Methods), Description: e.Description})
	}
	return out
}

// Plugin states.
const (
	StatusInactive = "inactive"
	StatusLoading  = "loading"
	StatusActive   = "active"
	StatusError    = "error"
)
