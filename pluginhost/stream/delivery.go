package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// This file is the stream side of messaging: it hands a session's deliveries to its plugin,
// settles them from the plugin's replies and acks, and serves the plugin's own requests.

// sessionRequests bounds the plugin requests one session runs at the same time beyond the
// receive loop (key-value operations, emits, broadcasts); more wait, which slows the plugin
// down instead of piling up goroutines.
const sessionRequests = 64

// inflight is a delivery handed to the plugin and not settled yet.
type inflight struct {
	d  bus.Delivery
	at time.Time
	// until is when the bus may take the delivery back unless the plugin extends it.
	until time.Time
}

// maxWaitingSends bounds the messages one session may have waiting for replies.
const maxWaitingSends = 1024

// pruneInflight forgets deliveries the bus has surely taken back (dead-lettered, expired,
// handed to another instance): the plugin never settled them and their time ran out. It
// keeps the table of a plugin that does not settle its deliveries bounded.
func (s *session) pruneInflight(now time.Time) {
	for tag, in := range s.inflight {
		if now.After(in.until) {
			delete(s.inflight, tag)
		}
	}
	s.inflightShrank()
}

// inflightShrank wakes the cancel watcher when inflight has become empty (see cancelLoop).
// mu must be held.
func (s *session) inflightShrank() {
	if len(s.inflight) == 0 && s.cancelIdle != nil {
		close(s.cancelIdle)
		s.cancelIdle = nil
	}
}

// tryNexter is implemented by consumers that can hand out a delivery without waiting
// (busredis's, busmem's): TryNext returns what Next would return at once, or ok false when
// Next would wait.
type tryNexter interface {
	TryNext() (d bus.Delivery, ok bool, err error)
}

// startDeliveries starts handing the session's deliveries to its plugin. With a consumer
// that can call back (bus.Notifier: busmem's), deliveries are sent by runs of
// runDeliveries, started on demand, one at a time: an idle session has no goroutine for
// them. Otherwise deliverLoop waits in the consumer's Next for the whole session. Either
// way, stopDeliveries ends them.
func (h *Sessions) startDeliveries(ctx context.Context, sess *session) {
	nf, ok := sess.cons.(bus.Notifier)
	if !ok {
		sess.deliveries.Go(func() { h.deliverLoop(ctx, sess) })
		return
	}
	run := func() { h.runDeliveries(ctx, sess, nf) }
	sess.wakeDeliveries = func() { sess.startRun(run) }
	sess.wakeDeliveries()
}

// startRun starts run on a goroutine of sess.deliveries unless one runs (then it marks
// that the consumer called back meanwhile: the run looks again before it ends) or the
// deliveries stopped. It is the function the session's consumer calls back, under the
// bus's lock: it does not block.
func (s *session) startRun(run func()) {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	switch {
	case s.runStopped:
	case s.running:
		s.runAgain = true
	default:
		s.running = true
		s.deliveries.Go(run)
	}
}

// runEnds reports whether the delivery run may end: true unless the consumer called back
// while it ran, in which case it looks again.
func (s *session) runEnds() bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.runAgain {
		s.runAgain = false
		return false
	}
	s.running = false
	return true
}

// stopDeliveries waits for the delivery goroutine, once ctx has ended: no run starts after
// it returns, even when the consumer calls back.
func (s *session) stopDeliveries() {
	s.runMu.Lock()
	s.runStopped = true
	s.runMu.Unlock()
	s.deliveries.Wait()
}

// runDeliveries sends the deliveries the consumer has ready, back to back (so that the
// transport's writer finds them together and flushes them in one write), then registers
// sess.wakeDeliveries with the consumer and ends: the consumer calls it back when it may
// have more, which starts another run. It ends too when the session ends.
func (h *Sessions) runDeliveries(ctx context.Context, sess *session, nf bus.Notifier) {
	for ctx.Err() == nil {
		d, ok, err := nf.TryNextOrNotify(sess.wakeDeliveries)
		switch {
		case err != nil:
			if !h.retryAfter(ctx, sess, err) {
				return
			}
		case ok:
			if !h.deliver(ctx, sess, d) {
				return // the session ended; closing the consumer hands the delivery back
			}
		case sess.runEnds():
			return
		}
	}
}

// deliverLoop reads the session's consumer with a blocking Next and sends each delivery to
// the plugin until the session ends; it serves consumers that cannot call back. While the
// consumer has more deliveries ready at once, it takes them without a blocking Next each
// (TryNext, when the consumer has it) and sends them back to back.
func (h *Sessions) deliverLoop(ctx context.Context, sess *session) {
	tn, _ := sess.cons.(tryNexter)
	for {
		d, err := sess.cons.Next(ctx)
		if err != nil {
			if !h.retryAfter(ctx, sess, err) {
				return
			}
			continue
		}
		for {
			if !h.deliver(ctx, sess, d) {
				return // the session ended; closing the consumer hands the delivery back
			}
			if tn == nil || ctx.Err() != nil {
				break
			}
			nd, ok, err := tn.TryNext()
			if err != nil || !ok {
				break
			}
			d = nd
		}
	}
}

// retryAfter handles a failed read of the session's consumer: it reports false when the
// session or the consumer has ended, and otherwise waits a second (or until the session
// ends) before the read is tried again.
func (h *Sessions) retryAfter(ctx context.Context, sess *session, err error) bool {
	if ctx.Err() != nil || errors.Is(err, bus.ErrClosed) {
		return false
	}
	h.log.Warn("reading a plugin inbox failed; retrying", "plugin_id", sess.pluginID, "error", err)
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// deliver sends one delivery to the plugin and records it in flight. It reports false when
// the session has ended.
func (h *Sessions) deliver(ctx context.Context, sess *session, d bus.Delivery) bool {
	fr := &deliverFrame{}
	if err := framePayloadInto(&fr.data, d.Data); err != nil {
		h.log.Error("undecodable payload dead-lettered", "plugin_id", sess.pluginID, "id", d.ID, "error", err)
		if sess.cons.DeadLetter(ctx, d.Tag, "undecodable payload") == nil {
			h.metrics.ObserveDeadLetter(sess.pluginID)
		}
		return true
	}
	if d.Attempt > 1 {
		h.metrics.ObserveRedelivery(sess.pluginID)
	}
	f := &fr.d
	f.DeliveryId, f.Kind, f.Id, f.Source, f.Type = d.Tag, deliveryKind(d.Kind), d.ID, d.Source, d.Type
	f.Data, f.Attempt = &fr.data, int32(d.Attempt)
	if !d.Deadline.IsZero() {
		fr.deadline.Seconds, fr.deadline.Nanos = d.Deadline.Unix(), int32(d.Deadline.Nanosecond())
		f.Deadline = &fr.deadline
		// A message is settled by its reply; keep it from being redelivered to another
		// instance while the sender still waits (the processing timeout may be shorter).
		if rest := time.Until(d.Deadline); rest > h.busOpts.ProcessingTimeout {
			_ = sess.cons.Extend(ctx, d.Tag, rest)
		}
	}
	now := time.Now()
	until := now.Add(h.busOpts.ProcessingTimeout)
	if d.Deadline.After(until) {
		until = d.Deadline
	}
	sess.mu.Lock()
	if len(sess.inflight) >= 2*h.busOpts.Prefetch {
		sess.pruneInflight(now)
	}
	sess.inflight[d.Tag] = inflight{d: d, at: now, until: until}
	if !sess.watchingCancels {
		sess.watchingCancels = true
		sess.wg.Add(1) // waited for after the deliveries stop (ServeSession)
		go h.cancelLoop(ctx, sess)
	}
	sess.mu.Unlock()
	fr.wrap.Deliver = f
	fr.res.Frame = &fr.wrap
	return sess.send(ctx, &fr.res) == nil
}

// deliverFrame is a Deliver frame with its wrappers, payload and deadline in one allocation
// instead of five: every message and event builds one.
type deliverFrame struct {
	res      pluginhostv1.ConnectResponse
	wrap     pluginhostv1.ConnectResponse_Deliver
	d        pluginhostv1.Deliver
	data     structpb.Struct
	deadline timestamppb.Timestamp
}

// replyFrame is the reply frame of a message a plugin sent, with its wrappers and payload in
// one allocation instead of four: every message builds one.
type replyFrame struct {
	res  pluginhostv1.ConnectResponse
	wrap pluginhostv1.ConnectResponse_Reply
	r    pluginhostv1.RequestReply
	data structpb.Struct
}

// cancelLoop tells the plugin about in-flight messages their senders gave up on. It runs
// while the session has deliveries in flight: deliver starts it, and it ends once
// inflight is empty (an idle session has no goroutine for this). A notice that comes while
// it does not run names no delivery in flight, which it would ignore anyway; the bus drops
// notices its channel has no room for.
func (h *Sessions) cancelLoop(ctx context.Context, sess *session) {
	defer sess.wg.Done()
	for {
		sess.mu.Lock()
		if len(sess.inflight) == 0 {
			sess.watchingCancels = false
			sess.cancelIdle = nil
			sess.mu.Unlock()
			return
		}
		if sess.cancelIdle == nil {
			sess.cancelIdle = make(chan struct{})
		}
		idle := sess.cancelIdle
		sess.mu.Unlock()
		select {
		case <-ctx.Done():
			return // watchingCancels stays set: nothing is delivered any more
		case <-idle:
		case tag := <-sess.cons.Cancelled():
			sess.mu.Lock()
			in, ok := sess.inflight[tag]
			delete(sess.inflight, tag)
			sess.mu.Unlock()
			if !ok {
				continue
			}
			reason := "cancelled"
			if in.d.Expired(time.Now()) {
				reason = "deadline_exceeded"
			}
			_ = sess.cons.Ack(ctx, tag)
			_ = sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Cancel{
				Cancel: &pluginhostv1.Cancel{DeliveryId: tag, Id: in.d.ID, Reason: reason}}})
		}
	}
}

// takeInflight removes and returns an in-flight delivery.
func (s *session) takeInflight(tag string) (inflight, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.inflight[tag]
	delete(s.inflight, tag)
	s.inflightShrank()
	return in, ok
}

// onReply settles a message with the plugin's reply and returns the reply to its sender.
func (h *Sessions) onReply(ctx context.Context, sess *session, r *pluginhostv1.DeliveryReply) {
	in, ok := sess.takeInflight(r.GetDeliveryId())
	if !ok {
		return // settled already: cancelled, or answered twice
	}
	if in.d.Kind == bus.KindMessage {
		data, encErr := encodeStruct(r.GetData())
		reply := bus.Reply{MessageID: in.d.ID, Status: r.GetStatus(), Data: data, ErrorMessage: r.GetErrorMessage()}
		switch {
		case encErr != nil:
			reply = bus.Reply{MessageID: in.d.ID, Status: "error", ErrorMessage: "the reply could not be encoded"}
		case len(data) > router.MaxPayloadBytes:
			// The plugin has no request to answer: its log says why its reply did not go.
			why := fmt.Sprintf("the reply was too large: %d bytes encoded, at most %d", len(data), router.MaxPayloadBytes)
			h.logs.Add(store.LogRecord{PluginID: sess.pluginID, Level: "WARNING", Message: "Reply refused: " + why,
				Metadata: mustJSON(map[string]any{"message_id": in.d.ID, "delivery_id": in.d.Tag})})
			reply = bus.Reply{MessageID: in.d.ID, Status: "error", ErrorMessage: why}
		}
		h.metrics.ObserveRequest(sess.pluginID, in.d.Source, time.Since(in.at), r.GetStatus() != "success")
		if as, ok := sess.cons.(bus.AsyncSettler); ok {
			// The reply and the acknowledgement go in one round trip, which the receive
			// loop does not wait for (a reply to a waiter in this process is handed over
			// at once).
			as.AckReplyAsync(in.d.Tag, in.d.ReplyTo, reply, func(err error) { h.settledLog(sess, in.d, err) })
			return
		}
		if err := h.bus.Reply(ctx, in.d.ReplyTo, reply); err != nil {
			h.settledLog(sess, in.d, err)
			return
		}
	}
	h.ack(ctx, sess, in.d)
}

// ack acknowledges a delivery, without waiting when the consumer settles through a round
// trip to the bus's backend (bus.AsyncSettler): the receive loop goes on reading the
// plugin's frames meanwhile, and the acknowledgements of many deliveries share the trip.
func (h *Sessions) ack(ctx context.Context, sess *session, d bus.Delivery) {
	if as, ok := sess.cons.(bus.AsyncSettler); ok {
		as.AckAsync(d.Tag, func(err error) { h.settledLog(sess, d, err) })
		return
	}
	h.settledLog(sess, d, sess.cons.Ack(ctx, d.Tag))
}

// settledLog logs a settle of d that failed for another reason than the consumer no longer
// holding d (cancelled, timed out and handed on: someone settles it).
func (h *Sessions) settledLog(sess *session, d bus.Delivery, err error) {
	if err != nil && !errors.Is(err, bus.ErrUnknownDelivery) {
		h.log.Warn("delivery not acknowledged", "plugin_id", sess.pluginID, "id", d.ID, "delivery_id", d.Tag, "error", err)
	}
}

// onAck settles (or extends) a broadcast or event.
func (h *Sessions) onAck(ctx context.Context, sess *session, a *pluginhostv1.Ack) {
	tag := a.GetDeliveryId()
	var err error
	switch a.GetAction() {
	case pluginhostv1.AckAction_ACK_ACTION_EXTEND:
		d := time.Duration(a.GetExtendSeconds()) * time.Second
		if d <= 0 {
			d = h.busOpts.ProcessingTimeout
		}
		sess.mu.Lock()
		in, ok := sess.inflight[tag]
		if ok {
			in.until = time.Now().Add(d)
			sess.inflight[tag] = in
		}
		sess.mu.Unlock()
		if ok {
			err = sess.cons.Extend(ctx, tag, d)
		}
	case pluginhostv1.AckAction_ACK_ACTION_DONE:
		in, ok := sess.takeInflight(tag)
		if !ok {
			return
		}
		h.ack(ctx, sess, in.d)
		if in.d.Kind == bus.KindMessage {
			h.answerUnreplied(ctx, in.d, "the target acknowledged the message without replying")
		} else {
			h.metrics.ObserveRequest(sess.pluginID, in.d.Source, time.Since(in.at), false)
		}
	case pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER:
		in, ok := sess.takeInflight(tag)
		if !ok {
			return
		}
		reason := a.GetReason()
		if reason == "" {
			reason = "rejected by the plugin"
		}
		err = sess.cons.DeadLetter(ctx, tag, reason)
		if err == nil {
			h.metrics.ObserveDeadLetter(sess.pluginID)
		}
		h.metrics.ObserveRequest(sess.pluginID, in.d.Source, time.Since(in.at), true)
		if in.d.Kind == bus.KindMessage {
			h.answerUnreplied(ctx, in.d, "the target could not process the message: "+reason)
		}
	}
	if err != nil && !errors.Is(err, bus.ErrUnknownDelivery) {
		h.log.Warn("delivery not settled", "plugin_id", sess.pluginID, "delivery_id", tag, "error", err)
	}
}

// answerUnreplied tells the sender of a message that was settled without a reply, so that
// it does not wait for its whole timeout.
func (h *Sessions) answerUnreplied(ctx context.Context, d bus.Delivery, why string) {
	if err := h.bus.Reply(ctx, d.ReplyTo, bus.Reply{MessageID: d.ID, Status: "error", ErrorMessage: why}); err != nil {
		h.log.Warn("reply not returned to its sender", "message_id", d.ID, "error", err)
	}
}

// onSend starts a plugin's message; the reply frame is sent when the target answers.
func (h *Sessions) onSend(ctx context.Context, sess *session, s *pluginhostv1.Send) {
	reqID := s.GetRequestId()
	if err := h.admit(sess); err != nil {
		sess.replyError(ctx, reqID, err)
		return
	}
	data, err := requestPayload("send.data", s.GetData())
	if err != nil {
		sess.replyError(ctx, reqID, err)
		return
	}
	done := func(res router.MessageResult, err error) {
		sess.mu.Lock()
		delete(sess.requests, reqID)
		sess.mu.Unlock()
		if err != nil {
			sess.deliverNow(errorReply(reqID, err))
			return
		}
		fr := &replyFrame{}
		if derr := framePayloadInto(&fr.data, res.Data); derr != nil {
			sess.deliverNow(errorReply(reqID, errs.Wrap(errs.Internal, derr, "the reply could not be decoded")))
			return
		}
		r := &fr.r
		r.RequestId, r.MessageId, r.Status, r.Data, r.ErrorMessage = reqID, res.MessageID, res.Status, &fr.data, res.ErrorMessage
		fr.wrap.Reply = r
		fr.res.Frame = &fr.wrap
		sess.deliverNow(&fr.res)
	}
	// Registered before sending, so that a cancel_send racing with the send finds it.
	sess.mu.Lock()
	if len(sess.requests) >= maxWaitingSends {
		sess.mu.Unlock()
		sess.replyError(ctx, reqID, errs.New(errs.PluginUnavailable, "%d messages of this instance already wait for replies", maxWaitingSends))
		return
	}
	sess.requests[reqID] = ""
	sess.mu.Unlock()
	id, err := h.router.Send(ctx, router.MessageRequest{From: sess.pluginID, Target: s.GetTargetPlugin(), Type: s.GetMessageType(),
		Data: data, Timeout: time.Duration(s.GetTimeoutSeconds()) * time.Second}, done)
	sess.mu.Lock()
	if err != nil {
		delete(sess.requests, reqID)
	} else if _, waiting := sess.requests[reqID]; waiting {
		sess.requests[reqID] = id
	}
	sess.mu.Unlock()
	if err != nil {
		sess.replyError(ctx, reqID, err)
	}
}

// onCancelSend withdraws one of the plugin's own messages.
func (h *Sessions) onCancelSend(sess *session, reqID string) {
	sess.mu.Lock()
	id := sess.requests[reqID]
	sess.mu.Unlock()
	if id != "" {
		h.router.Cancel(id, errs.New(errs.PluginCommunicationTimeout, "the message was cancelled by its sender"))
	}
}

// replyError answers a plugin request with an error.
func (s *session) replyError(ctx context.Context, reqID string, err error) {
	_ = s.send(ctx, errorReply(reqID, err))
}

// errorReply is the answer to a plugin request that failed.
func errorReply(reqID string, err error) *pluginhostv1.ConnectResponse {
	err = errs.WrapIfContext(err)
	code, msg := errs.Internal, "internal error"
	var e *errs.Error
	switch {
	case errors.As(err, &e):
		code, msg = e.Code, e.Message
		for i, f := range e.Fields {
			if i == 0 {
				msg += ": "
			} else {
				msg += "; "
			}
			msg += f.String()
		}
	}
	return &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
		RequestId: reqID, ErrorCode: string(code), ErrorMessage: msg}}}
}

// async runs a plugin request beside the receive loop, at most sessionRequests at a time per
// session; beyond that the receive loop waits, which slows the plugin down.
func (s *session) async(ctx context.Context, fn func()) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		fn()
	}()
}

func deliveryKind(k bus.Kind) pluginhostv1.DeliveryKind {
	switch k {
	case bus.KindMessage:
		return pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE
	case bus.KindBroadcast:
		return pluginhostv1.DeliveryKind_DELIVERY_KIND_BROADCAST
	case bus.KindEvent:
		return pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT
	}
	return pluginhostv1.DeliveryKind_DELIVERY_KIND_UNSPECIFIED
}

// requestPayload is the payload of a plugin's request as the router takes it, refused with
// the API's error (VALIDATION_ERROR naming field) when it is larger than the API accepts.
func requestPayload(field string, s *structpb.Struct) (router.Payload, error) {
	data, err := encodeStruct(s)
	if err != nil {
		return nil, errs.New(errs.ValidationError, "%s: %v", field, err)
	}
	if n := len(data); n > router.MaxPayloadBytes {
		return nil, errs.WithFields(errs.ValidationError, "the payload is too large",
			[]errs.FieldViolation{{Field: field, Description: fmt.Sprintf("is %d bytes encoded, at most %d", n, router.MaxPayloadBytes)}})
	}
	return data, nil
}

// encodeStruct turns a payload into its wire bytes (nil for an empty one). A raw Struct
// (see rawstruct) gives the bytes it holds, uncopied: the grpc-go path decodes the
// payloads of plugins' frames that way.
func encodeStruct(s *structpb.Struct) (router.Payload, error) {
	return rawstruct.Bytes(s)
}

// framePayloadInto makes s, a new empty Struct allocated with its frame, p as the Data of
// a frame to a plugin: a raw Struct (see rawstruct), so that a payload goes from one
// plugin's stream to another's without being parsed and encoded again. p is checked as strictly as decoding the frame would check it (three
// message levels down: frame, then Deliver or RequestReply, then the Struct), so that a
// malformed payload fails here, never in the receiving plugin, which would lose its
// stream. Only binary protobuf ever writes them: the grpc-go path is binary, and the
// Connect handlers see binary protobuf alone (vanguard transcodes JSON clients, parsing
// the payload on the way).
func framePayloadInto(s *structpb.Struct, p router.Payload) error {
	if err := rawstruct.Validate(p, protowire.DefaultRecursionLimit-2); err != nil {
		return err
	}
	rawstruct.Fill(s, p)
	return nil
}
