package plugin

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file keeps deliveries alive while they are handled: event and broadcast deliveries
// are extended before the host's processing timeout would redeliver them, and message
// handlers are canceled when their sender gives up.

// Extend asks the host for d more time (rounded up to whole seconds, between 1 second and 10
// minutes) before it delivers the event or broadcast being handled again. ctx must be the
// context of an OnEvent or OnBroadcast handler, or one derived from it.
//
// A handler rarely needs it: while OnEvent or OnBroadcast runs, the SDK extends its delivery
// by the host's processing timeout every third of that timeout (see
// Session.ProcessingTimeout), so a slow handler is never redelivered while it works. Extend
// is for a handler that knows it needs longer, and for hosts that announce no processing
// timeout. It fails with an *Error: VALIDATION_ERROR when ctx is not a handler's or the
// handler has returned, PLUGIN_UNAVAILABLE when the connection the delivery came on is gone
// (the host will deliver the event again anyway).
func Extend(ctx context.Context, d time.Duration) error {
	ev, _ := ctx.Value(deliveryKey{}).(*eventDelivery)
	if ev == nil {
		return invalid("Extend needs the context of an OnEvent or OnBroadcast handler")
	}
	return ev.extend(d)
}

type deliveryKey struct{}

// The causes of a message handler's context when the host says the sender gave up. They
// wrap the context package's errors, so that errors.Is works on context.Cause(ctx).
var (
	errSenderCanceled = fmt.Errorf("plugin: the sender canceled the message: %w", context.Canceled)
	errSenderDeadline = fmt.Errorf("plugin: the sender's deadline passed: %w", context.DeadlineExceeded)
)

// messageContext returns the context of the handler of message delivery d on c: it carries
// the sender's deadline, and the host's cancel frame for d cancels it. Its release
// unregisters it and must be called once the delivery is over.
func (r *runner) messageContext(c *conn, d *pluginhostv1.Deliver) *handlerContext {
	hc := &handlerContext{parent: r.life, lifeEnded: &r.lifeEnded, c: c, id: d.GetDeliveryId()}
	if dl := d.GetDeadline(); dl != nil {
		hc.deadline = dl.AsTime()
	}
	c.mu.Lock()
	c.handlers[hc.id] = hc
	c.mu.Unlock()
	return hc
}

// handlerContext is the context of a message handler: a context.WithCancelCause of the
// plugin's life (canceled with the cause the host gives when the sender gives up, or when
// the delivery is over) and, for a message with a deadline, a context.WithDeadline of
// that. Those two are built only when the context is first used (any of its methods):
// building them for every message (allocations, a timer, registrations with their
// parents) cost more than the rest of the delivery in the SDK, and a handler that never
// looks at its context does not need them. Until then the cancellations are recorded with
// their times, and the build applies the first of them, the deadline and the end of the
// plugin's life in the order they happened, so that the context a handler sees is in the
// state the eagerly built pair would be in. From the build on, every method is the built
// context's: it behaves exactly as that pair does, as a parent too (context.Cause,
// WithCancel, AfterFunc find its cancelCtx through Value).
type handlerContext struct {
	// parent, lifeEnded (the runner's: when parent ended), deadline (zero: none), c and id
	// (where it is registered) are assigned once, in messageContext.
	parent    context.Context
	lifeEnded *atomic.Pointer[time.Time]
	deadline  time.Time
	c         *conn
	id        string

	// built is set once the contexts are built; never changed after.
	built atomic.Pointer[builtContext]
	// mu guards building, cause and causeAt.
	mu sync.Mutex
	// cause is the first cancellation's cause (the host's, or context.Canceled once the
	// delivery is over), at causeAt, while the contexts are not built.
	cause   error
	causeAt time.Time
}

// What a handlerContext finds happened when it is built.
const (
	happenedNone = iota
	happenedCancel
	happenedDeadline
	happenedLifeEnd
)

// builtContext is what a handlerContext stands for once built.
type builtContext struct {
	ctx    context.Context         // the one the handler's methods use
	cancel context.CancelCauseFunc // cancels the WithCancelCause context
	stop   context.CancelFunc      // stops the deadline's timer; nil without one
}

func (h *handlerContext) get() context.Context {
	if b := h.built.Load(); b != nil {
		return b.ctx
	}
	return h.build().ctx
}

// build builds the contexts, once.
func (h *handlerContext) build() *builtContext {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b := h.built.Load(); b != nil {
		return b
	}
	// What happened already decides, the first of it: the sender's cancel (or the end of
	// the delivery), the deadline, the end of the plugin's life.
	first, firstAt := happenedNone, time.Time{}
	happened := func(what int, at time.Time) {
		if first == happenedNone || at.Before(firstAt) {
			first, firstAt = what, at
		}
	}
	if h.cause != nil {
		happened(happenedCancel, h.causeAt)
	}
	if !h.deadline.IsZero() && !time.Now().Before(h.deadline) {
		happened(happenedDeadline, h.deadline)
	}
	if ended := h.lifeEnded.Load(); ended != nil {
		happened(happenedLifeEnd, *ended)
	}
	b := &builtContext{}
	var base context.Context
	deadline := h.deadline
	switch first {
	case happenedCancel, happenedDeadline:
		// Detached from the plugin's life, which may have ended since: what came first
		// decides. The values (and the deadline, if earlier) are the life's all the same.
		base, b.cancel = context.WithCancelCause(context.WithoutCancel(h.parent))
		if ld, ok := h.parent.Deadline(); ok && (deadline.IsZero() || ld.Before(deadline)) {
			deadline = ld
		}
		if first == happenedCancel {
			b.cancel(h.cause)
		}
	default:
		base, b.cancel = context.WithCancelCause(h.parent)
	}
	b.ctx = base
	if !deadline.IsZero() {
		b.ctx, b.stop = context.WithDeadline(base, deadline)
	}
	h.built.Store(b)
	return b
}

// cancelCause cancels the handler's context with cause, unless it is canceled already.
func (h *handlerContext) cancelCause(cause error) {
	h.mu.Lock()
	b := h.built.Load()
	if b == nil && h.cause == nil {
		h.cause, h.causeAt = cause, time.Now()
	}
	h.mu.Unlock()
	if b != nil {
		b.cancel(cause)
	}
}

// release unregisters the handler once its delivery is over and cancels its context.
func (h *handlerContext) release() {
	h.c.mu.Lock()
	delete(h.c.handlers, h.id)
	h.c.mu.Unlock()
	h.mu.Lock()
	b := h.built.Load()
	if b == nil && h.cause == nil {
		h.cause, h.causeAt = context.Canceled, time.Now()
	}
	h.mu.Unlock()
	if b != nil {
		if b.stop != nil {
			b.stop()
		}
		b.cancel(nil)
	}
}

// senderGaveUp reports whether the context was canceled because the host said the
// message's sender no longer waits for the reply, without building it.
func (h *handlerContext) senderGaveUp() bool {
	var cause error
	if b := h.built.Load(); b != nil {
		cause = context.Cause(b.ctx)
	} else {
		h.mu.Lock()
		cause = h.cause
		h.mu.Unlock()
	}
	return cause == errSenderCanceled || cause == errSenderDeadline
}

func (h *handlerContext) Deadline() (time.Time, bool) { return h.get().Deadline() }
func (h *handlerContext) Done() <-chan struct{}       { return h.get().Done() }
func (h *handlerContext) Err() error                  { return h.get().Err() }
func (h *handlerContext) Value(key any) any {
	if _, ok := key.(receiveKey); ok {
		return h // without building it (see handOffReceive)
	}
	return h.get().Value(key)
}
func (h *handlerContext) String() string { return fmt.Sprint(h.get()) }

// cancelMessage cancels the handler of the delivery a cancel frame names, if it is still
// running (or waiting to run).
func (c *conn) cancelMessage(f *pluginhostv1.Cancel) bool {
	c.mu.Lock()
	h := c.handlers[f.GetDeliveryId()]
	c.mu.Unlock()
	if h == nil {
		return false
	}
	cause := errSenderCanceled
	if f.GetReason() == "deadline_exceeded" {
		cause = errSenderDeadline
	}
	h.cancelCause(cause)
	return true
}

// eventDelivery is an event or broadcast delivery from its receipt until it is settled.
// While it lasts, a goroutine extends it before the host's processing timeout runs out.
type eventDelivery struct {
	// c, d and step are assigned once, in newEventDelivery.
	c *conn
	d *pluginhostv1.Deliver
	// step is how much each automatic extension asks for; 0 when the host announced no
	// processing timeout, and nothing is extended automatically.
	step time.Duration

	// mu guards until and settled, and is held while an extension is sent, so that no
	// extension follows the delivery's final ack.
	mu sync.Mutex
	// until is when the host would deliver again, as far as the SDK knows.
	until   time.Time
	settled bool

	// nudge wakes the extender when an explicit Extend moved until.
	nudge    chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	// done is closed when the extender has exited (at once when there is none).
	done chan struct{}
}

// newEventDelivery starts keeping delivery d alive; settle stops it.
func newEventDelivery(c *conn, d *pluginhostv1.Deliver) *eventDelivery {
	ev := &eventDelivery{
		c:     c,
		d:     d,
		nudge: make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	timeout := c.processingTimeout
	if timeout <= 0 {
		close(ev.done)
		return ev
	}
	ev.step = time.Duration(extendSeconds(timeout)) * time.Second
	ev.until = time.Now().Add(timeout)
	go ev.autoExtend()
	return ev
}

// settle stops extending the delivery, before its final ack (or before it is left for the
// host to deliver again).
func (ev *eventDelivery) settle() {
	ev.mu.Lock()
	ev.settled = true
	ev.mu.Unlock()
	ev.stopOnce.Do(func() { close(ev.stop) })
	<-ev.done
}

// extend sends an extension of d, for Extend.
func (ev *eventDelivery) extend(d time.Duration) error {
	secs := extendSeconds(d)
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.settled {
		return invalid("the delivery is already settled; there is nothing to extend")
	}
	if err := ev.send(secs); err != nil {
		return err
	}
	ev.until = time.Now().Add(time.Duration(secs) * time.Second)
	select {
	case ev.nudge <- struct{}{}:
	default:
	}
	return nil
}

// autoExtend extends the delivery whenever less than two thirds of an extension step is
// left before the host would deliver it again: every third of the processing timeout
// unless Extend intervenes.
func (ev *eventDelivery) autoExtend() {
	defer close(ev.done)
	t := time.NewTimer(ev.wait())
	defer t.Stop()
	for {
		select {
		case <-ev.stop:
			return
		case <-ev.c.stopped:
			return // the host delivers it again; there is no one left to tell
		case <-ev.nudge:
		case <-t.C:
			if !ev.extendIfDue() {
				return
			}
		}
		t.Reset(ev.wait())
	}
}

// margin is how much time before until an automatic extension is sent.
func (ev *eventDelivery) margin() time.Duration { return 2 * ev.step / 3 }

// wait returns how long until the next automatic extension is due.
func (ev *eventDelivery) wait() time.Duration {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return max(time.Until(ev.until.Add(-ev.margin())), 0)
}

// extendIfDue sends an automatic extension when one is due, and reports whether the
// extender should go on.
func (ev *eventDelivery) extendIfDue() bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.settled {
		return false
	}
	if time.Now().Before(ev.until.Add(-ev.margin())) {
		return true // an explicit Extend moved until
	}
	if err := ev.send(int32(ev.step / time.Second)); err != nil {
		return false
	}
	ev.until = time.Now().Add(ev.step)
	return true
}

// send sends an ack of action EXTEND; ev.mu is held.
func (ev *eventDelivery) send(secs int32) error {
	err := ev.c.send(ev.c.ctx, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Ack{Ack: &pluginhostv1.Ack{
		DeliveryId:    ev.d.GetDeliveryId(),
		Action:        pluginhostv1.AckAction_ACK_ACTION_EXTEND,
		ExtendSeconds: secs,
	}}})
	if err != nil {
		return errConnectionLost
	}
	return nil
}

// extendSeconds turns d into the seconds of an extension: rounded up, 1 to 600.
func extendSeconds(d time.Duration) int32 {
	return int32(min(max(math.Ceil(d.Seconds()), 1), maxExtendSeconds))
}
