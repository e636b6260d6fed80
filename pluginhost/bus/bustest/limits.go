package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// testDedupe checks that an ID is stored once per inbox, delivered or not, and once in
// each of two inboxes.
func testDedupe(t *testing.T, open opener) {
	b := open(bus.Options{ProcessingTimeout: noTimeout})
	p, q := pluginID(t, "dedupe-p"), pluginID(t, "dedupe-q")
	first := envelope(p, "dup")
	second := first
	second.Data = []byte(`{"second":true}`)
	publish(t, b, first)
	publish(t, b, second)
	for i, err := range b.PublishAll(t.Context(), []bus.Envelope{first, envelope(p, "batch"), envelope(p, "batch")}) {
		if err != nil {
			t.Fatalf("PublishAll[%d]: %v", i, err)
		}
	}
	publish(t, b, envelope(q, "dup"))
	depth(t, b, p, 2)
	depth(t, b, q, 1)

	cp := consume(t, b, p, "i")
	d := next(t, cp)
	if d.ID != "dup" || !bytes.Equal(d.Data, first.Data) {
		t.Fatalf("delivered %s %s; want the first dup", d.ID, d.Data)
	}
	ack(t, cp, d.Tag)
	if d := next(t, cp); d.ID != "batch" {
		t.Fatalf("delivered %s; want batch", d.ID)
	} else {
		ack(t, cp, d.Tag)
	}
	// Still a duplicate once delivered and acknowledged.
	publish(t, b, first)
	noNext(t, cp, waitShort)
	depth(t, b, p, 0)

	cq := consume(t, b, q, "i")
	if d := next(t, cq); d.ID != "dup" || d.Target != q {
		t.Fatalf("delivered %s to %s; want dup to %s", d.ID, d.Target, q)
	}
}

// testFanOut checks that the consumers of an inbox share its entries, each entry going to
// exactly one of them.
func testFanOut(t *testing.T, open opener) {
	const consumers, entries = 4, 200
	b := open(bus.Options{ProcessingTimeout: noTimeout, Prefetch: 4})
	p := pluginID(t, "fan-out")
	ctx, cancel := context.WithTimeout(t.Context(), 3*waitLong)
	defer cancel()

	var (
		mu       sync.Mutex
		seen     = map[string]int{} // ID → deliveries
		perCons  = make([]int, consumers)
		failures []error
		wg       sync.WaitGroup
		started  int
		// allStarted is closed once every consumer has its first delivery: each one holds
		// its first delivery until then, so the others must get entries meanwhile.
		allStarted = make(chan struct{})
	)
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
		cancel()
	}
	for i := range consumers {
		c := consume(t, b, p, fmt.Sprintf("instance-%d", i))
		wg.Go(func() {
			for first := true; ; first = false {
				d, err := c.Next(ctx)
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("Next: %w", err))
					}
					return
				}
				if first {
					mu.Lock()
					if started++; started == consumers {
						close(allStarted)
					}
					mu.Unlock()
					select {
					case <-allStarted:
					case <-ctx.Done():
						fail(fmt.Errorf("instance-%d: not every consumer got an entry while it held one", i))
						return
					}
				}
				// Not ctx, which ends as soon as the last entry arrives.
				if err := c.Ack(t.Context(), d.Tag); err != nil {
					fail(fmt.Errorf("Ack: %w", err))
					return
				}
				mu.Lock()
				seen[d.ID]++
				perCons[i]++
				done := len(seen) == entries
				mu.Unlock()
				if done {
					cancel()
				}
			}
		})
	}
	for i := range entries {
		publish(t, b, envelope(p, fmt.Sprintf("m%03d", i)))
	}
	wg.Wait()

	for _, err := range failures {
		t.Error(err)
	}
	if len(seen) != entries {
		t.Fatalf("%d of %d entries delivered", len(seen), entries)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	for i, n := range perCons {
		if n == 0 {
			t.Errorf("instance-%d got no entry; per consumer %v", i, perCons)
		}
	}
	depth(t, b, p, 0)
}

// testPrefetch checks that a consumer holds at most Prefetch unsettled deliveries: Next
// blocks until one is settled, and the rest go to other consumers meanwhile.
func testPrefetch(t *testing.T, open opener) {
	const prefetch = 3
	b := open(bus.Options{ProcessingTimeout: noTimeout, Prefetch: prefetch})
	p := pluginID(t, "prefetch")
	for i := range 2 * prefetch {
		publish(t, b, envelope(p, fmt.Sprintf("m%d", i)))
	}
	greedy := consume(t, b, p, "greedy")
	var held []bus.Delivery
	for range prefetch {
		held = append(held, next(t, greedy))
	}
	noNext(t, greedy, waitShort)

	other := consume(t, b, p, "other")
	for i := prefetch; i < 2*prefetch; i++ {
		if d := next(t, other); d.ID != fmt.Sprintf("m%d", i) {
			t.Fatalf("other consumer got %s; want m%d", d.ID, i)
		}
	}

	publish(t, b, envelope(p, "last"))
	waiting := nextAsync(t, greedy)
	select {
	case r := <-waiting:
		t.Fatalf("Next with %d unsettled deliveries returned %s, %v; want it to block", prefetch, r.d.ID, r.err)
	case <-time.After(waitShort):
	}
	ack(t, greedy, held[0].Tag)
	r := await(t, waiting)
	if r.err != nil || r.d.ID != "last" {
		t.Fatalf("Next after Ack = %s, %v; want last", r.d.ID, r.err)
	}
	depth(t, b, p, 2*prefetch)
}

// testInboxFull checks MaxInbox: Publish fails with ErrInboxFull while the inbox holds
// MaxInbox unacknowledged entries, delivered or not, and stores nothing then.
func testInboxFull(t *testing.T, open opener) {
	const maxInbox = 5
	b := open(bus.Options{ProcessingTimeout: noTimeout, MaxInbox: maxInbox})
	p, q := pluginID(t, "full-p"), pluginID(t, "full-q")
	for i := range maxInbox {
		publish(t, b, envelope(p, fmt.Sprintf("m%d", i)))
	}
	rejected := envelope(p, "rejected")
	if err := b.Publish(t.Context(), rejected); !errors.Is(err, bus.ErrInboxFull) {
		t.Fatalf("Publish to a full inbox: %v; want %v", err, bus.ErrInboxFull)
	}
	errs := b.PublishAll(t.Context(), []bus.Envelope{rejected, envelope(q, "fine")})
	if len(errs) != 2 || !errors.Is(errs[0], bus.ErrInboxFull) || errs[1] != nil {
		t.Fatalf("PublishAll = %v; want [%v <nil>]", errs, bus.ErrInboxFull)
	}
	depth(t, b, p, maxInbox)
	depth(t, b, q, 1)

	c := consume(t, b, p, "i")
	d := next(t, c)
	// In flight still counts.
	if err := b.Publish(t.Context(), rejected); !errors.Is(err, bus.ErrInboxFull) {
		t.Fatalf("Publish with an unacknowledged delivery: %v; want %v", err, bus.ErrInboxFull)
	}
	for i := range 100 {
		if err := b.Publish(t.Context(), envelope(p, fmt.Sprintf("more-%d", i))); !errors.Is(err, bus.ErrInboxFull) {
			t.Fatalf("Publish to a full inbox: %v; want %v", err, bus.ErrInboxFull)
		}
	}
	depth(t, b, p, maxInbox)

	ack(t, c, d.Tag)
	depth(t, b, p, maxInbox-1)
	// The rejected envelope was not remembered: now it is stored.
	publish(t, b, rejected)
	depth(t, b, p, maxInbox)
	var ids []string
	for range maxInbox {
		d := next(t, c)
		ids = append(ids, d.ID)
		ack(t, c, d.Tag)
	}
	if ids[maxInbox-1] != "rejected" {
		t.Fatalf("delivered %v; want the rejected envelope last", ids)
	}
	depth(t, b, p, 0)
}

// testInboxBytes checks MaxInboxBytes: Publish fails with ErrInboxFull when the envelope's
// Size would take the Sizes of the inbox's unacknowledged entries (delivered or not) past
// the bound, up to it exactly, whatever MaxInbox allows; every way an entry is settled
// (Ack, DeadLetter, cancellation before delivery) and Purge make room again.
func testInboxBytes(t *testing.T, open opener) {
	p, q := pluginID(t, "bytes-p"), pluginID(t, "bytes-q")
	msg := func(target, id string, n int) bus.Envelope {
		return bus.Envelope{ID: id, Kind: bus.KindMessage, Source: "system", Target: target, Type: "test.big",
			Data: bytes.Repeat([]byte("x"), n), SentAt: time.Now()}
	}
	big := func(id string) bus.Envelope { return msg(p, id, 4000) }
	small := func(id string) bus.Envelope { return msg(p, id, 100) }
	bigSize, smallSize := int64(big("b0").Size()), int64(small("s0").Size())
	b := open(bus.Options{ProcessingTimeout: noTimeout, MaxInbox: 1000, MaxInboxBytes: 4*bigSize + smallSize})
	full := func(env bus.Envelope, when string) {
		t.Helper()
		if err := b.Publish(t.Context(), env); !errors.Is(err, bus.ErrInboxFull) {
			t.Fatalf("Publish of %s %s: %v; want %v", env.ID, when, err, bus.ErrInboxFull)
		}
	}

	for i := range 4 {
		publish(t, b, big(fmt.Sprintf("b%d", i)))
	}
	full(big("b4"), "beyond the byte bound")
	publish(t, b, small("s0")) // up to the bound exactly
	full(small("s1"), "beyond the byte bound")
	errs := b.PublishAll(t.Context(), []bus.Envelope{big("b4"), msg(q, "fine", 4000)})
	if len(errs) != 2 || !errors.Is(errs[0], bus.ErrInboxFull) || errs[1] != nil {
		t.Fatalf("PublishAll = %v; want [%v <nil>]", errs, bus.ErrInboxFull)
	}
	depth(t, b, p, 5)

	// Cancelling a message before it is delivered makes its room free.
	if err := b.Cancel(t.Context(), p, "b3", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	publish(t, b, big("b4")) // not remembered when refused: stored now
	full(small("s1"), "after the room was taken again")

	c := consume(t, b, p, "i")
	d := next(t, c)
	full(big("b5"), "with an unacknowledged delivery") // in flight still counts
	ack(t, c, d.Tag)
	publish(t, b, big("b5"))
	full(small("s1"), "after the room was taken again")

	d = next(t, c)
	if err := c.DeadLetter(t.Context(), d.Tag, "test"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	publish(t, b, big("b6"))
	full(small("s1"), "after the room was taken again")
	depth(t, b, p, 5)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	if err := b.Purge(t.Context(), p); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	for i := range 4 {
		publish(t, b, big(fmt.Sprintf("after-purge-%d", i)))
	}
	full(big("after-purge-4"), "beyond the byte bound after Purge")
	depth(t, b, p, 4)
}

// testTrimming checks that entries far more than MaxInbox can pass through an inbox, and
// that trimming never loses an entry that is not acknowledged.
func testTrimming(t *testing.T, open opener) {
	const maxInbox, rounds = 10, 25
	b := open(bus.Options{ProcessingTimeout: noTimeout, MaxInbox: maxInbox})
	p := pluginID(t, "trimming")
	slow := consume(t, b, p, "slow")
	fast := consume(t, b, p, "fast")
	publish(t, b, envelope(p, "kept-0"))
	publish(t, b, envelope(p, "kept-1"))
	kept := []bus.Delivery{next(t, slow), next(t, slow)}

	// Fill the inbox up to MaxInbox each round, then drain it.
	batch := maxInbox - len(kept)
	for r := range rounds {
		for i := range batch {
			publish(t, b, envelope(p, fmt.Sprintf("r%02d-%d", r, i)))
		}
		for range batch {
			d := next(t, fast)
			if d.ID == "kept-0" || d.ID == "kept-1" {
				t.Fatalf("round %d: %s delivered again while held", r, d.ID)
			}
			ack(t, fast, d.Tag)
		}
	}
	depth(t, b, p, len(kept))
	for _, d := range kept {
		if err := slow.Extend(t.Context(), d.Tag, noTimeout); err != nil {
			t.Fatalf("Extend of %s after %d entries passed: %v", d.ID, rounds*batch, err)
		}
	}
	if err := slow.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := map[string]bool{}
	for range kept {
		d := next(t, fast)
		got[d.ID] = true
		ack(t, fast, d.Tag)
	}
	if !got["kept-0"] || !got["kept-1"] {
		t.Fatalf("after the holder closed, delivered %v; want kept-0 and kept-1", got)
	}
	depth(t, b, p, 0)
}
