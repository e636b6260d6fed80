package busmem

import (
	"context"
	"fmt"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// consumer is one open consumer of an inbox. b, ib, name and cancelled are set once;
// every other field is guarded by ib.mu.
type consumer struct {
	b         *Bus
	ib        *inbox
	name      string
	cancelled chan string // buffered Prefetch; sent to without blocking, never closed

	held     int         // in-flight entries owned by this consumer
	timeouts timeoutHeap // the same entries, by the time they become deliverable again
	closed   bool        // by Close or by the bus's Close
	// wake is non-nil while Next calls wait; signal closes it and sets it to nil, so that
	// every waiting call looks again.
	wake chan struct{}
	// waitUntil is the earliest time a waiting Next call wakes by itself (zero: it waits
	// for a signal only).
	waitUntil time.Time
}

var _ bus.Consumer = (*consumer)(nil)

func newConsumer(b *Bus, ib *inbox, name string) *consumer {
	return &consumer{b: b, ib: ib, name: name, cancelled: make(chan string, b.opts.Prefetch)}
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
func (c *consumer) Cancelled() <-chan string { return c.cancelled }

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

// wantsEntries reports whether a Next call of c waits and could take an entry. ib.mu must
// be held.
func (c *consumer) wantsEntries() bool {
	return c.wake != nil && c.held < c.ib.opts.Prefetch
}

// signal wakes the Next calls of c that wait. ib.mu must be held.
func (c *consumer) signal() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
		c.waitUntil = time.Time{}
	}
}
