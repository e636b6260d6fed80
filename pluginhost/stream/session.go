package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Stream is a plugin's PluginHostService.Connect call as the transport hands it over.
// Receive is called from one goroutine and Send from another.
type Stream interface {
	Receive() (*pluginhostv1.ConnectRequest, error)
	Send(*pluginhostv1.ConnectResponse) error
}

// StreamEnder is implemented by a Stream that the host can end while a Send or Receive is
// blocked on it. The host ends a session whose plugin does not keep up with the frames sent
// to it, or whose Send failed; a Send blocked by a plugin that stopped reading (flow
// control) would otherwise hold the session, and its goroutines, until the plugin
// disconnects. End must not block; err says why, for the plugin. Soon after it, blocked and
// later calls of Send and Receive fail.
type StreamEnder interface {
	End(err error)
}

// session is one connected instance of a plugin. Frames to the plugin are written at once
// when nothing is queued (send), and otherwise queued in out, which a send pump drains: a
// goroutine that runs only while out holds frames, so an idle session has none (nor a
// queue). Waiters are guarded by mu.
type session struct {
	id, instanceID, pluginID string
	// tokenID is the token the session was opened with.
	tokenID     string
	connectedAt time.Time
	// ctx is the session's context (canceled when it ends); set before the session is
	// shared.
	ctx context.Context
	// out is the send queue, in order, at most sessionSendQueue frames; nil when empty.
	// outMu guards it, pumping (a send pump runs), outClosed (the session ended or a send
	// failed: no pump starts again) and outRoom.
	out       []queuedFrame
	outMu     sync.Mutex
	pumping   bool
	outClosed bool
	// outRoom is non-nil while an enqueue waits for room in a full queue; the pump closes
	// it when it takes a frame.
	outRoom chan struct{}
	// pumps waits for the send pump; sendErr holds the error of a failed send.
	pumps   sync.WaitGroup
	sendErr chan error
	// outBytes bounds the bytes of the frames in out (sessionSendBytes).
	outBytes sendBudget
	done     chan struct{} // closed when the session ends

	// services and messageTypes are what the instance announced in its hello; set once.
	services, messageTypes []string
	// cons reads the plugin's inbox for this instance; set before the session is shared.
	cons bus.Consumer
	// deliveries waits for the goroutine that sends the consumer's deliveries to the
	// plugin: deliverLoop for the whole session, or, when cons can call back
	// (bus.Notifier), a run of runDeliveries while it has deliveries ready (see
	// startDeliveries). wakeDeliveries, set once before the first run, is the function
	// registered with cons to start a run. runMu guards running (a run goes), runAgain (cons
	// called back during the run) and runStopped (the session ended: no run starts).
	deliveries     sync.WaitGroup
	wakeDeliveries func()
	runMu          sync.Mutex
	running        bool
	runAgain       bool
	runStopped     bool
	// sem bounds the requests running beside the receive loop; wg waits for them and for
	// the cancel watcher (cancelLoop).
	sem chan struct{}
	wg  sync.WaitGroup
	// abort ends the session, and its stream if the stream is a StreamEnder; set before
	// the session is shared.
	abort func()
	// stream is the plugin's stream; sendMu serialises its Send (the send pump and direct
	// sends), and queued counts the frames in out not yet sent.
	stream Stream
	sendMu sync.Mutex
	queued atomic.Int64

	mu sync.Mutex // guards the maps below, lastErr, watchingCancels and cancelIdle
	// watchingCancels says a cancel watcher runs (see cancelLoop): it runs while inflight
	// is not empty. cancelIdle, closed when inflight becomes empty, wakes it.
	watchingCancels bool
	cancelIdle      chan struct{}
	health          map[string]chan []presence.Check
	acks            map[string]chan presence.ConfigAck
	lastErr         error
	// inflight are the deliveries handed to the plugin and not settled, by delivery id.
	inflight map[string]inflight
	// requests maps the request_id of each of the plugin's waiting sends to its message id
	// ("" until the message is published).
	requests map[string]string
	// calls are the HTTP calls carried to this instance and not answered, by request id.
	calls map[string]*httpCall
}

// defaultHelloTimeout is how long a new stream may take to say hello, unless
// Options.HelloTimeout says otherwise.
const defaultHelloTimeout = 30 * time.Second

// sessionSendQueue bounds the frames waiting to be sent to one plugin instance, and
// sessionSendBytes their size (see frameBytes): a plugin that stops reading its stream holds
// at most that much of the host's memory in its queue, whatever its frames carry. A frame
// larger than sessionSendBytes is queued alone.
const (
	sessionSendQueue = 256
	sessionSendBytes = 16 << 20
)

// queuedFrame is a frame waiting in a session's queue, with what it counts for there.
type queuedFrame struct {
	f     *pluginhostv1.ConnectResponse
	bytes int64
}

// sendBudget counts the bytes of the frames in a session's queue against sessionSendBytes.
type sendBudget struct {
	mu   sync.Mutex
	used int64
	// freed is non-nil while a take waits for room; give closes it.
	freed chan struct{}
}

// tryTake takes n bytes of room if there is that much (or the queue is empty).
func (b *sendBudget) tryTake(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used > 0 && b.used+n > sessionSendBytes {
		return false
	}
	b.used += n
	return true
}

// take waits for n bytes of room and takes it; it gives up when ctx ends or done is closed,
// with errSessionClosed for done.
func (b *sendBudget) take(ctx context.Context, done <-chan struct{}, n int64) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= sessionSendBytes {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		if b.freed == nil {
			b.freed = make(chan struct{})
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-done:
			return errSessionClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// give returns n bytes of room.
func (b *sendBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	if b.freed != nil {
		close(b.freed)
		b.freed = nil
	}
	b.mu.Unlock()
}

// frameBytes is what a frame counts for in its session's queue: for the frames that carry a
// payload, which the host holds raw (see framePayloadInto), the payload's length, found without
// encoding, plus a fixed allowance for the rest; for the others their encoded size.
func frameBytes(f *pluginhostv1.ConnectResponse) int64 {
	const headers = 512
	var data *structpb.Struct
	switch x := f.GetFrame().(type) {
	case *pluginhostv1.ConnectResponse_Deliver:
		data = x.Deliver.GetData()
	case *pluginhostv1.ConnectResponse_Reply:
		r := x.Reply
		if r.GetKv() != nil || len(r.GetProviders()) > 0 || len(r.GetRecipients()) > 0 {
			return int64(proto.Size(f))
		}
		data = r.GetData()
	default:
		return int64(proto.Size(f))
	}
	b, err := rawstruct.Bytes(data)
	if err != nil {
		return int64(proto.Size(f))
	}
	return headers + int64(len(b))
}

// send queues a frame for the plugin; it fails when the session has ended or the plugin
// does not keep up.
// When nothing is queued it writes the frame itself instead of waking the send pump (one
// goroutine hand-off less on the message path); frames stay in order either way. It does not
// yield to the transport's writer after a send (it did, for p50 at one in flight): under
// load grpc-go's writer then flushed nearly every frame on its own (0.65-0.68 write
// syscalls per routed message against 0.09 without, nexus-bench, alternated runs), while
// frames sent back to back now go out in one write. That write waits while the plugin does
// not read, whatever ctx says (see enqueue).
func (s *session) send(ctx context.Context, f *pluginhostv1.ConnectResponse) error {
	if s.queued.Load() == 0 && s.sendMu.TryLock() {
		if s.queued.Load() == 0 {
			err := s.stream.Send(f)
			s.sendMu.Unlock()
			if err != nil {
				s.fail(errs.Wrap(errs.PluginUnavailable, err, "sending to plugin %s failed", s.pluginID))
				s.abort()
				return errs.New(errs.PluginUnavailable, "plugin %s disconnected", s.pluginID)
			}
			return nil
		}
		s.sendMu.Unlock()
	}
	return s.enqueue(ctx, f)
}

// enqueue hands a frame to the send pump, waiting at most until ctx ends. The rest of the
// host (presence's AskHealth, PushConfig, AskShutdown) sends with it rather than with send,
// whose direct write waits as long as the plugin does not read its stream (flow control):
// their deadlines hold even for a plugin that is stuck.
func (s *session) enqueue(ctx context.Context, f *pluginhostv1.ConnectResponse) error {
	n := frameBytes(f)
	s.queued.Add(1)
	if err := s.outBytes.take(ctx, s.done, n); err != nil {
		s.queued.Add(-1)
		if errors.Is(err, errSessionClosed) {
			return errs.New(errs.PluginUnavailable, "plugin %s disconnected", s.pluginID)
		}
		return err
	}
	for {
		s.outMu.Lock()
		if s.outClosed {
			s.outMu.Unlock()
			s.queued.Add(-1)
			s.outBytes.give(n)
			return errs.New(errs.PluginUnavailable, "plugin %s disconnected", s.pluginID)
		}
		if len(s.out) < sessionSendQueue {
			s.push(queuedFrame{f: f, bytes: n})
			s.outMu.Unlock()
			return nil
		}
		if s.outRoom == nil {
			s.outRoom = make(chan struct{})
		}
		room := s.outRoom
		s.outMu.Unlock()
		select {
		case <-room:
		case <-s.done:
			s.queued.Add(-1)
			s.outBytes.give(n)
			return errs.New(errs.PluginUnavailable, "plugin %s disconnected", s.pluginID)
		case <-ctx.Done():
			s.queued.Add(-1)
			s.outBytes.give(n)
			return ctx.Err()
		}
	}
}

// push appends a frame to the send queue and starts the send pump unless it runs. outMu
// must be held, and outClosed false.
func (s *session) push(q queuedFrame) {
	s.out = append(s.out, q)
	if !s.pumping {
		s.pumping = true
		s.pumps.Add(1)
		go s.sendPump()
	}
}

// closeOut stops the send queue for good: frames queued are dropped (the session ended)
// and no pump starts again. It waits for the pump.
func (s *session) closeOut() {
	s.outMu.Lock()
	s.outClosed = true
	s.out = nil
	s.outMu.Unlock()
	s.pumps.Wait()
}

// deliverNow queues a frame for the plugin without waiting: the reply router must never wait
// for one plugin's stream, or a plugin that stops reading would hold up every other
// plugin's replies. A plugin whose queue is full, in frames or in bytes, does not keep up:
// its session is ended (it reconnects, and what it was handed is delivered again).
func (s *session) deliverNow(f *pluginhostv1.ConnectResponse) {
	n := frameBytes(f)
	s.queued.Add(1)
	if s.outBytes.tryTake(n) {
		s.outMu.Lock()
		switch {
		case s.outClosed:
			s.outMu.Unlock()
			s.queued.Add(-1)
			s.outBytes.give(n)
			return
		case len(s.out) < sessionSendQueue:
			s.push(queuedFrame{f: f, bytes: n})
			s.outMu.Unlock()
			return
		}
		s.outMu.Unlock()
		s.outBytes.give(n)
	}
	s.queued.Add(-1)
	s.fail(errs.New(errs.PluginUnavailable, "plugin %s does not read its stream fast enough", s.pluginID))
	if s.abort != nil {
		s.abort()
	}
}

// end ends the session from the host's side: the plugin is told why (err), its stream is
// ended and its requests are no longer served. It does not block.
func (s *session) end(err error) {
	s.fail(err)
	if s.abort != nil {
		s.abort()
	}
}

// fail records why the session ends, unless a reason is recorded already.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.lastErr == nil {
		s.lastErr = err
	}
	s.mu.Unlock()
}

// endReason is why the host ends the session: the error recorded, or that a send failed.
func (s *session) endReason() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		return s.lastErr
	}
	return errs.New(errs.PluginUnavailable, "the host could not send to plugin %s; reconnect", s.pluginID)
}

// SessionCaller is who opened a plugin session: the plugin its token is bound to, and the
// token's id (the session ends when that token is revoked).
type SessionCaller struct {
	PluginID, TokenID string
}

// ServeSession runs one plugin session for caller. It returns when the plugin or the host
// ends the session: the host ends it when the plugin is disabled, stopped or uninstalled,
// or when the caller's token is revoked.
func (h *Sessions) ServeSession(ctx context.Context, caller SessionCaller, stream Stream) error {
	hello, p, err := h.hello(caller, stream)
	if err != nil {
		return err
	}
	sess := newSession(caller, hello, stream)
	h.subscribeFromHello(ctx, p, hello.GetSubscriptions())
	cons, err := h.bus.Consume(ctx, sess.pluginID, sess.instanceID)
	if err != nil {
		if errors.Is(err, bus.ErrUnavailable) || errors.Is(err, bus.ErrClosed) {
			return errs.New(errs.PluginUnavailable, "the message bus is unavailable; reconnect shortly")
		}
		return errs.New(errs.PluginUnavailable, "instance %s of plugin %s could not be attached (is it connected twice?)", sess.instanceID, sess.pluginID)
	}
	sess.cons = cons
	defer cons.Close()
	if err := stream.Send(h.welcome(sess, p)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sess.ctx = ctx
	sess.abort = func() {
		cancel()
		if en, ok := stream.(StreamEnder); ok {
			en.End(sess.endReason())
		}
	}
	h.startDeliveries(ctx, sess)
	h.pres.Attach(sess)
	// Disabled or uninstalled meanwhile: the change did not find this session attached.
	if err := h.admit(sess); err != nil {
		sess.end(err)
	}
	h.logs.Add(store.LogRecord{PluginID: sess.pluginID, Level: "INFO", Message: "Plugin instance connected",
		Metadata: mustJSON(map[string]any{"instance_id": sess.instanceID, "session_id": sess.id, "sdk": hello.GetSdk(), "version": hello.GetVersion()})})

	recvErr := h.receiveFrames(ctx, sess, stream)
	if recvErr != nil && !errors.Is(recvErr, errSessionClosed) {
		// The session ends on an error (a frame that broke the protocol, a failed Receive):
		// end the stream too, or a Send waiting for a plugin that stopped reading would hold
		// the session, still attached, until the plugin disconnects.
		sess.end(recvErr)
	}

	close(sess.done)
	cancel()
	sess.stopDeliveries()
	sess.closeOut()
	sess.wg.Wait()
	// The consumer closes before the session is detached: once the instance no longer
	// counts as connected, it may connect again under the same instance id (the deferred
	// Close then does nothing).
	_ = cons.Close()
	h.teardown(sess)
	// The host ended the session (see abort): that is what the plugin is told.
	sess.mu.Lock()
	ended := sess.lastErr
	sess.mu.Unlock()
	if ended != nil {
		return ended
	}
	select {
	case err := <-sess.sendErr:
		return err
	default:
	}
	if recvErr != nil && !errors.Is(recvErr, errSessionClosed) {
		return recvErr
	}
	return nil
}

// hello receives and checks the first frame of a session: a hello from the plugin the
// caller's token is bound to, which must be installed and enabled.
func (h *Sessions) hello(caller SessionCaller, stream Stream) (*pluginhostv1.Hello, *registry.Plugin, error) {
	first, err := receiveWithin(stream, h.helloTimeout)
	if err != nil {
		return nil, nil, err
	}
	hello := first.GetHello()
	if hello == nil {
		return nil, nil, errs.New(errs.ValidationError, "the first frame of a plugin session must be hello")
	}
	if hello.GetPluginId() != caller.PluginID {
		return nil, nil, errs.New(errs.PluginPermissionDenied, "this token belongs to plugin %s, not %s", caller.PluginID, hello.GetPluginId())
	}
	p, err := h.reg.Get(caller.PluginID)
	if err != nil {
		return nil, nil, err
	}
	if !p.Enabled() {
		return nil, nil, errs.New(errs.PluginUnavailable, "plugin %s is disabled; enable it first", caller.PluginID)
	}
	if p.Status() == registry.StatusError {
		return nil, nil, inError(p)
	}
	return hello, p, nil
}

// newSession is the session of an instance that said hello.
func newSession(caller SessionCaller, hello *pluginhostv1.Hello, stream Stream) *session {
	instanceID := hello.GetInstanceId()
	if instanceID == "" {
		instanceID = "instance-" + newFrameID()
	}
	return &session{
		id: "sess_" + newFrameID(), instanceID: instanceID, pluginID: caller.PluginID, tokenID: caller.TokenID, connectedAt: time.Now().UTC(),
		sendErr: make(chan error, 1), done: make(chan struct{}),
		health: map[string]chan []presence.Check{}, acks: map[string]chan presence.ConfigAck{},
		inflight: map[string]inflight{}, requests: map[string]string{}, sem: make(chan struct{}, sessionRequests),
		services: slices.Clone(hello.GetServices()), messageTypes: slices.Clone(hello.GetMessageTypes()),
		stream: stream,
	}
}

// subscribeFromHello applies the subscriptions an instance asked for in its hello, when the
// plugin may subscribe.
func (h *Sessions) subscribeFromHello(ctx context.Context, p *registry.Plugin, subs []string) {
	if len(subs) == 0 {
		return
	}
	if !p.Can("events:subscribe") {
		h.logs.Add(store.LogRecord{PluginID: p.ID(), Level: "WARNING",
			Message:  "Subscriptions in hello ignored: the plugin lacks the permission events:subscribe",
			Metadata: mustJSON(map[string]any{"subscriptions": subs})})
		return
	}
	if err := h.router.Subscribe(ctx, p.ID(), subs, nil); err != nil {
		h.logs.Add(store.LogRecord{PluginID: p.ID(), Level: "ERROR", Message: "Subscriptions in hello not applied: " + errs.MessageOf(err),
			Metadata: mustJSON(map[string]any{"subscriptions": subs})})
	}
}

// welcome is the frame that accepts a session: its ids, the configuration, the grants and
// the host's timings.
func (h *Sessions) welcome(sess *session, p *registry.Plugin) *pluginhostv1.ConnectResponse {
	cfg, err := structpb.NewStruct(p.Config())
	if err != nil {
		// The configuration passed its schema, so it is JSON-compatible.
		h.log.Error("a plugin's configuration is not JSON-compatible", "plugin_id", p.ID(), "error", err)
		cfg = &structpb.Struct{}
	}
	return &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Welcome{Welcome: &pluginhostv1.Welcome{
		SessionId: sess.id, InstanceId: sess.instanceID, Config: cfg, GrantedPermissions: p.Granted(),
		HostVersion: h.hostVersion, HealthCheckIntervalSeconds: int32(h.healthInterval / time.Second),
		ProcessingTimeoutSeconds: int32((h.busOpts.ProcessingTimeout + time.Second - 1) / time.Second), MaxAttempts: int32(h.busOpts.MaxAttempts),
	}}}
}

// sendPump writes the queued frames to the stream until the queue is empty (then it ends:
// the next frame queued starts another), the session ends, or a send fails (then the
// session ends, and the failure is put in sendErr). It is the only writer of queued frames,
// so they leave in order.
func (s *session) sendPump() {
	defer s.pumps.Done()
	for {
		s.outMu.Lock()
		if len(s.out) == 0 || s.outClosed || s.ctx.Err() != nil {
			s.pumping = false
			if len(s.out) == 0 {
				s.out = nil // an idle session keeps no queue
			}
			s.outMu.Unlock()
			return
		}
		q := s.out[0]
		s.out[0] = queuedFrame{}
		s.out = s.out[1:]
		if s.outRoom != nil {
			close(s.outRoom)
			s.outRoom = nil
		}
		s.outMu.Unlock()
		s.sendMu.Lock()
		err := s.stream.Send(q.f)
		s.queued.Add(-1)
		s.sendMu.Unlock()
		s.outBytes.give(q.bytes)
		if err != nil {
			s.outMu.Lock()
			s.outClosed = true
			s.pumping = false
			s.out = nil
			s.outMu.Unlock()
			s.sendErr <- err // the only failure: outClosed starts no other pump
			s.fail(errs.Wrap(errs.PluginUnavailable, err, "sending to plugin %s failed", s.pluginID))
			s.abort()
			return
		}
	}
}

// teardown withdraws the messages the instance still waited for and detaches it.
func (h *Sessions) teardown(sess *session) {
	sess.mu.Lock()
	waiting := make([]string, 0, len(sess.requests))
	for _, id := range sess.requests {
		if id != "" {
			waiting = append(waiting, id)
		}
	}
	sess.mu.Unlock()
	for _, id := range waiting {
		h.router.Cancel(id, errs.New(errs.PluginUnavailable, "the sending instance disconnected"))
	}
	h.pres.Detach(sess)
	h.logs.Add(store.LogRecord{PluginID: sess.pluginID, Level: "INFO", Message: "Plugin instance disconnected",
		Metadata: mustJSON(map[string]any{"instance_id": sess.instanceID, "session_id": sess.id})})
}

// admit refuses the requests of a session whose plugin is no longer enabled (or installed).
func (h *Sessions) admit(sess *session) error {
	p, err := h.reg.Get(sess.pluginID)
	switch {
	case err != nil:
		return errs.New(errs.PluginUnavailable, "plugin %s is no longer installed", sess.pluginID)
	case !p.Enabled():
		return errs.New(errs.PluginUnavailable, "plugin %s is disabled", sess.pluginID)
	case p.Status() == registry.StatusError:
		return inError(p)
	}
	return nil
}

// inError is the refusal of a plugin in error (quarantined, stopped with its dependency, ...):
// it waits for an administrator to enable it again.
func inError(p *registry.Plugin) error {
	return errs.New(errs.PluginUnavailable, "plugin %s is in error (%s); an administrator must enable it again", p.ID(), p.StatusReason())
}

// InvalidFrame is what a Stream's Receive returns for a frame that breaks the protocol's
// rules. A request frame (RequestID set) is answered with Err and the session goes on;
// any other invalid frame ends the session with Err.
type InvalidFrame struct {
	RequestID string
	Err       error
}

func (e *InvalidFrame) Error() string { return "invalid frame: " + e.Err.Error() }

func (e *InvalidFrame) Unwrap() error { return e.Err }

// errSessionClosed marks the normal end of a session (the plugin closed its side).
var errSessionClosed = errors.New("session closed")

// receiveFrames handles the plugin's frames until the stream ends.
func (h *Sessions) receiveFrames(ctx context.Context, sess *session, stream Stream) error {
	for {
		req, err := stream.Receive()
		if err == nil && ctx.Err() != nil {
			return errSessionClosed // ended meanwhile (abort): nothing more is served
		}
		if err != nil {
			var bad *InvalidFrame
			if errors.As(err, &bad) && bad.RequestID != "" && len(bad.RequestID) <= 128 {
				sess.replyError(ctx, bad.RequestID, bad.Err)
				continue
			}
			if errors.As(err, &bad) {
				return bad.Err
			}
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
				h.onHealth(sess.pluginID, checks)
			}
		case *pluginhostv1.ConnectRequest_ConfigAck:
			sess.mu.Lock()
			ch := sess.acks[f.ConfigAck.GetChangeId()]
			sess.mu.Unlock()
			if ch != nil {
				select {
				case ch <- presence.ConfigAck{Accepted: f.ConfigAck.GetAccepted(), Reason: f.ConfigAck.GetError()}:
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
			h.logs.Add(rec)
		case *pluginhostv1.ConnectRequest_Reply:
			h.onReply(ctx, sess, f.Reply)
		case *pluginhostv1.ConnectRequest_Ack:
			h.onAck(ctx, sess, f.Ack)
		case *pluginhostv1.ConnectRequest_Send:
			h.onSend(ctx, sess, f.Send)
		case *pluginhostv1.ConnectRequest_CancelSend:
			h.onCancelSend(sess, f.CancelSend.GetRequestId())
		case *pluginhostv1.ConnectRequest_Emit:
			sess.async(ctx, func() { h.onEmit(ctx, sess, f.Emit) })
		case *pluginhostv1.ConnectRequest_Broadcast:
			sess.async(ctx, func() { h.onBroadcast(ctx, sess, f.Broadcast) })
		case *pluginhostv1.ConnectRequest_Subscribe:
			h.onSubscribe(ctx, sess, f.Subscribe)
		case *pluginhostv1.ConnectRequest_Kv:
			sess.async(ctx, func() { h.onKV(ctx, sess, f.Kv) })
		case *pluginhostv1.ConnectRequest_Discover:
			sess.async(ctx, func() { h.onDiscover(ctx, sess, f.Discover) })
		case *pluginhostv1.ConnectRequest_HttpResponse:
			r := f.HttpResponse
			sess.httpFrame(r.GetRequestId(), func(c *httpCall) { c.deliver(r, r.GetBody(), r.GetDone()) })
		case *pluginhostv1.ConnectRequest_HttpResponseBody:
			b := f.HttpResponseBody
			sess.httpFrame(b.GetRequestId(), func(c *httpCall) { c.deliver(nil, b.GetChunk(), b.GetDone()) })
		case *pluginhostv1.ConnectRequest_HttpWindow:
			wf := f.HttpWindow
			sess.httpFrame(wf.GetRequestId(), func(c *httpCall) { c.grant(wf.GetBytes()) })
		case *pluginhostv1.ConnectRequest_Hello:
			return errs.New(errs.ValidationError, "hello may only be the first frame")
		}
	}
}

func checksFromProto(in []*pluginhostv1.Check) []presence.Check {
	out := make([]presence.Check, 0, len(in))
	for _, c := range in {
		out = append(out, presence.Check{
			Name: c.GetName(), Status: c.GetStatus(), ResponseTimeMS: c.ResponseTimeMs, Details: c.Details,
			Value: c.Value, Threshold: c.Threshold, Unit: c.Unit,
		})
	}
	return out
}

// receiveWithin receives one frame, failing when none arrives in time: then the stream is
// ended (see StreamEnder), which fails the pending Receive, so no goroutine is left behind.
func receiveWithin(stream Stream, d time.Duration) (*pluginhostv1.ConnectRequest, error) {
	late := errs.New(errs.PluginCommunicationTimeout, "no hello within %s", d)
	var timedOut atomic.Bool
	timer := time.AfterFunc(d, func() {
		timedOut.Store(true)
		if en, ok := stream.(StreamEnder); ok {
			en.End(late)
		}
	})
	req, err := stream.Receive()
	timer.Stop()
	if err != nil && timedOut.Load() {
		return nil, late
	}
	return req, err
}

func newFrameID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}
