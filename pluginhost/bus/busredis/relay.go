package busredis

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// The relay between replicas (bus.Relay): each replica is a member of the replicas set, and
// of the holders set of each plugin it holds, scored by when it stops counting (refreshed
// every liveRefresh, liveTTL of grace); frames to a replica go to its relay stream, which it
// reads and deletes as it goes.
const relayMaxLen = 100000

var _ bus.Relay = (*Bus)(nil)

// relay is the bus's state of the relay.
type relay struct {
	mu    sync.Mutex
	held  map[string]int      // plugins held by this replica → connected instances
	dirty map[string]struct{} // plugins whose membership changed since the last sync
	wake  chan struct{}       // tells the hold loop to sync now

	receive frameHandler // where received frames go
	// clockOffset is Redis's clock minus this machine's, in nanoseconds (syncClock); skew
	// is added to this machine's clock by tests.
	clockOffset atomic.Int64
	skew        atomic.Int64
	conn        *blockConn
	loopDone    chan struct{} // closed when the relay reader exits
}

// frameHandler is the function ReceiveFrames set.
type frameHandler struct {
	mu sync.RWMutex
	fn func([]byte)
}

func (c *frameHandler) set(fn func([]byte)) { c.mu.Lock(); c.fn = fn; c.mu.Unlock() }
func (c *frameHandler) get() func([]byte) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.fn
}

func newRelay(blk *redis.Client) *relay {
	return &relay{held: map[string]int{}, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1),
		conn: &blockConn{rdb: blk}, loopDone: make(chan struct{})}
}

// Hold records one more connected instance of plugin on this replica.
func (b *Bus) Hold(plugin string) { b.changeHold(plugin, 1) }

// Release records one less connected instance of plugin on this replica.
func (b *Bus) Release(plugin string) { b.changeHold(plugin, -1) }

func (b *Bus) changeHold(plugin string, delta int) {
	r := b.relay
	r.mu.Lock()
	before := r.held[plugin]
	after := max(before+delta, 0)
	if after == 0 {
		delete(r.held, plugin)
	} else {
		r.held[plugin] = after
	}
	if (before == 0) != (after == 0) {
		r.dirty[plugin] = struct{}{}
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Holders returns the other live replicas holding plugin.
func (b *Bus) Holders(ctx context.Context, plugin string) ([]string, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	now := strconv.FormatInt(b.redisNow().UnixMilli(), 10)
	members, err := b.rdb.ZRangeByScore(ctx, b.keys.holders(plugin), &redis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil {
		return nil, b.wrapErr("holders", err)
	}
	out := members[:0]
	for _, m := range members {
		if m != b.replica {
			out = append(out, m)
		}
	}
	return out, nil
}

// Alive reports whether replica refreshed its membership of the replicas set within liveTTL.
func (b *Bus) Alive(ctx context.Context, replica string) (bool, error) {
	if b.closed.Load() {
		return false, bus.ErrClosed
	}
	score, err := b.rdb.ZScore(ctx, b.keys.replicas(), replica).Result()
	switch {
	case err == redis.Nil:
		return false, nil
	case err != nil:
		return false, b.wrapErr("alive", err)
	}
	return int64(score) > b.redisNow().UnixMilli(), nil
}

// redisNow is the time on Redis's clock, as last measured (see syncClock): the scores of the
// replicas and holders sets are on it, so that replicas whose own clocks disagree still
// judge each other alive or not alike.
func (b *Bus) redisNow() time.Time {
	return b.relay.localNow().Add(time.Duration(b.relay.clockOffset.Load()))
}

// localNow is this machine's clock (as skewed by a test).
func (r *relay) localNow() time.Time { return time.Now().Add(time.Duration(r.skew.Load())) }

// syncClock measures how far Redis's clock is from this machine's (half the round trip is
// the error).
func (b *Bus) syncClock(ctx context.Context) {
	start := b.relay.localNow()
	t, err := b.rdb.Time(ctx).Result()
	if err != nil {
		return
	}
	rtt := b.relay.localNow().Sub(start)
	b.relay.clockOffset.Store(int64(t.Sub(start.Add(rtt / 2))))
}

// SendFrame appends frame to the relay stream of the replica at address to.
func (b *Bus) SendFrame(ctx context.Context, to string, frame []byte) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	key := b.keys.relay(to)
	// On the client that never retries: a retry after a lost answer would append the frame
	// twice, and the frames of a call are not idempotent (a body chunk would be written
	// twice). A failed send fails the call instead.
	pipe := b.blk.Pipeline()
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: relayMaxLen, Approx: true, Values: []any{"f", frame}})
	pipe.PExpire(ctx, key, replyTTL)
	_, err := pipe.Exec(ctx)
	return b.wrapErr("relay", err)
}

// ReceiveFrames hands the frames sent to this replica to fn, on the relay reader.
func (b *Bus) ReceiveFrames(fn func(frame []byte)) { b.relay.receive.set(fn) }

// relayLoop reads this replica's relay stream, deleting what it read.
func (b *Bus) relayLoop() {
	defer b.wg.Done()
	defer close(b.relay.loopDone)
	key := b.keys.relay(b.replica)
	var read []string
	b.readLoopBatch("relay", b.relay.conn, key, "0-0", func(m redis.XMessage) bool {
		read = append(read, m.ID)
		if fn := b.relay.receive.get(); fn != nil {
			fn([]byte(stringField(m.Values, "f")))
		}
		return true
	}, func() {
		if len(read) == 0 {
			return
		}
		// The stream keeps only what is not read yet; what is left over when this replica
		// dies expires with the stream.
		ctx, cancel := context.WithTimeout(b.ctx, closeTimeout)
		if err := b.rdb.XDel(ctx, key, read...).Err(); err != nil && b.ctx.Err() == nil {
			b.log.Warn("busredis: deleting read relay frames failed", "err", err)
		}
		cancel()
		read = read[:0]
	})
}

// holdLoop keeps this replica's membership of the replicas set and of the holders sets of
// the plugins it holds: at once after a change, and every liveRefresh.
func (b *Bus) holdLoop() {
	defer b.wg.Done()
	r := b.relay
	t := time.NewTicker(liveRefresh)
	defer t.Stop()
	refresh := true
	for {
		r.mu.Lock()
		changed := r.dirty
		r.dirty = map[string]struct{}{}
		var held []string
		if refresh {
			for p := range r.held {
				held = append(held, p)
			}
		}
		counts := make(map[string]int, len(changed))
		for p := range changed {
			counts[p] = r.held[p]
		}
		r.mu.Unlock()

		ctx, cancel := context.WithTimeout(b.ctx, liveRefresh)
		if refresh {
			b.syncClock(ctx)
		}
		now := b.redisNow()
		until := float64(now.Add(liveTTL).UnixMilli())
		expired := strconv.FormatInt(now.UnixMilli(), 10)
		pipe := b.rdb.Pipeline()
		if refresh {
			pipe.ZAdd(ctx, b.keys.replicas(), redis.Z{Score: until, Member: b.replica})
			pipe.ZRemRangeByScore(ctx, b.keys.replicas(), "-inf", expired)
		}
		for _, p := range held {
			b.addHolder(ctx, pipe, p, until, expired)
		}
		for p, n := range counts {
			if n > 0 {
				b.addHolder(ctx, pipe, p, until, expired)
			} else {
				pipe.ZRem(ctx, b.keys.holders(p), b.replica)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && b.ctx.Err() == nil {
			b.log.Warn("busredis: telling the other replicas what this one holds failed; retrying", "err", err)
			r.mu.Lock()
			for p := range changed {
				r.dirty[p] = struct{}{}
			}
			r.mu.Unlock()
		}
		cancel()

		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			refresh = true
		case <-r.wake:
			refresh = false
		}
	}
}

func (b *Bus) addHolder(ctx context.Context, pipe redis.Pipeliner, plugin string, until float64, expired string) {
	key := b.keys.holders(plugin)
	pipe.ZAdd(ctx, key, redis.Z{Score: until, Member: b.replica})
	pipe.ZRemRangeByScore(ctx, key, "-inf", expired)
	pipe.PExpire(ctx, key, 2*liveTTL)
}

// leaveRelay withdraws this replica from the replicas set and the holders sets (Close).
func (b *Bus) leaveRelay(ctx context.Context) error {
	b.relay.mu.Lock()
	held := make([]string, 0, len(b.relay.held))
	for p := range b.relay.held {
		held = append(held, p)
	}
	b.relay.mu.Unlock()
	pipe := b.rdb.Pipeline()
	pipe.ZRem(ctx, b.keys.replicas(), b.replica)
	for _, p := range held {
		pipe.ZRem(ctx, b.keys.holders(p), b.replica)
	}
	pipe.Del(ctx, b.keys.relay(b.replica))
	_, err := pipe.Exec(ctx)
	return err
}
