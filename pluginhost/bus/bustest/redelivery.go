package bustest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// testProcessingTimeout checks that an unsettled delivery is delivered again after the
// processing timeout, to another consumer or to the same one, with the same ID and Tag and
// the next Attempt, and that the first holder can no longer settle it.
func testProcessingTimeout(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: shortTimeout})
	p := pluginID(t, "timeout")
	c1 := consume(t, b, p, "one")
	c2 := consume(t, b, p, "two")
	publish(t, b, envelope(p, "m"))

	d1 := next(t, c1)
	start := time.Now()
	d2 := next(t, c2)
	if elapsed := time.Since(start); elapsed < shortTimeout-margin {
		t.Errorf("redelivered after %s; want no sooner than the processing timeout %s", elapsed, shortTimeout)
	}
	if d2.ID != d1.ID || d2.Tag != d1.Tag || d2.Attempt != 2 {
		t.Fatalf("redelivered %s tag %s attempt %d; want %s tag %s attempt 2", d2.ID, d2.Tag, d2.Attempt, d1.ID, d1.Tag)
	}
	if !bytes.Equal(d2.Data, d1.Data) || d2.Type != d1.Type || d2.Source != d1.Source {
		t.Fatalf("redelivery %+v differs from the delivery %+v", d2.Envelope, d1.Envelope)
	}
	if err := c1.Ack(t.Context(), d1.Tag); !errors.Is(err, bus.ErrUnknownDelivery) {
		t.Fatalf("Ack by the consumer that timed out: %v; want %v", err, bus.ErrUnknownDelivery)
	}

	// The same consumer gets its own expired delivery again.
	d3 := next(t, c2)
	if d3.Tag != d1.Tag || d3.Attempt != 3 {
		t.Fatalf("redelivered tag %s attempt %d; want tag %s attempt 3", d3.Tag, d3.Attempt, d1.Tag)
	}
	ack(t, c2, d3.Tag)
	depth(t, b, p, 0)
	noNext(t, c1, shortTimeout+4*margin)
}

// testExtend checks that Extend pushes the redelivery back to d from now, and no further.
func testExtend(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: shortTimeout})
	p := pluginID(t, "extend")
	c := consume(t, b, p, "i")
	publish(t, b, envelope(p, "m"))
	d := next(t, c)
	const extension = 1500 * time.Millisecond
	start := time.Now()
	if err := c.Extend(t.Context(), d.Tag, extension); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	// Well past the processing timeout, well before the extension ends.
	noNext(t, c, shortTimeout+8*margin)
	d2 := next(t, c)
	if elapsed := time.Since(start); elapsed < extension-margin {
		t.Errorf("redelivered %s after Extend; want no sooner than %s", elapsed, extension)
	}
	if d2.Tag != d.Tag || d2.Attempt != 2 {
		t.Fatalf("redelivered tag %s attempt %d; want tag %s attempt 2", d2.Tag, d2.Attempt, d.Tag)
	}
	// Extending again, then settling, works on the redelivery.
	if err := c.Extend(t.Context(), d2.Tag, time.Minute); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	ack(t, c, d2.Tag)
	depth(t, b, p, 0)
}

// testUnknownDelivery checks the settling calls on tags the consumer does not hold.
func testUnknownDelivery(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "unknown")
	holder := consume(t, b, p, "holder")
	other := consume(t, b, p, "other")
	publish(t, b, envelope(p, "m"))
	d := next(t, holder)
	ctx := t.Context()

	calls := func(c bus.Consumer) map[string]error {
		return map[string]error{
			"Ack":        c.Ack(ctx, d.Tag),
			"Extend":     c.Extend(ctx, d.Tag, time.Minute),
			"DeadLetter": c.DeadLetter(ctx, d.Tag, "no"),
		}
	}
	for name, err := range calls(other) {
		if !errors.Is(err, bus.ErrUnknownDelivery) {
			t.Errorf("%s of another consumer's delivery: %v; want %v", name, err, bus.ErrUnknownDelivery)
		}
	}
	ack(t, holder, d.Tag)
	for name, err := range calls(holder) {
		if !errors.Is(err, bus.ErrUnknownDelivery) {
			t.Errorf("%s after Ack: %v; want %v", name, err, bus.ErrUnknownDelivery)
		}
	}
	dls, err := b.DeadLetters(ctx, p, 10)
	if err != nil || len(dls) != 0 {
		t.Fatalf("DeadLetters = %v, %v; want none", dls, err)
	}
}

// testConsumerDies checks that the deliveries of a consumer that closes without settling
// them go at once to another consumer, already waiting, with their Tag.
func testConsumerDies(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "dies")
	dying := consume(t, b, p, "dying")
	survivor := consume(t, b, p, "survivor")
	publish(t, b, envelope(p, "m1"))
	publish(t, b, envelope(p, "m2"))
	d1 := next(t, dying)
	d2 := next(t, dying)

	waiting := nextAsync(t, survivor)
	select {
	case r := <-waiting:
		t.Fatalf("Next returned %s, %v while the other consumer held every entry; want it to wait", r.d.ID, r.err)
	case <-time.After(waitShort):
	}
	if err := dying.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := map[string]bus.Delivery{}
	r := await(t, waiting)
	if r.err != nil {
		t.Fatalf("Next after the other consumer closed: %v", r.err)
	}
	got[r.d.ID] = r.d
	d := next(t, survivor)
	got[d.ID] = d
	for _, was := range []bus.Delivery{d1, d2} {
		now, ok := got[was.ID]
		switch {
		case !ok:
			t.Fatalf("%s not delivered again; got %v", was.ID, got)
		case now.Tag != was.Tag:
			t.Errorf("%s: Tag %s after the consumer closed; want %s", was.ID, now.Tag, was.Tag)
		case now.Attempt != 1 && now.Attempt != 2:
			t.Errorf("%s: Attempt %d after the consumer closed; want 1 or 2", was.ID, now.Attempt)
		}
		ack(t, survivor, now.Tag)
	}
	if err := dying.Ack(t.Context(), d1.Tag); err == nil {
		t.Error("Ack on a closed consumer succeeded")
	}
	depth(t, b, p, 0)
}

// testConsumerReconnects checks that an instance that reconnects under the same consumer
// name gets its unsettled deliveries again at once, and that a name cannot be open twice.
func testConsumerReconnects(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "reconnects")
	c := consume(t, b, p, "instance")
	if dup, err := b.Consume(t.Context(), p, "instance"); err == nil {
		_ = dup.Close()
		t.Fatal("opening a consumer name that is open succeeded")
	}
	publish(t, b, envelope(p, "m1"))
	publish(t, b, envelope(p, "m2"))
	d1 := next(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c = consume(t, b, p, "instance")
	got := next(t, c)
	if got.ID != d1.ID || got.Tag != d1.Tag {
		t.Fatalf("after reconnecting, delivered %s tag %s; want %s tag %s first", got.ID, got.Tag, d1.ID, d1.Tag)
	}
	ack(t, c, got.Tag)
	if d := next(t, c); d.ID != "m2" {
		t.Fatalf("delivered %s; want m2", d.ID)
	} else {
		ack(t, c, d.Tag)
	}
	depth(t, b, p, 0)
}

// testConsumerClose checks that Close ends the consumer's Next calls, waiting or not.
func testConsumerClose(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "consumer-close")
	c, err := b.Consume(t.Context(), p, "i")
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	waiting := nextAsync(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r := await(t, waiting); !errors.Is(r.err, bus.ErrClosed) {
		t.Fatalf("waiting Next after Close: %v, %v; want %v", r.d.ID, r.err, bus.ErrClosed)
	}
	if _, err := c.Next(t.Context()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Next after Close: %v; want %v", err, bus.ErrClosed)
	}
	// The bus and the inbox go on.
	publish(t, b, envelope(p, "m"))
	c2 := consume(t, b, p, "i")
	if d := next(t, c2); d.ID != "m" {
		t.Fatalf("delivered %s; want m", d.ID)
	}
}

// testMaxAttempts checks that an entry delivered MaxAttempts times is dead-lettered
// instead of being delivered again.
func testMaxAttempts(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: shortTimeout, MaxAttempts: 2})
	p := pluginID(t, "max-attempts")
	c := consume(t, b, p, "i")
	env := envelope(p, "poison")
	start := time.Now()
	publish(t, b, env)
	for attempt := 1; attempt <= 2; attempt++ {
		if d := next(t, c); d.ID != env.ID || d.Attempt != attempt {
			t.Fatalf("delivered %s attempt %d; want %s attempt %d", d.ID, d.Attempt, env.ID, attempt)
		}
	}
	// Keep reading, so that the entry is looked at again, until it shows up dead.
	var dls []bus.DeadLetter
	eventually(t, "dead-lettered after MaxAttempts", func() bool {
		noNext(t, c, shortTimeout)
		var err error
		if dls, err = b.DeadLetters(t.Context(), p, 10); err != nil {
			t.Fatalf("DeadLetters: %v", err)
		}
		return len(dls) > 0
	})
	dl := dls[0]
	if len(dls) != 1 || dl.ID != env.ID || dl.Attempts != 2 || dl.Reason != "max attempts exceeded" {
		t.Fatalf("DeadLetters = %+v; want %s after 2 attempts with reason %q", dls, env.ID, "max attempts exceeded")
	}
	if !bytes.Equal(dl.Data, env.Data) || dl.Type != env.Type || dl.Source != env.Source || dl.Kind != env.Kind {
		t.Errorf("dead letter %+v; want the envelope %+v", dl.Envelope, env)
	}
	if dl.At.Before(start.Add(-time.Second)) || dl.At.After(time.Now().Add(time.Second)) {
		t.Errorf("dead letter At = %v; want about now", dl.At)
	}
	depth(t, b, p, 0)
}

// testDeadLetter checks DeadLetter and the DeadLetters list: reason, attempts, newest first,
// limit.
func testDeadLetter(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p := pluginID(t, "dead-letter")
	c := consume(t, b, p, "i")
	for i := range 3 {
		publish(t, b, envelope(p, fmt.Sprintf("m%d", i)))
		d := next(t, c)
		if err := c.DeadLetter(t.Context(), d.Tag, fmt.Sprintf("reason %d", i)); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}
	depth(t, b, p, 0)
	noNext(t, c, waitShort)
	dls, err := b.DeadLetters(t.Context(), p, 10)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if len(dls) != 3 {
		t.Fatalf("DeadLetters = %d entries; want 3", len(dls))
	}
	for i, dl := range dls {
		n := 2 - i
		if dl.ID != fmt.Sprintf("m%d", n) || dl.Reason != fmt.Sprintf("reason %d", n) || dl.Attempts != 1 {
			t.Errorf("DeadLetters[%d] = %s %q attempts %d; want m%d %q attempts 1", i, dl.ID, dl.Reason, dl.Attempts, n, fmt.Sprintf("reason %d", n))
		}
		if dl.Target != p || dl.At.IsZero() {
			t.Errorf("DeadLetters[%d] = %+v; want target %s and a time", i, dl, p)
		}
	}
	if dls, err := b.DeadLetters(t.Context(), p, 2); err != nil || len(dls) != 2 || dls[0].ID != "m2" || dls[1].ID != "m1" {
		t.Fatalf("DeadLetters(limit 2) = %v, %v; want m2, m1", dls, err)
	}
	if dls, err := b.DeadLetters(t.Context(), pluginID(t, "none"), 10); err != nil || len(dls) != 0 {
		t.Fatalf("DeadLetters of a plugin without any = %v, %v; want none", dls, err)
	}
	// The figures /metrics reads: a waiting entry and the three dead letters, and zeros for
	// an inbox never used.
	publish(t, b, envelope(p, "waiting"))
	st, ok := b.(bus.InboxStatser)
	if !ok {
		t.Fatalf("%T does not implement bus.InboxStatser", b)
	}
	got, err := st.InboxStats(t.Context(), []string{p, pluginID(t, "never-used")})
	if err != nil {
		t.Fatalf("InboxStats: %v", err)
	}
	if want := []bus.InboxStats{{Depth: 1, DeadLetters: 3}, {}}; !slices.Equal(got, want) {
		t.Fatalf("InboxStats = %+v; want %+v", got, want)
	}
}

// testDeadLettersBounded checks that the dead-letter list keeps the newest MaxDeadLetters,
// give or take (the bound may be approximate).
func testDeadLettersBounded(t *testing.T, open opener) {
	const maxDead, total = 5, 250
	b := open(bus.Options{ProcessingTimeout: noTimeout, MaxDeadLetters: maxDead})
	p := pluginID(t, "dead-bounded")
	c := consume(t, b, p, "i")
	for i := range total {
		publish(t, b, envelope(p, fmt.Sprintf("m%03d", i)))
		d := next(t, c)
		if err := c.DeadLetter(t.Context(), d.Tag, "bad"); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}
	dls, err := b.DeadLetters(t.Context(), p, 10*total)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if len(dls) < maxDead || len(dls) >= total {
		t.Fatalf("DeadLetters kept %d of %d with MaxDeadLetters %d", len(dls), total, maxDead)
	}
	for i := range maxDead {
		if want := fmt.Sprintf("m%03d", total-1-i); dls[i].ID != want {
			t.Fatalf("DeadLetters[%d] = %s; want %s (newest first)", i, dls[i].ID, want)
		}
	}
}
