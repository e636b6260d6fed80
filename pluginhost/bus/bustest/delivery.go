package bustest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// testRoundTrip publishes one envelope of each kind and checks that every field arrives.
func testRoundTrip(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "round-trip")
	now := time.Now()
	envs := []bus.Envelope{
		{
			ID: "msg-1", Kind: bus.KindMessage, Source: "sender-plugin", Target: p, Type: "user.get",
			Data:     []byte(`{"user":"ünïcode ☃","n":[1,2,3],"nested":{"ok":true}}`),
			Deadline: now.Add(time.Hour), ReplyTo: b.Replica(), SentAt: now.Add(-time.Second),
		},
		{
			ID: "bc-1", Kind: bus.KindBroadcast, Source: "admin", Target: p, Type: "maintenance",
			Data: []byte(`{"at":"02:00"}`), SentAt: time.Date(2026, 11, 24, 10, 30, 15, 123_000_000, time.UTC),
		},
		{
			ID: "ev-1", Kind: bus.KindEvent, Source: "system", Target: p, Type: "plugin.installed",
			Data: []byte(`{}`), SentAt: now.In(time.FixedZone("UTC+5:30", 5*3600+30*60)),
		},
	}
	for _, env := range envs {
		publish(t, b, env)
	}
	depth(t, b, p, len(envs))

	c := consume(t, b, p, "instance-1")
	tags := map[string]bool{}
	for _, want := range envs {
		d := next(t, c)
		got := d.Envelope
		if got.ID != want.ID || got.Kind != want.Kind || got.Source != want.Source ||
			got.Target != want.Target || got.Type != want.Type || got.ReplyTo != want.ReplyTo {
			t.Errorf("delivered %+v; want %+v", got, want)
		}
		if !bytes.Equal(got.Data, want.Data) {
			t.Errorf("%s: Data = %q; want %q", want.ID, got.Data, want.Data)
		}
		if !sameTime(got.Deadline, want.Deadline) {
			t.Errorf("%s: Deadline = %v; want %v", want.ID, got.Deadline, want.Deadline)
		}
		if !sameTime(got.SentAt, want.SentAt) {
			t.Errorf("%s: SentAt = %v; want %v", want.ID, got.SentAt, want.SentAt)
		}
		if d.Attempt != 1 {
			t.Errorf("%s: Attempt = %d; want 1", want.ID, d.Attempt)
		}
		if d.Tag == "" || tags[d.Tag] {
			t.Errorf("%s: Tag %q is empty or not unique", want.ID, d.Tag)
		}
		tags[d.Tag] = true
		ack(t, c, d.Tag)
	}
	depth(t, b, p, 0)
	noNext(t, c, waitShort)
}

// testWakeUp checks that Next waits on an empty inbox and returns as soon as an entry is
// published, for each of several waiting consumers in turn.
func testWakeUp(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "wake-up")
	c1, c2 := consume(t, b, p, "one"), consume(t, b, p, "two")
	w1, w2 := nextAsync(t, c1), nextAsync(t, c2)
	select {
	case r := <-w1:
		t.Fatalf("Next on an empty inbox returned %s, %v; want it to wait", r.d.ID, r.err)
	case r := <-w2:
		t.Fatalf("Next on an empty inbox returned %s, %v; want it to wait", r.d.ID, r.err)
	case <-time.After(waitShort):
	}
	publish(t, b, envelope(p, "first"))
	var first result
	var other <-chan result
	select {
	case first = <-w1:
		other = w2
	case first = <-w2:
		other = w1
	case <-time.After(waitLong):
		t.Fatal("no waiting Next returned after Publish")
	}
	if first.err != nil || first.d.ID != "first" {
		t.Fatalf("Next = %s, %v; want first", first.d.ID, first.err)
	}
	publish(t, b, envelope(p, "second"))
	if r := await(t, other); r.err != nil || r.d.ID != "second" {
		t.Fatalf("Next = %s, %v; want second", r.d.ID, r.err)
	}
}

// testPublishAll publishes to several inboxes at once.
func testPublishAll(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p, q := pluginID(t, "all-p"), pluginID(t, "all-q")
	envs := []bus.Envelope{envelope(p, "a"), envelope(q, "a"), envelope(p, "b")}
	for i, err := range b.PublishAll(t.Context(), envs) {
		if err != nil {
			t.Fatalf("PublishAll[%d]: %v", i, err)
		}
	}
	if errs := b.PublishAll(t.Context(), nil); len(errs) != 0 {
		t.Fatalf("PublishAll(nil) = %v; want no errors", errs)
	}
	depth(t, b, p, 2)
	depth(t, b, q, 1)
	cp := consume(t, b, p, "i")
	for _, want := range []string{"a", "b"} {
		if d := next(t, cp); d.ID != want || d.Target != p {
			t.Fatalf("delivered %s to %s; want %s to %s", d.ID, d.Target, want, p)
		} else {
			ack(t, cp, d.Tag)
		}
	}
	cq := consume(t, b, q, "i")
	if d := next(t, cq); d.ID != "a" || d.Target != q {
		t.Fatalf("delivered %s to %s; want a to %s", d.ID, d.Target, q)
	}
}

// testOrder checks that one consumer gets an inbox's entries oldest first.
func testOrder(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "order")
	var want []string
	var batch []bus.Envelope
	for i := range 100 {
		env := envelope(p, fmt.Sprintf("m-%03d", i))
		env.Source = []string{"plugin-a", "plugin-b"}[i%2]
		want = append(want, env.ID)
		if i < 50 {
			publish(t, b, env)
		} else {
			batch = append(batch, env)
		}
	}
	for i, err := range b.PublishAll(t.Context(), batch) {
		if err != nil {
			t.Fatalf("PublishAll[%d]: %v", i, err)
		}
	}
	c := consume(t, b, p, "i")
	for i, id := range want {
		d := next(t, c)
		if d.ID != id {
			t.Fatalf("delivery %d is %s; want %s", i, d.ID, id)
		}
		ack(t, c, d.Tag)
	}
}

// testDeadline checks that envelopes whose deadline passed before delivery are never
// delivered, and are settled.
func testDeadline(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: shortTimeout})
	p := pluginID(t, "deadline")
	now := time.Now()
	past := envelope(p, "past")
	past.Kind, past.Deadline = bus.KindMessage, now.Add(-time.Second)
	soon := envelope(p, "soon")
	soon.Kind, soon.Deadline = bus.KindMessage, now.Add(100*time.Millisecond)
	later := envelope(p, "later")
	later.Kind, later.Deadline = bus.KindMessage, now.Add(time.Hour)
	publish(t, b, past)
	publish(t, b, soon)
	publish(t, b, later)
	publish(t, b, envelope(p, "none"))
	time.Sleep(100*time.Millisecond + 4*margin) // soon's deadline passes

	c := consume(t, b, p, "i")
	for _, want := range []string{"later", "none"} {
		d := next(t, c)
		if d.ID != want {
			t.Fatalf("delivered %s; want %s", d.ID, want)
		}
		ack(t, c, d.Tag)
	}
	noNext(t, c, waitShort)
	depth(t, b, p, 0)
}

// testDeadlineInFlight checks that a delivery whose deadline passes while it is in flight
// is not delivered again when its processing timeout expires.
func testDeadlineInFlight(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: shortTimeout})
	p := pluginID(t, "deadline-in-flight")
	env := envelope(p, "m")
	env.Kind, env.Deadline = bus.KindMessage, time.Now().Add(time.Second)
	publish(t, b, env)
	c := consume(t, b, p, "i")
	d := next(t, c)
	if d.ID != "m" {
		t.Fatalf("delivered %s; want m", d.ID)
	}
	// Visible again only after the deadline.
	if err := c.Extend(t.Context(), d.Tag, 1500*time.Millisecond); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	noNext(t, c, 2500*time.Millisecond)
	depth(t, b, p, 0)
	if err := c.Ack(t.Context(), d.Tag); err != nil && !errors.Is(err, bus.ErrUnknownDelivery) {
		t.Fatalf("Ack after the deadline: %v; want nil or %v", err, bus.ErrUnknownDelivery)
	}
}
