package busredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// Tuning constants; see the package documentation.
const (
	// group is the name of the consumer group of every inbox.
	group = "nexus"
	// readerBlock bounds each blocking read of the reply and notice readers.
	readerBlock = 2 * time.Second
	// maxBlock bounds each blocking read of a consumer, so that it looks for timed-out
	// entries of other consumers at least that often.
	maxBlock = time.Second
	// minBlock is the shortest blocking read of a consumer (tiny processing timeouts).
	minBlock = 10 * time.Millisecond
	// liveTTL is how long a consumer counts as live after its last refresh; liveRefresh is
	// how often open consumers refresh it.
	liveTTL     = 10 * time.Second
	liveRefresh = 3 * time.Second
	// liveRemember is how long Live remembers that a plugin has a consumer on another
	// replica, at most (a consumer's entry says itself until when it counts).
	liveRemember = time.Second
	// replyTTL is how long a reply stream lives after its last reply; replyMaxLen bounds it
	// (approximately).
	replyTTL    = 5 * time.Minute
	replyMaxLen = 10000
	// noticesMaxLen bounds the notices stream (approximately).
	noticesMaxLen = 10000
	// handbackIdle is the idle time Close gives the entries it hands back: far above any
	// processing timeout and below the time since the Unix epoch (Redis ignores larger).
	handbackIdle = 10 * 365 * 24 * time.Hour
	// maxCancels bounds the cancellations a bus remembers.
	maxCancels = 100000
	// repliesBuffer is the buffer of the Replies channel.
	repliesBuffer = 1024
	// closeTimeout bounds each Redis call made while closing.
	closeTimeout = 3 * time.Second
	// blockingPoolSize bounds the connections of the blocking-read client: one per open
	// consumer, and three for the readers.
	blockingPoolSize = 10000
)

// Config configures a Redis bus. URL is required; New validates the rest once.
type Config struct {
	// URL is the Redis URL: redis://[[user]:password@]host:port[/db][?option=value...]
	// (rediss:// for TLS). go-redis URL options (pool_size, dial_timeout, read_timeout,
	// max_retries, ...) override the defaults of this package: dial timeout 1s, read and
	// write timeouts 3s, one retry, and a pool of 10 connections per CPU plus 64 for the
	// calls of the bus (blocking reads use a client of their own, see the package doc).
	URL string
	// Prefix starts every key of the bus (default "nexus:"). Buses that share a Redis and a
	// Prefix are replicas of one bus; different prefixes are independent buses.
	Prefix string
	// Options tune the bus; zero values take the defaults of bus.Options. Every replica of
	// one bus must use the same Options.
	Options bus.Options
	// Logger receives what the bus cannot return to a caller (a reader losing Redis, a
	// record it cannot decode). Nil discards.
	Logger *slog.Logger
	// Replica is this bus's replica address (Replica), which names its reply and relay
	// streams and its consumers: at most 64 letters, digits, '-' and '_', unique among the
	// live replicas of the bus. A server gives its replica id, the same across its
	// restarts (see the package documentation for what a restarted replica finds). Empty:
	// 16 random hex digits, new for each bus.
	Replica string
}

// validReplica is the form of Config.Replica: it is part of Redis keys and of consumer
// names ("{instance}@{replica}", which scriptAdopt takes apart).
var validReplica = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Bus is the Redis Streams bus.Bus. It is safe for concurrent use.
type Bus struct {
	// Set once by New, read-only afterwards.
	opts    bus.Options
	log     *slog.Logger
	rdb     *redis.Client // commands, pipelines and scripts
	blk     *redis.Client // blocking reads, one connection per reader (see blockConn)
	keys    keys
	replica string
	timing  timing

	ctx    context.Context    // ends when Close starts; bounds background work
	cancel context.CancelFunc // cancels ctx
	closed atomic.Bool        // set once by Close, before ctx is cancelled
	wg     sync.WaitGroup     // the readers, the housekeeper and every consumer loop

	replies chan bus.Reply // written only by the reply reader; closed by Close after it exits
	// dispatch, once set, receives replies on the reply reader instead of replies.
	dispatch     atomic.Pointer[func(bus.Reply)]
	replyConn    *blockConn
	noticeConn   *blockConn
	replyDone    chan struct{} // closed when the reply reader exits
	noticeDone   chan struct{} // closed when the notice reader exits
	noticeLastID string        // where the notice reader starts; set by New
	replyLastID  string        // where the reply reader starts; set by New

	mu        sync.Mutex           // guards consumers
	consumers map[string]*Consumer // open consumers of this replica by Consumer.key

	// remoteLive remembers, per plugin, until when a consumer on another replica counts as
	// live (Live): a message to a plugin elsewhere would otherwise cost a round trip before
	// its publish. Guarded by liveMu; swept by housekeep.
	liveMu     sync.Mutex
	remoteLive map[string]time.Time

	cancelMu sync.RWMutex         // guards cancels
	cancels  map[string]time.Time // cancelled messages (cancelKey) → when to forget them

	watchers *bus.Watchers

	relay *relay // the relay between replicas (relay.go)

	// pubs runs the publishes in pipelines, in the order they were made; settles runs the
	// acknowledgements (batcher.go).
	pubs, settles *batcher
	pubMu         sync.Mutex
	pubQueues     map[string]*pubQueue // by target plugin (PublishAsync)
}

var _ bus.Bus = (*Bus)(nil)

// timing holds the durations derived from Options.
type timing struct {
	block      time.Duration // a consumer's blocking read
	claimEvery time.Duration // how often a busy consumer looks for timed-out entries
	refresh    time.Duration // refresh a held entry when it would become claimable within this
	stale      time.Duration // an entry fetched longer ago (for a Next call that gave up) is touched again before Next returns it
}

func newTiming(pt time.Duration) timing {
	third := min(max(pt/3, minBlock), maxBlock)
	return timing{
		block:      third,
		claimEvery: third,
		refresh:    pt - pt/3, // a third of the timeout after the last touch
		stale:      max(pt/20, 20*time.Millisecond),
	}
}

// Ping reports whether Redis answers (bus.Pinger), with bus.ErrUnavailable when it does
// not.
func (b *Bus) Ping(ctx context.Context) error {
	return b.wrapErr("ping", b.rdb.Ping(ctx).Err())
}

// New connects to Redis and starts the bus. It fails (with bus.ErrUnavailable) when Redis
// cannot be reached. ctx bounds the connection attempt only.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.URL == "" {
		return nil, errors.New("busredis: Config.URL is required")
	}
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("busredis: Config.URL: %w", err)
	}
	applyDefaults(opt, cfg.URL)
	if cfg.Prefix == "" {
		cfg.Prefix = "nexus:"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Replica == "" {
		cfg.Replica = newReplicaID()
	} else if !validReplica.MatchString(cfg.Replica) {
		return nil, fmt.Errorf("busredis: Config.Replica %q: want 1 to 64 letters, digits, '-' or '_'", cfg.Replica)
	}
	opts := cfg.Options.WithDefaults()

	blkOpt := *opt
	blkOpt.PoolSize = blockingPoolSize
	blkOpt.MaxRetries = -1 // a blocking read is never repeated: see Consumer
	blkOpt.PoolTimeout = closeTimeout

	b := &Bus{
		opts:       opts,
		log:        cfg.Logger,
		rdb:        redis.NewClient(opt),
		blk:        redis.NewClient(&blkOpt),
		keys:       keys{prefix: cfg.Prefix},
		replica:    cfg.Replica,
		timing:     newTiming(opts.ProcessingTimeout),
		replies:    make(chan bus.Reply, repliesBuffer),
		consumers:  make(map[string]*Consumer),
		cancels:    make(map[string]time.Time),
		remoteLive: make(map[string]time.Time),
		pubQueues:  make(map[string]*pubQueue),
		watchers:   bus.NewWatchers(opts.WatchBuffer),
	}
	b.replyConn = &blockConn{rdb: b.blk}
	b.noticeConn = &blockConn{rdb: b.blk}
	b.replyDone = make(chan struct{})
	b.noticeDone = make(chan struct{})
	b.relay = newRelay(b.blk)
	b.pubs, b.settles = newBatcher(b.rdb), newBatcher(b.rdb)

	// One round trip: check Redis, load the scripts (so that pipelines can use EVALSHA) and
	// find where the notices stream and this replica's reply stream end (their readers
	// start there: a reply already in the stream was sent to an earlier bus with the same
	// Replica, and nothing of this one waits for it).
	pipe := b.rdb.Pipeline()
	for _, s := range allScripts {
		s.load(ctx, pipe)
	}
	lastNotice := pipe.XRevRangeN(ctx, b.keys.notices(), "+", "-", 1)
	lastReply := pipe.XRevRangeN(ctx, b.keys.reply(b.replica), "+", "-", 1)
	if _, err := pipe.Exec(ctx); err != nil {
		_ = b.rdb.Close()
		_ = b.blk.Close()
		return nil, b.wrapErr("connect", err)
	}
	b.noticeLastID, b.replyLastID = "0-0", "0-0"
	if msgs := lastNotice.Val(); len(msgs) > 0 {
		b.noticeLastID = msgs[0].ID
	}
	if msgs := lastReply.Val(); len(msgs) > 0 {
		b.replyLastID = msgs[0].ID
	}

	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.wg.Add(5)
	go b.replyLoop()
	go b.noticeLoop()
	go b.housekeep()
	go b.relayLoop()
	go b.holdLoop()
	return b, nil
}

// applyDefaults sets the options the URL did not set to fail fast when Redis is down.
func applyDefaults(opt *redis.Options, rawURL string) {
	set := map[string]bool{}
	if u, err := url.Parse(rawURL); err == nil {
		for k := range u.Query() {
			set[k] = true
		}
	}
	if !set["dial_timeout"] {
		opt.DialTimeout = time.Second
	}
	if !set["read_timeout"] {
		opt.ReadTimeout = 3 * time.Second
	}
	if !set["write_timeout"] {
		opt.WriteTimeout = 3 * time.Second
	}
	if !set["max_retries"] {
		opt.MaxRetries = 1
	}
	if !set["pool_size"] {
		opt.PoolSize = 10*runtime.GOMAXPROCS(0) + 64
	}
	if !set["pool_timeout"] {
		opt.PoolTimeout = 2 * time.Second
	}
	opt.DialerRetries = 1
	opt.ContextTimeoutEnabled = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

// Publish appends env to the inbox of env.Target (see scriptPublish), in a pipeline with the
// publishes made at the same time (see batcher). An envelope whose deadline has passed
// succeeds and stores nothing; a zero SentAt is set to now.
func (b *Bus) Publish(ctx context.Context, env bus.Envelope) error {
	ch := make(chan error, 1)
	b.PublishAsync(ctx, env, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAsync queues env for Publish and returns at once; done is called once with what
// Publish would have returned, on another goroutine or (when env cannot be queued) before
// PublishAsync returns, and must not block. The envelopes queued by one goroutine are
// stored in the order queued (see bus.AsyncPublisher).
func (b *Bus) PublishAsync(ctx context.Context, env bus.Envelope, done func(error)) {
	if b.closed.Load() {
		done(bus.ErrClosed)
		return
	}
	now := time.Now()
	if env.Target == "" {
		done(errNoTarget)
		return
	}
	if env.Expired(now) {
		done(nil) // nothing to store
		return
	}
	if env.SentAt.IsZero() {
		env.SentAt = now
	}
	// The record is made now: env's data may be a view of a buffer its caller reuses.
	rec := appendEnvelope(make([]byte, 0, 64+len(env.ID)+len(env.Type)+len(env.Data)), &env)
	p := pendingPub{ctx: ctx, rec: rec, deadline: unixMilli(env.Deadline), size: env.Size(), done: done}
	if env.ID != "" {
		p.dedupe = b.keys.dedupe(env.Target, env.ID)
	}
	b.pubQueue(env.Target).add(b, env.Target, p)
}

// pubQueue is the queue of target's publishes waiting for their pipeline. The queues are
// kept for good (one per plugin published to; Purge forgets its plugin's).
func (b *Bus) pubQueue(target string) *pubQueue {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	q := b.pubQueues[target]
	if q == nil {
		q = &pubQueue{}
		b.pubQueues[target] = q
	}
	return q
}

// pubQueue gathers the publishes to one inbox until the publishes batcher builds its next
// pipeline: then they all go, in order, in one scriptPublish call, which reads the inbox's
// bounds and writes its byte count once for them.
type pubQueue struct {
	mu      sync.Mutex
	pending []pendingPub
	queued  bool // a call is in the batcher's queue for them
}

type pendingPub struct {
	ctx      context.Context
	rec      []byte // the envelope's record
	deadline int64  // unix ms, 0: none
	size     int    // bus.Envelope.Size
	dedupe   string // the dedupe key; "" without an ID
	done     func(error)
}

// add queues p, and a call for the queue unless one waits already.
func (q *pubQueue) add(b *Bus, target string, p pendingPub) {
	q.mu.Lock()
	q.pending = append(q.pending, p)
	queue := !q.queued
	q.queued = true
	q.mu.Unlock()
	if queue {
		q.queueCall(b, target)
	}
}

// maxPublishesPerCall bounds the envelopes of one scriptPublish call (the script holds Redis
// for their time); the rest go in the next call.
const maxPublishesPerCall = 256

// queueCall queues, in the publishes batcher, the call that takes the queue's publishes.
func (q *pubQueue) queueCall(b *Bus, target string) {
	var taken []pendingPub
	take := func(all bool) {
		q.mu.Lock()
		if all || len(q.pending) <= maxPublishesPerCall {
			taken, q.pending, q.queued = q.pending, nil, false
			q.mu.Unlock()
			return
		}
		taken = q.pending[:maxPublishesPerCall:maxPublishesPerCall]
		q.pending = slices.Clone(q.pending[maxPublishesPerCall:])
		q.mu.Unlock()
		q.queueCall(b, target) // queued stays set: the next call takes the rest, after these
	}
	prepared := false
	b.pubs.add(&batchCall{
		ctx: context.Background(), // each publish has its own context, checked below
		s:   scriptPublish,
		prepare: func() ([]string, []any, bool) {
			prepared = true
			take(false)
			// A publish whose caller gave up before its pipeline is left out.
			kept := taken[:0]
			for _, p := range taken {
				if err := p.ctx.Err(); err != nil {
					p.done(err)
					continue
				}
				kept = append(kept, p)
			}
			taken = kept
			now := time.Now()
			keys := []string{b.keys.inbox(target), b.keys.sweep(target), b.keys.bytes(target)}
			args := make([]any, 0, 5+4*len(taken))
			args = append(args, group, b.opts.DedupeWindow.Milliseconds(), b.opts.MaxInbox, now.UnixMilli(), b.opts.MaxInboxBytes)
			for _, p := range taken {
				hasDedupe := 0
				if p.dedupe != "" {
					keys = append(keys, p.dedupe)
					hasDedupe = 1
				}
				args = append(args, p.rec, p.deadline, p.size, hasDedupe)
			}
			return keys, args, len(taken) > 0
		},
		done: func(cmd *redis.Cmd) {
			if !prepared {
				take(true) // failed before its pipeline (the bus closed): so do they
			}
			res, err := cmd.Int64Slice()
			if err == nil && len(res) != len(taken) {
				err = errUnexpected
			}
			for i, p := range taken {
				var n int64
				if err == nil {
					n = res[i]
				}
				p.done(b.publishResult(target, n, err))
			}
		},
	})
}

// PublishAll publishes each envelope to its own target, in the pipelines of Publish.
func (b *Bus) PublishAll(ctx context.Context, envs []bus.Envelope) []error {
	errs := make([]error, len(envs))
	var wg sync.WaitGroup
	wg.Add(len(envs))
	for i := range envs {
		b.PublishAsync(ctx, envs[i], func(err error) {
			errs[i] = err
			wg.Done()
		})
	}
	wg.Wait()
	return errs
}

func (b *Bus) publishResult(target string, n int64, err error) error {
	if err != nil {
		return b.wrapErr("publish to "+target, err)
	}
	switch n {
	case 1, 2:
		return nil
	case 0:
		return fmt.Errorf("busredis: publish to %q: %w", target, bus.ErrInboxFull)
	}
	return fmt.Errorf("busredis: publish to %q: %w", target, errUnexpected)
}

// Consume opens the consumer named consumer on plugin's inbox. ctx bounds the call only;
// the consumer lives until it or the bus is closed. Opening a name that is open on this
// replica fails; an instance that reconnects to another replica takes its pending entries
// over (see the package documentation).
func (b *Bus) Consume(ctx context.Context, plugin, consumer string) (bus.Consumer, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	if plugin == "" || consumer == "" {
		return nil, errors.New("busredis: consume: plugin and consumer names are required")
	}
	c := newConsumer(b, plugin, consumer)
	b.mu.Lock()
	if _, open := b.consumers[c.key]; open {
		b.mu.Unlock()
		return nil, fmt.Errorf("busredis: consumer %q of %q is already open", consumer, plugin)
	}
	b.consumers[c.key] = c
	b.mu.Unlock()

	if err := c.open(ctx); err != nil {
		c.abandon()
		return nil, err
	}
	// Start the loop under mu, so that Close either sees the consumer with its loop, or
	// has begun before and the consumer never runs.
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		close(c.loopDone)
		_ = c.Close()
		return nil, bus.ErrClosed
	}
	b.wg.Add(1)
	go c.run()
	b.mu.Unlock()
	return c, nil
}

// Live reports whether plugin has a consumer open on any replica (refreshed within
// liveTTL). A consumer found on another replica is remembered for liveRemember at most, and
// never beyond the time its entry counts: a consumer that closed cleanly meanwhile (it left
// the live set at once) may still count for that second.
func (b *Bus) Live(ctx context.Context, plugin string) (bool, error) {
	if b.closed.Load() {
		return false, bus.ErrClosed
	}
	if len(b.localConsumers(plugin)) > 0 {
		return true, nil
	}
	now := time.Now()
	b.liveMu.Lock()
	until, ok := b.remoteLive[plugin]
	b.liveMu.Unlock()
	if ok && now.Before(until) {
		return true, nil
	}
	top, err := b.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: b.keys.live(plugin), Start: 0, Stop: 0, Rev: true}).Result()
	if err != nil {
		return false, b.wrapErr("live", err)
	}
	if len(top) == 0 {
		return false, nil
	}
	until = time.UnixMilli(int64(top[0].Score))
	if !until.After(now) {
		return false, nil
	}
	b.liveMu.Lock()
	if limit := now.Add(liveRemember); until.After(limit) {
		until = limit
	}
	b.remoteLive[plugin] = until
	b.liveMu.Unlock()
	return true, nil
}

// Cancel withdraws a message (see scriptCancel). This replica applies it at once; the
// others when their notice reader sees it.
func (b *Bus) Cancel(ctx context.Context, target, messageID string, until time.Time) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if messageID == "" || target == "" {
		return nil
	}
	now := time.Now()
	if limit := now.Add(b.opts.DedupeWindow); until.IsZero() || until.After(limit) {
		until = limit
	}
	b.applyCancel(target, messageID, until, now)
	rec := appendNotice(nil, bus.NoticeCancel, &bus.Envelope{ID: messageID, Target: target, Source: b.replica, Deadline: until})
	keys := []string{b.keys.inbox(target), b.keys.dedupe(target, messageID), b.keys.notices(), b.keys.bytes(target)}
	remember := max(until.Sub(now).Milliseconds(), 0)
	err := scriptCancel.Run(ctx, b.rdb, keys, group, remember, rec, noticesMaxLen).Err()
	return b.wrapErr("cancel", err)
}

// Replica returns this bus's reply address.
func (b *Bus) Replica() string { return b.replica }

// Reply appends r to the reply stream of the replica at to, in one round trip. A reply to
// this replica, once its replies are dispatched (DispatchReplies), is handed to the
// dispatcher at once instead: the waiter is in this process, and a reply is not kept for
// anyone else (it is not an acknowledged entry; if this replica dies, so does the waiter),
// so the round trip through Redis and the reply reader's wake-up would only add latency.
func (b *Bus) Reply(ctx context.Context, to string, r bus.Reply) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if to == b.replica {
		if fn := b.dispatch.Load(); fn != nil {
			(*fn)(r)
			return nil
		}
	}
	key := b.keys.reply(to)
	pipe := b.rdb.Pipeline()
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: replyMaxLen, Approx: true, Values: []any{"r", appendReply(nil, &r)}})
	pipe.PExpire(ctx, key, replyTTL)
	_, err := pipe.Exec(ctx)
	return b.wrapErr("reply", err)
}

// DispatchReplies hands every later reply to fn on the reply reader's goroutine (see
// bus.ReplyDispatcher); fn must not block.
func (b *Bus) DispatchReplies(fn func(bus.Reply)) { b.dispatch.Store(&fn) }

// Replies carries the replies addressed to this replica. Close closes it.
func (b *Bus) Replies() <-chan bus.Reply { return b.replies }

// Announce appends ev to the notices stream, read by every replica's watchers.
func (b *Bus) Announce(ctx context.Context, ev bus.Envelope) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	rec := appendNotice(nil, bus.NoticeEvent, &ev)
	err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: b.keys.notices(), MaxLen: noticesMaxLen, Approx: true, Values: []any{"n", rec}}).Err()
	return b.wrapErr("announce", err)
}

// DeadLetters returns up to limit of plugin's dead letters, newest first; limit <= 0
// returns them all.
func (b *Bus) DeadLetters(ctx context.Context, plugin string, limit int) ([]bus.DeadLetter, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	var cmd *redis.XMessageSliceCmd
	if limit > 0 {
		cmd = b.rdb.XRevRangeN(ctx, b.keys.dead(plugin), "+", "-", int64(limit))
	} else {
		cmd = b.rdb.XRevRange(ctx, b.keys.dead(plugin), "+", "-")
	}
	msgs, err := cmd.Result()
	if err != nil {
		return nil, b.wrapErr("dead letters", err)
	}
	out := make([]bus.DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		env, err := decodeEnvelope([]byte(stringField(m.Values, "e")))
		if err != nil {
			b.log.Warn("busredis: undecodable dead letter", "plugin", plugin, "id", m.ID)
		}
		n, _ := strconv.Atoi(stringField(m.Values, "n"))
		at, _ := strconv.ParseInt(stringField(m.Values, "t"), 10, 64)
		out = append(out, bus.DeadLetter{Envelope: env, Attempts: n, Reason: stringField(m.Values, "r"), At: time.UnixMilli(at)})
	}
	return out, nil
}

// Purge removes plugin's inbox, dead letters and dedupe memory. Consumers that are open stay
// open on the emptied inbox; their unsettled tags become unknown.
func (b *Bus) Purge(ctx context.Context, plugin string) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	b.pubMu.Lock()
	delete(b.pubQueues, plugin)
	b.pubMu.Unlock()
	// The inbox and its byte count go together (DEL of several keys is atomic).
	if err := b.rdb.Del(ctx, b.keys.inbox(plugin), b.keys.bytes(plugin), b.keys.dead(plugin), b.keys.sweep(plugin)).Err(); err != nil {
		return b.wrapErr("purge", err)
	}
	for _, c := range b.localConsumers(plugin) {
		c.forgetAll()
	}
	// Dedupe keys are one per envelope ID: find them with SCAN (uninstalling is rare).
	match := b.keys.dedupe(escapeGlob(plugin), "*")
	var cursor uint64
	for {
		ks, next, err := b.rdb.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			return b.wrapErr("purge", err)
		}
		if len(ks) > 0 {
			if err := b.rdb.Unlink(ctx, ks...).Err(); err != nil {
				return b.wrapErr("purge", err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// Depth reports how many entries of plugin's inbox are unacknowledged.
func (b *Bus) Depth(ctx context.Context, plugin string) (int, error) {
	if b.closed.Load() {
		return 0, bus.ErrClosed
	}
	// The stream holds exactly the unacknowledged entries (see scriptPublish).
	n, err := b.rdb.XLen(ctx, b.keys.inbox(plugin)).Result()
	if err != nil {
		return 0, b.wrapErr("depth", err)
	}
	return int(n), nil
}

// InboxStats returns the depth and dead-letter count of each plugin's inbox, read in one
// pipeline (bus.InboxStatser).
func (b *Bus) InboxStats(ctx context.Context, plugins []string) ([]bus.InboxStats, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	pipe := b.rdb.Pipeline()
	depth := make([]*redis.IntCmd, len(plugins))
	dead := make([]*redis.IntCmd, len(plugins))
	for i, p := range plugins {
		depth[i] = pipe.XLen(ctx, b.keys.inbox(p))
		dead[i] = pipe.XLen(ctx, b.keys.dead(p))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, b.wrapErr("inbox stats", err)
	}
	out := make([]bus.InboxStats, len(plugins))
	for i := range plugins {
		out[i] = bus.InboxStats{Depth: int(depth[i].Val()), DeadLetters: int(dead[i].Val())}
	}
	return out, nil
}

// Close stops the bus. Open consumers hand their unsettled deliveries back (as their Close
// does) and end with bus.ErrClosed; Replies and every Watch channel are closed. Closing
// again is a no-op.
func (b *Bus) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.mu.Lock()
	open := make([]*Consumer, 0, len(b.consumers))
	for _, c := range b.consumers {
		open = append(open, c)
	}
	b.mu.Unlock()
	var errs []error
	for _, c := range open {
		errs = append(errs, c.Close())
	}

	b.cancel()
	// A reader may be in a blocking read (it ends by itself within readerBlock anyway).
	interrupt(b.replyConn, b.replyDone, closeTimeout)
	interrupt(b.noticeConn, b.noticeDone, closeTimeout)
	interrupt(b.relay.conn, b.relay.loopDone, closeTimeout)
	b.wg.Wait()
	// The consumers' last acknowledgements and the publishes made meanwhile are out.
	b.settles.close()
	b.pubs.close()
	// After the hold loop ended, so that it cannot add this replica back.
	leaveCtx, leaveCancel := context.WithTimeout(context.Background(), closeTimeout)
	if err := b.leaveRelay(leaveCtx); err != nil {
		b.log.Warn("busredis: leaving the relay failed; the other replicas see this one gone within seconds", "err", err)
	}
	leaveCancel()
	close(b.replies)
	b.watchers.Close()
	errs = append(errs, b.rdb.Close(), b.blk.Close())
	return errors.Join(errs...)
}

// unregister forgets c.
func (b *Bus) unregister(c *Consumer) {
	b.mu.Lock()
	if b.consumers[c.key] == c {
		delete(b.consumers, c.key)
	}
	b.mu.Unlock()
}

// localConsumers returns the open consumers of plugin on this replica.
func (b *Bus) localConsumers(plugin string) []*Consumer {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*Consumer
	for _, c := range b.consumers {
		if c.plugin == plugin {
			out = append(out, c)
		}
	}
	return out
}

// wakeConsumers makes the consumers of plugin on this replica, but except, look for
// handed-back entries now.
func (b *Bus) wakeConsumers(plugin string, except *Consumer) {
	for _, c := range b.localConsumers(plugin) {
		if c != except {
			c.claimSoon()
		}
	}
}

// applyCancel remembers a cancellation until until and reports the message to the
// consumers of target on this replica that hold it.
func (b *Bus) applyCancel(target, id string, until, now time.Time) {
	if until.After(now) {
		k := cancelKey(target, id)
		b.cancelMu.Lock()
		if len(b.cancels) >= maxCancels {
			b.sweepCancelsLocked(now)
		}
		if len(b.cancels) >= maxCancels {
			// Still full of live cancellations: forget an arbitrary one. Its message can
			// then only be delivered if it was neither deleted nor already in flight.
			for k := range b.cancels {
				delete(b.cancels, k)
				break
			}
			b.log.Warn("busredis: too many cancellations remembered; forgetting some", "max", maxCancels)
		}
		b.cancels[k] = until
		b.cancelMu.Unlock()
	}
	for _, c := range b.localConsumers(target) {
		c.cancel(id)
	}
}

// isCancelled reports whether the message id to target was cancelled.
func (b *Bus) isCancelled(target, id string, now time.Time) bool {
	if id == "" {
		return false
	}
	b.cancelMu.RLock()
	until, ok := b.cancels[cancelKey(target, id)]
	b.cancelMu.RUnlock()
	return ok && now.Before(until)
}

func (b *Bus) sweepCancelsLocked(now time.Time) {
	for k, until := range b.cancels {
		if !now.Before(until) {
			delete(b.cancels, k)
		}
	}
}

// housekeep refreshes the live set of the open consumers and forgets expired
// cancellations, every liveRefresh.
func (b *Bus) housekeep() {
	defer b.wg.Done()
	t := time.NewTicker(liveRefresh)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		b.cancelMu.Lock()
		b.sweepCancelsLocked(now)
		b.cancelMu.Unlock()
		b.liveMu.Lock()
		for plugin, until := range b.remoteLive {
			if !now.Before(until) {
				delete(b.remoteLive, plugin)
			}
		}
		b.liveMu.Unlock()

		b.mu.Lock()
		open := make([]*Consumer, 0, len(b.consumers))
		for _, c := range b.consumers {
			open = append(open, c)
		}
		b.mu.Unlock()
		if len(open) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, liveRefresh)
		pipe := b.rdb.Pipeline()
		for _, c := range open {
			c.refreshLive(ctx, pipe, now)
		}
		if _, err := pipe.Exec(ctx); err != nil && b.ctx.Err() == nil {
			b.log.Warn("busredis: refreshing the live consumers failed", "err", err)
		}
		cancel()
	}
}

// newReplicaID returns 16 random hex digits.
func newReplicaID() string {
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(id[:])
}

func cancelKey(target, id string) string { return target + "\x00" + id }

// stringField returns the string value of a stream entry's field ("" when missing).
func stringField(values map[string]any, name string) string {
	s, _ := values[name].(string)
	return s
}

// escapeGlob escapes the characters SCAN MATCH treats specially.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var sb strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			sb.WriteByte('\\')
		}
		sb.WriteRune(r)
	}
	return sb.String()
}
