package stream

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/presence"
)

// SessionID is the session's id.
func (s *session) SessionID() string { return s.id }

// InstanceID is the instance's id (from its hello, or given by the host).
func (s *session) InstanceID() string { return s.instanceID }

// PluginID is the plugin the session belongs to.
func (s *session) PluginID() string { return s.pluginID }

// TokenID is the token the session was opened with.
func (s *session) TokenID() string { return s.tokenID }

// Announced are the services and message types the instance announced in its hello.
func (s *session) Announced() (services, messageTypes []string) { return s.services, s.messageTypes }

// Done is closed once the session has ended.
func (s *session) Done() <-chan struct{} { return s.done }

// End ends the session from the host's side (see end).
func (s *session) End(why error) { s.end(why) }

// AskShutdown asks the instance to shut down within timeout; it waits at most a second for
// the frame to be queued, never for the instance.
func (s *session) AskShutdown(ctx context.Context, reason string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return s.enqueue(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Shutdown{Shutdown: &pluginhostv1.Shutdown{
		Reason: reason, TimeoutSeconds: int32(timeout / time.Second)}}})
}

// AskHealth sends a health check and waits for the report.
func (s *session) AskHealth(ctx context.Context) ([]presence.Check, error) {
	id := newFrameID()
	ch := make(chan []presence.Check, 1)
	s.mu.Lock()
	s.health[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.health, id)
		s.mu.Unlock()
	}()
	if err := s.enqueue(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HealthCheck{
		HealthCheck: &pluginhostv1.HealthCheckRequest{CheckId: id}}}); err != nil {
		return nil, err
	}
	select {
	case checks := <-ch:
		return checks, nil
	case <-s.done:
		return nil, errs.New(errs.PluginUnavailable, "plugin %s disconnected", s.pluginID)
	case <-ctx.Done():
		return nil, errs.New(errs.PluginCommunicationTimeout, "plugin %s did not answer its health check in time", s.pluginID)
	}
}

// PushConfig sends a configuration change and waits for the plugin's answer.
func (s *session) PushConfig(ctx context.Context, cfg map[string]any, updated []string, restart bool) (presence.ConfigAck, error) {
	st, err := structpb.NewStruct(cfg)
	if err != nil {
		return presence.ConfigAck{}, errs.Wrap(errs.Internal, err, "internal error")
	}
	id := newFrameID()
	ch := make(chan presence.ConfigAck, 1)
	s.mu.Lock()
	s.acks[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.acks, id)
		s.mu.Unlock()
	}()
	if err := s.enqueue(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_ConfigChanged{
		ConfigChanged: &pluginhostv1.ConfigChanged{Config: st, UpdatedFields: updated, RestartRequired: restart, ChangeId: id}}}); err != nil {
		return presence.ConfigAck{}, err
	}
	select {
	case a := <-ch:
		return a, nil
	case <-s.done:
		return presence.ConfigAck{}, errs.New(errs.PluginUnavailable, "plugin %s disconnected", s.pluginID)
	case <-ctx.Done():
		return presence.ConfigAck{}, errs.New(errs.PluginCommunicationTimeout, "plugin %s did not acknowledge the configuration in time", s.pluginID)
	}
}
