package plugin

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
)

// The environment variables the host sets for a plugin process. External plugins set them
// themselves, or pass the matching options.
const (
	EnvPluginID = "NEXUS_PLUGIN_ID"
	EnvHost     = "NEXUS_HOST"
	EnvToken    = "NEXUS_PLUGIN_TOKEN"
)

// Defaults of the options.
const (
	DefaultConcurrency    = 16
	DefaultDedupeSize     = 4096
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = 10 * time.Second
	DefaultKeepalive      = 30 * time.Second
	DefaultKeepaliveWait  = 15 * time.Second
)

// Internal limits and timeouts.
const (
	// defaultShutdownGrace applies when the host's shutdown request names no grace period.
	defaultShutdownGrace    = 10 * time.Second
	defaultHandshakeTimeout = 30 * time.Second
	// healthCheckBudget bounds OnHealthCheck's context.
	healthCheckBudget = 10 * time.Second
	// startingWait is how long a health check waits for OnStart before reporting that the
	// plugin is still starting.
	startingWait = 2 * time.Second
	// closeTimeout bounds a clean close of the stream and the wait for handlers when Run's
	// context ends.
	closeTimeout = 2 * time.Second
	// defaultInlineBudget is how long a job run by the goroutine holding the receive side
	// may hold it before a successor is started to read on (see receive).
	defaultInlineBudget = time.Millisecond
	// idleWorkerTTL is how long a worker goroutine waits for a job before it exits.
	idleWorkerTTL = 30 * time.Second
	// sendQueue is how many frames may wait for the write under way on a connection;
	// senders wait for room beyond.
	sendQueue = 256
	// configQueue is how many configuration changes may wait for OnConfigChange.
	configQueue = 16
)

// Option configures Run. Options override the environment.
type Option interface{ apply(*options) }

type options struct {
	host, token, pluginID, instanceID string
	httpClient                        connect.HTTPClient
	concurrency                       int
	dedupeSize                        int
	logger                            *slog.Logger
	logLevel                          slog.Leveler
	stderr                            io.Writer
	backoffInitial, backoffMax        time.Duration
	keepaliveSet                      bool
	keepalive, keepaliveTimeout       time.Duration
	handshakeTimeout                  time.Duration
	// inlineBudget is how long a job run by the goroutine holding the receive side may
	// hold it (see receive); defaultInlineBudget unless a test sets it.
	inlineBudget time.Duration
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithHost sets the host's base URL (e.g. "http://127.0.0.1:8080"), instead of NEXUS_HOST.
// An http:// host is reached over HTTP/2 without TLS, an https:// host over TLS, verified
// against the system's roots (for other TLS settings, see WithHTTPClient). A path in the
// URL prefixes the stream's path, for a proxy that routes on it. A unix:///path host is
// reached over that Unix socket (HTTP/2 without TLS): how the host gives a plugin it confines
// to a network namespace of its own its way back.
func WithHost(baseURL string) Option { return optionFunc(func(o *options) { o.host = baseURL }) }

// WithToken sets the plugin token, instead of NEXUS_PLUGIN_TOKEN.
func WithToken(token string) Option { return optionFunc(func(o *options) { o.token = token }) }

// WithPluginID sets the plugin id, instead of NEXUS_PLUGIN_ID.
func WithPluginID(id string) Option { return optionFunc(func(o *options) { o.pluginID = id }) }

// WithInstanceID names this instance among the plugin's instances. The default,
// hostname-pid-random, is stable for the life of the process.
func WithInstanceID(id string) Option { return optionFunc(func(o *options) { o.instanceID = id }) }

// WithHTTPClient makes Run open its stream with connect-go's gRPC client over c, instead of
// the default grpc-go client: for a transport of the caller's (a proxy, a custom dialer or
// TLS configuration, an in-memory network in tests). c must speak HTTP/2 (h2c for http://
// hosts), which bidirectional streams need, as nexus.DefaultHTTPClient does; it is left
// open when Run returns, and its own settings replace WithKeepalive. The default client is
// faster on a busy stream: grpc-go's transport batches frames into few writes, where
// net/http's HTTP/2 transport makes one write per frame.
func WithHTTPClient(c connect.HTTPClient) Option {
	return optionFunc(func(o *options) { o.httpClient = c })
}

// WithConcurrency bounds how many deliveries are handled at once (DefaultConcurrency when
// not set; at least 1). Health checks and configuration changes do not count against it.
func WithConcurrency(n int) Option { return optionFunc(func(o *options) { o.concurrency = n }) }

// WithDedupeSize sets how many event and broadcast ids are remembered to drop duplicates
// (DefaultDedupeSize when not set).
func WithDedupeSize(n int) Option { return optionFunc(func(o *options) { o.dedupeSize = n }) }

// WithLogger sets the logger for the SDK's own diagnostics (connection losses, dropped
// frames, handler panics). The default writes warnings and errors as JSON to stderr, which
// the host captures. These records are not sent to the host as log frames; the plugin's
// own logs go through Session.Logger.
func WithLogger(l *slog.Logger) Option { return optionFunc(func(o *options) { o.logger = l }) }

// WithLogLevel sets the minimum level of Session.Logger (slog.LevelInfo when not set).
func WithLogLevel(l slog.Leveler) Option { return optionFunc(func(o *options) { o.logLevel = l }) }

// WithStderr sets where Session.Logger writes JSON lines while the plugin is not connected,
// and where the default diagnostics logger writes (os.Stderr when not set).
func WithStderr(w io.Writer) Option { return optionFunc(func(o *options) { o.stderr = w }) }

// WithReconnectBackoff sets the delay before the first reconnection attempt and its upper
// bound; the delay doubles after every failed attempt, with jitter, and starts over after a
// session that was welcomed. Defaults: DefaultBackoffInitial and DefaultBackoffMax.
func WithReconnectBackoff(initial, max time.Duration) Option {
	return optionFunc(func(o *options) { o.backoffInitial, o.backoffMax = initial, max })
}

// WithKeepalive sets the HTTP/2 keepalive of the default client: when nothing has arrived
// from the host for interval, a ping is sent, and a connection whose ping is not answered
// within timeout is closed, so that Run reconnects. Defaults: DefaultKeepalive and
// DefaultKeepaliveWait; an interval of 0 turns pings off, and an interval under 10s is
// raised to 10s (grpc-go's minimum). It has no effect with WithHTTPClient.
func WithKeepalive(interval, timeout time.Duration) Option {
	return optionFunc(func(o *options) {
		o.keepaliveSet, o.keepalive, o.keepaliveTimeout = true, interval, timeout
	})
}

// resolve applies the environment (through getenv), then opts, then the defaults, and
// validates the result.
func resolve(getenv func(string) string, opts []Option) (options, error) {
	o := options{
		host:     getenv(EnvHost),
		token:    getenv(EnvToken),
		pluginID: getenv(EnvPluginID),
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	var errs []error
	if o.pluginID == "" {
		errs = append(errs, fmt.Errorf("no plugin id: set %s or use WithPluginID", EnvPluginID))
	}
	if o.token == "" {
		errs = append(errs, fmt.Errorf("no plugin token: set %s or use WithToken", EnvToken))
	}
	if o.host == "" {
		errs = append(errs, fmt.Errorf("no host: set %s or use WithHost", EnvHost))
	} else if u, err := url.Parse(o.host); err != nil || !validHost(u) {
		errs = append(errs, fmt.Errorf("host %q is not an http://, https:// or unix:///path URL", o.host))
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("plugin: %w", err)
	}
	if o.concurrency <= 0 {
		o.concurrency = DefaultConcurrency
	}
	if o.dedupeSize <= 0 {
		o.dedupeSize = DefaultDedupeSize
	}
	if o.logLevel == nil {
		o.logLevel = slog.LevelInfo
	}
	if o.stderr == nil {
		o.stderr = os.Stderr
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewJSONHandler(o.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.backoffInitial <= 0 {
		o.backoffInitial = DefaultBackoffInitial
	}
	if o.backoffMax <= 0 {
		o.backoffMax = DefaultBackoffMax
	}
	o.backoffMax = max(o.backoffMax, o.backoffInitial)
	if !o.keepaliveSet {
		o.keepalive, o.keepaliveTimeout = DefaultKeepalive, DefaultKeepaliveWait
	}
	if o.keepaliveTimeout <= 0 {
		o.keepaliveTimeout = DefaultKeepaliveWait
	}
	if o.inlineBudget <= 0 {
		o.inlineBudget = defaultInlineBudget
	}
	if o.handshakeTimeout <= 0 {
		o.handshakeTimeout = defaultHandshakeTimeout
	}
	if o.instanceID == "" {
		o.instanceID = newInstanceID()
	}
	return o, nil
}

// validHost reports whether u is a host the SDK can reach: http:// or https:// with a host,
// or unix:// with an absolute socket path (a confined plugin's way to its host).
func validHost(u *url.URL) bool {
	switch u.Scheme {
	case "http", "https":
		return u.Host != ""
	case "unix":
		return u.Host == "" && strings.HasPrefix(u.Path, "/")
	}
	return false
}
