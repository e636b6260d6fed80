package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
)

// Baseline B: a raw go-redis Streams round trip. The requester XADDs {id, reply, data} to
// the request stream; the responder reads it through a consumer group (XREADGROUP BLOCK,
// COUNT up to 64) and, in one pipeline, XADDs {id, data} to the reply stream and XACKs; the
// requester reads its reply stream (XREAD BLOCK from its last id, on a connection of its
// own) and matches replies by id. Both streams are trimmed (MAXLEN ~), as the host's are.

// Redis parameters of baseline B.
const (
	requestStream = "bench:requests"
	replyStream   = "bench:replies"
	responderGrp  = "bench-responders"
	// streamMaxLen trims both streams (MAXLEN ~).
	streamMaxLen = 10000
	// readCount is the COUNT of every blocking read.
	readCount = 64
	// blockFor bounds every blocking read, so that the readers notice when to stop.
	blockFor = time.Second
)

// redisResponderMain is the responder process.
func redisResponderMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(roleRedisResponder, flag.ContinueOnError)
	url := fs.String("redis", "", "redis:// URL")
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	opts, err := redis.ParseURL(*url)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.XGroupCreateMkStream(ctx, requestStream, responderGrp, "$").Err(); err != nil {
		return fmt.Errorf("create the consumer group: %w", err)
	}
	if err := writeJSON(out, ready{}); err != nil {
		return err
	}
	ids := make([]string, 0, readCount)
	for ctx.Err() == nil {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: responderGrp, Consumer: "responder", Streams: []string{requestStream, ">"},
			Count: readCount, Block: blockFor,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("XREADGROUP: %w", err)
		}
		pipe := rdb.Pipeline()
		ids = ids[:0]
		for _, s := range res {
			for _, m := range s.Messages {
				pipe.XAdd(ctx, &redis.XAddArgs{
					Stream: fmt.Sprint(m.Values["reply"]), MaxLen: streamMaxLen, Approx: true,
					Values: []any{"id", m.Values["id"], "data", m.Values["data"]},
				})
				ids = append(ids, m.ID)
			}
		}
		pipe.XAck(ctx, requestStream, responderGrp, ids...)
		if _, err := pipe.Exec(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reply pipeline: %w", err)
		}
	}
	return nil
}

// redisRequester does round trips through Redis, many in flight at once.
type redisRequester struct {
	*waiters[string, string]
	rdb     *redis.Client // XADDs; a pool big enough for every round trip in flight
	reader  *redis.Client // the blocking XREAD on the reply stream
	payload string
}

// roundTrip adds one request and waits for its reply.
func (r *redisRequester) roundTrip(ctx context.Context) error {
	id, data, err := r.call(ctx, func(n uint64) string { return strconv.FormatUint(n, 10) }, func(id string) error {
		err := r.rdb.XAdd(ctx, &redis.XAddArgs{
			Stream: requestStream, MaxLen: streamMaxLen, Approx: true,
			Values: []any{"id", id, "reply", replyStream, "data", r.payload},
		}).Err()
		if err != nil {
			return fmt.Errorf("XADD: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if data != r.payload {
		return fmt.Errorf("reply %s does not carry the payload back", id)
	}
	return nil
}

// receive reads the reply stream from its last id and hands each reply to its round trip,
// until ctx ends or a read fails.
func (r *redisRequester) receive(ctx context.Context) {
	last := "0"
	for ctx.Err() == nil {
		res, err := r.reader.XRead(ctx, &redis.XReadArgs{
			Streams: []string{replyStream, last}, Count: readCount, Block: blockFor,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			r.stop(fmt.Errorf("XREAD: %w", err))
			return
		}
		for _, s := range res {
			for _, m := range s.Messages {
				last = m.ID
				id, _ := m.Values["id"].(string)
				data, _ := m.Values["data"].(string)
				if !r.resolve(id, data) {
					r.stop(fmt.Errorf("reply to unknown id %q", id))
					return
				}
			}
		}
	}
	r.stop(ctx.Err())
}

// redisRequesterMain is the measuring requester of baseline B.
func redisRequesterMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(roleRedisRequester, flag.ContinueOnError)
	url := fs.String("redis", "", "redis:// URL")
	var l loadFlags
	l.register(fs)
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	opts, err := redis.ParseURL(*url)
	if err != nil {
		return err
	}
	opts.PoolSize = l.concurrency + 8
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	readerOpts := *opts
	readerOpts.PoolSize = 1
	reader := redis.NewClient(&readerOpts)
	defer reader.Close()

	r := &redisRequester{waiters: newWaiters[string, string](), rdb: rdb, reader: reader, payload: string(payloadBytes(l.payload))}
	recvCtx, cancel := context.WithCancel(ctx)
	go r.receive(recvCtx)
	defer func() {
		cancel()
		<-r.dead
	}()
	if err := settle(ctx, r.roundTrip); err != nil {
		return err
	}
	m, err := measure(ctx, r.roundTrip, l)
	if err != nil {
		return err
	}
	return writeJSON(out, m)
}

// startRedis starts a redis-server of the scenario's own (free port, no persistence).
func startRedis() (*redistest.Server, error) {
	srv, err := redistest.StartServer(redistest.Options{})
	if err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	return srv, nil
}

// runRedis runs baseline B: redis-server, the responder, then the measuring requester.
func (b *bench) runRedis(ctx context.Context) (Measurement, error) {
	srv, err := startRedis()
	if err != nil {
		return Measurement{}, err
	}
	defer srv.Close()
	ps := newProcs(b.stderr)
	defer ps.stopAll()
	resp, err := ps.start("redis-responder", b.selfCmd(roleRedisResponder, "-redis", srv.URL()), stopGrace)
	if err != nil {
		return Measurement{}, err
	}
	if err := resp.readJSON(ctx, readyTimeout, &ready{}); err != nil {
		return Measurement{}, err
	}
	args := append(append([]string{"-redis", srv.URL()}, b.loadArgs()...), cpuArgs("redis-requester", srv.URL(), resp)...)
	req, err := ps.start("redis-requester", b.selfCmd(roleRedisRequester, args...), stopGrace)
	if err != nil {
		return Measurement{}, err
	}
	var m Measurement
	if err := req.readJSON(ctx, b.measureTimeout(), &m); err != nil {
		return Measurement{}, err
	}
	return m, nil
}
