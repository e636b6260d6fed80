// Package bustest is the conformance suite of bus.Bus: every implementation runs Run in its
// own tests, so they all behave alike.
//
// The suite tests only what the bus package promises. It does not look inside an
// implementation, and its timing assumptions are coarse: deadlines and processing timeouts
// of a few hundred milliseconds, checked with margins of at least 50 ms, and every wait for
// something that must happen bounded by a few seconds. Beyond the documentation of bus.Bus
// and bus.Consumer, it holds implementations to these readings of it:
//   - times (Deadline, SentAt) round-trip to the millisecond at least, compared with
//     time.Equal semantics (the location may change);
//   - a Publish that fails stores nothing and is not remembered for dedupe: publishing the
//     same envelope again once there is room stores it;
//   - a delivery handed back by Consumer.Close keeps its Tag and ID; its next Attempt is
//     not checked beyond being 1 or 2;
//   - Ack, Extend and DeadLetter of a tag that another consumer of the same inbox holds fail
//     with bus.ErrUnknownDelivery; Ack on a closed consumer fails, and after the bus's
//     Close it fails with bus.ErrClosed;
//   - expired messages skipped by Next, and cancelled ones, no longer count in Depth;
//   - a slow watcher receives at most WatchBuffer events, a prefix of those announced,
//     before its channel is closed;
//   - Close may be called again after Close; it then returns nil or bus.ErrClosed.
package bustest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// Timing of the suite.
const (
	// waitLong bounds every wait for something that must happen.
	waitLong = 5 * time.Second
	// waitShort is how long the suite watches for something that must not happen when the
	// contract gives no time for it (a blocked Next, say).
	waitShort = 200 * time.Millisecond
	// shortTimeout is the ProcessingTimeout of the tests about redelivery.
	shortTimeout = 300 * time.Millisecond
	// margin is the slack allowed on either side of a promised time.
	margin = 50 * time.Millisecond
	// noTimeout is the ProcessingTimeout of the tests in which nothing may time out.
	noTimeout = time.Minute
)

// Run runs the conformance suite. newBus must return a new bus with opts each time it is
// called; buses created for different subtests may share a backend, so every subtest uses
// its own plugin ids. Run closes each bus when its subtest ends, so newBus must not (it may
// register its own cleanup of the backend). Subtests run in parallel.
func Run(t *testing.T, newBus func(t *testing.T, opts bus.Options) bus.Bus) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open opener)
	}{
		{"RoundTrip", testRoundTrip},
		{"WakeUp", testWakeUp},
		{"PublishAll", testPublishAll},
		{"Order", testOrder},
		{"Deadline", testDeadline},
		{"DeadlineInFlight", testDeadlineInFlight},
		{"ProcessingTimeout", testProcessingTimeout},
		{"Extend", testExtend},
		{"UnknownDelivery", testUnknownDelivery},
		{"ConsumerDies", testConsumerDies},
		{"ConsumerReconnects", testConsumerReconnects},
		{"ConsumerClose", testConsumerClose},
		{"MaxAttempts", testMaxAttempts},
		{"DeadLetter", testDeadLetter},
		{"DeadLettersBounded", testDeadLettersBounded},
		{"Dedupe", testDedupe},
		{"FanOut", testFanOut},
		{"Prefetch", testPrefetch},
		{"InboxFull", testInboxFull},
		{"InboxBytes", testInboxBytes},
		{"Trimming", testTrimming},
		{"CancelBeforeDelivery", testCancelBeforeDelivery},
		{"CancelInFlight", testCancelInFlight},
		{"Reply", testReply},
		{"Watch", testWatch},
		{"WatchEnds", testWatchEnds},
		{"Purge", testPurge},
		{"Live", testLive},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, func(opts bus.Options) bus.Bus {
				t.Helper()
				b := newBus(t, opts)
				t.Cleanup(func() {
					if err := b.Close(); err != nil && !errors.Is(err, bus.ErrClosed) {
						t.Errorf("Close: %v", err)
					}
				})
				return b
			})
		})
	}
}

// opener returns a new bus with opts, closed when the test ends.
type opener func(opts bus.Options) bus.Bus

// pluginID returns a plugin id no other test uses, valid as a plugin id.
func pluginID(t *testing.T, name string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t-" + name + "-" + hex.EncodeToString(b[:])
}

// envelope returns an event for target with id.
func envelope(target, id string) bus.Envelope {
	return bus.Envelope{
		ID: id, Kind: bus.KindEvent, Source: "system", Target: target, Type: "test.event",
		Data: []byte(`{"id":"` + id + `"}`), SentAt: time.Now(),
	}
}

// publish publishes env and fails the test if that fails.
func publish(t *testing.T, b bus.Bus, env bus.Envelope) {
	t.Helper()
	if err := b.Publish(t.Context(), env); err != nil {
		t.Fatalf("Publish %s to %s: %v", env.ID, env.Target, err)
	}
}

// consume opens a consumer and closes it when the test ends.
func consume(t *testing.T, b bus.Bus, plugin, name string) bus.Consumer {
	t.Helper()
	c, err := b.Consume(t.Context(), plugin, name)
	if err != nil {
		t.Fatalf("Consume %s/%s: %v", plugin, name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// next returns the next delivery of c, failing the test if none comes within waitLong.
func next(t *testing.T, c bus.Consumer) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	d, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return d
}

// noNext fails the test if c delivers anything within d.
func noNext(t *testing.T, c bus.Consumer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	got, err := c.Next(ctx)
	switch {
	case err == nil:
		t.Fatalf("Next delivered %s (attempt %d); want nothing", got.ID, got.Attempt)
	case !errors.Is(err, context.DeadlineExceeded):
		t.Fatalf("Next: %v; want %v", err, context.DeadlineExceeded)
	}
}

// ack acknowledges tag and fails the test if that fails.
func ack(t *testing.T, c bus.Consumer, tag string) {
	t.Helper()
	if err := c.Ack(t.Context(), tag); err != nil {
		t.Fatalf("Ack %s: %v", tag, err)
	}
}

// nextAsync calls c.Next on another goroutine, bounded by waitLong; the result arrives on
// the returned channel.
func nextAsync(t *testing.T, c bus.Consumer) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	done := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	go func() {
		defer close(done)
		d, err := c.Next(ctx)
		ch <- result{d, err}
	}()
	t.Cleanup(func() { cancel(); <-done }) // no goroutine outlives the test
	return ch
}

// result is what a Next call returned.
type result struct {
	d   bus.Delivery
	err error
}

// await returns the result of nextAsync, failing the test if it takes longer than
// waitLong plus a second.
func await(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitLong + time.Second):
		t.Fatal("Next did not return")
		return result{}
	}
}

// depth checks plugin's Depth.
func depth(t *testing.T, b bus.Bus, plugin string, want int) {
	t.Helper()
	got, err := b.Depth(t.Context(), plugin)
	if err != nil {
		t.Fatalf("Depth: %v", err)
	}
	if got != want {
		t.Fatalf("Depth = %d; want %d", got, want)
	}
}

// eventually polls cond until it holds, failing the test with what if it does not within
// waitLong.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitLong)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sameTime reports whether a and b are the same instant to the millisecond.
func sameTime(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	return a.Sub(b).Abs() < time.Millisecond
}
