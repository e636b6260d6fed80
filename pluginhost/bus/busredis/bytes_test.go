package busredis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
)

// byteCount returns the inbox's byte counter and the sum of the sizes its entries carry.
func byteCount(t *testing.T, raw *redis.Client, prefix, plugin string) (counter, sum int64) {
	t.Helper()
	ctx := context.Background()
	v, err := raw.Get(ctx, prefix+"bytes:"+plugin).Result()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		t.Fatalf("GET bytes: %v", err)
	default:
		if counter, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("bytes counter %q: %v", v, err)
		}
	}
	msgs, err := raw.XRange(ctx, prefix+"inbox:"+plugin, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE: %v", err)
	}
	for _, m := range msgs {
		s, _ := m.Values["s"].(string)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("entry %s has size %q", m.ID, s)
		}
		sum += n
	}
	return counter, sum
}

// TestByteCountStaysExact runs an inbox through every way an entry leaves it (Ack,
// AckReply, DeadLetter, cancellation, expiry before and after delivery, dead-lettering past
// MaxAttempts, the trim of entries acknowledged behind the bus's back) and checks after each
// that the byte count MaxInboxBytes is enforced with equals the sizes of the entries left.
// The count then survives a Redis crash and restart (append-only file), a new bus on the
// same keys (a restarted host) enforces the same bound, and a lost count is rebuilt.
func TestByteCountStaysExact(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	raw := rawClient(t, srv)
	prefix := newPrefix()
	opts := bus.Options{ProcessingTimeout: 300 * time.Millisecond, MaxAttempts: 2, MaxInbox: 1000, MaxInboxBytes: 64 << 10}
	b := newBus(t, srv, prefix, opts)
	ctx := context.Background()
	const p = "counted"
	var want int64 // the sizes of the entries that should be in the inbox
	env := func(id string, n int) bus.Envelope {
		e := message(b.Replica(), p, id)
		e.Data = bytes.Repeat([]byte("y"), n)
		return e
	}
	add := func(e bus.Envelope) {
		t.Helper()
		publish(t, b, e)
		want += int64(e.Size())
	}
	check := func(when string) {
		t.Helper()
		counter, sum := byteCount(t, raw, prefix, p)
		if counter != sum || sum != want {
			t.Fatalf("%s: byte count %d, entries' sizes %d; want both %d", when, counter, sum, want)
		}
	}

	short := env("short", 500)
	short.Deadline = time.Now().Add(50 * time.Millisecond)
	add(short) // first in the inbox
	sizes := map[string]int{}
	for i := range 8 {
		e := env(fmt.Sprintf("m%d", i), 1000*(i+1))
		sizes[e.ID] = e.Size()
		add(e)
	}
	check("after publishing")

	// Cancelled before delivery: deleted by Cancel.
	if err := b.Cancel(ctx, p, "m7", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	want -= int64(sizes["m7"])
	check("after a cancellation")

	// Expired before delivery: skipped (and settled) by Next.
	for time.Now().Before(short.Deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	want -= int64(short.Size())

	c := consume(t, b, p, "i")
	held := map[string]bus.Delivery{}
	for range 7 {
		d := next(t, c)
		held[d.ID] = d
	}
	if _, ok := held["short"]; ok {
		t.Fatal("an expired message was delivered")
	}
	check("after Next skipped an expired message")

	if err := c.Ack(ctx, held["m0"].Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	want -= int64(sizes["m0"])
	check("after Ack")
	if err := c.(*busredis.Consumer).AckReply(ctx, held["m1"].Tag, "elsewhere", bus.Reply{MessageID: "m1", Status: "success"}); err != nil {
		t.Fatalf("AckReply: %v", err)
	}
	want -= int64(sizes["m1"])
	check("after AckReply")
	if err := c.DeadLetter(ctx, held["m2"].Tag, "test"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	want -= int64(sizes["m2"])
	check("after DeadLetter")

	// m3 to m6 stay unsettled: past the processing timeout they come back, and past
	// MaxAttempts they are dead-lettered by the claim. Acknowledged behind the bus's back,
	// m6 is only deleted by the trim of a full inbox.
	if err := raw.XAck(ctx, prefix+"inbox:"+p, "nexus", held["m6"].Tag).Err(); err != nil {
		t.Fatalf("XACK: %v", err)
	}
	for range 3 {
		d := next(t, c) // second attempts of m3, m4, m5
		if d.Attempt != 2 {
			t.Fatalf("delivered %s attempt %d; want attempt 2", d.ID, d.Attempt)
		}
	}
	// The third attempts dead-letter them; Next waits meanwhile.
	waitCtx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := c.Next(waitCtx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next after the last attempts: %v; want nothing", err)
	}
	want -= int64(sizes["m3"] + sizes["m4"] + sizes["m5"])
	check("after the claim dead-lettered entries past MaxAttempts")
	if dl, err := b.DeadLetters(ctx, p, 0); err != nil || len(dl) != 4 {
		t.Fatalf("DeadLetters = %d, %v; want 4", len(dl), err)
	}

	// Fill the inbox: the publish that finds it full deletes m6 (acknowledged behind the
	// bus's back) and counts its room.
	for i := 0; ; i++ {
		e := env(fmt.Sprintf("fill-%d", i), 2000)
		if err := b.Publish(ctx, e); errors.Is(err, bus.ErrInboxFull) {
			break
		} else if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		want += int64(e.Size())
		if i > 100 {
			t.Fatal("the inbox never filled")
		}
	}
	want -= int64(sizes["m6"])
	check("after the trim")
	if want > opts.MaxInboxBytes || want+int64(env("fill-99", 2000).Size()) <= opts.MaxInboxBytes {
		t.Fatalf("refused with %d bytes of a %d byte bound", want, opts.MaxInboxBytes)
	}

	// A Redis crash and restart (append-only file) keeps the inbox and its count together.
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	check("after a Redis restart")

	// A restarted host (a new bus on the same keys) enforces the same bound.
	b2 := newBus(t, srv, prefix, opts)
	if err := b2.Publish(ctx, env("again", 2000)); !errors.Is(err, bus.ErrInboxFull) {
		t.Fatalf("Publish through a new bus: %v; want %v", err, bus.ErrInboxFull)
	}
	// A lost count is rebuilt from the entries.
	if err := raw.Del(ctx, prefix+"bytes:"+p).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b2.Publish(ctx, env("again", 2000)); !errors.Is(err, bus.ErrInboxFull) {
		t.Fatalf("Publish with the count lost: %v; want %v", err, bus.ErrInboxFull)
	}
	check("after the count was rebuilt")

	// Purge takes the count with the inbox.
	if err := b2.Purge(ctx, p); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	want = 0
	check("after Purge")
}
