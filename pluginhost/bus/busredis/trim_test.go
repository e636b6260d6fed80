package busredis_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// TestTrimUnderLoad publishes far more than MaxInbox entries through an inbox while two
// consumers acknowledge them and a third holds a few without acknowledging: the stream's
// length stays bounded, every entry is delivered once, and the held ones survive the
// trimming and can still be settled.
func TestTrimUnderLoad(t *testing.T) {
	const maxInbox, total, held = 200, 6000, 3
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute, MaxInbox: maxInbox, Prefetch: 16})
	raw := rawClient(t, shared)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream := prefix + "inbox:load"

	holder := consume(t, b, "load", "holder")
	for i := range held {
		publish(t, b, message(b.Replica(), "load", fmt.Sprintf("held-%d", i)))
	}
	var kept []bus.Delivery
	for range held {
		kept = append(kept, next(t, holder))
	}

	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	var failure error
	for i := range 2 {
		c := consume(t, b, "load", fmt.Sprintf("worker-%d", i))
		wg.Go(func() {
			for {
				d, err := c.Next(ctx)
				if err != nil {
					return // ctx ended: the test is over
				}
				if err := c.Ack(context.Background(), d.Tag); err != nil {
					mu.Lock()
					failure = fmt.Errorf("Ack: %w", err)
					mu.Unlock()
				}
				mu.Lock()
				seen[d.ID]++
				done := len(seen) == total
				mu.Unlock()
				if done {
					cancel()
				}
			}
		})
	}

	maxLen, full := int64(0), 0
	for i := 0; i < total; {
		err := b.Publish(ctx, message(b.Replica(), "load", fmt.Sprintf("m%05d", i)))
		switch {
		case errors.Is(err, bus.ErrInboxFull):
			full++
			time.Sleep(time.Millisecond)
			continue
		case err != nil:
			t.Fatalf("Publish: %v", err)
		}
		i++
		if i%50 == 0 {
			// Not ctx: the workers end it once they have seen the last message, which may
			// be before this read of the length after it.
			n, err := raw.XLen(context.Background(), stream).Result()
			if err != nil {
				t.Fatalf("XLEN: %v", err)
			}
			maxLen = max(maxLen, n)
		}
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	t.Logf("%d entries through an inbox of %d; longest stream seen %d; %d publishes found it full", total, maxInbox, maxLen, full)
	if maxLen > maxInbox {
		t.Errorf("the stream grew to %d entries; want at most MaxInbox (%d)", maxLen, maxInbox)
	}
	if len(seen) != total {
		t.Fatalf("%d of %d entries delivered", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s delivered %d times", id, n)
		}
	}
	// The held entries are still there, held, and can be settled; then the stream shrinks.
	for _, d := range kept {
		if err := holder.Ack(context.Background(), d.Tag); err != nil {
			t.Fatalf("Ack of %s held through %d entries: %v", d.ID, total, err)
		}
	}
	publish(t, b, message(b.Replica(), "load", "last"))
	n, err := raw.XLen(context.Background(), stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("stream length %d after everything but one entry was acknowledged; want 1", n)
	}
	t.Logf("stream length %d once the held entries were acknowledged", n)
}

// TestTrimBounded runs publish and acknowledge with nothing held: the stream length stays
// near the number of unacknowledged entries.
func TestTrimBounded(t *testing.T) {
	const maxInbox, total = 100, 5000
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute, MaxInbox: maxInbox})
	raw := rawClient(t, shared)
	ctx := context.Background()
	c := consume(t, b, "bounded", "i")
	maxLen := int64(0)
	for i := range total {
		publish(t, b, message(b.Replica(), "bounded", fmt.Sprintf("m%05d", i)))
		d := next(t, c)
		if err := c.Ack(ctx, d.Tag); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		if i%10 == 0 {
			n, err := raw.XLen(ctx, prefix+"inbox:bounded").Result()
			if err != nil {
				t.Fatal(err)
			}
			maxLen = max(maxLen, n)
		}
	}
	t.Logf("%d entries; longest stream seen %d", total, maxLen)
	if maxLen > 1 {
		t.Fatalf("stream grew to %d entries with at most one unacknowledged", maxLen)
	}
	mem, err := raw.MemoryUsage(ctx, prefix+"inbox:bounded").Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the stream takes %d bytes after %d entries", mem, total)
	if mem > 64<<10 {
		t.Fatalf("the stream takes %d bytes with no entry unacknowledged", mem)
	}
}

// TestFullCountsOnlyUnacknowledged holds the oldest entry and passes many more than
// MaxInbox through the inbox, with a cancellation in between (Redis then loses track of
// the group's lag): Publish finds the inbox full exactly when MaxInbox entries are
// unacknowledged, never before.
func TestFullCountsOnlyUnacknowledged(t *testing.T) {
	const maxInbox = 50
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute, MaxInbox: maxInbox})
	ctx := context.Background()
	holder := consume(t, b, "pinned", "holder")
	worker := consume(t, b, "pinned", "worker")
	publish(t, b, message(b.Replica(), "pinned", "first"))
	first := next(t, holder)

	for i := range 4 * maxInbox {
		publish(t, b, message(b.Replica(), "pinned", fmt.Sprintf("m%04d", i)))
		d := next(t, worker)
		if err := worker.Ack(ctx, d.Tag); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	publish(t, b, message(b.Replica(), "pinned", "cancelled"))
	publish(t, b, message(b.Replica(), "pinned", "kept"))
	if err := b.Cancel(ctx, "pinned", "cancelled", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	// Unacknowledged now: first (held) and kept. Fill up to one below MaxInbox.
	for i := 0; i+3 < maxInbox; i++ {
		if err := b.Publish(ctx, message(b.Replica(), "pinned", fmt.Sprintf("x%04d", i))); err != nil {
			t.Fatalf("Publish with %d unacknowledged: %v", i+2, err)
		}
	}
	if n, err := b.Depth(ctx, "pinned"); err != nil || n != maxInbox-1 {
		t.Fatalf("Depth = %d, %v; want %d", n, err, maxInbox-1)
	}
	publish(t, b, message(b.Replica(), "pinned", "fits"))
	if err := b.Publish(ctx, message(b.Replica(), "pinned", "too-many")); !errors.Is(err, bus.ErrInboxFull) {
		t.Fatalf("Publish beyond MaxInbox: %v; want %v", err, bus.ErrInboxFull)
	}
	if err := holder.Ack(ctx, first.Tag); err != nil {
		t.Fatalf("Ack of the pinned entry: %v", err)
	}
	publish(t, b, message(b.Replica(), "pinned", "too-many"))
}

// TestFullTrimsForeignAcks acknowledges entries behind the bus's back (XACK without the
// deletion the bus does): they still count in the stream's length, and the inbox seems
// full, until Publish trims them at the acknowledged boundary instead of refusing.
func TestFullTrimsForeignAcks(t *testing.T) {
	const maxInbox = 20
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute, MaxInbox: maxInbox})
	raw := rawClient(t, shared)
	ctx := context.Background()
	stream := prefix + "inbox:foreign"
	c := consume(t, b, "foreign", "i")
	for i := range maxInbox {
		publish(t, b, message(b.Replica(), "foreign", fmt.Sprintf("m%02d", i)))
		d := next(t, c)
		if i == maxInbox-1 {
			break // held
		}
		if err := raw.XAck(ctx, stream, "nexus", d.Tag).Err(); err != nil {
			t.Fatalf("XACK: %v", err)
		}
	}
	if n, err := raw.XLen(ctx, stream).Result(); err != nil || n != maxInbox {
		t.Fatalf("XLEN = %d, %v; want %d", n, err, maxInbox)
	}
	publish(t, b, message(b.Replica(), "foreign", "fits"))
	if n, err := raw.XLen(ctx, stream).Result(); err != nil || n != 2 {
		t.Fatalf("XLEN after the trim = %d, %v; want 2 (the held entry and the new one)", n, err)
	}
}

// TestFullDropsExpired fills an inbox that has no consumer with messages whose deadline
// then passes: Publish drops them rather than refusing.
func TestFullDropsExpired(t *testing.T) {
	const maxInbox = 10
	b := newBus(t, shared, newPrefix(), bus.Options{MaxInbox: maxInbox})
	ctx := context.Background()
	for i := range maxInbox {
		env := message(b.Replica(), "expiring", fmt.Sprintf("m%02d", i))
		env.Deadline = time.Now().Add(200 * time.Millisecond)
		publish(t, b, env)
	}
	if err := b.Publish(ctx, message(b.Replica(), "expiring", "early")); !errors.Is(err, bus.ErrInboxFull) {
		t.Fatalf("Publish to a full inbox: %v; want %v", err, bus.ErrInboxFull)
	}
	time.Sleep(1200 * time.Millisecond) // the deadlines pass, and the sweep may run again
	publish(t, b, message(b.Replica(), "expiring", "late"))
	if n, err := b.Depth(ctx, "expiring"); err != nil || n != 1 {
		t.Fatalf("Depth = %d, %v; want 1", n, err)
	}
	c := consume(t, b, "expiring", "i")
	if d := next(t, c); d.ID != "late" {
		t.Fatalf("delivered %s; want late", d.ID)
	}
}
