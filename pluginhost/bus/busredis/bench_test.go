package busredis_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
)

var benchData = []byte(`{"user":"u-123","action":"get","fields":["name","email"]}`)

// BenchmarkPublishNextAckReply measures one request/reply through the bus: the requester
// publishes a message and waits for its reply on Replies; a handler goroutine takes it
// with Next and answers it, with Reply then Ack (two round trips) or with AckReply (one).
// The raw sub-benchmark does the same with plain go-redis Streams commands (XADD,
// XREADGROUP, XACK and XADD pipelined, XREAD), the floor to compare with.
func BenchmarkPublishNextAckReply(b *testing.B) {
	for _, mode := range []string{"ReplyThenAck", "AckReply"} {
		b.Run(mode, func(b *testing.B) {
			bb := newBus(b, shared, newPrefix(), bus.Options{ProcessingTimeout: time.Minute})
			ctx, cancel := context.WithCancel(context.Background())
			c, err := bb.Consume(ctx, "bench", "handler")
			if err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Go(func() { handle(ctx, b, bb, c.(*busredis.Consumer), mode == "AckReply") })
			defer func() {
				cancel()
				_ = c.Close()
				wg.Wait()
			}()

			env := bus.Envelope{Kind: bus.KindMessage, Source: "caller", Target: "bench", Type: "user.get",
				Data: benchData, ReplyTo: bb.Replica()}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				env.ID = "m" + strconv.Itoa(i)
				env.Deadline = time.Now().Add(time.Minute)
				if err := bb.Publish(ctx, env); err != nil {
					b.Fatal(err)
				}
				r := <-bb.Replies()
				if r.MessageID != env.ID {
					b.Fatalf("reply to %s; want %s", r.MessageID, env.ID)
				}
			}
		})
	}
	b.Run("raw", benchRaw)
}

// handle answers every message until ctx ends.
func handle(ctx context.Context, b *testing.B, bb *busredis.Bus, c *busredis.Consumer, ackReply bool) {
	for {
		d, err := c.Next(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, bus.ErrClosed) {
				b.Error(err)
			}
			return
		}
		r := bus.Reply{MessageID: d.ID, Status: "success", Data: d.Data}
		if ackReply {
			err = c.AckReply(ctx, d.Tag, d.ReplyTo, r)
		} else {
			err = bb.Reply(ctx, d.ReplyTo, r)
			if err == nil {
				err = c.Ack(ctx, d.Tag)
			}
		}
		if err != nil && ctx.Err() == nil {
			b.Error(err)
		}
	}
}

// benchRaw is the same exchange with go-redis Streams commands and nothing else.
func benchRaw(b *testing.B) {
	prefix := newPrefix()
	inbox, replies := prefix+"inbox", prefix+"replies"
	client := rawClient(b, shared)
	server := rawClient(b, shared)
	ctx, cancel := context.WithCancel(context.Background())
	if err := client.XGroupCreateMkStream(ctx, inbox, "g", "0").Err(); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	serverConn := server.Conn()
	serverID, err := serverConn.ClientID(ctx).Result()
	if err != nil {
		b.Fatal(err)
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			res, err := serverConn.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: "g", Consumer: "c", Streams: []string{inbox, ">"}, Count: 1, Block: time.Second,
			}).Result()
			if err != nil {
				continue
			}
			for _, m := range res[0].Messages {
				pipe := server.Pipeline()
				pipe.XAck(ctx, inbox, "g", m.ID)
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: replies, MaxLen: 10000, Approx: true, Values: []any{"r", m.Values["d"]}})
				_, _ = pipe.Exec(ctx)
			}
		}
	})
	defer func() {
		cancel()
		_ = server.ClientUnblock(context.Background(), serverID)
		wg.Wait()
		_ = serverConn.Close()
	}()

	last := "0-0"
	clientConn := client.Conn()
	defer clientConn.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := client.XAdd(ctx, &redis.XAddArgs{Stream: inbox, Values: []any{"d", benchData}}).Err(); err != nil {
			b.Fatal(err)
		}
		res, err := clientConn.XRead(ctx, &redis.XReadArgs{Streams: []string{replies, last}, Count: 1, Block: 5 * time.Second}).Result()
		if err != nil {
			b.Fatal(err)
		}
		last = res[0].Messages[0].ID
	}
}
