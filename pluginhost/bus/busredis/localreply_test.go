package busredis_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// TestRepliesToThisReplicaSkipRedis: with its replies dispatched, a replica hands a reply
// addressed to itself to the dispatcher before Reply or AckReply returns, and writes no reply
// stream; AckReply still acknowledges the delivery. Replies to another replica still go
// through Redis (TestReplicas).
func TestRepliesToThisReplicaSkipRedis(t *testing.T) {
	prefix := newPrefix()
	b := newBus(t, shared, prefix, bus.Options{ProcessingTimeout: time.Minute})
	var got atomic.Pointer[bus.Reply]
	b.DispatchReplies(func(r bus.Reply) { got.Store(&r) })
	ctx := context.Background()
	c := consume(t, b, "calc", "calc-1")
	rdb := rawClient(t, shared)
	replyKey := prefix + "reply:" + b.Replica()

	publish(t, b, message(b.Replica(), "calc", "m1"))
	d := next(t, c)
	ar := c.(interface {
		AckReply(ctx context.Context, tag, to string, r bus.Reply) error
	})
	if err := ar.AckReply(ctx, d.Tag, d.ReplyTo, bus.Reply{MessageID: d.ID, Status: "success", Data: []byte(`{"n":1}`)}); err != nil {
		t.Fatalf("AckReply: %v", err)
	}
	if r := got.Load(); r == nil || r.MessageID != "m1" || string(r.Data) != `{"n":1}` {
		t.Fatalf("dispatched %+v; want m1's reply, before AckReply returned", r)
	}
	if err := c.Ack(ctx, d.Tag); !errors.Is(err, bus.ErrUnknownDelivery) {
		t.Fatalf("Ack after AckReply: %v; want %v (AckReply acknowledged it)", err, bus.ErrUnknownDelivery)
	}
	if p, err := rdb.XPending(ctx, prefix+"inbox:calc", "nexus").Result(); err != nil || p.Count != 0 {
		t.Fatalf("pending after AckReply: %+v, %v; want none", p, err)
	}

	if err := b.Reply(ctx, b.Replica(), bus.Reply{MessageID: "m2", Status: "error", ErrorMessage: "no"}); err != nil {
		t.Fatalf("Reply: %v", err)
	}
	if r := got.Load(); r == nil || r.MessageID != "m2" || r.ErrorMessage != "no" {
		t.Fatalf("dispatched %+v; want m2's reply, before Reply returned", r)
	}
	if n, err := rdb.Exists(ctx, replyKey).Result(); err != nil || n != 0 {
		t.Fatalf("the reply stream %s exists (%d, %v): replies to this replica went through Redis", replyKey, n, err)
	}
}
