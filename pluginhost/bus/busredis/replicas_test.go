package busredis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
)

// waitLong bounds every wait for something that must happen.
const waitLong = 10 * time.Second

// rawClient returns a plain go-redis client of srv, closed when the test ends.
func rawClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func consume(t testing.TB, b bus.Bus, plugin, name string) bus.Consumer {
	t.Helper()
	c, err := b.Consume(context.Background(), plugin, name)
	if err != nil {
		t.Fatalf("Consume %s/%s: %v", plugin, name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func next(t testing.TB, c bus.Consumer) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	d, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return d
}

func message(replyTo, target, id string) bus.Envelope {
	return bus.Envelope{
		ID: id, Kind: bus.KindMessage, Source: "sender", Target: target, Type: "t",
		Data: []byte(`{"id":"` + id + `"}`), Deadline: time.Now().Add(time.Hour), ReplyTo: replyTo, SentAt: time.Now(),
	}
}

func publish(t testing.TB, b bus.Bus, env bus.Envelope) {
	t.Helper()
	if err := b.Publish(context.Background(), env); err != nil {
		t.Fatalf("Publish %s: %v", env.ID, err)
	}
}

func receiveReply(t testing.TB, b bus.Bus) bus.Reply {
	t.Helper()
	select {
	case r, ok := <-b.Replies():
		if !ok {
			t.Fatal("Replies closed")
		}
		return r
	case <-time.After(waitLong):
		t.Fatal("no reply")
		return bus.Reply{}
	}
}

// TestReplicas runs two replicas of one bus on one Redis: a message sent from A and handled
// on B is answered to A, and what one replica announces or cancels reaches the other.
func TestReplicas(t *testing.T) {
	prefix := newPrefix()
	a := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute})
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute})
	if a.Replica() == b.Replica() {
		t.Fatal("two replicas share a reply address")
	}
	ctx := context.Background()
	c := consume(t, b, "calc", "calc-1")
	if live, err := a.Live(ctx, "calc"); err != nil || !live {
		t.Fatalf("Live on A with a consumer on B = %v, %v; want true", live, err)
	}
	watchA, watchB := a.Watch(ctx), b.Watch(ctx)

	// Reply through Bus.Reply and Ack, then through AckReply.
	publish(t, a, message(a.Replica(), "calc", "m1"))
	d := next(t, c)
	if err := b.Reply(ctx, d.ReplyTo, bus.Reply{MessageID: d.ID, Status: "success", Data: []byte(`{"n":1}`)}); err != nil {
		t.Fatalf("Reply: %v", err)
	}
	if err := c.Ack(ctx, d.Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if r := receiveReply(t, a); r.MessageID != "m1" || string(r.Data) != `{"n":1}` {
		t.Fatalf("A got reply %+v; want m1's", r)
	}
	publish(t, a, message(a.Replica(), "calc", "m2"))
	d = next(t, c)
	ar, ok := c.(interface {
		AckReply(ctx context.Context, tag, to string, r bus.Reply) error
	})
	if !ok {
		t.Fatal("the consumer has no AckReply")
	}
	if err := ar.AckReply(ctx, d.Tag, d.ReplyTo, bus.Reply{MessageID: d.ID, Status: "success"}); err != nil {
		t.Fatalf("AckReply: %v", err)
	}
	if r := receiveReply(t, a); r.MessageID != "m2" {
		t.Fatalf("A got reply %+v; want m2's", r)
	}
	if err := c.Ack(ctx, d.Tag); !errors.Is(err, bus.ErrUnknownDelivery) {
		t.Fatalf("Ack after AckReply: %v; want %v", err, bus.ErrUnknownDelivery)
	}
	select {
	case r := <-b.Replies():
		t.Fatalf("B got a reply addressed to A: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}

	// Events announced on one replica reach the watchers of both.
	ev := bus.Envelope{ID: "ev", Kind: bus.KindEvent, Source: "system", Type: "x", SentAt: time.Now()}
	if err := a.Announce(ctx, ev); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	for name, w := range map[string]<-chan bus.Envelope{"A": watchA, "B": watchB} {
		select {
		case got := <-w:
			if got.ID != "ev" {
				t.Fatalf("watcher on %s got %s; want ev", name, got.ID)
			}
		case <-time.After(waitLong):
			t.Fatalf("watcher on %s got nothing", name)
		}
	}

	// Cancelling on A a message in flight on B reports it on B's consumer.
	publish(t, a, message(a.Replica(), "calc", "m3"))
	d = next(t, c)
	if err := a.Cancel(ctx, "calc", "m3", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	select {
	case tag := <-c.Cancelled():
		if tag != d.Tag {
			t.Fatalf("Cancelled reported %s; want %s", tag, d.Tag)
		}
	case <-time.After(waitLong):
		t.Fatal("Cancelled reported nothing")
	}
	if err := c.Ack(ctx, d.Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	// Cancelling a message not delivered yet deletes it, for every replica.
	publish(t, a, message(a.Replica(), "calc", "m4"))
	publish(t, a, message(a.Replica(), "calc", "m5"))
	if err := a.Cancel(ctx, "calc", "m4", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if d := next(t, c); d.ID != "m5" {
		t.Fatalf("delivered %s; want m5 (m4 was cancelled)", d.ID)
	} else if err := c.Ack(ctx, d.Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

// TestReplicaDies abandons a replica with a delivery in flight (its process died: no
// Close): after the processing timeout a consumer on another replica gets it, and the dead
// one can no longer settle it.
func TestReplicaDies(t *testing.T) {
	const timeout = 500 * time.Millisecond
	prefix := newPrefix()
	ctx := context.Background()
	opts := bus.Options{ProcessingTimeout: timeout}
	a, err := busredis.New(ctx, busredis.Config{URL: shared.URL(), Prefix: prefix, Options: opts, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := newBus(t, shared, prefix, opts)
	ca := consume(t, a, "worker", "w-a")
	cb := consume(t, b, "worker", "w-b")
	publish(t, b, message(b.Replica(), "worker", "job"))
	da := next(t, ca)
	died := time.Now()
	// A is abandoned from here on; only the test's cleanup closes it.
	t.Cleanup(func() { _ = a.Close() })

	db := next(t, cb)
	if since := time.Since(died); since < timeout-50*time.Millisecond {
		t.Fatalf("claimed after %s; want no sooner than the processing timeout %s", since, timeout)
	}
	if db.Tag != da.Tag || db.ID != "job" || db.Attempt != 2 {
		t.Fatalf("B got %s tag %s attempt %d; want job tag %s attempt 2", db.ID, db.Tag, db.Attempt, da.Tag)
	}
	if err := ca.Ack(ctx, da.Tag); !errors.Is(err, bus.ErrUnknownDelivery) {
		t.Fatalf("Ack on the dead replica: %v; want %v", err, bus.ErrUnknownDelivery)
	}
	if err := cb.Ack(ctx, db.Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if n, err := b.Depth(ctx, "worker"); err != nil || n != 0 {
		t.Fatalf("Depth = %d, %v; want 0", n, err)
	}
}

// TestInstanceMovesReplica reconnects an instance to another replica while its first
// replica still holds its consumer: the new consumer takes its deliveries over at once.
func TestInstanceMovesReplica(t *testing.T) {
	prefix := newPrefix()
	ctx := context.Background()
	a := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute})
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute})
	ca := consume(t, a, "svc", "svc-1")
	publish(t, a, message(a.Replica(), "svc", "m1"))
	publish(t, a, message(a.Replica(), "svc", "m2"))
	d1 := next(t, ca)

	cb := consume(t, b, "svc", "svc-1")
	got := next(t, cb)
	if got.Tag != d1.Tag || got.Attempt != 2 {
		t.Fatalf("after moving, got %s tag %s attempt %d; want tag %s attempt 2 first", got.ID, got.Tag, got.Attempt, d1.Tag)
	}
	// The old replica notices late that the instance is gone: its Close takes nothing
	// from the new consumer.
	if err := ca.Close(); err != nil {
		t.Fatalf("Close on the old replica: %v", err)
	}
	if err := cb.Ack(ctx, got.Tag); err != nil {
		t.Fatalf("Ack on the new replica: %v", err)
	}
	if d := next(t, cb); d.ID != "m2" {
		t.Fatalf("got %s; want m2", d.ID)
	} else if err := cb.Ack(ctx, d.Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}
