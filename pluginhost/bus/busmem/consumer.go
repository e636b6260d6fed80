package busmem

import (
	"context"
	"fmt"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// consumer is one open consumer of an inbox. b, ib and name are set once; every other
// field is guarded by ib.mu.
type consumer struct {
	b    *Bus
	ib   *inbox
	name string
	// cancelled is made (buffered Prefetch) by the first Cancelled call or the first cancel
	// to report, so that a consumer that never sees one holds no buffer; sent to without
	// blocking, never closed.
	cancelled chan string

	held     int         // in-flight entries owned by this consumer
	timeouts timeoutHeap // the same entries, by the time they become deliverable again
	closed   bool        // by Close or by the bus's Close
	// wake is non-nil while Next calls wait; signal closes it and sets it to nil, so that
	// every waiting call looks again.
	wake chan struct{}
	// notify is non-nil while a TryNextOrNotify call registered it and it was not called
	// yet: the consumer then waits as a blocked Next does, without a goroutine. signal
	// calls it, and notifyTimer calls signal when an in-flight entry becomes deliverable.
	notify func()
	// notifyTimer is made by the first TryNextOrNotify that has a time to wait for, and
	// reset by the later ones; it runs timedOut.
	notifyTimer *time.Timer
	// waitUntil is the earliest time a waiting Next call, or notifyTimer, wakes by itself
	// (zero: it waits for a signal only).
	waitUntil time.Time
}

var (
	_ bus.Consumer = (*consumer)(nil)
	_ bus.Notifier = (*consumer)(nil)
)

func newConsumer(b *Bus, ib *inbox, name string) *consumer {
	return &consumer{b: b, ib: ib, name: name}
}

// Next returns the next delivery, waiting for one while there is none or while the
// consumer holds Prefetch unsettled deliveries.
func (c *consumer) Next(ctx context.Context) (bus.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return bus.Delivery{}, err
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	ib := c.ib
	for {
		ib.mu.Lock()
		if c.closed {
			ib.mu.Unlock()
			return bus.Delivery{}, bus.ErrClosed
		}
		now := time.Now()
		if !c.waitUntil.IsZero() && !c.waitUntil.After(now) {
			c.waitUntil = time.Time{} // the calls that waited until then are awake
		}
		d, ok, wakeAt := ib.take(c, now)
		if ok {
			ib.mu.Unlock()
			return d, nil
		}
		if c.wake == nil {
			c.wake = make(chan struct{})
		}
		wake := c.wake
		if !wakeAt.IsZero() && (c.waitUntil.IsZero() || wakeAt.Before(c.waitUntil)) {
			c.waitUntil = wakeAt
		}
		ib.mu.Unlock()

		var timeout <-chan time.Time
		if !wakeAt.IsZero() {
			// Wake a little after the entry becomes visible, so that it has.
			delay := wakeAt.Sub(now) + time.Millisecond
			if timer == nil {
				timer = time.NewTimer(delay)
			} else {
				timer.Reset(delay)
			}
			timeout = timer.C
		}
		select {
		case <-wake:
		case <-timeout:
		case <-ctx.Done():
			return bus.Delivery{}, ctx.Err()
		case <-c.b.done:
			return bus.Delivery{}, bus.ErrClosed
		}
	}
}

// TryNext returns the delivery Next would return at once, or ok false when Next would
// wait (nothing is ready, or the consumer holds Prefetch unsettled deliveries). It lets a
// caller take the deliveries that are ready in a row without a blocking call for each.
func (c *consumer) TryNext() (d bus.Delivery, ok bool, err error) {
	ib := c.ib
	ib.mu.Lock()
	defer ib.mu.Unlock()
	if c.closed {
		return bus.Delivery{}, false, bus.ErrClosed
	}
	d, ok, _ = ib.take(c, time.Now())
	return d, ok, nil
}

// TryNextOrNotify returns the delivery Next would return at once. When Next would wait, it
// returns ok false and registers fn, which is called once where a blocked Next would be
// woken (see bus.Notifier): by the Publish, settle, Extend, Close, Purge or hand-back that
// may have given the consumer something, or by notifyTimer when an in-flight entry's
// processing timeout expires. fn is called with the inbox locked: it must not block nor
// call the consumer.
func (c *consumer) TryNextOrNotify(fn func()) (d bus.Delivery, ok bool, err error) {
	ib := c.ib
	ib.mu.Lock()
	defer ib.mu.Unlock()
	if c.closed {
		return bus.Delivery{}, false, bus.ErrClosed
	}
	c.notify = nil // withdrawn: the caller looks now
	now := time.Now()
	if !c.waitUntil.IsZero() && !c.waitUntil.After(now) {
		c.waitUntil = time.Time{} // the waits until then are over
	}
	d, ok, wakeAt := ib.take(c, now)
	if ok {
		return d, true, nil
	}
	c.notify = fn
	if wakeAt.IsZero() {
		if c.notifyTimer != nil {
			c.notifyTimer.Stop()
		}
		return bus.Delivery{}, false, nil
	}
	if c.waitUntil.IsZero() || wakeAt.Before(c.waitUntil) {
		c.waitUntil = wakeAt
	}
	// As in Next: a little after the entry becomes visible, so that it has.
	delay := wakeAt.Sub(now) + time.Millisecond
	if c.notifyTimer == nil {
		c.notifyTimer = time.AfterFunc(delay, c.timedOut)
	} else {
		c.notifyTimer.Reset(delay)
	}
	return bus.Delivery{}, false, nil
}

// timedOut is notifyTimer's function: an in-flight entry may have become deliverable. A
// timer that fires late, for an earlier registration, calls a later one early; its caller
// then finds nothing and registers again.
func (c *consumer) timedOut() {
	c.ib.mu.Lock()
	defer c.ib.mu.Unlock()
	if c.notify != nil {
		c.signal()
	}
}

// Ack settles a delivery as done.
func (c *consumer) Ack(_ context.Context, tag string) error {
	ib := c.ib
	ib.mu.Lock()
	defer ib.mu.Unlock()
	e, err := c.holding(tag, "ack")
	if err != nil {
		return err
	}
	ib.settle(e)
	return nil
}

// Extend keeps the delivery from being redelivered for d from now.
func (c *consumer) Extend(_ context.Context, tag string, d time.Duration) error {
	ib := c.ib
	ib.mu.Lock()
	defer ib.mu.Unlock()
	e, err := c.holding(tag, "extend")
	if err != nil {
		return err
	}
	at := time.Now().Add(d)
	earlier := at.Before(e.visibleAt)
	e.visibleAt = at
	c.timeouts.fix(e.hidx)
	if earlier {
		ib.wakeWaitersBefore(at)
	}
	return nil
}

// DeadLetter settles a delivery by moving it to the dead-letter list with reason.
func (c *consumer) DeadLetter(_ context.Context, tag, reason string) error {
	ib := c.ib
	ib.mu.Lock()
	defer ib.mu.Unlock()
	e, err := c.holding(tag, "dead-letter")
	if err != nil {
		return err
	}
	ib.deadLetter(e, reason, time.Now())
	return nil
}

// Cancelled reports the tags of this consumer's in-flight messages that their senders
// cancelled. It is never closed.
func (c *consumer) Cancelled() <-chan string {
	c.ib.mu.Lock()
	defer c.ib.mu.Unlock()
	return c.cancelledChan()
}

// cancelledChan returns cancelled, made on first use. ib.mu must be held.
func (c *consumer) cancelledChan() chan string {
	if c.cancelled == nil {
		c.cancelled = make(chan string, c.ib.opts.Prefetch)
	}
	return c.cancelled
}

// Close ends the consumer and hands its in-flight deliveries back to the front of the
// inbox at once. Closing again is a no-op.
func (c *consumer) Close() error {
	ib := c.ib
	ib.mu.Lock()
	defer ib.mu.Unlock()
	ib.removeConsumer(c)
	if c.closed {
		return nil // closed already, or the bus closed
	}
	c.closed = true
	ib.requeue(c)
	c.signal()
	return nil
}

// holding returns the in-flight entry tag names if this consumer holds it. ib.mu must be
// held.
func (c *consumer) holding(tag, op string) (*entry, error) {
	if c.closed {
		return nil, bus.ErrClosed
	}
	e := c.ib.inflight[tag]
	if e == nil || e.owner != c {
		return nil, fmt.Errorf("busmem: %s %q: %w", op, tag, bus.ErrUnknownDelivery)
	}
	return e, nil
}

// waiting reports whether c waits for a signal: a Next call of c is blocked, or a
// TryNextOrNotify registered a function that was not called yet. ib.mu must be held.
func (c *consumer) waiting() bool {
	return c.wake != nil || c.notify != nil
}

// wantsEntries reports whether c waits and could take an entry. ib.mu must be held.
func (c *consumer) wantsEntries() bool {
	return c.waiting() && c.held < c.ib.opts.Prefetch
}

// signal wakes the Next calls of c that wait and calls the function registered by
// TryNextOrNotify, if any. ib.mu must be held.
func (c *consumer) signal() {
	if !c.waiting() {
		return
	}
	c.waitUntil = time.Time{}
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
	if fn := c.notify; fn != nil {
		c.notify = nil
		if c.notifyTimer != nil {
			c.notifyTimer.Stop()
		}
		fn()
	}
}
