package busmem_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busmem"
	"github.com/nexus-platform/nexus/pluginhost/bus/bustest"
)

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T, opts bus.Options) bus.Bus {
		return busmem.New(opts)
	})
}

// newBus returns a bus closed when the test ends.
func newBus(t *testing.T, opts bus.Options) *busmem.Bus {
	t.Helper()
	b := busmem.New(opts)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func consume(t *testing.T, b bus.Bus, plugin, name string) bus.Consumer {
	t.Helper()
	c, err := b.Consume(t.Context(), plugin, name)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func publish(t *testing.T, b bus.Bus, env bus.Envelope) {
	t.Helper()
	if err := b.Publish(t.Context(), env); err != nil {
		t.Fatalf("Publish %s: %v", env.ID, err)
	}
}

func next(t *testing.T, c bus.Consumer, within time.Duration) (bus.Delivery, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	return c.Next(ctx)
}

func depth(t *testing.T, b bus.Bus, plugin string) int {
	t.Helper()
	n, err := b.Depth(t.Context(), plugin)
	if err != nil {
		t.Fatalf("Depth: %v", err)
	}
	return n
}

func env(target, id string) bus.Envelope {
	return bus.Envelope{ID: id, Kind: bus.KindEvent, Source: "system", Target: target, Type: "t", Data: []byte(`{}`)}
}

func TestReplica(t *testing.T) {
	t.Parallel()
	b1, b2 := newBus(t, bus.Options{}), newBus(t, bus.Options{})
	if !regexp.MustCompile(`^mem-[0-9a-f]{16}$`).MatchString(b1.Replica()) || b1.Replica() == b2.Replica() {
		t.Fatalf("Replica() = %q and %q; want distinct mem-<16 hex digits>", b1.Replica(), b2.Replica())
	}
	if err := b1.Reply(t.Context(), b2.Replica(), bus.Reply{MessageID: "m"}); !errors.Is(err, bus.ErrUnavailable) {
		t.Fatalf("Reply to another replica: %v; want %v", err, bus.ErrUnavailable)
	}
	// Reply blocks while Replies is full, until its context ends.
	for i := range 1024 {
		if err := b1.Reply(t.Context(), b1.Replica(), bus.Reply{MessageID: fmt.Sprint(i)}); err != nil {
			t.Fatalf("Reply %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := b1.Reply(ctx, b1.Replica(), bus.Reply{MessageID: "one too many"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Reply to a full Replies: %v; want %v", err, context.DeadlineExceeded)
	}
	// Close while a Reply waits: the Reply ends with ErrClosed, Replies is closed.
	errc := make(chan error, 1)
	go func() { errc <- b1.Reply(context.Background(), b1.Replica(), bus.Reply{MessageID: "late"}) }()
	time.Sleep(20 * time.Millisecond) // usually blocked by now; either way the outcome is the same
	_ = b1.Close()
	if err := <-errc; !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Reply during Close: %v; want %v", err, bus.ErrClosed)
	}
	n := 0
	for range b1.Replies() {
		n++
	}
	if n != 1024 {
		t.Fatalf("drained %d replies after Close; want 1024", n)
	}
}

func TestDedupeWindowEnds(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{DedupeWindow: 300 * time.Millisecond})
	publish(t, b, env("p", "x"))
	publish(t, b, env("p", "x"))
	if n := depth(t, b, "p"); n != 1 {
		t.Fatalf("Depth = %d; want 1", n)
	}
	time.Sleep(500 * time.Millisecond)
	publish(t, b, env("p", "x"))
	if n := depth(t, b, "p"); n != 2 {
		t.Fatalf("Depth after the dedupe window = %d; want 2", n)
	}
	if _, _, _, _, seen, _ := b.Footprint("p"); seen != 1 {
		t.Fatalf("%d IDs remembered; want 1", seen)
	}
}

func TestCancelRemembered(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{})
	if err := b.Cancel(t.Context(), "p", "early", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if err := b.Cancel(t.Context(), "p", "past", time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	publish(t, b, env("p", "early"))
	if n := depth(t, b, "p"); n != 0 {
		t.Fatalf("Depth after publishing a cancelled ID = %d; want 0", n)
	}
	publish(t, b, env("p", "past"))
	if n := depth(t, b, "p"); n != 1 {
		t.Fatalf("Depth after publishing an ID cancelled until the past = %d; want 1", n)
	}
}

func TestCancelledNotHandedBack(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{ProcessingTimeout: time.Minute})
	c1, c2 := consume(t, b, "p", "one"), consume(t, b, "p", "two")
	publish(t, b, env("p", "m"))
	d, err := next(t, c1, time.Second)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if err := b.Cancel(t.Context(), "p", "m", time.Time{}); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if tag := <-c1.Cancelled(); tag != d.Tag {
		t.Fatalf("Cancelled = %s; want %s", tag, d.Tag)
	}
	_ = c1.Close()
	if d, err := next(t, c2, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next after the holder of a cancelled message closed = %s, %v; want nothing", d.ID, err)
	}
	if n := depth(t, b, "p"); n != 0 {
		t.Fatalf("Depth = %d; want 0", n)
	}
}

func TestExpiredNotStored(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{MaxInbox: 3})
	e := env("p", "old")
	e.Deadline = time.Now().Add(-time.Millisecond)
	publish(t, b, e)
	if n := depth(t, b, "p"); n != 0 {
		t.Fatalf("Depth after publishing an expired envelope = %d; want 0", n)
	}
	// A full inbox of expired entries makes room for new ones.
	for i := range 3 {
		e := env("p", fmt.Sprint(i))
		e.Deadline = time.Now().Add(500 * time.Millisecond)
		publish(t, b, e)
	}
	if err := b.Publish(t.Context(), env("p", "x")); !errors.Is(err, bus.ErrInboxFull) {
		t.Fatalf("Publish: %v; want %v", err, bus.ErrInboxFull)
	}
	time.Sleep(700 * time.Millisecond)
	publish(t, b, env("p", "x"))
	if n := depth(t, b, "p"); n != 1 {
		t.Fatalf("Depth = %d; want 1", n)
	}
}

func TestClaimFreesPrefetch(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{ProcessingTimeout: 300 * time.Millisecond, Prefetch: 1})
	stuck, other := consume(t, b, "p", "stuck"), consume(t, b, "p", "other")
	publish(t, b, env("p", "m1"))
	if _, err := next(t, stuck, time.Second); err != nil {
		t.Fatalf("Next: %v", err)
	}
	publish(t, b, env("p", "m2"))
	// other takes m2, and m1 once its timeout expires.
	got := map[string]bool{}
	for range 2 {
		d, err := next(t, other, 5*time.Second)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got[d.ID] = true
		if err := other.Ack(t.Context(), d.Tag); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	if !got["m1"] || !got["m2"] {
		t.Fatalf("the other consumer got %v; want m1 and m2", got)
	}
	// The claim freed stuck's slot.
	publish(t, b, env("p", "m3"))
	if d, err := next(t, stuck, time.Second); err != nil || d.ID != "m3" {
		t.Fatalf("Next of the consumer whose delivery was claimed = %s, %v; want m3", d.ID, err)
	}
}

func TestFullConsumerGetsItsOwnExpired(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{ProcessingTimeout: 200 * time.Millisecond, Prefetch: 1, MaxAttempts: 2})
	c := consume(t, b, "p", "only")
	publish(t, b, env("p", "m1"))
	publish(t, b, env("p", "m2"))
	want := []struct {
		id      string
		attempt int
	}{{"m1", 1}, {"m1", 2}, {"m2", 1}}
	for _, w := range want {
		d, err := next(t, c, 5*time.Second)
		if err != nil || d.ID != w.id || d.Attempt != w.attempt {
			t.Fatalf("Next = %s attempt %d, %v; want %s attempt %d", d.ID, d.Attempt, err, w.id, w.attempt)
		}
	}
	dls, err := b.DeadLetters(t.Context(), "p", 0)
	if err != nil || len(dls) != 1 || dls[0].ID != "m1" || dls[0].Attempts != 2 {
		t.Fatalf("DeadLetters = %+v, %v; want m1 after 2 attempts", dls, err)
	}
}

func TestDeadLettersExactBound(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{MaxDeadLetters: 3})
	c := consume(t, b, "p", "i")
	for i := range 10 {
		publish(t, b, env("p", fmt.Sprint(i)))
		d, err := next(t, c, time.Second)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if err := c.DeadLetter(t.Context(), d.Tag, "r"); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}
	dls, err := b.DeadLetters(t.Context(), "p", 0)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	var ids []string
	for _, dl := range dls {
		ids = append(ids, dl.ID)
	}
	if fmt.Sprint(ids) != "[9 8 7]" {
		t.Fatalf("DeadLetters = %v; want [9 8 7]", ids)
	}
}

func TestMemoryBounded(t *testing.T) {
	t.Parallel()
	const window = 30 * time.Millisecond
	b := newBus(t, bus.Options{MaxInbox: 100, DedupeWindow: window})
	c := consume(t, b, "p", "i")
	id := 0
	for range 10 {
		// Publish up to MaxInbox and drain, again and again; then cancel as many unread.
		for range 10 {
			for range 100 {
				id++
				publish(t, b, env("p", fmt.Sprint(id)))
			}
			for range 100 {
				d, err := next(t, c, time.Second)
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				if err := c.Ack(t.Context(), d.Tag); err != nil {
					t.Fatalf("Ack: %v", err)
				}
			}
		}
		for range 1000 {
			id++
			publish(t, b, env("p", fmt.Sprint(id)))
			if err := b.Cancel(t.Context(), "p", fmt.Sprint(id), time.Now().Add(time.Hour)); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
		}
		time.Sleep(window + 10*time.Millisecond)
	}
	publish(t, b, env("p", "last"))
	ready, readyCap, inflight, byID, seen, cancels := b.Footprint("p")
	t.Logf("after %d entries: ready %d (cap %d), in flight %d, by ID %d, seen %d, cancels %d",
		id, ready, readyCap, inflight, byID, seen, cancels)
	if readyCap > 256 || inflight != 0 || byID != 1 || seen != 1 || cancels > 2000 {
		t.Fatal("the inbox holds more than its live entries, the dedupe window and the cancellations need")
	}
	if n := depth(t, b, "p"); n != 1 {
		t.Fatalf("Depth = %d; want 1", n)
	}
}

func TestPurgeWithConsumerOpen(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{Prefetch: 1, ProcessingTimeout: time.Minute})
	c := consume(t, b, "p", "i")
	publish(t, b, env("p", "dead"))
	publish(t, b, env("p", "a"))
	publish(t, b, env("p", "b"))
	d, err := next(t, c, time.Second)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if err := c.DeadLetter(t.Context(), d.Tag, "r"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if d, err = next(t, c, time.Second); err != nil {
		t.Fatalf("Next: %v", err)
	}
	if err := b.Purge(t.Context(), "p"); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if dls, err := b.DeadLetters(t.Context(), "p", 0); err != nil || len(dls) != 0 {
		t.Fatalf("DeadLetters after Purge = %v, %v; want none", dls, err)
	}
	if n := depth(t, b, "p"); n != 0 {
		t.Fatalf("Depth after Purge = %d; want 0", n)
	}
	if err := c.Ack(t.Context(), d.Tag); !errors.Is(err, bus.ErrUnknownDelivery) {
		t.Fatalf("Ack after Purge: %v; want %v", err, bus.ErrUnknownDelivery)
	}
	// The consumer's slot is free again and it reads the new inbox.
	publish(t, b, env("p", "a"))
	if d, err := next(t, c, time.Second); err != nil || d.ID != "a" {
		t.Fatalf("Next after Purge = %s, %v; want a", d.ID, err)
	}
	if live, _ := b.Live(t.Context(), "p"); !live {
		t.Fatal("not Live after Purge with a consumer open")
	}
}

func TestPublishCopiesData(t *testing.T) {
	t.Parallel()
	b := newBus(t, bus.Options{})
	e := env("p", "m")
	e.Data = []byte(`{"a":1}`)
	publish(t, b, e)
	e.Data[2] = 'b'
	c := consume(t, b, "p", "i")
	d, err := next(t, c, time.Second)
	if err != nil || string(d.Data) != `{"a":1}` {
		t.Fatalf("Next = %s, %v; want the data as published", d.Data, err)
	}
	if d.SentAt.IsZero() {
		t.Fatal("SentAt not set")
	}
}

// TestNoGoroutinesLeft checks that watchers and waiting consumers leave no goroutine
// behind. It does not run in parallel, so that the count is its own.
func TestNoGoroutinesLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	b := busmem.New(bus.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	for range 10 {
		b.Watch(ctx)
		b.Watch(context.Background())
	}
	var wg sync.WaitGroup
	for i := range 5 {
		c, err := b.Consume(ctx, "p", fmt.Sprint(i))
		if err != nil {
			t.Fatalf("Consume: %v", err)
		}
		wg.Go(func() { _, _ = c.Next(context.Background()) })
	}
	cancel()
	_ = b.Close()
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines; %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStress runs producers and consumers that ack, extend, forget and crash at random,
// and checks that every entry is acknowledged exactly once; the consumers read with Next,
// or with TryNextOrNotify (waiting for the call back when nothing is ready).
func TestStress(t *testing.T) {
	t.Parallel()
	for _, notify := range []bool{false, true} {
		t.Run(fmt.Sprint("notify=", notify), func(t *testing.T) {
			t.Parallel()
			stress(t, notify)
		})
	}
}

func stress(t *testing.T, notify bool) {
	const producers, perProducer, workers = 3, 400, 4
	b := newBus(t, bus.Options{ProcessingTimeout: 100 * time.Millisecond, MaxAttempts: 1000, Prefetch: 8, MaxInbox: 300})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	var (
		mu    sync.Mutex
		acked = map[string]int{}
		errs  []error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		cancel()
	}
	for p := range producers {
		wg.Go(func() {
			for i := 0; i < perProducer; {
				err := b.Publish(ctx, env("p", fmt.Sprintf("p%d-%d", p, i)))
				switch {
				case err == nil:
					i++
				case errors.Is(err, bus.ErrInboxFull):
					time.Sleep(time.Millisecond)
				default:
					fail(fmt.Errorf("Publish: %w", err))
					return
				}
			}
		})
	}
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for ctx.Err() == nil {
				c, err := b.Consume(ctx, "p", fmt.Sprint("w", w))
				if err != nil {
					fail(fmt.Errorf("Consume: %w", err))
					return
				}
				read := c.Next
				if notify {
					nf := c.(bus.Notifier)
					woken := make(chan struct{}, 1)
					wake := func() {
						select {
						case woken <- struct{}{}:
						default:
						}
					}
					read = func(ctx context.Context) (bus.Delivery, error) {
						for {
							d, ok, err := nf.TryNextOrNotify(wake)
							if err != nil || ok {
								return d, err
							}
							select {
							case <-woken:
							case <-ctx.Done():
								return bus.Delivery{}, ctx.Err()
							}
						}
					}
				}
				for ctx.Err() == nil {
					d, err := read(ctx)
					if err != nil {
						if ctx.Err() == nil {
							fail(fmt.Errorf("Next: %w", err))
						}
						break
					}
					action := rng.IntN(10)
					if action == 0 {
						break // crash: close without settling
					}
					if action == 1 {
						continue // forget it: redelivered after the timeout
					}
					if action == 2 {
						if err := c.Extend(ctx, d.Tag, time.Second); err != nil && !errors.Is(err, bus.ErrUnknownDelivery) {
							fail(fmt.Errorf("Extend: %w", err))
						}
					}
					err = c.Ack(ctx, d.Tag)
					if errors.Is(err, bus.ErrUnknownDelivery) {
						continue // claimed by another consumer after its timeout
					}
					if err != nil {
						fail(fmt.Errorf("Ack: %w", err))
						break
					}
					mu.Lock()
					acked[d.ID]++
					done := len(acked) == producers*perProducer
					mu.Unlock()
					if done {
						cancel()
					}
				}
				_ = c.Close()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(acked) != producers*perProducer {
		t.Fatalf("%d of %d entries acknowledged", len(acked), producers*perProducer)
	}
	for id, n := range acked {
		if n != 1 {
			t.Errorf("%s acknowledged %d times", id, n)
		}
	}
	if n := depth(t, b, "p"); n != 0 {
		t.Fatalf("Depth = %d; want 0", n)
	}
}

// BenchmarkPublishNextAck measures the hot path with one producer and one consumer on
// their own goroutines. With the default dedupe window every ID of the run is remembered,
// so the dedupe map grows with b.N; with a short one it stays at its steady size.
func BenchmarkPublishNextAck(b *testing.B) {
	for _, window := range []time.Duration{0, 100 * time.Millisecond, time.Millisecond} {
		b.Run(fmt.Sprint("DedupeWindow=", window), func(b *testing.B) {
			benchmarkPublishNextAck(b, bus.Options{DedupeWindow: window}, true)
		})
	}
}

// BenchmarkPublishNextAckSerial is the same path on one goroutine: the cost of the bus
// itself, without hand-offs between goroutines.
func BenchmarkPublishNextAckSerial(b *testing.B) {
	for _, window := range []time.Duration{0, 100 * time.Millisecond, time.Millisecond} {
		b.Run(fmt.Sprint("DedupeWindow=", window), func(b *testing.B) {
			benchmarkPublishNextAck(b, bus.Options{DedupeWindow: window}, false)
		})
	}
}

func benchmarkPublishNextAck(b *testing.B, opts bus.Options, concurrent bool) {
	bs := busmem.New(opts)
	defer bs.Close()
	ctx := context.Background()
	c, err := bs.Consume(ctx, "p", "i")
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprint("m", i)
	}
	data := []byte(`{"user":"someone","action":"created","n":42}`)
	publish := func(i int) error {
		return bs.Publish(ctx, bus.Envelope{ID: ids[i], Kind: bus.KindEvent, Source: "a", Target: "p", Type: "t", Data: data})
	}
	receive := func() {
		d, err := c.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Ack(ctx, d.Tag); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	if !concurrent {
		for i := range b.N {
			if err := publish(i); err != nil {
				b.Fatal(err)
			}
			receive()
		}
		return
	}
	done := make(chan error, 1)
	go func() {
		for i := 0; i < b.N; {
			switch err := publish(i); {
			case err == nil:
				i++
			case errors.Is(err, bus.ErrInboxFull):
				runtime.Gosched()
			default:
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range b.N {
		receive()
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// TestDedupeMemoryIsCapped keeps the remembered IDs at MaxDedupe whatever the rate.
func TestDedupeMemoryIsCapped(t *testing.T) {
	b := newBus(t, bus.Options{MaxDedupe: 100, DedupeWindow: time.Hour})
	ctx := context.Background()
	c, err := b.Consume(ctx, "capped", "c1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if err := b.Publish(ctx, bus.Envelope{ID: fmt.Sprint("id-", i), Kind: bus.KindEvent, Target: "capped"}); err != nil {
			t.Fatal(err)
		}
		d, err := c.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Ack(ctx, d.Tag); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, _, seen, _ := b.Footprint("capped"); seen > 100 {
		t.Fatalf("%d IDs remembered, want at most 100", seen)
	}
	// The newest are still remembered: publishing one again stores nothing.
	if err := b.Publish(ctx, bus.Envelope{ID: "id-999", Kind: bus.KindEvent, Target: "capped"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Depth(ctx, "capped"); n != 0 {
		t.Fatalf("a recent duplicate was stored (depth %d)", n)
	}
}

// TestDeadLettersBoundedInBytes: the dead letters the in-memory bus keeps in the host's
// memory are bounded by MaxInboxBytes as well as by MaxDeadLetters, oldest dropped first.
func TestDeadLettersBoundedInBytes(t *testing.T) {
	big := func(id string) bus.Envelope {
		e := env("dead-bytes", id)
		e.Data = make([]byte, 4000)
		return e
	}
	size := int64(big("d0").Size())
	b := newBus(t, bus.Options{ProcessingTimeout: time.Minute, MaxDeadLetters: 1000, MaxInboxBytes: 3*size + size/2})
	c := consume(t, b, "dead-bytes", "i")
	for i := range 6 {
		publish(t, b, big(fmt.Sprintf("d%d", i)))
		d, err := next(t, c, time.Second)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if err := c.DeadLetter(t.Context(), d.Tag, "test"); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}
	dl, err := b.DeadLetters(t.Context(), "dead-bytes", 0)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	var ids []string
	for _, d := range dl {
		ids = append(ids, d.ID)
	}
	if fmt.Sprint(ids) != "[d5 d4 d3]" {
		t.Fatalf("dead letters %v; want the newest three, [d5 d4 d3]", ids)
	}
}

// tryNexter is the consumer's non-blocking read (pluginhost/stream uses it to send the
// deliveries that are ready back to back).
type tryNexter interface {
	TryNext() (bus.Delivery, bool, error)
}

// TryNext hands out what is ready, in order, as Next would, never more than Prefetch
// unsettled deliveries, and nothing once the consumer is closed.
func TestTryNext(t *testing.T) {
	b := newBus(t, bus.Options{Prefetch: 2})
	c := consume(t, b, "p", "i1")
	tn, ok := c.(tryNexter)
	if !ok {
		t.Fatalf("the consumer %T has no TryNext", c)
	}
	if _, ok, err := tn.TryNext(); ok || err != nil {
		t.Fatalf("TryNext on an empty inbox: ok %v, error %v", ok, err)
	}
	for i := range 3 {
		publish(t, b, bus.Envelope{ID: fmt.Sprintf("e%d", i), Kind: bus.KindEvent, Target: "p", Type: "t"})
	}
	var tags []string
	for i := range 2 {
		d, ok, err := tn.TryNext()
		if !ok || err != nil || d.ID != fmt.Sprintf("e%d", i) || d.Attempt != 1 {
			t.Fatalf("TryNext %d: %+v, ok %v, error %v", i, d, ok, err)
		}
		tags = append(tags, d.Tag)
	}
	if d, ok, _ := tn.TryNext(); ok {
		t.Fatalf("TryNext past Prefetch handed out %s", d.ID)
	}
	if err := c.Ack(t.Context(), tags[0]); err != nil {
		t.Fatal(err)
	}
	if d, ok, err := tn.TryNext(); !ok || err != nil || d.ID != "e2" {
		t.Fatalf("TryNext after an ack: %+v, ok %v, error %v", d, ok, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := tn.TryNext(); ok || !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("TryNext after Close: ok %v, error %v", ok, err)
	}
	// What the closed consumer held goes to the next one, Next and TryNext alike.
	c2 := consume(t, b, "p", "i2")
	d, err := next(t, c2, 10*time.Second)
	if err != nil || d.ID != "e1" {
		t.Fatalf("Next after the handback: %+v, %v", d, err)
	}
	if d, ok, err := c2.(tryNexter).TryNext(); !ok || err != nil || d.ID != "e2" {
		t.Fatalf("TryNext after the handback: %+v, ok %v, error %v", d, ok, err)
	}
}

// parked is a consumer read with TryNextOrNotify, as pluginhost/stream reads busmem's: no
// goroutine waits in Next, the consumer calls back instead.
type parked struct {
	t  *testing.T
	c  bus.Consumer
	nf bus.Notifier
	// woken receives a value each time the function registered last is called; a second
	// call of one registration fails the test.
	woken chan struct{}
}

func park(t *testing.T, c bus.Consumer) *parked {
	t.Helper()
	nf, ok := c.(bus.Notifier)
	if !ok {
		t.Fatalf("the consumer %T is no bus.Notifier", c)
	}
	return &parked{t: t, c: c, nf: nf, woken: make(chan struct{}, 1)}
}

// try calls TryNextOrNotify with a fresh function, which must be called at most once.
func (p *parked) try() (bus.Delivery, bool, error) {
	var calls atomic.Int32
	return p.nf.TryNextOrNotify(func() {
		if calls.Add(1) > 1 {
			p.t.Error("a registered function was called twice")
			return
		}
		select {
		case p.woken <- struct{}{}:
		default:
			p.t.Error("a function registered before was called after a later registration")
		}
	})
}

// idle checks that nothing is ready: the call registers a function.
func (p *parked) idle() {
	p.t.Helper()
	if d, ok, err := p.try(); ok || err != nil {
		p.t.Fatalf("TryNextOrNotify = %s, ok %v, error %v; want nothing ready", d.ID, ok, err)
	}
}

// waitWoken waits for the registered function's call.
func (p *parked) waitWoken(what string) {
	p.t.Helper()
	select {
	case <-p.woken:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("the parked consumer was not called back (%s)", what)
	}
}

// take returns the next delivery as a session's delivery run would get it: it looks, and
// when there is nothing yet, it waits for the call back and looks again.
func (p *parked) take(what string) bus.Delivery {
	p.t.Helper()
	for {
		d, ok, err := p.try()
		if err != nil {
			p.t.Fatalf("TryNextOrNotify (%s): %v", what, err)
		}
		if ok {
			return d
		}
		p.waitWoken(what)
	}
}

// TestNotifier parks a consumer with TryNextOrNotify (nothing ready: its function is
// registered) and checks that it is called back, and then gets the delivery, for every
// reason a blocked Next would wake for.
func TestNotifier(t *testing.T) {
	t.Parallel()
	const long = time.Hour // a processing timeout no test waits for
	t.Run("publish", func(t *testing.T) {
		t.Parallel()
		b := newBus(t, bus.Options{ProcessingTimeout: long})
		p := park(t, consume(t, b, "p", "i1"))
		p.idle()
		publish(t, b, env("p", "m1"))
		p.waitWoken("publish")
		if d := p.take("publish"); d.ID != "m1" || d.Attempt != 1 {
			t.Fatalf("got %s attempt %d; want m1 attempt 1", d.ID, d.Attempt)
		}
	})
	t.Run("a settle frees a Prefetch slot", func(t *testing.T) {
		t.Parallel()
		b := newBus(t, bus.Options{ProcessingTimeout: long, Prefetch: 1})
		p := park(t, consume(t, b, "p", "i1"))
		publish(t, b, env("p", "m1"))
		publish(t, b, env("p", "m2"))
		d1 := p.take("first")
		p.idle() // m2 is ready, but the consumer holds Prefetch deliveries
		if err := p.c.Ack(t.Context(), d1.Tag); err != nil {
			t.Fatal(err)
		}
		p.waitWoken("ack")
		if d := p.take("after the ack"); d.ID != "m2" {
			t.Fatalf("got %s; want m2", d.ID)
		}
	})
	t.Run("its own delivery times out", func(t *testing.T) {
		t.Parallel()
		b := newBus(t, bus.Options{ProcessingTimeout: 100 * time.Millisecond})
		p := park(t, consume(t, b, "p", "i1"))
		publish(t, b, env("p", "m1"))
		p.take("first")
		p.idle()
		p.waitWoken("processing timeout")
		if d := p.take("redelivery"); d.ID != "m1" || d.Attempt != 2 {
			t.Fatalf("got %s attempt %d; want m1 attempt 2", d.ID, d.Attempt)
		}
	})
	t.Run("its own delivery times out while it holds Prefetch", func(t *testing.T) {
		t.Parallel()
		b := newBus(t, bus.Options{ProcessingTimeout: 100 * time.Millisecond, Prefetch: 1})
		p := park(t, consume(t, b, "p", "i1"))
		publish(t, b, env("p", "m1"))
		publish(t, b, env("p", "m2"))
		p.take("first")
		p.idle()
		p.waitWoken("processing timeout")
		if d := p.take("redelivery"); d.ID != "m1" || d.Attempt != 2 {
			t.Fatalf("got %s attempt %d; want m1 attempt 2", d.ID, d.Attempt)
		}
	})
	t.Run("another consumer's delivery times out", func(t *testing.T) {
		t.Parallel()
		b := newBus(t, bus.Options{ProcessingTimeout: 100 * time.Millisecond})
		holder := park(t, consume(t, b, "p", "holder"))
		p := park(t, consume(t, b, "p", "idle"))
		publish(t, b, env("p", "m1"))
		holder.take("first")
		p.idle()
		p.waitWoken("the other consumer's processing timeout")
		if d := p.take("claim"); d.ID != "m1" || d.Attempt != 2 {
			t.Fatalf("got %s attempt %d; want m1 attempt 2", d.ID, d.Attempt)
		}
	})
	t.Run("Extend moves the timeout earlier", func(t *testing.T) {
		t.Parallel()
		b := newBus(t, bus.Options{ProcessingTimeout: long})
		holder := park(t, consume(t, b, "p", "holder"))
		p := park(t, consume(t, b, "p", "idle"))
		publish(t, b, env("p", "m1"))
		d := holder.take("first")
		p.idle() // its timer is set for the processing timeout, an hour away
		if err := holder.c.Extend(t.Context(), d.Tag, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		p.waitWoken("Extend")
		if d := p.take("after Extend"); d.ID != "m1" || d.Attempt != 2 {
			t.Fatalf("got %s attempt %d; want m1 attempt 2", d.ID, d.Attempt)
		}
	})
	t.Run("another consumer closes", func(t *testing.T) {
		t.Parallel()
		b := newBus(t, bus.Options{ProcessingTimeout: long})
		holder := park(t, consume(t, b, "p", "holder"))
		p := park(t, consume(t, b, "p", "idle"))
		publish(t, b, env("p", "m1"))
		holder.take("first")
		p.idle()
		if err := holder.c.Close(); err != nil {
			t.Fatal(err)
		}
		p.waitWoken("hand-back")
		if d := p.take("after the hand-back"); d.ID != "m1" {
			t.Fatalf("got %s; want m1", d.ID)
		}
	})
	t.Run("Close", func(t *testing.T) {
		t.Parallel()
		b := newBus(t, bus.Options{})
		p := park(t, consume(t, b, "p", "i1"))
		p.idle()
		if err := p.c.Close(); err != nil {
			t.Fatal(err)
		}
		p.waitWoken("Close")
		if _, ok, err := p.try(); ok || !errors.Is(err, bus.ErrClosed) {
			t.Fatalf("TryNextOrNotify after Close: ok %v, error %v; want %v", ok, err, bus.ErrClosed)
		}
	})
	t.Run("the bus closes", func(t *testing.T) {
		t.Parallel()
		b := busmem.New(bus.Options{})
		c, err := b.Consume(t.Context(), "p", "i1")
		if err != nil {
			t.Fatal(err)
		}
		p := park(t, c)
		p.idle()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		p.waitWoken("the bus's Close")
		if _, ok, err := p.try(); ok || !errors.Is(err, bus.ErrClosed) {
			t.Fatalf("TryNextOrNotify after the bus closed: ok %v, error %v; want %v", ok, err, bus.ErrClosed)
		}
	})
}
