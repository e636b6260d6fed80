package plugin

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// Session is the plugin's view of its connection to the host: its identity, configuration
// and permissions, and a logger whose records go to the host. One Session lasts for the
// whole of Run, across reconnections; its methods are safe for concurrent use.
type Session struct {
	// pluginID and logger are assigned once, before the Session is shared.
	pluginID string
	logger   *slog.Logger

	// config is the current configuration, replaced whole (never mutated) on every accepted
	// change and every welcome.
	config atomic.Pointer[structpb.Struct]

	// mu guards the fields below.
	mu          sync.RWMutex
	instanceID  string
	sessionID   string
	hostVersion string
	permissions []string
	// conn is the connection log records are sent on; nil while disconnected.
	conn *conn
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

func newSession(o *options) *Session {
	s := &Session{pluginID: o.pluginID, instanceID: o.instanceID}
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
}

// attach makes c the connection log records go to; nil detaches.
func (s *Session) attach(c *conn) {
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
}

// detach detaches c if it is still the attached connection.
func (s *Session) detach(c *conn) {
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	s.mu.Unlock()
}

func (s *Session) currentConn() *conn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.conn
}
