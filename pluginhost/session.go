package pluginhost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Stream is a plugin's PluginHostService.Connect call as the transport hands it over.
// Receive is called from one goroutine and Send from another.
type Stream interface {
	Receive() (*pluginhostv1.ConnectRequest, error)
	Send(*pluginhostv1.ConnectResponse) error
}

// Check is one health check a plugin reports.
type Check struct {
	Name           string
	Status         string // pass, warning or fail
	ResponseTimeMS *float64
	Details        *string
	Value          *float64
	Threshold      *float64
	Unit           *string
}

// configAck is a plugin's answer to a configuration change.
type configAck struct {
	accepted bool
	reason   string
}

// session is one connected instance of a plugin. Frames to the plugin go through out,
// drained by the session's send pump; waiters are guarded by mu.
type session struct {
	id, instanceID, pluginID string
	connectedAt              time.Time
	out                      chan *pluginhostv1.ConnectResponse
	done                     chan struct{} // closed when the session ends

	mu      sync.Mutex
	health  map[string]chan []Check
	acks    map[string]chan configAck
	lastErr error
}

// sessionSendQueue bounds the frames waiting to be sent to one plugin instance.
const sessionSendQueue = 256

// send queues a frame for the plugin; it fails when the session has ended or the plugin
// does not keep up.
func (s *session) send(ctx context.Context, f *pluginhostv1.ConnectResponse) error {
	select {
	case s.out <- f:
		return nil
	case <-s.done:
		return errs.New(errs.PluginUnavailable, "plugin %s disconnected", s.pluginID)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// askHealth sends a health check and waits for the report.
func (s *session) askHealth(ctx context.Context) ([]Check, error) {
	id := newFrameID()
	ch := make(chan []Check, 1)
	s.mu.Lock()
	s.health[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.health, id)
		s.mu.Unlock()
	}()
	if err := s.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HealthCheck{
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

// pushConfig sends a configuration change and waits for the plugin's answer.
func (s *session) pushConfig(ctx context.Context, cfg map[string]any, updated []string, restart bool) (configAck, error) {
	st, err := structpb.NewStruct(cfg)
	if err != nil {
		return configAck{}, errs.Wrap(errs.Internal, err, "internal error")
	}
	id := newFrameID()
	ch := make(chan configAck, 1)
	s.mu.Lock()
	s.acks[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.acks, id)
		s.mu.Unlock()
	}()
	if err := s.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_ConfigChanged{
		ConfigChanged: &pluginhostv1.ConfigChanged{Config: st, UpdatedFields: updated, RestartRequired: restart, ChangeId: id}}}); err != nil {
		return configAck{}, err
	}
	select {
	case a := <-ch:
		return a, nil
	case <-s.done:
		return configAck{}, errs.New(errs.PluginUnavailable, "plugin %s disconnected", s.pluginID)
	case <-ctx.Done():
		return configAck{}, errs.New(errs.PluginCommunicationTimeout, "plugin %s did not acknowledge the configuration in time", s.pluginID)
	}
}

// ServeSession runs one plugin session: tokenPluginID is the plugin the caller's token is
// bound to. It returns when the plugin or the host ends the session.
func (h *Host) ServeSession(ctx context.Context, tokenPluginID string, stream Stream) error {
	first, err := receiveWithin(ctx, stream, 30*time.Second)
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return errs.New(errs.ValidationError, "the first frame of a plugin session must be hello")
	}
	if hello.GetPluginId() != tokenPluginID {
		return errs.New(errs.PluginPermissionDenied, "this token belongs to plugin %s, not %s", tokenPluginID, hello.GetPluginId())
	}
	p, err := h.load(ctx, tokenPluginID)
	if err != nil {
		return err
	}
	if !p.rec.Enabled {
		return errs.New(errs.PluginUnavailable, "plugin %s is disabled; enable it first", tokenPluginID)
	}
	cfg, err := h.openConfig(p)
	if err != nil {
		return err
	}
	cfgStruct, err := structpb.NewStruct(cfg)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "internal error")
	}
	instanceID := hello.GetInstanceId()
	if instanceID == "" {
		instanceID = "instance-" + newFrameID()
	}
	sess := &session{
		id: "sess_" + newFrameID(), instanceID: instanceID, pluginID: tokenPluginID, connectedAt: time.Now().UTC(),
		out: make(chan *pluginhostv1.ConnectResponse, sessionSendQueue), done: make(chan struct{}),
		health: map[string]chan []Check{}, acks: map[string]chan configAck{},
	}
	welcome := &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Welcome{Welcome: &pluginhostv1.Welcome{
		SessionId: sess.id, InstanceId: instanceID, Config: cfgStruct, GrantedPermissions: p.rec.Granted,
		HostVersion: Version, HealthCheckIntervalSeconds: int32(h.rt.cfg.HealthInterval / time.Second),
	}}}
	if err := stream.Send(welcome); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	sendErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		for {
			select {
			case f := <-sess.out:
				if err := stream.Send(f); err != nil {
					sendErr <- err
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	h.rt.attach(sess)
	h.logs.add(store.LogRecord{PluginID: tokenPluginID, Level: "INFO", Message: "Plugin instance connected",
		Metadata: mustJSON(map[string]any{"instance_id": instanceID, "session_id": sess.id, "sdk": hello.GetSdk(), "version": hello.GetVersion()})})

	recvErr := h.receiveFrames(ctx, sess, stream)

	close(sess.done)
	cancel()
	wg.Wait()
	h.rt.detach(sess, recvErr)
	h.logs.add(store.LogRecord{PluginID: tokenPluginID, Level: "INFO", Message: "Plugin instance disconnected",
		Metadata: mustJSON(map[string]any{"instance_id": instanceID, "session_id": sess.id})})
	select {
	case err := <-sendErr:
		return err
	default:
	}
	if recvErr != nil && !errors.Is(recvErr, errSessionClosed) {
		return recvErr
	}
	return nil
}

// errSessionClosed marks the normal end of a session (the plugin closed its side).
var errSessionClosed = errors.New("session closed")

// receiveFrames handles the plugin's frames until the stream ends.
func (h *Host) receiveFrames(ctx context.Context, sess *session, stream Stream) error {
	for {
		req, err := stream.Receive()
		if err != nil {
			if ctx.Err() != nil || isEOF(err) {
				return errSessionClosed
			}
			return err
		}
		switch f := req.GetFrame().(type) {
		case *pluginhostv1.ConnectRequest_HealthReport:
			checks := checksFromProto(f.HealthReport.GetChecks())
			sess.mu.Lock()
			ch := sess.health[f.HealthReport.GetCheckId()]
			sess.mu.Unlock()
			if ch != nil {
				select {
				case ch <- checks:
				default:
				}
			} else {
				h.rt.unsolicitedHealth(sess, checks)
			}
		case *pluginhostv1.ConnectRequest_ConfigAck:
			sess.mu.Lock()
			ch := sess.acks[f.ConfigAck.GetChangeId()]
			sess.mu.Unlock()
			if ch != nil {
				select {
				case ch <- configAck{accepted: f.ConfigAck.GetAccepted(), reason: f.ConfigAck.GetError()}:
				default:
				}
			}
		case *pluginhostv1.ConnectRequest_Log:
			l := f.Log
			rec := store.LogRecord{PluginID: sess.pluginID, Level: l.GetLevel(), Message: l.GetMessage()}
			if l.GetTimestamp() != nil {
				rec.Time = l.GetTimestamp().AsTime().UTC()
			}
			if m := l.GetMetadata(); m != nil && len(m.GetFields()) > 0 {
				rec.Metadata, _ = json.Marshal(m.AsMap())
			}
			h.logs.add(rec)
		case *pluginhostv1.ConnectRequest_Send:
			h.refuse(ctx, sess, f.Send.GetRequestId(), "sending messages")
		case *pluginhostv1.ConnectRequest_Emit:
			h.refuse(ctx, sess, f.Emit.GetRequestId(), "emitting events")
		case *pluginhostv1.ConnectRequest_Broadcast:
			h.refuse(ctx, sess, f.Broadcast.GetRequestId(), "broadcasting")
		case *pluginhostv1.ConnectRequest_Subscribe:
			h.refuse(ctx, sess, f.Subscribe.GetRequestId(), "subscribing to events")
		case *pluginhostv1.ConnectRequest_Reply, *pluginhostv1.ConnectRequest_Ack:
			// Nothing is delivered to plugins until messaging exists, so there is nothing
			// to answer or acknowledge.
		case *pluginhostv1.ConnectRequest_Hello:
			return errs.New(errs.ValidationError, "hello may only be the first frame")
		}
	}
}

// refuse answers a plugin request whose capability the host does not have yet.
func (h *Host) refuse(ctx context.Context, sess *session, requestID, what string) {
	_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: requestID, ErrorCode: string(errs.Unimplemented),
		ErrorMessage: what + " is not available on this server yet (plugin messaging)",
	}}})
}

func checksFromProto(in []*pluginhostv1.Check) []Check {
	out := make([]Check, 0, len(in))
	for _, c := range in {
		out = append(out, Check{
			Name: c.GetName(), Status: c.GetStatus(), ResponseTimeMS: c.ResponseTimeMs, Details: c.Details,
			Value: c.Value, Threshold: c.Threshold, Unit: c.Unit,
		})
	}
	return out
}

// receiveWithin receives one frame, failing when none arrives in time.
func receiveWithin(ctx context.Context, stream Stream, d time.Duration) (*pluginhostv1.ConnectRequest, error) {
	type result struct {
		req *pluginhostv1.ConnectRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		req, err := stream.Receive()
		ch <- result{req, err}
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.req, r.err
	case <-timer.C:
		return nil, errs.New(errs.PluginCommunicationTimeout, "no hello within %s", d)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func newFrameID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}
