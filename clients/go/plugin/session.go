package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// Session is the plugin's view of its connection to the host: its identity, configuration
// and permissions, a logger whose records go to the host, and the plugin's own requests to
// the host (Send, Broadcast, Emit, Subscribe, Discover, KV). One Session lasts for the
// whole of Run, across reconnections; its methods are safe for concurrent use from any
// goroutine, including handlers and OnStart.
type Session struct {
	// pluginID, logger and requestPrefix are assigned once, before the Session is shared.
	pluginID      string
	logger        *slog.Logger
	requestPrefix string
	// requestSeq numbers the plugin's requests.
	requestSeq atomic.Uint64
	// stopped is closed, through stopOnce, when Run is about to return: requests fail at
	// once from then on instead of waiting for a connection.
	stopped  chan struct{}
	stopOnce sync.Once
	// subscribing holds one token while a Subscribe or Unsubscribe runs: they are applied
	// one at a time, so that the subscriptions recorded for the next hello change in the
	// order the host applied them. It is held while the request waits for its reply, never
	// while mu is held.
	subscribing chan struct{}

	// config is the current configuration, replaced whole (never mutated) on every accepted
	// change and every welcome.
	config atomic.Pointer[structpb.Struct]

	// mu guards the fields below.
	mu          sync.RWMutex
	instanceID  string
	sessionID   string
	hostVersion string
	permissions []string
	// processingTimeout and maxAttempts are what the last welcome said of deliveries.
	processingTimeout time.Duration
	maxAttempts       int
	// subscriptions are the event type patterns sent in every hello: Plugin.Subscriptions,
	// then the patterns added by Subscribe, less those removed by Unsubscribe. The slice is
	// replaced whole, never mutated.
	subscriptions []string
	// conn is the connection requests and log records are sent on; nil while disconnected.
	conn *conn
	// connected is closed while conn is set; a new, open one replaces it when conn is
	// detached.
	connected chan struct{}
}

type sessionKey struct{}

// SessionFromContext returns the Session carried by the context of every handler, or nil.
func SessionFromContext(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}

// Config returns the current configuration, secrets included. The map is the caller's own
// copy; numbers are float64, as in JSON.
func (s *Session) Config() map[string]any { return structToMap(s.config.Load()) }

// Permissions returns the permissions the host granted the plugin.
func (s *Session) Permissions() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.permissions)
}

// HasPermission reports whether the host granted permission p.
func (s *Session) HasPermission(p string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Contains(s.permissions, p)
}

// PluginID returns the plugin's id.
func (s *Session) PluginID() string { return s.pluginID }

// InstanceID returns the name of this instance, as the host last confirmed it.
func (s *Session) InstanceID() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.instanceID
}

// SessionID returns the id the host gave the current (or last) connection.
func (s *Session) SessionID() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sessionID
}

// HostVersion returns the host's version.
func (s *Session) HostVersion() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hostVersion
}

// Logger returns a logger whose records are sent to the host as log frames while the plugin
// is connected, and written to stderr as JSON lines while it is not.
func (s *Session) Logger() *slog.Logger { return s.logger }

// ProcessingTimeout returns how long an event or broadcast delivery may stay unacknowledged
// before the host delivers it again, as the host last said (0 when it did not). While
// OnEvent or OnBroadcast runs the SDK extends the delivery automatically; see Extend.
func (s *Session) ProcessingTimeout() time.Duration {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.processingTimeout
}

// MaxAttempts returns how many times the host attempts an event or broadcast delivery
// before dead-lettering it, as the host last said (0 when it did not). Compare it with
// Event.Attempt to know a last attempt.
func (s *Session) MaxAttempts() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.maxAttempts
}

func newSession(o *options, subscriptions []string) *Session {
	s := &Session{
		pluginID:      o.pluginID,
		instanceID:    o.instanceID,
		requestPrefix: fmt.Sprintf("req-%08x", rand.Uint32()),
		stopped:       make(chan struct{}),
		subscribing:   make(chan struct{}, 1),
		subscriptions: slices.Clone(subscriptions),
		connected:     make(chan struct{}),
	}
	s.logger = slog.New(&logHandler{
		session:  s,
		level:    o.logLevel,
		fallback: slog.NewJSONHandler(o.stderr, &slog.HandlerOptions{Level: o.logLevel}),
	})
	return s
}

// welcome records what a welcome says about the session.
func (s *Session) welcome(w *pluginhostv1.Welcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := w.GetInstanceId(); id != "" {
		s.instanceID = id
	}
	s.sessionID = w.GetSessionId()
	s.hostVersion = w.GetHostVersion()
	s.permissions = slices.Clone(w.GetGrantedPermissions())
	s.processingTimeout = time.Duration(w.GetProcessingTimeoutSeconds()) * time.Second
	s.maxAttempts = int(w.GetMaxAttempts())
}

// attach makes c the connection requests and log records go to, and wakes the requests
// waiting for a connection.
func (s *Session) attach(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		close(s.connected)
	}
	s.conn = c
}

// detach detaches c if it is still the attached connection. Requests made from then on
// wait for the next connection.
func (s *Session) detach(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c {
		s.conn = nil
		s.connected = make(chan struct{})
	}
}

// stop makes every request made from now on, and every one waiting for a connection, fail.
func (s *Session) stop() { s.stopOnce.Do(func() { close(s.stopped) }) }

// helloSubscriptions returns the subscriptions to send in hello.
func (s *Session) helloSubscriptions() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.subscriptions
}

func (s *Session) currentConn() *conn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.conn
}
