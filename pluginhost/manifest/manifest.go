// Package manifest parses and validates plugin.json, the manifest every plugin package holds:
// identity and version, how to launch the plugin, what it depends on, the permissions it
// requests, the endpoints, events, message types and services it offers, its configuration
// schema and its resource limits.
//
// Parsing is strict, because manifests come from untrusted packages and a demanding author
// wants typos caught: unknown fields (at any level), duplicate keys, trailing data and
// wrongly typed values are errors, and every problem is reported at once with its path
// (e.g. "dependencies.plugins.auth-plugin", "permissions[2]",
// "configuration.batch_size.default"). Parse fills in the documented defaults, so a parsed
// Manifest is explicit and marshals to JSON that parses back to an equal Manifest.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// MaxSize is the largest manifest Parse accepts, in bytes.
const MaxSize = 1 << 20

// Defaults that Parse fills in for absent (or null) fields.
const (
	DefaultNexusVersion        = "*"
	DefaultSecurityLevel       = SecurityMedium
	DefaultSandbox             = true
	DefaultStartTimeoutSeconds = 30
	DefaultInstances           = 1
)

// Limits of resource_limits and start_timeout_seconds.
const (
	MaxMemoryMB            = 65536   // 64 GiB
	MaxCPUPercent          = 6400    // percent of one core, as top shows it: 64 cores
	MaxFileHandles         = 1 << 20 // the usual hard ceiling of RLIMIT_NOFILE
	MinStartTimeoutSeconds = 1
	MaxStartTimeoutSeconds = 600
	// MaxInstances bounds instances (and the count an administrator sets through the API).
	MaxInstances = 64
)

// invalidMessage is the message of every error Parse and Validate return.
const invalidMessage = "plugin manifest is invalid"

// SecurityLevel is how much scrutiny a plugin gets.
type SecurityLevel string

// The security levels.
const (
	SecurityLow      SecurityLevel = "low"
	SecurityMedium   SecurityLevel = "medium"
	SecurityHigh     SecurityLevel = "high"
	SecurityCritical SecurityLevel = "critical"
)

// Valid reports whether l is one of the security levels.
func (l SecurityLevel) Valid() bool {
	switch l {
	case SecurityLow, SecurityMedium, SecurityHigh, SecurityCritical:
		return true
	}
	return false
}

// Manifest is a parsed plugin.json. Build one with Parse; a Manifest built in code must set
// the defaulted fields (NexusVersion, SecurityLevel, Sandbox, StartTimeoutSeconds, Instances) itself and
// can be checked with Validate.
type Manifest struct {
	// ID is the plugin id: kebab-case, 3 to 64 characters, not a reserved word.
	ID string `json:"id"`
	// Name is the display name.
	Name string `json:"name"`
	// Version is the plugin's version, strict semver (e.g. "1.2.0").
	Version     string `json:"version"`
	Description string `json:"description,omitempty"`
	Author      string `json:"author,omitempty"`
	Email       string `json:"email,omitempty"`
	// Homepage is an http(s) URL.
	Homepage string   `json:"homepage,omitempty"`
	License  string   `json:"license,omitempty"`
	Category string   `json:"category,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	// EntryPoint is the program to run, a slash-separated path relative to the package root
	// (no spaces; arguments go in Args). Required unless External.
	EntryPoint string `json:"entry_point,omitempty"`
	// Args are the arguments passed to EntryPoint.
	Args []string `json:"args,omitempty"`
	// External says the host does not launch the plugin: it runs elsewhere and connects with
	// its plugin token. EntryPoint and Args must then be empty.
	External bool `json:"external,omitempty"`
	// NexusVersion is the semver constraint the server's version must satisfy.
	NexusVersion string `json:"nexus_version"`
	// PythonVersion is informational.
	PythonVersion string `json:"python_version,omitempty"`
	// OS and Arch list the platforms (GOOS and GOARCH names) the plugin runs on; empty means any.
	OS           []string     `json:"os,omitempty"`
	Arch         []string     `json:"arch,omitempty"`
	Dependencies Dependencies `json:"dependencies,omitzero"`
	// Permissions are the `resource:action` permissions the plugin requests.
	Permissions    []string            `json:"permissions,omitempty"`
	APIEndpoints   []APIEndpoint       `json:"api_endpoints,omitempty"`
	Events         Events              `json:"events,omitzero"`
	MessageTypes   []MessageType       `json:"message_types,omitempty"`
	Services       []string            `json:"services,omitempty"`
	Configuration  configschema.Schema `json:"configuration,omitzero"`
	ResourceLimits ResourceLimits      `json:"resource_limits,omitzero"`
	SecurityLevel  SecurityLevel       `json:"security_level"`
	// Sandbox says the plugin runs sandboxed.
	Sandbox bool `json:"sandbox"`
	// StartTimeoutSeconds bounds how long the plugin may take to connect and report ready.
	StartTimeoutSeconds int `json:"start_timeout_seconds"`
	// Instances is how many copies of a host-launched plugin run, 1..MaxInstances: on servers
	// sharing a database each replica runs at most one of them; a single server runs one.
	// Administrators may change the count through the API. External plugins ignore it (they
	// run as many instances as connect).
	Instances int `json:"instances"`
}

// InstanceCount is how many copies of the plugin run when no administrator set a count:
// Instances, or DefaultInstances when it is 0.
func (m *Manifest) InstanceCount() int {
	if m.Instances <= 0 {
		return DefaultInstances
	}
	return m.Instances
}

// Dependencies are what a plugin needs besides the host.
type Dependencies struct {
	// Packages maps language-level package names to version specifiers, in the plugin's own
	// ecosystem's syntax (e.g. "pyjwt": ">=2.0.0"). The host does not interpret them.
	Packages map[string]string `json:"packages,omitempty"`
	// Plugins maps plugin ids to semver constraints on their versions.
	Plugins map[string]string `json:"plugins,omitempty"`
}

// APIEndpoint is an HTTP endpoint the plugin serves.
type APIEndpoint struct {
	// Path starts with "/"; it may hold wildcards as Go's http.ServeMux patterns read them
	// ("/api/v1/auth/users/{id}", "/files/{path...}").
	Path string `json:"path"`
	// Methods are upper-case HTTP methods.
	Methods     []string `json:"methods"`
	Description string   `json:"description,omitempty"`
	// Auth says who may call it: AuthPublic (anyone), AuthToken (any valid Nexus token, the
	// default) or a permission (resource:action) the caller must hold.
	Auth string `json:"auth,omitempty"`
	// TimeoutSeconds bounds one call, from the request to the end of the response (default
	// DefaultEndpointTimeoutSeconds, at most MaxEndpointTimeoutSeconds).
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// Who may call an endpoint, besides a permission.
const (
	AuthPublic = "public"
	AuthToken  = "token"
)

// Endpoint call timeouts, in seconds.
const (
	DefaultEndpointTimeoutSeconds = 30
	MaxEndpointTimeoutSeconds     = 300
)

// Patterns returns the endpoint's http.ServeMux patterns, one per method ("GET /path").
func (e APIEndpoint) Patterns() []string {
	out := make([]string, len(e.Methods))
	for i, m := range e.Methods {
		out[i] = m + " " + e.Path
	}
	return out
}

// Events lists the event types a plugin emits and subscribes to. In plugin.json each entry
// may be a bare type string or an object; Parse normalises entries to objects.
type Events struct {
	Emits []Event `json:"emits,omitempty"`
	// Subscribes may use "*" as a whole dot-separated segment: "user.*", "*.error", "*".
	Subscribes []Event `json:"subscribes,omitempty"`
}

// Event is one event type.
type Event struct {
	Type        string `json:"type"`
	Description string `json:"description,omitempty"`
}

// MessageType is a message type the plugin handles.
type MessageType struct {
	Type        string `json:"type"`
	Description string `json:"description,omitempty"`
	// RequiredPermission, when set, is a permission (without wildcards) the sender must hold.
	RequiredPermission string `json:"required_permission,omitempty"`
}

// ResourceLimits caps what the plugin may use; zero means the host's default.
type ResourceLimits struct {
	MemoryMB    int `json:"memory_mb,omitempty"`
	CPUPercent  int `json:"cpu_percent,omitempty"`
	FileHandles int `json:"file_handles,omitempty"`
}

// Parse decodes and validates a manifest. On failure it returns an *errs.Error with code
// errs.ValidationError whose Fields list every problem found.
func Parse(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, invalid(errs.FieldViolation{Field: "manifest",
			Description: fmt.Sprintf("must be at most %d bytes, got %d", MaxSize, len(data))})
	}
	if !utf8.Valid(data) {
		return nil, invalid(errs.FieldViolation{Field: "manifest", Description: "must be UTF-8 text"})
	}
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&top); err != nil {
		return nil, invalid(errs.FieldViolation{Field: "manifest", Description: jsonProblem(data, err)})
	}
	if top == nil {
		return nil, invalid(errs.FieldViolation{Field: "manifest", Description: "must be a JSON object"})
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid(errs.FieldViolation{Field: "manifest",
			Description: "must hold one JSON object and nothing after it"})
	}
	d := &decoder{failed: map[string]bool{}}
	problems := duplicateKeys(data)
	m := d.manifest(top)
	problems = append(problems, d.problems...)
	for _, p := range m.problems() {
		if !d.covers(p.Field) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		sortByField(problems)
		return nil, invalid(problems...)
	}
	return m, nil
}

// Validate checks every rule of a manifest and returns an *errs.Error with code
// errs.ValidationError listing every problem, or nil.
func (m *Manifest) Validate() error {
	if m == nil {
		return invalid(errs.FieldViolation{Field: "manifest", Description: "is missing"})
	}
	if problems := m.problems(); len(problems) > 0 {
		return invalid(problems...)
	}
	return nil
}

// Schema returns the configuration schema.
func (m *Manifest) Schema() configschema.Schema { return m.Configuration }

// DependencyIDs returns the ids of the plugins this plugin depends on, sorted.
func (m *Manifest) DependencyIDs() []string {
	if len(m.Dependencies.Plugins) == 0 {
		return nil
	}
	ids := make([]string, 0, len(m.Dependencies.Plugins))
	for id := range m.Dependencies.Plugins {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// CheckCompatible checks the server's version against NexusVersion. A pre-release or build of
// the server (e.g. "1.3.0-rc.1") is compatible when either it or its release version
// ("1.3.0") satisfies the constraint, so release candidates run the plugins of their release
// (and "<1.3.0" admits "1.3.0-rc.1", which precedes 1.3.0 in semver order).
// An incompatible plugin is an *errs.Error with code errs.PluginIncompatible whose details
// carry "nexus_version" (the constraint) and "server_version".
func (m *Manifest) CheckCompatible(nexusVersion string) error {
	constraint := m.NexusVersion
	if constraint == "" {
		constraint = DefaultNexusVersion
	}
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return errs.Wrap(errs.PluginIncompatible, err,
			"plugin %s declares an invalid nexus_version constraint %q", m.ID, constraint).
			WithDetail("nexus_version", constraint).WithDetail("server_version", nexusVersion)
	}
	v, err := semver.NewVersion(nexusVersion)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "the server version is not a semantic version")
	}
	c.IncludePrerelease = true // order pre-releases as semver does: 1.3.0-rc.1 < 1.3.0
	if c.Check(v) {
		return nil
	}
	if v.Prerelease() != "" || v.Metadata() != "" {
		if c.Check(semver.New(v.Major(), v.Minor(), v.Patch(), "", "")) {
			return nil
		}
	}
	return errs.New(errs.PluginIncompatible,
		"plugin %s requires Nexus %s, but this server is version %s", m.ID, constraint, nexusVersion).
		WithDetail("nexus_version", constraint).WithDetail("server_version", nexusVersion)
}

// SupportsPlatform reports whether the plugin runs on goos/goarch (empty OS or Arch lists
// mean any).
func (m *Manifest) SupportsPlatform(goos, goarch string) bool {
	return (len(m.OS) == 0 || slices.Contains(m.OS, goos)) &&
		(len(m.Arch) == 0 || slices.Contains(m.Arch, goarch))
}

// ValidID reports whether id is a valid plugin id: kebab-case (^[a-z][a-z0-9-]{1,62}[a-z0-9]$)
// and not a reserved word.
func ValidID(id string) bool { return idRE.MatchString(id) && !IsReservedID(id) }

// IsReservedID reports whether id is a word the API reserves (install, broadcast, search,
// repositories), which is never a plugin id.
func IsReservedID(id string) bool {
	switch id {
	case "install", "broadcast", "search", "repositories":
		return true
	}
	return false
}

func invalid(problems ...errs.FieldViolation) *errs.Error {
	return errs.WithFields(errs.ValidationError, invalidMessage, problems)
}

// jsonProblem describes a decoding failure of the whole document, with a position.
func jsonProblem(data []byte, err error) string {
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		line, col := position(data, syntaxErr.Offset)
		return fmt.Sprintf("is not valid JSON: %s (line %d, column %d)", syntaxErr.Error(), line, col)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "is not valid JSON: unexpected end of input"
	}
	return "must be a JSON object"
}

// position converts a byte offset into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:])
	return line, max(col, 1)
}

// fieldOrder lists the top-level fields in the order problems are reported.
const fieldOrder = "id name version description author email homepage license category tags " +
	"entry_point args external nexus_version python_version os arch dependencies permissions " +
	"api_endpoints events message_types services configuration resource_limits security_level " +
	"sandbox start_timeout_seconds instances"

// sortByField orders problems by the position of their top-level field in a manifest
// (document-level problems first, unknown fields last), keeping the order within a field.
func sortByField(problems []errs.FieldViolation) {
	order := strings.Fields(fieldOrder)
	rank := func(path string) int {
		if path == "manifest" {
			return -1
		}
		top, _, _ := strings.Cut(path, ".")
		top, _, _ = strings.Cut(top, "[")
		if i := slices.Index(order, top); i >= 0 {
			return i
		}
		return len(order)
	}
	slices.SortStableFunc(problems, func(a, b errs.FieldViolation) int {
		return rank(a.Field) - rank(b.Field)
	})
}
