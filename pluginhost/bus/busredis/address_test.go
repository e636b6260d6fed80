package busredis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
)

// newNamedBus returns a bus on the shared Redis with prefix and replica address replica,
// closed when the test ends.
func newNamedBus(t testing.TB, prefix, replica string, opts bus.Options) *busredis.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := busredis.New(ctx, busredis.Config{URL: shared.URL(), Prefix: prefix, Options: opts, Logger: testLogger(t), Replica: replica})
	if err != nil {
		t.Fatalf("busredis.New (replica %q): %v", replica, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestReplicaAddress: Config.Replica is the bus's address, checked; without it each bus
// has a random one.
func TestReplicaAddress(t *testing.T) {
	prefix := newPrefix()
	if b := newNamedBus(t, prefix, "node-A_1", bus.Options{}); b.Replica() != "node-A_1" {
		t.Errorf("Replica() = %q, want node-A_1", b.Replica())
	}
	r1, r2 := newBus(t, shared, prefix, bus.Options{}).Replica(), newBus(t, shared, prefix, bus.Options{}).Replica()
	if r1 == r2 || len(r1) != 16 {
		t.Errorf("random addresses %q and %q: want two different ones of 16 hex digits", r1, r2)
	}
	for _, bad := range []string{"a:b", "a@b", "a b", "a/b", "é", strings.Repeat("x", 65)} {
		b, err := busredis.New(t.Context(), busredis.Config{URL: shared.URL(), Prefix: prefix, Replica: bad})
		if err == nil {
			_ = b.Close()
			t.Errorf("Replica %q was accepted", bad)
		}
	}
}

// TestRestartedReplicaSkipsEarlierReplies: replies left in the reply stream of an address
// by an earlier bus (a server that restarted with the same replica id) are not handed to
// the new bus; replies sent after it started are.
func TestRestartedReplicaSkipsEarlierReplies(t *testing.T) {
	prefix := newPrefix()
	ctx := context.Background()
	other := newBus(t, shared, prefix, bus.Options{})
	first, err := busredis.New(ctx, busredis.Config{URL: shared.URL(), Prefix: prefix, Replica: "node-a", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// Replies to the earlier life: one it never read, sent before the restart.
	for _, id := range []string{"old-1", "old-2"} {
		if err := other.Reply(ctx, "node-a", bus.Reply{MessageID: id, Status: "success"}); err != nil {
			t.Fatal(err)
		}
	}

	again := newNamedBus(t, prefix, "node-a", bus.Options{})
	if err := other.Reply(ctx, "node-a", bus.Reply{MessageID: "new", Status: "success"}); err != nil {
		t.Fatal(err)
	}
	if r := receiveReply(t, again); r.MessageID != "new" {
		t.Fatalf("the restarted replica got reply %q first; want new (the earlier ones skipped)", r.MessageID)
	}
	select {
	case r := <-again.Replies():
		t.Errorf("unexpected reply %q", r.MessageID)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestInstanceMovesBetweenNamedReplicas is TestInstanceMovesReplica with replica ids for
// addresses: the new consumer adopts the old one's deliveries at once, and an instance
// whose name extends the first one's keeps its own.
func TestInstanceMovesBetweenNamedReplicas(t *testing.T) {
	prefix := newPrefix()
	ctx := context.Background()
	a := newNamedBus(t, prefix, "node-a", bus.Options{ProcessingTimeout: time.Minute})
	b := newNamedBus(t, prefix, "node_b", bus.Options{ProcessingTimeout: time.Minute})
	other := consume(t, a, "svc", "svc-1@x") // consumer "svc-1@x@node-a": another instance
	publish(t, a, message(a.Replica(), "svc", "m0"))
	d2 := next(t, other)
	ca := consume(t, a, "svc", "svc-1")
	publish(t, a, message(a.Replica(), "svc", "m1"))
	d1 := next(t, ca)

	cb := consume(t, b, "svc", "svc-1")
	got := next(t, cb)
	if got.Tag != d1.Tag || got.Attempt != 2 {
		t.Fatalf("after moving, got %s tag %s attempt %d; want tag %s attempt 2 first", got.ID, got.Tag, got.Attempt, d1.Tag)
	}
	if err := cb.Ack(ctx, got.Tag); err != nil {
		t.Fatalf("Ack on the new replica: %v", err)
	}
	if err := other.Ack(ctx, d2.Tag); err != nil {
		t.Fatalf("the other instance lost its delivery to the move: %v", err)
	}
}

// TestRestartedReplicaTakesBackItsDeliveries: a replica dies (no Close) while an instance
// holds a delivery; restarted with the same id, the instance connecting again gets it at
// once, without waiting for the processing timeout.
func TestRestartedReplicaTakesBackItsDeliveries(t *testing.T) {
	prefix := newPrefix()
	ctx := context.Background()
	opts := bus.Options{ProcessingTimeout: time.Minute}
	dead, err := busredis.New(ctx, busredis.Config{URL: shared.URL(), Prefix: prefix, Replica: "node-a", Options: opts, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dead.Consume(ctx, "worker", "w-1")
	if err != nil {
		t.Fatal(err)
	}
	publish(t, dead, message("node-a", "worker", "job"))
	held := next(t, c)
	// The earlier life is abandoned from here on; only the test's cleanup closes it.
	t.Cleanup(func() { _ = dead.Close() })

	again := newNamedBus(t, prefix, "node-a", opts)
	c2 := consume(t, again, "worker", "w-1")
	start := time.Now()
	got := next(t, c2)
	if got.ID != "job" || got.Tag != held.Tag || got.Attempt != 2 || time.Since(start) > 5*time.Second {
		t.Fatalf("got %s tag %s attempt %d after %s; want job tag %s attempt 2 at once", got.ID, got.Tag, got.Attempt, time.Since(start), held.Tag)
	}
	if err := c2.Ack(ctx, got.Tag); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}
