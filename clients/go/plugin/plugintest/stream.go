package plugintest

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// This file is the host's side of the plugin's stream: authentication, hello and welcome,
// and the frames the plugin sends, each validated as the real host validates it and
// handed to its handler.

// The facts of deliveries the welcome announces, the real host's defaults.
const (
	processingTimeoutSeconds = 30
	maxAttempts              = 5
)

// hostVersion is the host version the welcome announces (Session.HostVersion).
const hostVersion = "0.0.0-plugintest"

// service serves PluginHostService for a Host.
type service struct {
	pluginhostv1connect.UnimplementedPluginHostServiceHandler
	h *Host
}

// session is one connection of the plugin.
type session struct {
	// These fields are assigned once, before the session is shared.
	h      *Host
	id     string
	hello  *pluginhostv1.Hello
	stream *connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]
	done   chan struct{} // closed when the session has ended

	// sendMu serialises Send on the stream, and guards ended: once the Connect call
	// returns, nothing may be sent on its stream.
	sendMu sync.Mutex
	ended  bool

	// mu guards sends.
	mu sync.Mutex
	// sends are the plugin's messages waiting for an answer, by request id; closing the
	// channel withdraws one (cancel_send).
	sends map[string]chan struct{}
}

// answer is the plugin's answer to something the host sent: a frame, or the failure of the
// event handler a delivery went to (which the SDK does not answer: it leaves the delivery
// for the host to deliver again).
type answer struct {
	frame  *pluginhostv1.ConnectRequest
	failed error
}

// Connect is the plugin's session with the host.
func (s *service) Connect(ctx context.Context, stream *connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]) error {
	h := s.h
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return refusal(codeUnavailable, "the host is shutting down")
	}
	h.calls.Add(1)
	h.mu.Unlock()
	defer h.calls.Done()
	if stream.RequestHeader().Get("Authorization") != "Bearer "+h.token {
		return refusal(codeUnauthenticated, "a valid plugin token is required")
	}
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return refusal(codeValidation, "the first frame of a plugin session must be hello")
	}
	if err := h.validator.Validate(first); err != nil {
		return refusal(codeValidation, "invalid hello: %v", err)
	}
	if hello.GetPluginId() != h.opts.PluginID {
		return refusal(codePermissionDenied, "this token belongs to plugin %s, not %s", h.opts.PluginID, hello.GetPluginId())
	}
	sess := &session{h: h, id: h.newID("sess"), hello: hello, stream: stream, done: make(chan struct{}), sends: map[string]chan struct{}{}}
	instanceID := hello.GetInstanceId()
	if instanceID == "" {
		instanceID = h.newID("instance")
	}
	h.mu.Lock()
	config, err := toStruct(h.config)
	h.mu.Unlock()
	if err != nil {
		return refusal(codeUnavailable, "the configuration cannot be encoded: %v", err)
	}
	// The session is current before the plugin can know it is welcomed, so that a test
	// finds it connected as soon as Start returns.
	h.attach(sess)
	defer func() {
		sess.sendMu.Lock()
		sess.ended = true
		sess.sendMu.Unlock()
		close(sess.done)
		h.detach(sess)
	}()
	err = sess.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Welcome{Welcome: &pluginhostv1.Welcome{
		SessionId:                sess.id,
		InstanceId:               instanceID,
		Config:                   config,
		GrantedPermissions:       slices.Clone(h.opts.Granted),
		HostVersion:              hostVersion,
		ProcessingTimeoutSeconds: processingTimeoutSeconds,
		MaxAttempts:              maxAttempts,
	}}})
	if err != nil {
		return err
	}
	return sess.serve(ctx)
}

// serve handles the plugin's frames until the stream ends.
func (s *session) serve(ctx context.Context) error {
	h := s.h
	for {
		f, err := s.stream.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := h.validator.Validate(f); err != nil {
			// As the real host: a bad request is refused alone, any other bad frame ends
			// the session.
			if id := requestID(f); id != "" && len(id) <= 128 {
				s.send(errorReply(id, hostError(codeValidation, "%v", err)))
				continue
			}
			return refusal(codeValidation, "invalid frame: %v", err)
		}
		switch fr := f.GetFrame().(type) {
		case *pluginhostv1.ConnectRequest_Reply:
			h.answered(fr.Reply.GetDeliveryId(), answer{frame: f})
		case *pluginhostv1.ConnectRequest_Ack:
			if fr.Ack.GetAction() != pluginhostv1.AckAction_ACK_ACTION_EXTEND {
				h.answered(fr.Ack.GetDeliveryId(), answer{frame: f})
			}
		case *pluginhostv1.ConnectRequest_HealthReport:
			h.answered(fr.HealthReport.GetCheckId(), answer{frame: f}) // unsolicited reports are dropped
		case *pluginhostv1.ConnectRequest_ConfigAck:
			h.answered(fr.ConfigAck.GetChangeId(), answer{frame: f})
		case *pluginhostv1.ConnectRequest_Log:
			h.recordLog(fr.Log)
		case *pluginhostv1.ConnectRequest_Send:
			h.onSend(s, fr.Send)
		case *pluginhostv1.ConnectRequest_CancelSend:
			s.withdraw(fr.CancelSend.GetRequestId())
		case *pluginhostv1.ConnectRequest_Emit:
			h.onEmit(s, fr.Emit)
		case *pluginhostv1.ConnectRequest_Broadcast:
			h.onBroadcast(s, fr.Broadcast)
		case *pluginhostv1.ConnectRequest_Subscribe:
			h.onSubscribe(s, fr.Subscribe)
		case *pluginhostv1.ConnectRequest_Kv:
			h.onKV(s, fr.Kv)
		case *pluginhostv1.ConnectRequest_Discover:
			h.onDiscover(s, fr.Discover)
		case *pluginhostv1.ConnectRequest_HttpResponse:
			h.http.route(fr.HttpResponse.GetRequestId(), f, s.done)
		case *pluginhostv1.ConnectRequest_HttpResponseBody:
			h.http.route(fr.HttpResponseBody.GetRequestId(), f, s.done)
		case *pluginhostv1.ConnectRequest_HttpWindow:
			h.http.route(fr.HttpWindow.GetRequestId(), f, s.done)
		case *pluginhostv1.ConnectRequest_Hello:
			return refusal(codeValidation, "hello may only be the first frame")
		}
	}
}

// send sends a frame to the plugin. It fails once the session has ended.
func (s *session) send(f *pluginhostv1.ConnectResponse) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.ended {
		return hostError(codeUnavailable, "plugin %s disconnected", s.h.opts.PluginID)
	}
	return s.stream.Send(f)
}

// attach makes sess the plugin's current session, and takes in the subscriptions of its
// hello (as the real host does, only with the permission events:subscribe).
func (h *Host) attach(sess *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sess = sess
	if subs := sess.hello.GetSubscriptions(); len(subs) > 0 {
		if h.can("events:subscribe") {
			for _, p := range subs {
				h.subs[p] = true
			}
		} else {
			h.logs = append(h.logs, LogEntry{
				Time: time.Now(), Level: "WARNING", FromHost: true,
				Message:  "Subscriptions in hello ignored: the plugin lacks the permission events:subscribe",
				Metadata: map[string]any{"subscriptions": stringsToAny(subs)},
			})
		}
	}
	h.notifyLocked()
}

// detach forgets sess, if it is still the current session.
func (h *Host) detach(sess *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sess == sess {
		h.sess = nil
	}
	h.notifyLocked()
}

// current returns the plugin's current session, or PLUGIN_UNAVAILABLE.
func (h *Host) current() (*session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sess == nil {
		return nil, hostError(codeUnavailable, "no instance of plugin %s is connected", h.opts.PluginID)
	}
	return h.sess, nil
}

// expect registers id, a delivery, health check or configuration change about to be sent,
// and returns the channel its answer arrives on. forget must follow.
func (h *Host) expect(id string) <-chan answer {
	ch := make(chan answer, 1)
	h.mu.Lock()
	h.waits[id] = ch
	h.mu.Unlock()
	return ch
}

// forget drops id: an answer that comes later is ignored.
func (h *Host) forget(id string) {
	h.mu.Lock()
	delete(h.waits, id)
	h.mu.Unlock()
}

// answered hands a to whoever waits for id. It never blocks: the first answer is kept.
func (h *Host) answered(id string, a answer) {
	h.mu.Lock()
	ch := h.waits[id]
	delete(h.waits, id)
	h.mu.Unlock()
	if ch != nil {
		ch <- a // room for one, and id is gone from the map
	}
}

// replyTo answers one of the plugin's requests; a session that has ended drops it.
func (s *session) replyTo(requestID string, r *pluginhostv1.RequestReply, err *plugin.Error) {
	if err != nil {
		_ = s.send(errorReply(requestID, err))
		return
	}
	r.RequestId = requestID
	_ = s.send(replyFrame(r))
}

// requestID returns the request id of one of the plugin's own requests, "" for other
// frames.
func requestID(f *pluginhostv1.ConnectRequest) string {
	switch r := f.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Send:
		return r.Send.GetRequestId()
	case *pluginhostv1.ConnectRequest_Emit:
		return r.Emit.GetRequestId()
	case *pluginhostv1.ConnectRequest_Broadcast:
		return r.Broadcast.GetRequestId()
	case *pluginhostv1.ConnectRequest_Subscribe:
		return r.Subscribe.GetRequestId()
	case *pluginhostv1.ConnectRequest_Kv:
		return r.Kv.GetRequestId()
	case *pluginhostv1.ConnectRequest_Discover:
		return r.Discover.GetRequestId()
	}
	return ""
}

func stringsToAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
