package plugin

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// SDKVersion is the version of this SDK, sent to the host as `nexus-go/<SDKVersion>`.
const SDKVersion = "0.1.0"

// Plugin describes a plugin: what it announces to the host and the handlers that do its
// work. Every handler is optional. Handlers may run concurrently with each other (see
// WithConcurrency) and must honour their context: it is canceled when the plugin stops, and
// a message's context carries the sender's deadline. Every handler's context also carries
// the Session (see SessionFromContext).
type Plugin struct {
	// Version is the plugin's own version, reported in hello.
	Version string
	// Services are the services the plugin offers, for discovery.
	Services []string
	// MessageTypes are the message types the plugin handles.
	MessageTypes []string
	// Subscriptions are event type patterns (e.g. "user.*") to subscribe to, beyond the
	// manifest's. Session.Subscribe and Session.Unsubscribe change them at run time.
	Subscriptions []string

	// OnStart runs once, after the first welcome, with the plugin's configuration and
	// permissions available through the Session. Deliveries and configuration changes wait
	// until it returns; a health check waits for it briefly, then reports a "starting"
	// warning. Its context lives as long as the plugin, so background work may be tied to
	// it. An error stops the plugin: Run closes the stream and returns the error.
	OnStart func(ctx context.Context, s *Session) error
	// OnMessage handles a message and returns the data of a successful reply. An error
	// becomes a reply with status "error" whose message is the error's text, for the sender.
	// Without OnMessage every message is answered with an error. When the sender gives up
	// (it canceled, or its deadline passed), the host says so and the context is canceled,
	// with a cause that says why (see context.Cause); the reply is then not needed.
	OnMessage func(ctx context.Context, m Message) (map[string]any, error)
	// OnEvent handles an event. Nil acknowledges it as done; an error marked with Permanent
	// dead-letters it; any other error leaves it unacknowledged so that the host redelivers
	// it. Events are deduplicated by ID: a redelivery of an event already handled is
	// acknowledged again without calling OnEvent. While it runs, the SDK extends the
	// delivery so that the host does not deliver it again (see Extend).
	OnEvent func(ctx context.Context, e Event) error
	// OnBroadcast handles a broadcast, with the same rules as OnEvent.
	OnBroadcast func(ctx context.Context, b Event) error
	// OnHealthCheck returns the plugin's health checks; it is called only after OnStart has
	// returned, with a context bounded to 10 seconds. Without it, or when it returns none,
	// the SDK reports a single passing check named "sdk". A failing check keeps a starting
	// plugin from becoming active.
	OnHealthCheck func(ctx context.Context) []Check
	// OnConfigChange is told of a new configuration before Session.Config returns it. Nil
	// accepts it; an error rejects it, keeps the current configuration and is reported to the
	// administrator. Changes are handled one at a time, in order.
	OnConfigChange func(ctx context.Context, c ConfigChange) error
	// OnShutdown runs when the host asks the plugin to stop, after in-flight deliveries have
	// finished (or the grace period has run out). Its context ends shortly before the host's
	// grace period does; it may already be done when the deliveries used all of it.
	OnShutdown func(ctx context.Context, reason string)

	// HTTP serves the plugin's HTTP endpoints (the manifest's api_endpoints), which the host
	// serves on its own listener and carries to one connected instance: an ordinary
	// net/http handler (any router). The request's context ends when the caller goes away,
	// the endpoint's timeout passes or the connection to the host is lost; CallerOf tells who
	// called, SessionFromContext gives the session; PathValue reads the pattern's wildcards. Bodies stream both ways: the
	// ResponseWriter is an http.Flusher (Server-Sent Events, large downloads), and the
	// request body arrives as it is sent. Nil answers every call with 501.
	HTTP http.Handler
}

// Message is a request from another plugin (or an administrator, a user, the system) that
// expects a reply.
type Message struct {
	// ID identifies the message; it is stable across redeliveries.
	ID string
	// Source is the sending plugin's id, or "admin", "user" or "system".
	Source string
	// Type is the message type.
	Type string
	// Data is the payload. Numbers are float64, as in JSON.
	Data map[string]any
	// Attempt is 1 on first delivery.
	Attempt int
}

// Event is an event or a broadcast delivered to the plugin.
type Event struct {
	// ID identifies the event; it is stable across redeliveries.
	ID string
	// Source is the emitting plugin's id, or "admin", "user" or "system".
	Source string
	// Type is the event type (for a broadcast, its message type).
	Type string
	// Data is the payload. Numbers are float64, as in JSON.
	Data map[string]any
	// Attempt is 1 on first delivery.
	Attempt int
}

// ConfigChange is a new configuration pushed by the host.
type ConfigChange struct {
	// Config is the whole new configuration, secrets included.
	Config map[string]any
	// UpdatedFields names the fields that changed.
	UpdatedFields []string
	// RestartRequired says that a changed field takes effect only after a restart.
	RestartRequired bool
}

// Status is the outcome of a health check.
type Status string

// The health check statuses.
const (
	StatusPass    Status = "pass"
	StatusWarning Status = "warning"
	StatusFail    Status = "fail"
)

// Check is one health check. Optional fields are pointers; the With methods set them.
type Check struct {
	// Name identifies the check (1 to 128 characters).
	Name string
	// Status is pass, warning or fail; anything else is reported as fail.
	Status Status
	// ResponseTimeMS is how long the checked dependency took to answer.
	ResponseTimeMS *float64
	// Details explains the status.
	Details *string
	// Value is a measured value, compared with Threshold.
	Value *float64
	// Threshold is the limit Value is held to.
	Threshold *float64
	// Unit is the unit of Value and Threshold (at most 32 characters).
	Unit *string
}

// Pass returns a passing check.
func Pass(name string) Check { return Check{Name: name, Status: StatusPass} }

// Warn returns a check with status warning.
func Warn(name, details string) Check {
	return Check{Name: name, Status: StatusWarning, Details: &details}
}

// Fail returns a failing check.
func Fail(name, details string) Check {
	return Check{Name: name, Status: StatusFail, Details: &details}
}

// WithResponseTime returns c with its response time set.
func (c Check) WithResponseTime(d time.Duration) Check {
	ms := float64(d) / float64(time.Millisecond)
	c.ResponseTimeMS = &ms
	return c
}

// WithValue returns c with a measured value, its threshold and their unit.
func (c Check) WithValue(value, threshold float64, unit string) Check {
	c.Value, c.Threshold, c.Unit = &value, &threshold, &unit
	return c
}

// Permanent marks err as permanent: an event or broadcast handler that returns it has its
// delivery dead-lettered at once instead of redelivered. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
