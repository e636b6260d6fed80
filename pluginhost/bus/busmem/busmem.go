// Package busmem is the in-memory bus.Bus: the single-node default and the hot path of
// plugin-to-plugin messaging when no Redis is configured.
//
// Each inbox is a mutex over an ordered queue of ready entries, a map of in-flight entries
// by tag and, per consumer, a heap of its in-flight entries by the time they become
// deliverable again. Nothing runs in the background: redeliveries, expired deadlines and
// dedupe memory are handled lazily by the calls that touch an inbox, and a blocked Next
// wakes at the earliest time an in-flight entry of its inbox may be redelivered (one timer
// per waiting call, none per message). A consumer can also wait without a goroutine
// (bus.Notifier): the function it registers is called where a blocked Next would be woken,
// and by a timer of the consumer's (time.AfterFunc) where Next's own timer would fire.
// Nothing survives the process. Data slices handed
// out (deliveries, dead letters, watched events) are shared and must not be modified.
//
// Behaviour the bus package leaves open, decided here:
//   - Consume's context only bounds the call; the consumer lives until it or the bus is
//     closed.
//   - A delivery handed back by Consumer.Close goes to the front of the queue with its
//     attempt count unchanged; delivering it again raises Attempt as any redelivery does,
//     so an instance that crashes on a message cannot loop on it past MaxAttempts.
//   - A delivery whose processing timeout expired no longer keeps its holder from taking
//     it back: a consumer holding Prefetch deliveries still gets its own expired ones
//     again (and nothing else), so a single instance that fails to settle deliveries
//     sees them again up to MaxAttempts instead of blocking its inbox for good.
//   - Cancelled is never closed (its readers select on their own context), and a tag that
//     does not fit in its buffer (Prefetch) is dropped.
//   - Publishing an envelope whose deadline has already passed succeeds and stores nothing;
//     a Cancel is remembered until its until argument, at most DedupeWindow, so a Publish
//     of the cancelled ID that arrives after the Cancel stores nothing either.
//   - Envelopes with an empty ID are never deduplicated and cannot be cancelled.
//   - The dead letters, held in the host's memory like the inbox, are bounded in bytes as
//     well as in count: to MaxInboxBytes (the sum of their Sizes), oldest dropped first.
//   - DeadLetters with limit <= 0 returns every dead letter.
//   - Reply knows only this bus's own Replica address; any other fails with
//     bus.ErrUnavailable.
package busmem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// repliesBuffer is the buffer of the Replies channel.
const repliesBuffer = 1024

var errNoTarget = errors.New("busmem: envelope has no target")

// Bus is the in-memory bus.Bus. It is safe for concurrent use.
type Bus struct {
	opts    bus.Options    // defaults applied; read-only after New
	epoch   time.Time      // origin of the inboxes' dedupe times; read-only after New
	replica string         // read-only after New
	replies chan bus.Reply // closed by Close, under replyMu
	// dispatch, once set, receives replies instead of replies.
	dispatch atomic.Pointer[func(bus.Reply)]
	done     chan struct{} // closed by Close; blocked calls select on it
	closed   atomic.Bool   // set once by Close, before done is closed

	mu      sync.RWMutex      // guards inboxes; taken before any inbox's mu
	inboxes map[string]*inbox // by plugin id

	watchers *bus.Watchers

	// replyMu is held shared by Reply while it sends on replies and exclusively by Close
	// to close replies, so that no send ever meets a closed channel.
	replyMu sync.RWMutex
}

var _ bus.Bus = (*Bus)(nil)

// New returns an empty in-memory bus with opts (zero values take the defaults).
func New(opts bus.Options) *Bus {
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return &Bus{
		opts:     opts.WithDefaults(),
		epoch:    time.Now(),
		replica:  "mem-" + hex.EncodeToString(id[:]),
		replies:  make(chan bus.Reply, repliesBuffer),
		done:     make(chan struct{}),
		inboxes:  make(map[string]*inbox),
		watchers: bus.NewWatchers(opts.WithDefaults().WatchBuffer),
	}
}

// Publish appends env to the inbox of env.Target.
func (b *Bus) Publish(_ context.Context, env bus.Envelope) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if env.Target == "" {
		return errNoTarget
	}
	now := time.Now()
	for {
		ib := b.inbox(env.Target, true)
		ib.mu.Lock()
		if ib.removed {
			ib.mu.Unlock()
			continue // purged under us: publish to the inbox that replaces it
		}
		err := ib.publish(env, now)
		ib.mu.Unlock()
		return err
	}
}

// PublishAll publishes each envelope to its own target.
func (b *Bus) PublishAll(ctx context.Context, envs []bus.Envelope) []error {
	errs := make([]error, len(envs))
	for i, env := range envs {
		errs[i] = b.Publish(ctx, env)
	}
	return errs
}

// Consume opens the consumer named consumer on plugin's inbox. ctx only bounds the call.
func (b *Bus) Consume(_ context.Context, plugin, consumer string) (bus.Consumer, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	for {
		ib := b.inbox(plugin, true)
		ib.mu.Lock()
		if ib.removed {
			ib.mu.Unlock()
			continue
		}
		if ib.consumer(consumer) != nil {
			ib.mu.Unlock()
			return nil, fmt.Errorf("busmem: consumer %q of %q is already open", consumer, plugin)
		}
		c := newConsumer(b, ib, consumer)
		ib.consumers = append(ib.consumers, c)
		ib.mu.Unlock()
		// A Close that ran between the check above and the registration did not see c.
		if b.closed.Load() {
			_ = c.Close()
			return nil, bus.ErrClosed
		}
		return c, nil
	}
}

// Live reports whether plugin's inbox has a consumer open.
func (b *Bus) Live(_ context.Context, plugin string) (bool, error) {
	if b.closed.Load() {
		return false, bus.ErrClosed
	}
	ib := b.inbox(plugin, false)
	if ib == nil {
		return false, nil
	}
	ib.mu.Lock()
	defer ib.mu.Unlock()
	return len(ib.consumers) > 0, nil
}

// Cancel withdraws the message messageID from target's inbox.
func (b *Bus) Cancel(_ context.Context, target, messageID string, until time.Time) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if messageID == "" {
		return nil
	}
	for {
		ib := b.inbox(target, true)
		ib.mu.Lock()
		if ib.removed {
			ib.mu.Unlock()
			continue
		}
		ib.cancel(messageID, until, time.Now())
		ib.mu.Unlock()
		return nil
	}
}

// Replica returns this bus's reply address.
func (b *Bus) Replica() string { return b.replica }

// Reply sends r to this bus's Replies; to must be Replica(). It blocks while Replies is full,
// until ctx ends or the bus closes.
func (b *Bus) Reply(ctx context.Context, to string, r bus.Reply) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if to != b.replica {
		return fmt.Errorf("busmem: reply to %q: no such replica: %w", to, bus.ErrUnavailable)
	}
	if fn := b.dispatch.Load(); fn != nil {
		(*fn)(r)
		return nil
	}
	b.replyMu.RLock()
	defer b.replyMu.RUnlock()
	if b.closed.Load() {
		return bus.ErrClosed // Close may already have closed replies
	}
	select {
	case b.replies <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		return bus.ErrClosed
	}
}

// DispatchReplies hands every later reply to fn on the replying goroutine (see
// bus.ReplyDispatcher).
func (b *Bus) DispatchReplies(fn func(bus.Reply)) { b.dispatch.Store(&fn) }

// Replies carries the replies addressed to this bus. Close closes it.
func (b *Bus) Replies() <-chan bus.Reply { return b.replies }

// DeadLetters returns up to limit of plugin's dead letters, newest first; limit <= 0
// returns them all.
func (b *Bus) DeadLetters(_ context.Context, plugin string, limit int) ([]bus.DeadLetter, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	ib := b.inbox(plugin, false)
	if ib == nil {
		return nil, nil
	}
	ib.mu.Lock()
	defer ib.mu.Unlock()
	n := ib.dead.len()
	if limit > 0 && limit < n {
		n = limit
	}
	out := make([]bus.DeadLetter, n)
	for i := range out {
		out[i] = ib.dead.at(ib.dead.len() - 1 - i)
	}
	return out, nil
}

// Purge removes plugin's inbox, its dedupe memory and its dead letters. Consumers that are
// still open stay open on the emptied inbox; their in-flight tags become unknown.
func (b *Bus) Purge(_ context.Context, plugin string) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	b.mu.Lock()
	ib := b.inboxes[plugin]
	if ib == nil {
		b.mu.Unlock()
		return nil
	}
	ib.mu.Lock()
	if len(ib.consumers) == 0 {
		delete(b.inboxes, plugin)
		ib.removed = true
	}
	b.mu.Unlock()
	ib.clear()
	ib.mu.Unlock()
	return nil
}

// Depth reports how many entries of plugin's inbox are unacknowledged.
func (b *Bus) Depth(_ context.Context, plugin string) (int, error) {
	if b.closed.Load() {
		return 0, bus.ErrClosed
	}
	ib := b.inbox(plugin, false)
	if ib == nil {
		return 0, nil
	}
	ib.mu.Lock()
	defer ib.mu.Unlock()
	return ib.live, nil
}

// InboxStats returns the depth and dead-letter count of each plugin's inbox
// (bus.InboxStatser).
func (b *Bus) InboxStats(_ context.Context, plugins []string) ([]bus.InboxStats, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	out := make([]bus.InboxStats, len(plugins))
	for i, p := range plugins {
		ib := b.inbox(p, false)
		if ib == nil {
			continue
		}
		ib.mu.Lock()
		out[i] = bus.InboxStats{Depth: ib.live, DeadLetters: ib.dead.len()}
		ib.mu.Unlock()
	}
	return out, nil
}

// Close stops the bus: open consumers end with bus.ErrClosed, Replies and every Watch
// channel are closed, and later calls fail with bus.ErrClosed. Closing again is a no-op.
func (b *Bus) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(b.done)

	b.mu.RLock()
	inboxes := make([]*inbox, 0, len(b.inboxes))
	for _, ib := range b.inboxes {
		inboxes = append(inboxes, ib)
	}
	b.mu.RUnlock()
	for _, ib := range inboxes {
		ib.mu.Lock()
		for _, c := range ib.consumers {
			c.closed = true
			c.signal()
		}
		ib.mu.Unlock()
	}

	b.watchers.Close()

	b.replyMu.Lock()
	close(b.replies)
	b.replyMu.Unlock()
	return nil
}

// inbox returns plugin's inbox, creating it when create is set (nil otherwise).
func (b *Bus) inbox(plugin string, create bool) *inbox {
	b.mu.RLock()
	ib := b.inboxes[plugin]
	b.mu.RUnlock()
	if ib != nil || !create {
		return ib
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if ib = b.inboxes[plugin]; ib == nil {
		ib = newInbox(plugin, &b.opts, b.epoch)
		b.inboxes[plugin] = ib
	}
	return ib
}
