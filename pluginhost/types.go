package pluginhost

import (
	"github.com/nexus-platform/nexus/pluginhost/sandbox"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/install"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/stream"

	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Version is the version of the Nexus server, checked against manifests' nexus_version.
const Version = "1.0.0"

// Plugin states.
const (
	StatusInactive = registry.StatusInactive
	StatusLoading  = registry.StatusLoading
	StatusActive   = registry.StatusActive
	StatusError    = registry.StatusError
)

// Health values of a plugin.
const (
	HealthHealthy   = runtime.HealthHealthy
	HealthDegraded  = runtime.HealthDegraded
	HealthUnhealthy = runtime.HealthUnhealthy
	HealthUnknown   = runtime.HealthUnknown
)

// The types of the domain's packages that the API edge uses, under the names it knows.
type (
	// EndpointInfo is an API endpoint a plugin declares.
	EndpointInfo = registry.Endpoint

	InstallRequest   = install.InstallRequest
	InstallResult    = install.InstallResult
	UninstallOptions = install.UninstallOptions
	UninstallResult  = install.UninstallResult
	UpdateRequest    = install.UpdateRequest
	UpdateResult     = install.UpdateResult

	RuntimeConfig = runtime.Config
	Confinement   = runtime.Confinement
	RuntimeInfo   = runtime.Info
	// Placement is how many copies of a plugin run and where; Slot is one of them.
	Placement = runtime.Placement
	Slot      = runtime.Slot
	// ConnectedInstance is a connected instance of a plugin and its replica.
	ConnectedInstance = runtime.ConnectedInstance
	EnableOptions     = runtime.EnableOptions
	DisableOptions    = runtime.DisableOptions
	Check             = presence.Check

	Payload          = router.Payload
	Origin           = router.Origin
	MessageRequest   = router.MessageRequest
	MessageResult    = router.MessageResult
	BroadcastRequest = router.BroadcastRequest
	BroadcastResult  = router.BroadcastResult
	EventRequest     = router.EventRequest
	EventResult      = router.EventResult
	Event            = router.Event
	ServiceProvider  = router.ServiceProvider
	MessageTypeInfo  = router.MessageTypeInfo
	DeadLetter       = router.DeadLetter

	Stream        = stream.Stream
	StreamEnder   = stream.StreamEnder
	InvalidFrame  = stream.InvalidFrame
	SessionCaller = stream.SessionCaller

	TailQuery = logsink.TailQuery
)

// MaxPayloadBytes bounds a payload (encoded) on every path.
const MaxPayloadBytes = router.MaxPayloadBytes

// The bounds of a message's timeout.
const (
	DefaultMessageTimeout = router.DefaultMessageTimeout
	MaxMessageTimeout     = router.MaxMessageTimeout
)

// ListFilter selects plugins for List. Zero fields do not filter.
type ListFilter struct {
	Status   string
	Category string
	// Search matches id, name and description, case-insensitively.
	Search string
	// IncludeDisabled lists plugins that are not enabled.
	IncludeDisabled bool
}

// Summary counts installed plugins by state.
type Summary struct {
	Total, Active, Inactive, Error, Disabled int
}

// EventInfo is an event type with its description.
type EventInfo struct {
	Type        string
	Description string
}

// PluginView is everything the API shows about an installed plugin.
type PluginView struct {
	ID, Name, Version, Description, Author, Email, Homepage, Category, License string
	Tags                                                                       []string
	Status, StatusReason                                                       string
	Enabled                                                                    bool
	Health                                                                     string
	LoadOrder                                                                  int
	EntryPoint, NexusVersion, PythonVersion                                    string
	// ManifestInstances is the manifest's instance count (see Placement for the one in force).
	ManifestInstances        int
	PackageDeps              map[string]string
	PluginDeps               map[string]string
	Dependencies, Dependents []string
	Permissions              []string
	Endpoints                []EndpointInfo
	Emits, Subscribes        []EventInfo
	// Services and MessageTypes are what the manifest declares it provides and handles.
	Services     []string
	MessageTypes []MessageTypeInfo
	// StatusReason is in the host's words only, for everyone: a failure reason's last
	// output lines of the plugin are cut off (see runtime.PublicReason).
	// StatusReasonWithOutput is the reason as recorded, with those lines (the plugin's
	// secrets hidden): for administrators only.
	StatusReasonWithOutput string
	// Schema is the configuration schema as given in the manifest (Get only: nil in the
	// views List returns, which the list does not show).
	Schema map[string]any
	// Config is the current configuration, secrets masked.
	Config map[string]any
	// Metrics are the plugin's current figures.
	Metrics metrics.Summary
	// Runtime is what the supervisor knows of the plugin's processes and sessions.
	Runtime RuntimeInfo
	// Placement is how many copies should run and, in the detail view with replicas, where
	// (outside the detail view: the manifest's count only).
	Placement Placement
	// RecentLogs are the newest log records, newest first (detail view only).
	RecentLogs             []store.LogRecord
	InstalledAt, UpdatedAt time.Time
}

// ConfigView is a plugin's configuration.
type ConfigView struct {
	Values      map[string]any
	Schema      map[string]any
	LastUpdated time.Time
}

// ConfigUpdate reports a configuration change.
type ConfigUpdate struct {
	Values          map[string]any
	UpdatedFields   []string
	RestartRequired bool
	UpdatedAt       time.Time
}

// Permissions is a plugin's permission state.
type Permissions struct {
	Requested, Granted, Denied []string
	SecurityLevel              string
	SandboxEnabled             bool
	Limits                     store.ResourceLimits
	// Enforcement says how this host enforces each limit that is set.
	Enforcement LimitEnforcement
	// Confinement is the state of every confinement mechanism and limit.
	Confinement sandbox.Report
	// HostLaunched is false for an external plugin, which the host cannot confine.
	HostLaunched bool
}

// LimitEnforcement says how each resource limit is enforced on this host: "rlimit",
// "cgroup", "monitor" (usage is watched and the plugin stopped over its limit) or "" (not
// enforced, or no limit set).
type LimitEnforcement struct {
	Memory, CPU, FileHandles string
}

// PermissionChange changes a plugin's permissions; nil pointers leave a setting unchanged.
type PermissionChange struct {
	Grant, Revoke  []string
	SecurityLevel  string
	SandboxEnabled *bool
	Limits         *store.ResourceLimits
}

// LogQuery selects a page of logs.
type LogQuery = store.LogFilter
