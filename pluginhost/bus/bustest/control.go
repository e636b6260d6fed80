package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// message returns a message for target with id, a deadline in an hour and b's reply
// address.
func message(b bus.Bus, target, id string) bus.Envelope {
	env := envelope(target, id)
	env.Kind, env.Deadline, env.ReplyTo = bus.KindMessage, time.Now().Add(time.Hour), b.Replica()
	return env
}

// testCancelBeforeDelivery checks that a cancelled message that was not delivered never is.
func testCancelBeforeDelivery(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "cancel-before")
	m1, m2 := message(b, p, "m1"), message(b, p, "m2")
	publish(t, b, m1)
	publish(t, b, m2)
	if err := b.Cancel(t.Context(), p, m1.ID, m1.Deadline); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if err := b.Cancel(t.Context(), p, "never-sent", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("Cancel of an unknown message: %v", err)
	}
	c := consume(t, b, p, "i")
	d := next(t, c)
	if d.ID != m2.ID {
		t.Fatalf("delivered %s; want %s (%s was cancelled)", d.ID, m2.ID, m1.ID)
	}
	ack(t, c, d.Tag)
	noNext(t, c, waitShort)
	depth(t, b, p, 0)
}

// testCancelInFlight checks that cancelling a message in flight reports its tag on the
// holder's Cancelled, that the holder can still settle it, and that it is not delivered
// again when its processing timeout expires.
func testCancelInFlight(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: shortTimeout})
	p := pluginID(t, "cancel-in-flight")
	c := consume(t, b, p, "i")

	cancelled := func(m bus.Envelope, d bus.Delivery) {
		t.Helper()
		if err := b.Cancel(t.Context(), p, m.ID, m.Deadline); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		select {
		case tag := <-c.Cancelled():
			if tag != d.Tag {
				t.Fatalf("Cancelled reported %s; want %s", tag, d.Tag)
			}
		case <-time.After(waitLong):
			t.Fatalf("Cancelled did not report %s", d.Tag)
		}
	}

	settled := message(b, p, "settled")
	publish(t, b, settled)
	d := next(t, c)
	if err := c.Extend(t.Context(), d.Tag, noTimeout); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	cancelled(settled, d)
	ack(t, c, d.Tag)

	abandoned := message(b, p, "abandoned")
	publish(t, b, abandoned)
	d = next(t, c)
	cancelled(abandoned, d)
	// Not settled: its processing timeout expires, and it is dropped instead of redelivered.
	noNext(t, c, shortTimeout+waitLong/5)
	depth(t, b, p, 0)
}

// testReply checks that a reply sent to the bus's own Replica arrives on Replies intact,
// in the order sent.
func testReply(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	if b.Replica() == "" || b.Replica() != b.Replica() {
		t.Fatalf("Replica() = %q; want a stable, non-empty address", b.Replica())
	}
	p := pluginID(t, "reply")
	publish(t, b, message(b, p, "question"))
	c := consume(t, b, p, "i")
	d := next(t, c)
	want := []bus.Reply{
		{MessageID: d.ID, Status: "success", Data: []byte(`{"answer":42,"text":"ünïcode"}`)},
		{MessageID: "other", Status: "error", ErrorCode: "PLUGIN_NOT_FOUND", ErrorMessage: "no such plugin"},
	}
	for _, r := range want {
		if err := b.Reply(t.Context(), d.ReplyTo, r); err != nil {
			t.Fatalf("Reply: %v", err)
		}
	}
	ack(t, c, d.Tag)
	for i, w := range want {
		select {
		case got, ok := <-b.Replies():
			if !ok {
				t.Fatal("Replies closed")
			}
			if got.MessageID != w.MessageID || got.Status != w.Status || !bytes.Equal(got.Data, w.Data) ||
				got.ErrorCode != w.ErrorCode || got.ErrorMessage != w.ErrorMessage {
				t.Fatalf("reply %d = %+v; want %+v", i, got, w)
			}
		case <-time.After(waitLong):
			t.Fatalf("reply %d did not arrive", i)
		}
	}
}

// testWatch checks that Announce reaches every watcher, and that a watcher that does not
// read is dropped while the others go on.
func testWatch(t *testing.T, open opener) {
	const buffer, events = 4, 20
	b := open(bus.Options{WatchBuffer: buffer})
	ctx := t.Context()
	fast := []<-chan bus.Envelope{b.Watch(ctx), b.Watch(ctx)}
	slow := b.Watch(ctx)

	receive := func(w <-chan bus.Envelope, want bus.Envelope) {
		t.Helper()
		select {
		case got, ok := <-w:
			if !ok {
				t.Fatalf("watcher closed; want %s", want.ID)
			}
			if got.ID != want.ID || got.Type != want.Type || got.Source != want.Source ||
				got.Kind != want.Kind || !bytes.Equal(got.Data, want.Data) || !sameTime(got.SentAt, want.SentAt) {
				t.Fatalf("watcher got %+v; want %+v", got, want)
			}
		case <-time.After(waitLong):
			t.Fatalf("watcher did not get %s", want.ID)
		}
	}
	var sent []bus.Envelope
	for i := range events {
		ev := bus.Envelope{
			ID: fmt.Sprintf("ev-%02d", i), Kind: bus.KindEvent, Source: "plugin-a", Type: "user.created",
			Data: []byte(fmt.Sprintf(`{"n":%d}`, i)), SentAt: time.Now(),
		}
		if err := b.Announce(ctx, ev); err != nil {
			t.Fatalf("Announce: %v", err)
		}
		sent = append(sent, ev)
		for _, w := range fast {
			receive(w, ev)
		}
	}

	var got []string
	deadline := time.After(waitLong)
	for more := true; more; {
		select {
		case ev, ok := <-slow:
			if ok {
				got = append(got, ev.ID)
			}
			more = ok
		case <-deadline:
			t.Fatalf("the slow watcher was not dropped; it got %v", got)
		}
	}
	if len(got) > buffer {
		t.Errorf("the slow watcher got %d events; want at most WatchBuffer (%d)", len(got), buffer)
	}
	for i, id := range got {
		if id != sent[i].ID {
			t.Fatalf("the slow watcher got %v; want a prefix of the events announced", got)
		}
	}

	last := bus.Envelope{ID: "ev-last", Kind: bus.KindEvent, Source: "system", Type: "done", SentAt: time.Now()}
	if err := b.Announce(ctx, last); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	for _, w := range fast {
		receive(w, last)
	}
}

// testWatchEnds checks that a Watch channel is closed when its context ends.
func testWatchEnds(t *testing.T, open opener) {
	b := open(bus.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	w := b.Watch(ctx)
	stays := b.Watch(t.Context())
	cancel()
	closed(t, w, "the watcher whose context ended")
	ev := bus.Envelope{ID: "after", Kind: bus.KindEvent, Source: "system", Type: "t", SentAt: time.Now()}
	if err := b.Announce(t.Context(), ev); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	select {
	case got := <-stays:
		if got.ID != ev.ID {
			t.Fatalf("watcher got %s; want %s", got.ID, ev.ID)
		}
	case <-time.After(waitLong):
		t.Fatal("the other watcher got nothing")
	}
}

// closed drains w and fails the test if it is not closed within waitLong.
func closed[T any](t *testing.T, w <-chan T, what string) {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		select {
		case _, ok := <-w:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("%s was not closed", what)
		}
	}
}

// testPurge checks that Purge removes the inbox and the dead letters, and that the plugin
// can be used again afterwards.
func testPurge(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p, q := pluginID(t, "purge"), pluginID(t, "purge-other")
	for _, id := range []string{"a", "b", "c"} {
		publish(t, b, envelope(p, id))
	}
	publish(t, b, envelope(q, "a"))
	c, err := b.Consume(t.Context(), p, "i")
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	d := next(t, c)
	if err := c.DeadLetter(t.Context(), d.Tag, "bad"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	depth(t, b, p, 2)

	if err := b.Purge(t.Context(), p); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if err := b.Purge(t.Context(), pluginID(t, "never-used")); err != nil {
		t.Fatalf("Purge of an unknown plugin: %v", err)
	}
	depth(t, b, p, 0)
	if dls, err := b.DeadLetters(t.Context(), p, 10); err != nil || len(dls) != 0 {
		t.Fatalf("DeadLetters after Purge = %v, %v; want none", dls, err)
	}
	depth(t, b, q, 1) // other inboxes are untouched

	c = consume(t, b, p, "i")
	noNext(t, c, waitShort)
	publish(t, b, envelope(p, "new"))
	if d := next(t, c); d.ID != "new" {
		t.Fatalf("delivered %s after Purge; want new", d.ID)
	}
}

// testLive checks that Live is true exactly while a consumer of the plugin is open.
func testLive(t *testing.T, open opener) {
	b := open(bus.Options{})
	p := pluginID(t, "live")
	live := func() bool {
		t.Helper()
		ok, err := b.Live(t.Context(), p)
		if err != nil {
			t.Fatalf("Live: %v", err)
		}
		return ok
	}
	if live() {
		t.Fatal("Live before any consumer opened")
	}
	c1 := consume(t, b, p, "one")
	if !live() {
		t.Fatal("not Live with a consumer open")
	}
	c2 := consume(t, b, p, "two")
	if err := c1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !live() {
		t.Fatal("not Live with one of two consumers open")
	}
	if err := c2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	eventually(t, "not Live once every consumer closed", func() bool { return !live() })
	if ok, err := b.Live(t.Context(), pluginID(t, "other")); err != nil || ok {
		t.Fatalf("Live of another plugin = %v, %v; want false", ok, err)
	}
}

// testClose checks that Close ends consumers, Replies and watchers, and that the bus
// refuses work afterwards.
func testClose(t *testing.T, open opener) {
	b := open(bus.Options{})
	p := pluginID(t, "close")
	c, err := b.Consume(t.Context(), p, "i")
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	w := b.Watch(t.Context())
	publish(t, b, envelope(p, "held"))
	held := next(t, c)
	waiting := nextAsync(t, c)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r := await(t, waiting); !errors.Is(r.err, bus.ErrClosed) {
		t.Fatalf("waiting Next after Close = %s, %v; want %v", r.d.ID, r.err, bus.ErrClosed)
	}
	if _, err := c.Next(t.Context()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Next after Close: %v; want %v", err, bus.ErrClosed)
	}
	if err := c.Ack(t.Context(), held.Tag); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Ack after Close: %v; want %v", err, bus.ErrClosed)
	}
	closed(t, b.Replies(), "Replies")
	closed(t, w, "the watcher")
	if err := b.Publish(t.Context(), envelope(p, "late")); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Publish after Close: %v; want %v", err, bus.ErrClosed)
	}
	if _, err := b.Consume(t.Context(), p, "j"); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Consume after Close: %v; want %v", err, bus.ErrClosed)
	}
	if err := b.Announce(t.Context(), envelope("", "late")); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Announce after Close: %v; want %v", err, bus.ErrClosed)
	}
	if err := b.Close(); err != nil && !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	_ = c.Close()
}
