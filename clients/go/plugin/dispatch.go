package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// errNoMessageHandler answers messages when the plugin has no OnMessage.
var errNoMessageHandler = errors.New("plugin: this plugin does not handle messages")

// receive is the receive side of a welcomed connection: it reads the host's frames and
// hands each to its handler without waiting for author code. When it ends, the requests
// still waiting for a reply on c fail, and new ones wait for the next connection.
//
// A delivery that can run at once (OnStart is done and a worker slot is free) is handled
// by the goroutine that read it, which keeps the receive side meanwhile: the handler starts
// without a scheduler wake-up, and a handler that returns soon (most do) costs no goroutine
// hand-off at all. The host's next frames wait for it, but not long: once the handler has
// run for a millisecond (defaultInlineBudget), or as soon as it waits for a reply of the
// host (Session.Send, Emit, ...: see handOffReceive), a successor is started to read on and
// inherits the receive side (the duty to end it); the handler's goroutine returns when it
// is done. An HTTP call (once OnStart is done) is handled by the goroutine that read it
// too, but hands the receive side over at once: its handler waits for frames (its body,
// its windows). Starting a successor for every delivery, as before, cost a wake-up of
// another goroutine per message.
func (r *runner) receive(c *conn) {
	var w *inlineRun // this goroutine's, made for its first inline job
	for {
		res, err := c.stream.Receive()
		if err != nil {
			c.recvErr = err
			r.session.detach(c)
			close(c.recvDone)
			c.wg.Done()
			return
		}
		run := r.dispatch(c, res)
		if run == nil {
			continue
		}
		if w == nil {
			w = &inlineRun{r: r, c: c}
		}
		if !w.run(run) {
			return // a successor took the receive side over
		}
	}
}

// inlineRun runs the jobs of one receiving goroutine while it keeps the receive side, and
// hands the receive side over to a successor when a job runs long or waits for the host.
type inlineRun struct {
	r *runner
	c *conn
	// timer starts a successor once a job has run for the inline budget; made by the
	// first run, reset by each.
	timer *time.Timer
	// state is inlineIdle, inlineRunning (a job runs and this goroutine holds the receive
	// side) or inlineHandedOff (a successor holds it).
	state atomic.Int32
}

const (
	inlineIdle int32 = iota
	inlineRunning
	inlineHandedOff
)

// run runs job, and reports whether this goroutine still holds the receive side.
func (w *inlineRun) run(job func()) bool {
	w.state.Store(inlineRunning)
	w.c.inline.Store(w)
	if w.timer == nil {
		w.timer = time.AfterFunc(w.r.o.inlineBudget, w.handOff)
	} else {
		w.timer.Reset(w.r.o.inlineBudget)
	}
	job()
	w.timer.Stop()
	w.c.inline.CompareAndSwap(w, nil)
	if w.state.CompareAndSwap(inlineRunning, inlineIdle) {
		return true
	}
	w.state.Store(inlineIdle)
	return false
}

// handOff starts a successor to read on, if the job under way still holds the receive
// side. A late call (the timer of a job that has ended) may hand over a later job's: that
// only starts the successor early.
func (w *inlineRun) handOff() {
	if w.state.CompareAndSwap(inlineRunning, inlineHandedOff) {
		w.r.spawn(func() { w.r.receive(w.c) })
	}
}

// handOffReceive is called before a plugin request waits for the host's reply: if ctx is
// the context of a handler (or derived from one) whose connection's receive side is held
// by a job run inline, the receive side is handed over at once, so that the reply can be
// read.
func handOffReceive(ctx context.Context) {
	var c *conn
	switch v := ctx.Value(receiveKey{}).(type) {
	case *handlerContext:
		c = v.c
	case *eventDelivery:
		c = v.c
	default:
		return
	}
	c.handOffInline()
}

// handOffInline hands the receive side of c over to a successor if a job run inline holds
// it.
func (c *conn) handOffInline() {
	if w := c.inline.Load(); w != nil {
		w.handOff()
	}
}

// receiveKey is the context key under which a handler's context gives its delivery (a
// *handlerContext or *eventDelivery), for handOffReceive.
type receiveKey struct{}

// spawn runs job on a worker goroutine: an idle one if there is one, else a new one.
// Workers wait for another job after each, so that the stacks they grew serve again: a
// fresh goroutine to read on after each message grew its stack every time (a fifth of the
// SDK's CPU in nexus-bench's profile).
func (r *runner) spawn(job func()) {
	select {
	case r.idle <- job:
		return
	default:
	}
	r.control.Add(1)
	go r.worker(job)
}

// worker runs jobs until it has waited idleWorkerTTL for one, or Run ends.
func (r *runner) worker(job func()) {
	defer r.control.Done()
	t := time.NewTimer(idleWorkerTTL)
	defer t.Stop()
	for {
		job()
		t.Reset(idleWorkerTTL)
		select {
		case job = <-r.idle:
		case <-t.C:
			return
		case <-r.life.Done():
			return
		}
	}
}

// dispatch hands a frame to its handler. For a delivery or an HTTP call that can run at
// once it returns the work instead, for the caller to run (see receive).
func (r *runner) dispatch(c *conn, res *pluginhostv1.ConnectResponse) (run func()) {
	switch f := res.GetFrame().(type) {
	case *pluginhostv1.ConnectResponse_Deliver:
		return r.deliver(c, f.Deliver)
	case *pluginhostv1.ConnectResponse_HealthCheck:
		r.healthCheck(c, f.HealthCheck)
	case *pluginhostv1.ConnectResponse_ConfigChanged:
		select {
		case r.configs <- configJob{conn: c, change: f.ConfigChanged}:
		case <-c.ctx.Done():
		case <-r.life.Done():
		}
	case *pluginhostv1.ConnectResponse_Shutdown:
		// Draining starts here, before any later frame is read, so that no delivery
		// sneaks in behind the request.
		r.setDraining()
		select {
		case c.shutdown <- f.Shutdown:
		default: // a shutdown is already under way
		}
	case *pluginhostv1.ConnectResponse_Reply:
		if !c.resolve(f.Reply) {
			// The request was abandoned (its context ended) before the reply came.
			r.log.Debug("plugin: ignoring a reply nobody waits for", "request_id", f.Reply.GetRequestId())
		}
	case *pluginhostv1.ConnectResponse_Cancel:
		if !c.cancelMessage(f.Cancel) {
			r.log.Debug("plugin: ignoring a cancel for a message no longer handled", "delivery_id", f.Cancel.GetDeliveryId())
		}
	case *pluginhostv1.ConnectResponse_HttpRequest:
		run := r.httpRequest(c, f.HttpRequest)
		if run == nil {
			return nil
		}
		// An HTTP handler waits for frames (its request body, the windows of its
		// response) that the receive side reads: it runs with the receive side handed
		// over from the start.
		return func() {
			c.handOffInline()
			run()
		}
	case *pluginhostv1.ConnectResponse_HttpRequestBody:
		b := f.HttpRequestBody
		c.httpFrame(b.GetRequestId(), func(call *httpCall) { call.body.push(b.GetChunk(), b.GetDone()) })
	case *pluginhostv1.ConnectResponse_HttpResponseWindow:
		wf := f.HttpResponseWindow
		c.httpFrame(wf.GetRequestId(), func(call *httpCall) { call.grant(wf.GetBytes()) })
	case *pluginhostv1.ConnectResponse_HttpCancel:
		hc := f.HttpCancel
		c.httpFrame(hc.GetRequestId(), func(call *httpCall) {
			call.cancel(fmt.Errorf("plugin: the host ended the HTTP call: %s", hc.GetReason()))
		})
	case *pluginhostv1.ConnectResponse_Welcome:
		r.log.Warn("plugin: ignoring a second welcome on the same stream")
	default:
		// Frames newer than this SDK.
		r.log.Debug("plugin: ignoring a frame", "frame", fmt.Sprintf("%T", f))
	}
	return nil
}

// deliver hands a delivery to a worker: the one it returns, for the caller to run, when
// OnStart is done and a worker slot is free; otherwise a goroutine that waits for both.
// While the plugin is stopping, deliveries are left unanswered: the host redelivers events
// elsewhere and the sender of a message times out. From the moment it is received, a
// message can be canceled by the host and an event or broadcast is extended (see
// eventDelivery), also while it waits for a free worker.
func (r *runner) deliver(c *conn, d *pluginhostv1.Deliver) (run func()) {
	kind := d.GetKind()
	switch kind {
	case pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE,
		pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT,
		pluginhostv1.DeliveryKind_DELIVERY_KIND_BROADCAST:
	default:
		r.log.Warn("plugin: ignoring a delivery of unknown kind", "kind", kind.String(), "delivery_id", d.GetDeliveryId())
		return nil
	}
	r.mu.Lock()
	if r.draining {
		r.mu.Unlock()
		r.log.Debug("plugin: stopping; delivery left to the host", "delivery_id", d.GetDeliveryId())
		return nil
	}
	r.deliveries.Add(1)
	r.mu.Unlock()
	var work, release func()
	if kind == pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE {
		hc := r.messageContext(c, d)
		work = func() { r.handleMessage(hc, c, d) }
		release = hc.release
	} else {
		ev := newEventDelivery(c, d)
		work = func() { r.handleEvent(ev) }
		release = ev.settle
	}
	// runHeld runs the delivery in a worker slot already taken.
	runHeld := func() {
		defer r.deliveries.Done()
		defer release()
		defer func() { <-r.sem }()
		if r.isDraining() {
			return
		}
		work()
	}
	select {
	case <-r.started:
		select {
		case r.sem <- struct{}{}:
			return runHeld
		default:
		}
	default:
	}
	go func() {
		select {
		case <-r.started:
		case <-r.life.Done():
			r.deliveries.Done()
			release()
			return
		}
		select {
		case r.sem <- struct{}{}:
		case <-r.life.Done():
			r.deliveries.Done()
			release()
			return
		}
		runHeld()
	}()
	return nil
}

// handleMessage runs OnMessage and replies with its result. ctx is canceled when the host
// says that the sender gave up; a message given up on before its handler started is not
// handled, and not answered.
func (r *runner) handleMessage(ctx *handlerContext, c *conn, d *pluginhostv1.Deliver) {
	if ctx.senderGaveUp() {
		r.log.Debug("plugin: the sender gave up on a message before it was handled", "delivery_id", d.GetDeliveryId())
		return
	}
	m := Message{
		ID:      d.GetId(),
		Source:  d.GetSource(),
		Type:    d.GetType(),
		Data:    structToMap(d.GetData()),
		Attempt: int(d.GetAttempt()),
	}
	var data map[string]any
	err := errNoMessageHandler
	if r.p.OnMessage != nil {
		err = r.protect("OnMessage", func() (err error) {
			data, err = r.p.OnMessage(ctx, m)
			return err
		})
	}
	reply := &pluginhostv1.DeliveryReply{DeliveryId: d.GetDeliveryId(), Status: "success"}
	if err == nil {
		s, cerr := mapToStruct(data)
		if cerr != nil {
			r.log.Error("plugin: the reply's data cannot be encoded", "type", m.Type, "error", cerr)
			err = errors.New("plugin: the reply's data cannot be encoded")
		}
		reply.Data = s
	}
	if err != nil {
		if r.life.Err() != nil && ctx.Err() != nil {
			// The plugin is stopping and the handler gave up because of it: leave the
			// message unanswered, so that the host hands it to another instance.
			r.log.Debug("plugin: stopping; message left to another instance", "delivery_id", d.GetDeliveryId())
			return
		}
		reply.Status = "error"
		reply.Data = nil
		reply.ErrorMessage = cleanString(err.Error(), 4096)
	}
	r.sendOn(c, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: reply}})
}

// handleEvent runs OnEvent or OnBroadcast, unless the event is a duplicate, and settles the
// delivery according to the result.
func (r *runner) handleEvent(ev *eventDelivery) {
	c, d := ev.c, ev.d
	key := d.GetKind().String() + "/" + d.GetId()
	if d.GetId() == "" {
		key = "" // no id, no deduplication
	}
	switch prev, state := r.seen.begin(key); state {
	case seenDone:
		r.log.Debug("plugin: duplicate delivery acknowledged again", "id", d.GetId())
		ev.settle()
		r.ack(c, d.GetDeliveryId(), prev)
		return
	case seenInFlight:
		// The first copy is still being handled; this one is left unacknowledged (and no
		// longer extended) and the host redelivers it later, when its outcome is known.
		r.log.Debug("plugin: duplicate delivery still in flight", "id", d.GetId())
		ev.settle()
		return
	}
	handler, name := r.p.OnEvent, "OnEvent"
	if d.GetKind() == pluginhostv1.DeliveryKind_DELIVERY_KIND_BROADCAST {
		handler, name = r.p.OnBroadcast, "OnBroadcast"
	}
	var err error
	if handler != nil {
		e := Event{
			ID:      d.GetId(),
			Source:  d.GetSource(),
			Type:    d.GetType(),
			Data:    structToMap(d.GetData()),
			Attempt: int(d.GetAttempt()),
		}
		ctx, cancel := context.WithCancel(context.WithValue(context.WithValue(r.life, deliveryKey{}, ev), receiveKey{}, ev))
		err = r.protect(name, func() error { return handler(ctx, e) })
		cancel()
	}
	ev.settle()
	var o outcome
	switch {
	case err == nil:
		o = outcome{action: pluginhostv1.AckAction_ACK_ACTION_DONE}
	case IsPermanent(err):
		o = outcome{action: pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER, reason: cleanString(err.Error(), 4096)}
	default:
		r.seen.forget(key)
		r.log.Warn("plugin: handler failed; the host will redeliver", "handler", name, "type", d.GetType(), "id", d.GetId(), "attempt", d.GetAttempt(), "error", err)
		return
	}
	r.seen.finish(key, o)
	r.ack(c, d.GetDeliveryId(), o)
}

func (r *runner) ack(c *conn, deliveryID string, o outcome) {
	r.sendOn(c, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Ack{Ack: &pluginhostv1.Ack{
		DeliveryId: deliveryID,
		Action:     o.action,
		Reason:     o.reason,
	}}})
}

// healthCheck answers a health check from its own goroutine, so that it never waits for
// deliveries.
func (r *runner) healthCheck(c *conn, h *pluginhostv1.HealthCheckRequest) {
	r.control.Add(1)
	go func() {
		defer r.control.Done()
		var checks []Check
		if r.p.OnHealthCheck != nil {
			checks = r.runHealthCheck()
		}
		if len(checks) == 0 {
			checks = []Check{Pass("sdk")}
		}
		if len(checks) > 64 {
			r.log.Warn("plugin: more than 64 health checks; the rest are dropped", "checks", len(checks))
		}
		r.sendOn(c, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HealthReport{
			HealthReport: &pluginhostv1.HealthReport{CheckId: h.GetCheckId(), Checks: checksToProto(checks)},
		}})
	}()
}

// runHealthCheck calls OnHealthCheck once OnStart has returned. It does not wait long for
// OnStart: the host is waiting for the answer, and deliveries wait for OnStart anyway.
func (r *runner) runHealthCheck() []Check {
	t := time.NewTimer(startingWait)
	defer t.Stop()
	select {
	case <-r.started:
	case <-t.C:
		return []Check{Warn("sdk", "starting")}
	case <-r.life.Done():
		return []Check{Warn("sdk", "stopping")}
	}
	ctx, cancel := context.WithTimeout(r.life, healthCheckBudget)
	defer cancel()
	var checks []Check
	if err := r.protect("OnHealthCheck", func() error {
		checks = r.p.OnHealthCheck(ctx)
		return nil
	}); err != nil {
		return []Check{Fail("sdk", "the health check handler failed")}
	}
	return checks
}

// configLoop hands configuration changes to OnConfigChange one at a time, in order, once
// OnStart has returned.
func (r *runner) configLoop() {
	defer r.control.Done()
	select {
	case <-r.started:
	case <-r.life.Done():
		return
	}
	for {
		select {
		case <-r.life.Done():
			return
		case j := <-r.configs:
			r.applyConfig(j)
		}
	}
}

func (r *runner) applyConfig(j configJob) {
	ch := j.change
	var err error
	if r.p.OnConfigChange != nil {
		cc := ConfigChange{
			Config:          structToMap(ch.GetConfig()),
			UpdatedFields:   ch.GetUpdatedFields(),
			RestartRequired: ch.GetRestartRequired(),
		}
		err = r.protect("OnConfigChange", func() error { return r.p.OnConfigChange(r.life, cc) })
	}
	if err == nil {
		cfg := ch.GetConfig()
		if cfg == nil {
			cfg = emptyStruct()
		}
		r.session.config.Store(cfg)
	}
	if j.conn == nil {
		if err != nil {
			r.log.Warn("plugin: configuration found on reconnecting was rejected", "error", err)
		}
		return
	}
	ack := &pluginhostv1.ConfigAck{ChangeId: ch.GetChangeId(), Accepted: err == nil}
	if err != nil {
		ack.Error = cleanString(err.Error(), 4096)
	}
	r.sendOn(j.conn, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_ConfigAck{ConfigAck: ack}})
}

// sendOn sends f on c, the connection the request it answers came on. When c is gone the
// answer is dropped: the host redelivers what was not acknowledged.
func (r *runner) sendOn(c *conn, f *pluginhostv1.ConnectRequest) {
	if err := c.send(c.ctx, f); err != nil {
		r.log.Debug("plugin: connection gone; frame dropped", "frame", fmt.Sprintf("%T", f.GetFrame()), "error", err)
	}
}
