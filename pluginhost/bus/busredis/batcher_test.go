package busredis_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
)

// TestQueuedPublishesKeepTheirOrder: envelopes one goroutine queues with PublishAsync,
// without waiting for each, are stored in the order queued, while other goroutines publish
// to other inboxes and acknowledge, and while Redis loses its scripts (SCRIPT FLUSH, as after
// a restart) in the middle: the calls that met NOSCRIPT run again, still in order.
func TestQueuedPublishesKeepTheirOrder(t *testing.T) {
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute, MaxInbox: 10000})
	rdb := rawClient(t, shared)
	ctx := context.Background()
	const n = 3000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	c := consume(t, b, "other", "other-1")
	go func() { // other traffic, in pipelines of its own publishes and acknowledgements
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := b.Publish(ctx, envelopeTo("other", fmt.Sprintf("o-%d", i))); err != nil {
				t.Errorf("publish to other: %v", err)
				return
			}
			nctx, cancel := context.WithTimeout(ctx, waitLong)
			d, err := c.Next(nctx)
			cancel()
			if err != nil {
				t.Errorf("next on other: %v", err)
				return
			}
			if err := c.Ack(ctx, d.Tag); err != nil {
				t.Errorf("ack: %v", err)
				return
			}
		}
	}()
	errs := make([]error, n)
	var done sync.WaitGroup
	done.Add(n)
	for i := range n {
		if i == n/2 {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		b.PublishAsync(ctx, envelopeTo("ordered", fmt.Sprintf("m-%05d", i)), func(err error) {
			errs[i] = err
			done.Done()
		})
	}
	done.Wait()
	close(stop)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	oc := consume(t, b, "ordered", "ordered-1")
	for i := range n {
		d := next(t, oc)
		if want := fmt.Sprintf("m-%05d", i); d.ID != want {
			t.Fatalf("delivery %d is %s; want %s (the queue's order)", i, d.ID, want)
		}
		if err := oc.Ack(ctx, d.Tag); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCloseFinishesQueuedPublishes: Close waits for the publishes queued before it; every
// one is reported exactly once, those reported stored are in the inbox, and a publish
// queued after Close fails with bus.ErrClosed.
func TestCloseFinishesQueuedPublishes(t *testing.T) {
	prefix := newPrefix()
	ctx := context.Background()
	b, err := busredis.New(ctx, busredis.Config{URL: shared.URL(), Prefix: prefix, Options: bus.Options{MaxInbox: 10000}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var mu sync.Mutex
	reported := map[int]int{}
	stored := 0
	for i := range n {
		b.PublishAsync(ctx, envelopeTo("closing", fmt.Sprintf("m-%d", i)), func(err error) {
			mu.Lock()
			defer mu.Unlock()
			reported[i]++
			if err == nil {
				stored++
			} else if !errors.Is(err, bus.ErrClosed) {
				t.Errorf("publish %d: %v", i, err)
			}
		})
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for i := range n {
		if reported[i] != 1 {
			t.Errorf("publish %d reported %d times; want once", i, reported[i])
		}
	}
	mu.Unlock()
	if got, err := rawClient(t, shared).XLen(ctx, prefix+"inbox:closing").Result(); err != nil || int(got) != stored {
		t.Fatalf("the inbox holds %d (%v); %d publishes were reported stored", got, err, stored)
	}
	if stored == 0 {
		t.Fatal("no publish queued before Close was stored")
	}
	closed := make(chan error, 1)
	b.PublishAsync(ctx, envelopeTo("closing", "late"), func(err error) { closed <- err })
	if err := <-closed; !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("publish after Close: %v; want %v", err, bus.ErrClosed)
	}
}

// envelopeTo is an event for target's inbox.
func envelopeTo(target, id string) bus.Envelope {
	return bus.Envelope{ID: id, Kind: bus.KindEvent, Source: "sender", Target: target, Type: "t",
		Data: []byte(`{"id":"` + id + `"}`), SentAt: time.Now()}
}

// TestLiveOnAnotherReplica: a consumer on replica B is live for A (which remembers that for a
// second at most), and stops being so once it closed.
func TestLiveOnAnotherReplica(t *testing.T) {
	prefix := newPrefix()
	a := newBus(t, shared, prefix, bus.Options{})
	b := newBus(t, shared, prefix, bus.Options{})
	ctx := context.Background()
	if live, err := a.Live(ctx, "far"); err != nil || live {
		t.Fatalf("Live before any consumer = %v, %v; want false", live, err)
	}
	c := consume(t, b, "far", "far-1")
	for range 3 { // found, then remembered
		if live, err := a.Live(ctx, "far"); err != nil || !live {
			t.Fatalf("Live on A with a consumer on B = %v, %v; want true", live, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		live, err := a.Live(ctx, "far")
		if err != nil {
			t.Fatal(err)
		}
		if !live {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("still live on A 5 s after the only consumer on B closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConcurrentAcksSettleExactly: many acknowledgements of one consumer at once (merged
// into shared script calls) each settle their own delivery: every one succeeds once, the
// inbox and its byte count end empty, and acknowledging again, or a delivery another
// consumer holds, fails with bus.ErrUnknownDelivery.
func TestConcurrentAcksSettleExactly(t *testing.T) {
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute, Prefetch: 256})
	ctx := context.Background()
	rdb := rawClient(t, shared)
	const n = 200
	for i := range n {
		publish(t, b, envelopeTo("acks", fmt.Sprintf("m-%d", i)))
	}
	c := consume(t, b, "acks", "mine")
	tags := make([]string, n)
	for i := range tags {
		tags[i] = next(t, c).Tag
	}
	publish(t, b, envelopeTo("acks", "foreign"))
	other := consume(t, b, "acks", "other")
	foreign := next(t, other)
	if err := c.Ack(ctx, foreign.Tag); !errors.Is(err, bus.ErrUnknownDelivery) {
		t.Fatalf("ack of the other consumer's delivery: %v; want %v", err, bus.ErrUnknownDelivery)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, tag := range tags {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Ack(ctx, tag)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
	}
	if err := c.Ack(ctx, tags[0]); !errors.Is(err, bus.ErrUnknownDelivery) {
		t.Fatalf("second ack: %v; want %v", err, bus.ErrUnknownDelivery)
	}
	if got, err := rdb.XLen(ctx, prefix+"inbox:acks").Result(); err != nil || got != 1 {
		t.Fatalf("the inbox holds %d entries (%v); want 1, the other consumer's", got, err)
	}
	if err := other.Ack(ctx, foreign.Tag); err != nil {
		t.Fatalf("the other consumer's ack: %v", err)
	}
	if got, err := rdb.Get(ctx, prefix+"bytes:acks").Int(); err != nil || got != 0 {
		t.Fatalf("the byte count is %d (%v); want 0", got, err)
	}
}

// TestTryNext: the entries one fetch read ahead are handed out by TryNext in order without
// waiting; with nothing fetched it says so at once, and after Close it fails with
// bus.ErrClosed.
func TestTryNext(t *testing.T) {
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute})
	for i := range 5 {
		publish(t, b, envelopeTo("try", fmt.Sprintf("m-%d", i)))
	}
	c := consume(t, b, "try", "try-1")
	tn := c.(interface {
		TryNext() (bus.Delivery, bool, error)
	})
	if d := next(t, c); d.ID != "m-0" {
		t.Fatalf("Next gave %s; want m-0", d.ID)
	}
	for i := 1; i < 5; i++ { // one fetch took all five (read-ahead)
		d, ok, err := tn.TryNext()
		if err != nil || !ok || d.ID != fmt.Sprintf("m-%d", i) {
			t.Fatalf("TryNext %d = %s, %v, %v; want m-%d", i, d.ID, ok, err, i)
		}
	}
	if d, ok, err := tn.TryNext(); ok || err != nil {
		t.Fatalf("TryNext with nothing fetched = %s, %v, %v; want not ok", d.ID, ok, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tn.TryNext(); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("TryNext after Close: %v; want %v", err, bus.ErrClosed)
	}
}

// TestQueuedPublishesToAFullInbox: publishes to one inbox queued together (one script call)
// keep the inbox's bounds one by one: with room for 10 entries, the first 10 distinct ids are
// stored and the rest refused with bus.ErrInboxFull, an id queued twice is stored once, and
// the byte count is the stored entries' sizes.
func TestQueuedPublishesToAFullInbox(t *testing.T) {
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{MaxInbox: 10})
	ctx := context.Background()
	rdb := rawClient(t, shared)
	var envs []bus.Envelope
	for i := range 15 {
		envs = append(envs, envelopeTo("small", fmt.Sprintf("m-%02d", i)))
		if i == 3 {
			envs = append(envs, envelopeTo("small", "m-03")) // the same id again
		}
	}
	errs := make([]error, len(envs))
	var wg sync.WaitGroup
	wg.Add(len(envs))
	for i, env := range envs {
		b.PublishAsync(ctx, env, func(err error) {
			errs[i] = err
			wg.Done()
		})
	}
	wg.Wait()
	stored, size := 0, 0
	for i, err := range errs {
		switch {
		case i == 4: // the duplicate of m-03
			if err != nil {
				t.Errorf("the duplicate: %v; want success (stored once)", err)
			}
		case i <= 10:
			if err != nil {
				t.Errorf("publish %d (%s): %v; want stored", i, envs[i].ID, err)
			}
			stored++
			size += envs[i].Size()
		default:
			if !errors.Is(err, bus.ErrInboxFull) {
				t.Errorf("publish %d (%s): %v; want %v", i, envs[i].ID, err, bus.ErrInboxFull)
			}
		}
	}
	if n, err := rdb.XLen(ctx, prefix+"inbox:small").Result(); err != nil || int(n) != stored {
		t.Fatalf("the inbox holds %d (%v); want %d", n, err, stored)
	}
	if got, err := rdb.Get(ctx, prefix+"bytes:small").Int(); err != nil || got != size {
		t.Fatalf("the byte count is %d (%v); want %d", got, err, size)
	}
}

// TestAsyncSettles: AckAsync and AckReplyAsync return before their round trip and call
// done once it is over; Close waits for the settles in progress, so that an acknowledged
// delivery is never handed back to be delivered again; after Close they fail at once.
func TestAsyncSettles(t *testing.T) {
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute})
	ctx := context.Background()
	rdb := rawClient(t, shared)
	publish(t, b, envelopeTo("async", "m1"))
	publish(t, b, envelopeTo("async", "m2"))
	c := consume(t, b, "async", "one")
	as, ok := c.(bus.AsyncSettler)
	if !ok {
		t.Fatal("the consumer is not a bus.AsyncSettler")
	}
	d1, d2 := next(t, c), next(t, c)

	release := busredis.StallSettles(b)
	defer release()
	acked, replied := make(chan error, 1), make(chan error, 1)
	as.AckAsync(d1.Tag, func(err error) { acked <- err })
	as.AckReplyAsync(d2.Tag, "elsewhere", bus.Reply{MessageID: d2.ID, Status: "success"}, func(err error) { replied <- err })
	select {
	case err := <-acked:
		t.Fatalf("AckAsync was done (%v) while its pipeline was held", err)
	case err := <-replied:
		t.Fatalf("AckReplyAsync was done (%v) while its pipeline was held", err)
	default:
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the settles in progress were done", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	for name, ch := range map[string]chan error{"AckAsync": acked, "AckReplyAsync": replied} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s was never done", name)
		}
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if got, err := rdb.XLen(ctx, prefix+"inbox:async").Result(); err != nil || got != 0 {
		t.Fatalf("the inbox holds %d entries (%v) after Close; want none: both were acknowledged", got, err)
	}
	if got, err := rdb.XLen(ctx, prefix+"reply:elsewhere").Result(); err != nil || got != 1 {
		t.Fatalf("the reply stream of the other replica holds %d entries (%v); want the reply", got, err)
	}
	gotErr := make(chan error, 1)
	as.AckAsync(d1.Tag, func(err error) { gotErr <- err })
	if err := <-gotErr; !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("AckAsync after Close: %v; want %v", err, bus.ErrClosed)
	}

	// A reply to a delivery no longer held (acknowledged already) still goes out: the work
	// is done and its sender may wait; done says the delivery was not held.
	publish(t, b, envelopeTo("async", "m3"))
	c2 := consume(t, b, "async", "two")
	d3 := next(t, c2)
	if err := c2.Ack(ctx, d3.Tag); err != nil {
		t.Fatal(err)
	}
	c2.(bus.AsyncSettler).AckReplyAsync(d3.Tag, "late", bus.Reply{MessageID: d3.ID, Status: "success"}, func(err error) { gotErr <- err })
	select {
	case err := <-gotErr:
		if !errors.Is(err, bus.ErrUnknownDelivery) {
			t.Fatalf("AckReplyAsync of a delivery not held: %v; want %v", err, bus.ErrUnknownDelivery)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AckReplyAsync of a delivery not held was never done")
	}
	if got, err := rdb.XLen(ctx, prefix+"reply:late").Result(); err != nil || got != 1 {
		t.Fatalf("the reply stream holds %d entries (%v); want the reply to the delivery not held", got, err)
	}
}
