package busredis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// Consumer is one open consumer of a plugin's inbox: one plugin instance on this replica.
// Its loop goroutine fetches entries only for the Next calls that wait (so a consumer that
// does not ask takes nothing from the others), never more than Prefetch held in all, and
// keeps extended deliveries from timing out. Besides bus.Consumer it offers AckReply and
// the settling without waiting of bus.AsyncSettler.
type Consumer struct {
	// Set once by newConsumer.
	b         *Bus
	plugin    string
	name      string // the instance name
	rname     string // the Redis consumer name: name@replica
	key       string // in Bus.consumers
	inbox     string
	bytes     string // the inbox's byte count
	dead      string
	live      string
	cancelled chan string   // buffered Prefetch; sent to without blocking, never closed
	kick      chan struct{} // buffered 1: tells the loop to look at its state again
	bc        *blockConn    // the loop's connection for blocking reads
	ctx       context.Context
	cancelCtx context.CancelFunc // ends ctx: calls of the loop in progress give up
	stop      chan struct{}      // closed by Close
	loopDone  chan struct{}      // closed when run returns

	closeOnce sync.Once
	closeErr  error // set by the closeOnce function

	acks ackQueue // the acknowledgements waiting for their pipeline
	// settling counts the settles sent without waiting (AckAsync, AckReplyAsync) that are
	// not done yet: Close waits for them before it hands the deliveries back. Added to
	// under mu while not closed only (startSettle), so that no Add follows Close's Wait.
	settling sync.WaitGroup

	mu       sync.Mutex
	ready    []*ahead           // fetched, not handed out yet, oldest first
	inflight map[string]*flight // handed out and unsettled, by tag (the entry id)
	waiting  int                // Next calls waiting for an entry
	// wake is non-nil while Next calls wait; signalLocked closes it and sets it to nil, so
	// that every waiting call looks again.
	wake     chan struct{}
	closed   bool
	claimNow bool // handed-back entries may be waiting: look for idle entries before reading
}

var (
	_ bus.Consumer     = (*Consumer)(nil)
	_ bus.AsyncSettler = (*Consumer)(nil)
)

// ahead is an entry fetched for a waiting Next call.
type ahead struct {
	d       bus.Delivery
	touched time.Time // when it was fetched (its idle time was reset)
	size    string    // the entry's size field (see flight.size)
}

// flight is a delivery handed out.
type flight struct {
	msgID string
	// size is the entry's size field as stored (see scriptPublish), passed to the settling
	// script so that it need not read the entry again; "" when unknown (claimed entries).
	size string
	// visible is when other consumers may claim it: its idle time reaches the processing
	// timeout then.
	visible time.Time
	// until, when set, is how long Extend asked to keep it: the loop touches it again while
	// visible is before until.
	until time.Time
}

func newConsumer(b *Bus, plugin, name string) *Consumer {
	ctx, cancel := context.WithCancel(context.Background())
	return &Consumer{
		b:         b,
		plugin:    plugin,
		name:      name,
		rname:     name + "@" + b.replica,
		key:       plugin + "\x00" + name,
		inbox:     b.keys.inbox(plugin),
		bytes:     b.keys.bytes(plugin),
		dead:      b.keys.dead(plugin),
		live:      b.keys.live(plugin),
		cancelled: make(chan string, b.opts.Prefetch),
		kick:      make(chan struct{}, 1),
		bc:        &blockConn{rdb: b.blk},
		ctx:       ctx,
		cancelCtx: cancel,
		stop:      make(chan struct{}),
		loopDone:  make(chan struct{}),
		inflight:  make(map[string]*flight),
	}
}

// open makes sure the inbox and its group exist, adopts the pending entries of earlier
// sessions of this instance and joins the live set, in one round trip.
func (c *Consumer) open(ctx context.Context) error {
	pipe := c.b.rdb.Pipeline()
	create := pipe.XGroupCreateMkStream(ctx, c.inbox, group, "0")
	adopt := scriptAdopt.EvalSha(ctx, pipe, []string{c.inbox}, group, c.rname, c.name)
	c.refreshLive(ctx, pipe, time.Now())
	_, _ = pipe.Exec(ctx)
	if err := create.Err(); err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return c.b.wrapErr("consume", err)
	}
	err := adopt.Err()
	if isNoScript(err) {
		err = scriptAdopt.Run(ctx, c.b.rdb, []string{c.inbox}, group, c.rname, c.name).Err()
	}
	return c.b.wrapErr("consume", err)
}

// Next returns the next delivery (see bus.Consumer).
func (c *Consumer) Next(ctx context.Context) (bus.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return bus.Delivery{}, err
	}
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return bus.Delivery{}, bus.ErrClosed
		}
		now := time.Now()
		got, skipped := c.takeReadyLocked(now)
		var wake chan struct{}
		if got == nil {
			c.waiting++
			if c.wake == nil {
				c.wake = make(chan struct{})
			}
			wake = c.wake
		}
		c.mu.Unlock()
		if got == nil || len(skipped) > 0 {
			c.kickLoop() // fetch for this call, or slots were freed
		}

		if len(skipped) > 0 {
			c.settleSkipped(ctx, skipped)
		}
		if got != nil {
			if now.Sub(got.touched) > c.b.timing.stale && !c.restart(ctx, got.d.Tag) {
				continue // claimed by another consumer meanwhile
			}
			return got.d, nil
		}
		var err error
		select {
		case <-wake:
		case <-ctx.Done():
			err = ctx.Err()
		case <-c.stop:
			err = bus.ErrClosed
		}
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
		if err != nil {
			return bus.Delivery{}, err
		}
	}
}

// takeReadyLocked hands out the oldest fetched delivery, while the consumer holds fewer than
// Prefetch; it returns the tags of the fetched ones it skipped (expired or cancelled: the
// caller settles them). c.mu must be held.
func (c *Consumer) takeReadyLocked(now time.Time) (got *ahead, skipped []string) {
	for got == nil && len(c.inflight) < c.b.opts.Prefetch && len(c.ready) > 0 {
		a := c.ready[0]
		c.ready[0] = nil
		c.ready = c.ready[1:]
		if a.d.Expired(now) || c.b.isCancelled(c.plugin, a.d.ID, now) {
			skipped = append(skipped, a.d.Tag)
			continue
		}
		got = a
		c.inflight[a.d.Tag] = &flight{msgID: a.d.ID, visible: a.touched.Add(c.b.opts.ProcessingTimeout), size: a.size}
	}
	return got, skipped
}

// TryNext returns the delivery Next would return at once, or ok false when Next would wait
// (nothing fetched is ready, or the consumer holds Prefetch unsettled deliveries): a caller
// takes the deliveries fetched together (read-ahead) in a row, without a blocking call
// each. It makes a round trip only for what Next would make one for (skipped entries, a
// stale one).
func (c *Consumer) TryNext() (d bus.Delivery, ok bool, err error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return bus.Delivery{}, false, bus.ErrClosed
		}
		now := time.Now()
		got, skipped := c.takeReadyLocked(now)
		c.mu.Unlock()
		if len(skipped) > 0 {
			c.kickLoop() // slots were freed
			c.settleSkipped(c.ctx, skipped)
		}
		if got == nil {
			return bus.Delivery{}, false, nil
		}
		if now.Sub(got.touched) > c.b.timing.stale && !c.restart(c.ctx, got.d.Tag) {
			continue // claimed by another consumer meanwhile
		}
		return got.d, true, nil
	}
}

// Ack settles a delivery as done, in one scriptAckMany call with the other acknowledgements
// of this consumer waiting for the same pipeline (see ackQueue).
func (c *Consumer) Ack(ctx context.Context, tag string) error {
	return wait(ctx, func(done func(error)) { c.AckAsync(tag, done) })
}

// AckAsync acknowledges the delivery under tag without waiting (bus.AsyncSettler): it goes
// with the acknowledgements of this consumer waiting for the same pipeline (see ackQueue).
func (c *Consumer) AckAsync(tag string, done func(error)) {
	size, err := c.startSettle(tag, "ack")
	if err != nil {
		done(err)
		return
	}
	c.acks.add(c, pendingAck{tag: tag, size: size, done: func(n int64, err error) {
		err = c.settled(tag, "ack", n, err)
		c.settling.Done()
		done(err)
	}})
}

// wait runs start, which calls done once (at once or from another goroutine), and returns
// what done was given, or ctx.Err() when ctx ends first.
func wait(ctx context.Context, start func(done func(error))) error {
	ch := make(chan error, 1)
	start(func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ackQueue gathers a consumer's acknowledgements until the settles batcher builds its next
// pipeline: then all of them go in one scriptAckMany call, instead of a script call (with
// its XPENDING, XACK, XDEL and DECRBY) each.
type ackQueue struct {
	mu      sync.Mutex
	pending []pendingAck
	queued  bool // a call is in the batcher's queue for them
}

type pendingAck struct {
	tag, size string
	// done is called once with the script's answer for the entry (1 acknowledged, 0 not
	// held) or the call's error; it must not block.
	done func(n int64, err error)
}

// add queues a, and a call for the queue unless one waits already.
func (q *ackQueue) add(c *Consumer, a pendingAck) {
	q.mu.Lock()
	q.pending = append(q.pending, a)
	queue := !q.queued
	q.queued = true
	q.mu.Unlock()
	if !queue {
		return
	}
	var taken []pendingAck
	take := func() {
		q.mu.Lock()
		taken, q.pending, q.queued = q.pending, nil, false
		q.mu.Unlock()
	}
	prepared := false
	c.b.settles.add(&batchCall{
		ctx: context.Background(), // each Ack waits on its own context
		s:   scriptAckMany,
		prepare: func() ([]string, []any, bool) {
			prepared = true
			take()
			args := make([]any, 0, 2+2*len(taken))
			args = append(args, group, c.rname)
			for _, a := range taken {
				args = append(args, a.tag, a.size)
			}
			return []string{c.inbox, c.bytes}, args, len(taken) > 0
		},
		done: func(cmd *redis.Cmd) {
			if !prepared {
				take() // failed before its pipeline (the bus closed): so do they
			}
			res, err := cmd.Int64Slice()
			if err == nil && len(res) != len(taken) {
				err = errUnexpected
			}
			for i, a := range taken {
				var n int64
				if err == nil {
					n = res[i]
				}
				a.done(n, err)
			}
		},
	})
}

// AckReply sends r to the replica at to and acknowledges the message delivered under tag,
// in one round trip instead of the two of Bus.Reply and Ack, and waits for it (see
// AckReplyAsync). It is not part of bus.Consumer.
func (c *Consumer) AckReply(ctx context.Context, tag, to string, r bus.Reply) error {
	return wait(ctx, func(done func(error)) { c.AckReplyAsync(tag, to, r, done) })
}

// AckReplyAsync sends r to the replica at to and acknowledges the message delivered under
// tag, in one round trip, without waiting (bus.AsyncSettler). The reply is sent even when
// this consumer no longer holds the delivery (done gets bus.ErrUnknownDelivery then): the
// work is done and its sender may still wait. A reply to this replica, once its replies are
// dispatched, is handed to the dispatcher before AckReplyAsync returns and then
// acknowledged: the waiter does not wait for the round trip (see Bus.Reply).
func (c *Consumer) AckReplyAsync(tag, to string, r bus.Reply, done func(error)) {
	if to == c.b.replica {
		if fn := c.b.dispatch.Load(); fn != nil {
			// The waiter is in this process: it has the reply before the acknowledgement's
			// round trip, and the reply needs no trip through Redis (see Bus.Reply).
			(*fn)(r)
			c.AckAsync(tag, done)
			return
		}
	}
	size, err := c.startSettle(tag, "ack")
	if err != nil {
		// Not held here any more (timed out, handed on, closed): the work is done and its
		// sender may still wait, so the reply goes out all the same.
		go func(held error) {
			ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			defer cancel()
			if err := c.b.Reply(ctx, to, r); err != nil {
				held = err
			}
			done(held)
		}(err)
		return
	}
	c.b.settles.add(&batchCall{
		ctx:  context.Background(), // the reply is made: it goes even if its session ends
		s:    scriptAckReply,
		keys: []string{c.inbox, c.b.keys.reply(to), c.bytes},
		args: []any{group, c.rname, tag, appendReply(nil, &r), replyMaxLen, replyTTL.Milliseconds(), size},
		done: func(cmd *redis.Cmd) {
			n, err := cmd.Int64()
			err = c.settled(tag, "ack", n, err)
			c.settling.Done()
			done(err)
		},
	})
}

// Extend keeps the delivery from being redelivered for d from now. A d shorter than the
// processing timeout shortens it (XCLAIM IDLE); a longer one is kept by the loop, which
// touches the entry again before it would become claimable, until d has passed.
func (c *Consumer) Extend(ctx context.Context, tag string, d time.Duration) error {
	if _, err := c.holding(tag, "extend"); err != nil {
		return err
	}
	pt := c.b.opts.ProcessingTimeout
	idle := max(pt-d, 0)
	now := time.Now()
	c.mu.Lock()
	if f := c.inflight[tag]; f != nil && idle == 0 && f.visible.Sub(now) > c.b.timing.refresh {
		// Longer than the processing timeout, and the entry was touched recently (its
		// refresh is not due yet): nothing to tell Redis now. The loop touches it before it
		// would become claimable, until d has passed. This spares the host a round trip
		// per message whose deadline is beyond the processing timeout.
		f.until = now.Add(d)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	held, err := c.touch(ctx, []string{tag}, []int64{idle.Milliseconds()})
	if err != nil {
		return c.b.wrapErr("extend", err)
	}
	if !held[0] {
		c.forget(tag)
		return fmt.Errorf("busredis: extend %q: %w", tag, bus.ErrUnknownDelivery)
	}
	c.mu.Lock()
	if f := c.inflight[tag]; f != nil {
		f.visible = now.Add(pt - idle)
		f.until = now.Add(d)
	}
	c.mu.Unlock()
	c.kickLoop() // it may have to touch it sooner than it planned
	return nil
}

// DeadLetter settles a delivery by moving it to the dead-letter stream with reason.
func (c *Consumer) DeadLetter(ctx context.Context, tag, reason string) error {
	if _, err := c.holding(tag, "dead-letter"); err != nil {
		return err
	}
	keys := []string{c.inbox, c.dead, c.bytes}
	n, err := scriptDeadLetter.Run(ctx, c.b.rdb, keys, group, c.rname, tag, reason,
		time.Now().UnixMilli(), c.b.opts.MaxDeadLetters).Int64()
	return c.settled(tag, "dead-letter", n, err)
}

// Cancelled reports the tags of this consumer's in-flight messages that their senders
// cancelled. It is never closed; a tag that does not fit in its buffer (Prefetch) is
// dropped.
func (c *Consumer) Cancelled() <-chan string { return c.cancelled }

// Close ends the consumer: its unsettled deliveries, and the entries it fetched for Next
// calls that gave up, are handed back at once (see scriptHandback) and the other consumers
// of the inbox are told to take them. Closing again is a no-op.
func (c *Consumer) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.signalLocked()
		c.mu.Unlock()
		close(c.stop)
		c.cancelCtx()
		// Wait for the loop, so that it fetches nothing after the hand-back.
		if !interrupt(c.bc, c.loopDone, c.b.timing.block+closeTimeout) {
			c.b.log.Warn("busredis: consumer loop did not stop in time", "plugin", c.plugin, "consumer", c.name)
		}
		// And for the settles sent without waiting, so that an acknowledged delivery is not
		// handed back (and delivered again). No settle starts any more (closed is set).
		if !waitGroupTimeout(&c.settling, closeTimeout) {
			c.b.log.Warn("busredis: consumer settles did not finish in time", "plugin", c.plugin, "consumer", c.name)
		}

		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		rec := appendNotice(nil, noticeHandback, &bus.Envelope{Target: c.plugin, Source: c.b.replica})
		keys := []string{c.inbox, c.live, c.b.keys.notices()}
		n, err := scriptHandback.Run(ctx, c.b.rdb, keys, group, c.rname, handbackIdle.Milliseconds(), rec, noticesMaxLen).Int64()
		c.b.unregister(c)
		c.mu.Lock()
		c.ready = nil
		clear(c.inflight)
		c.mu.Unlock()
		if err != nil {
			c.b.log.Warn("busredis: consumer could not hand its deliveries back; they time out instead",
				"plugin", c.plugin, "consumer", c.name, "err", err)
			c.closeErr = c.b.wrapErr("close consumer", err)
			return
		}
		if n > 0 {
			c.b.wakeConsumers(c.plugin, c)
		}
	})
	return c.closeErr
}

// abandon ends a consumer whose loop never started and that holds nothing (open failed).
func (c *Consumer) abandon() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.stop)
		close(c.loopDone)
		c.cancelCtx()
		c.b.unregister(c)
	})
}

// run is the loop. While Next calls wait, it fetches for them: first this consumer's own
// pending entries, then, oldest first, entries idle past the processing timeout
// (periodically, whenever a read found nothing, and when told of a hand-back) and new
// entries (XREADGROUP BLOCK), never more than the free prefetch slots. Meanwhile it touches
// the extended deliveries that must not time out yet. It retries with backoff when Redis
// fails and makes the group again when it is gone.
func (c *Consumer) run() {
	defer c.b.wg.Done()
	defer close(c.loopDone)
	defer c.bc.reset()
	var bo backoff
	own, ownStart := true, "-"
	var nextClaim time.Time // zero: look for idle entries now
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		now := time.Now()
		refreshIn, err := c.refresh(now)
		want, claimNow := c.demand()
		switch {
		case err != nil:
		case want == 0:
			c.idle(refreshIn)
			continue
		case own:
			ownStart, _, err = c.claim("own", ownStart, want)
			own = err != nil || ownStart != "0-0"
		case claimNow || !now.Before(nextClaim):
			var n int
			_, n, err = c.claim("idle", "-", want)
			nextClaim = now.Add(c.b.timing.claimEvery)
			if n == want {
				nextClaim = time.Time{} // there may be more
			}
		default:
			var n int
			block := min(c.b.timing.block, max(refreshIn, minBlock), max(time.Until(nextClaim), minBlock))
			n, err = c.read(want, block)
			if err == nil && n == 0 {
				nextClaim = time.Time{} // idle: look for timed-out entries
			}
		}
		if err == nil {
			if bo.ok() {
				c.b.log.Info("busredis: consumer reconnected", "plugin", c.plugin, "consumer", c.name)
			}
			continue
		}
		if c.ctx.Err() != nil {
			return
		}
		if isNoGroup(err) {
			// Purged, or Redis restarted without its data: make the group again.
			err = c.b.rdb.XGroupCreateMkStream(c.ctx, c.inbox, group, "0").Err()
			if err == nil || redis.HasErrorPrefix(err, "BUSYGROUP") {
				continue
			}
		}
		if bo.fail() {
			c.b.log.Warn("busredis: consumer lost redis; retrying", "plugin", c.plugin, "consumer", c.name, "err", err)
		}
		if isConnErr(err) {
			c.bc.reset()
		}
		if !bo.wait(c.stop) {
			return
		}
	}
}

// readAhead is how many entries one fetch may take beyond the waiting Next calls, within the
// free prefetch slots: a consumer that keeps calling Next (a busy plugin instance) then
// pays one round trip per batch instead of one per entry. An idle consumer (no Next
// waiting) fetches nothing, so it never hoards entries other consumers could take.
const readAhead = 16

// demand returns how many entries to fetch: for the waiting Next calls that fetched
// entries will not serve, plus read-ahead, within the free prefetch slots. When there is
// demand it also takes the claimNow flag.
func (c *Consumer) demand() (want int, claimNow bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	free := c.b.opts.Prefetch - len(c.inflight) - len(c.ready)
	if c.waiting-len(c.ready) <= 0 {
		return 0, false
	}
	want = min(c.waiting-len(c.ready)+readAhead, free)
	if want <= 0 {
		return 0, false
	}
	claimNow, c.claimNow = c.claimNow, false
	return want, claimNow
}

// idle waits until the loop is kicked, a touch is due (after d), or Close.
func (c *Consumer) idle(d time.Duration) {
	t := time.NewTimer(max(d, minBlock))
	defer t.Stop()
	select {
	case <-c.kick:
	case <-t.C:
	case <-c.stop:
	}
}

// kickLoop tells the loop to look at its state again.
func (c *Consumer) kickLoop() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// claim runs scriptClaim and buffers what it returns. It returns the next start and how
// many entries it claimed (dead-lettered and expired ones included).
func (c *Consumer) claim(mode, start string, count int) (string, int, error) {
	o := c.b.opts
	res, err := scriptClaim.Run(c.ctx, c.b.rdb, []string{c.inbox, c.dead, c.bytes}, group, c.rname, mode,
		o.ProcessingTimeout.Milliseconds(), start, count, o.MaxAttempts, time.Now().UnixMilli(), o.MaxDeadLetters).Slice()
	if err != nil {
		return start, 0, err
	}
	if len(res) != 3 {
		return start, 0, errUnexpected
	}
	next, _ := res[0].(string)
	flat, _ := res[1].([]any)
	claimed, _ := res[2].(int64)
	now := time.Now()
	batch := make([]fetched, 0, len(flat)/3)
	for i := 0; i+2 < len(flat); i += 3 {
		id, _ := flat[i].(string)
		raw, _ := flat[i+1].(string)
		n, _ := flat[i+2].(int64)
		batch = append(batch, fetched{id: id, raw: raw, attempt: int(n)})
	}
	c.add(batch, now)
	return next, int(claimed), nil
}

// read reads up to count new entries, blocking for at most block.
func (c *Consumer) read(count int, block time.Duration) (int, error) {
	conn, err := c.bc.get(c.ctx)
	if err != nil {
		return 0, err
	}
	res, err := conn.XReadGroup(c.ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: c.rname, Streams: []string{c.inbox, ">"}, Count: int64(count), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	now := time.Now()
	var batch []fetched
	for _, s := range res {
		for _, m := range s.Messages {
			batch = append(batch, fetched{id: m.ID, raw: stringField(m.Values, "e"), size: stringField(m.Values, "s"), attempt: 1})
		}
	}
	c.add(batch, now)
	return len(batch), nil
}

// fetched is an inbox entry one fetch returned: its id, envelope record, size field ("" when
// the fetch does not give it) and delivery count.
type fetched struct {
	id, raw, size string
	attempt       int
}

// add buffers the deliveries of one fetch for the waiting Next calls, all at once (so that
// TryNext sees a fetch whole). An entry that cannot be decoded is dead-lettered.
func (c *Consumer) add(batch []fetched, now time.Time) {
	ready := make([]*ahead, 0, len(batch))
	for _, f := range batch {
		env, err := decodeEnvelope([]byte(f.raw))
		if err != nil {
			c.b.log.Warn("busredis: undecodable inbox entry; dead-lettering it", "plugin", c.plugin, "id", f.id)
			err = scriptDeadLetter.Run(c.ctx, c.b.rdb, []string{c.inbox, c.dead, c.bytes}, group, c.rname, f.id,
				"undecodable entry", now.UnixMilli(), c.b.opts.MaxDeadLetters).Err()
			if err != nil {
				c.b.log.Warn("busredis: dead-lettering an undecodable entry failed", "plugin", c.plugin, "id", f.id, "err", err)
			}
			continue
		}
		ready = append(ready, &ahead{d: bus.Delivery{Envelope: env, Tag: f.id, Attempt: f.attempt}, touched: now, size: f.size})
	}
	if len(ready) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return // Close hands them back
	}
	for _, a := range ready {
		// This consumer's own delivery timed out and came back: the old one is superseded.
		delete(c.inflight, a.d.Tag)
	}
	c.ready = append(c.ready, ready...)
	c.signalLocked()
}

// restart resets the idle time of a delivery fetched a while ago (for a Next call that
// gave up; a later one takes it), so that its processing timeout starts now. It reports
// false when the consumer no longer holds it.
func (c *Consumer) restart(ctx context.Context, tag string) bool {
	held, err := c.touch(ctx, []string{tag}, []int64{0})
	if err != nil {
		return true // keep it: at worst it times out early
	}
	if !held[0] {
		c.forget(tag)
		return false
	}
	c.mu.Lock()
	if f := c.inflight[tag]; f != nil {
		f.visible = time.Now().Add(c.b.opts.ProcessingTimeout)
	}
	c.mu.Unlock()
	return true
}

// refresh touches the extended deliveries that would otherwise become claimable soon. It
// returns when the next touch is due.
func (c *Consumer) refresh(now time.Time) (time.Duration, error) {
	pt := c.b.opts.ProcessingTimeout
	window := c.b.timing.refresh
	next := c.b.timing.block
	var ids []string
	var idles []int64
	c.mu.Lock()
	for tag, f := range c.inflight {
		if f.until.IsZero() || !f.visible.Before(f.until) {
			continue
		}
		if due := f.visible.Sub(now) - window; due > 0 {
			next = min(next, due)
			continue
		}
		ids = append(ids, tag)
		idles = append(idles, max(pt-f.until.Sub(now), 0).Milliseconds())
	}
	c.mu.Unlock()
	if len(ids) == 0 {
		return next, nil
	}
	held, err := c.touch(c.ctx, ids, idles)
	if err != nil {
		return next, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, id := range ids {
		f := c.inflight[id]
		switch {
		case f == nil:
		case !held[i]:
			delete(c.inflight, id) // claimed by another consumer: its Ack will say so
			c.signalLocked()
		default:
			f.visible = now.Add(pt - time.Duration(idles[i])*time.Millisecond)
		}
	}
	return next, nil
}

// touch runs scriptTouch: it sets the idle time of the held ids and reports which are held.
func (c *Consumer) touch(ctx context.Context, ids []string, idles []int64) ([]bool, error) {
	args := make([]any, 0, 2+2*len(ids))
	args = append(args, group, c.rname)
	for i, id := range ids {
		args = append(args, id, idles[i])
	}
	res, err := scriptTouch.Run(ctx, c.b.rdb, []string{c.inbox}, args...).Int64Slice()
	if err != nil {
		return nil, err
	}
	if len(res) != len(ids) {
		return nil, errUnexpected
	}
	held := make([]bool, len(res))
	for i, v := range res {
		held[i] = v == 1
	}
	return held, nil
}

// settleSkipped acknowledges entries Next skipped (expired or cancelled), in one round trip
// (see scriptSkip).
func (c *Consumer) settleSkipped(ctx context.Context, tags []string) {
	args := make([]any, 0, 1+len(tags))
	args = append(args, group)
	for _, t := range tags {
		args = append(args, t)
	}
	if err := scriptSkip.Run(ctx, c.b.rdb, []string{c.inbox, c.bytes}, args...).Err(); err != nil {
		// They stay pending, time out, and are skipped again by whoever claims them.
		c.b.log.Debug("busredis: acknowledging skipped entries failed", "plugin", c.plugin, "err", err)
	}
}

// startSettle checks that tag names a delivery this consumer holds and counts a settle
// in progress (settling), which its caller ends with c.settling.Done.
func (c *Consumer) startSettle(tag, op string) (size string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	size, err = c.holdingLocked(tag, op)
	if err == nil {
		c.settling.Add(1)
	}
	return size, err
}

// holding checks that tag names a delivery this consumer holds.
func (c *Consumer) holding(tag, op string) (size string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.holdingLocked(tag, op)
}

// holdingLocked is holding with c.mu held.
func (c *Consumer) holdingLocked(tag, op string) (size string, err error) {
	if c.closed {
		return "", bus.ErrClosed
	}
	f := c.inflight[tag]
	if f == nil {
		return "", fmt.Errorf("busredis: %s %q: %w", op, tag, bus.ErrUnknownDelivery)
	}
	return f.size, nil
}

// settled ends a settle call: n is the script's answer (1 done, 0 not held).
func (c *Consumer) settled(tag, op string, n int64, err error) error {
	if err != nil {
		return c.b.wrapErr(op, err)
	}
	c.forget(tag)
	if n != 1 {
		return fmt.Errorf("busredis: %s %q: %w", op, tag, bus.ErrUnknownDelivery)
	}
	return nil
}

// forget drops a delivery from the in-flight set, freeing its slot.
func (c *Consumer) forget(tag string) {
	c.mu.Lock()
	_, ok := c.inflight[tag]
	if ok {
		delete(c.inflight, tag)
		c.signalLocked()
	}
	c.mu.Unlock()
	if ok {
		c.kickLoop()
	}
}

// forgetAll drops every delivery (the inbox was purged).
func (c *Consumer) forgetAll() {
	c.mu.Lock()
	clear(c.ready)
	c.ready = nil
	clear(c.inflight)
	c.signalLocked()
	c.mu.Unlock()
	c.kickLoop()
}

// cancel reports the in-flight delivery of message id, if any, on Cancelled. Fetched
// entries not handed out yet are skipped by Next.
func (c *Consumer) cancel(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for tag, f := range c.inflight {
		if f.msgID == id {
			select {
			case c.cancelled <- tag:
			default:
			}
		}
	}
}

// claimSoon makes the loop look for idle entries (handed back by a closing consumer) now,
// ending its blocking read.
func (c *Consumer) claimSoon() {
	c.mu.Lock()
	c.claimNow = true
	c.mu.Unlock()
	c.kickLoop()
	c.bc.unblock()
}

// refreshLive adds to pipe the commands that keep this consumer in the live set and drop
// the members that expired.
func (c *Consumer) refreshLive(ctx context.Context, pipe redis.Pipeliner, now time.Time) {
	pipe.ZAdd(ctx, c.live, redis.Z{Score: float64(now.Add(liveTTL).UnixMilli()), Member: c.rname})
	pipe.ZRemRangeByScore(ctx, c.live, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	pipe.PExpire(ctx, c.live, 3*liveTTL)
}

// signalLocked wakes the Next calls that wait. c.mu must be held.
func (c *Consumer) signalLocked() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}

// waitGroupTimeout waits for wg for at most d and reports whether it is done.
func waitGroupTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
