package plugin

import (
	"context"
	"fmt"
	"math"
	"sync"
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
// the sender's deadline, and the host's cancel frame for d cancels it. release unregisters
// it and must be called once the delivery is over.
func (r *runner) messageContext(c *conn, d *pluginhostv1.Deliver) (ctx context.Context, release func()) {
	ctx, cancel := context.WithCancelCause(r.life)
	stopDeadline := context.CancelFunc(func() {})
	if dl := d.GetDeadline(); dl != nil {
		ctx, stopDeadline = context.WithDeadline(ctx, dl.AsTime())
	}
	id := d.GetDeliveryId()
	c.mu.Lock()
	c.handlers[id] = cancel
	c.mu.Unlock()
	return ctx, func() {
		c.mu.Lock()
		delete(c.handlers, id)
		c.mu.Unlock()
		stopDeadline()
		cancel(nil)
	}
}

// cancelMessage cancels the handler of the delivery a cancel frame names, if it is still
// running (or waiting to run).
func (c *conn) cancelMessage(f *pluginhostv1.Cancel) bool {
	c.mu.Lock()
	cancel := c.handlers[f.GetDeliveryId()]
	c.mu.Unlock()
	if cancel == nil {
		return false
	}
	cause := errSenderCanceled
	if f.GetReason() == "deadline_exceeded" {
		cause = errSenderDeadline
	}
	cancel(cause)
	return true
}

// senderGaveUp reports whether ctx was canceled because the host said the message's sender
// no longer waits for the reply.
func senderGaveUp(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return cause == errSenderCanceled || cause == errSenderDeadline
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
