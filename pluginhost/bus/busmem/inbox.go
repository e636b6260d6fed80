package busmem

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// reasonMaxAttempts is the dead-letter reason of an entry that used up its attempts.
const reasonMaxAttempts = "max attempts exceeded"

// The states of an entry.
const (
	stateReady    uint8 = iota // in inbox.ready, waiting for delivery
	stateInFlight              // delivered, in inbox.inflight and its owner's timeouts
	stateSettled               // acknowledged, dropped or dead-lettered; a tombstone if still in ready
)

// entry is one stored envelope. Its fields are guarded by its inbox's mu.
type entry struct {
	env       bus.Envelope
	tag       string
	seq       uint64
	attempt   int // deliveries so far
	state     uint8
	cancelled bool      // its sender withdrew it while it was in flight
	owner     *consumer // the consumer holding it, while in flight
	visibleAt time.Time // when an in-flight entry becomes deliverable again
	hidx      int       // index in owner.timeouts while in flight
}

// seenID is a dedupe record, kept in inbox.seenOrder in the order the IDs were stored.
type seenID struct {
	id     string
	forget time.Duration // since inbox.epoch
}

// inbox is one plugin's inbox: its entries, its consumers, its dedupe memory and its dead
// letters. plugin and opts are set once; every other field is guarded by mu.
type inbox struct {
	plugin string
	opts   *bus.Options
	// epoch is the origin of the dedupe times, which are durations since it: smaller than
	// times and free of pointers, for the largest structures of the inbox.
	epoch time.Time

	mu        sync.Mutex
	removed   bool // Purge took the inbox out of its bus; holders look the plugin up again
	seq       uint64
	ready     ring[*entry]             // entries waiting for delivery, oldest first, plus tombstones
	tombs     int                      // settled entries still in ready
	live      int                      // unacknowledged entries: ready (not tombstones) and in flight
	bytes     int64                    // the sum of their Sizes (bus.Envelope.Size)
	inflight  map[string]*entry        // in-flight entries by tag (each also in its owner's timeouts)
	byID      map[string]*entry        // unsettled entries by envelope ID (the latest one), for Cancel
	seen      map[string]time.Duration // envelope IDs stored within DedupeWindow → when to forget them (since epoch)
	seenOrder ring[seenID]             // the keys of seen, oldest first, swept on publish
	seenPeak  int                      // the largest len(seen) since seen was allocated
	cancels   map[string]time.Time     // cancelled message IDs → when to forget them
	// cancelSweep is the size of cancels at which expired cancellations are swept, so
	// that sweeping costs O(1) amortised per Cancel.
	cancelSweep int
	// minDeadline is a lower bound of the deadlines of the ready entries (zero when none has
	// one): a full inbox is swept for expired entries only once it has passed.
	minDeadline time.Time
	dead        ring[bus.DeadLetter] // oldest first, at most MaxDeadLetters
	deadBytes   int64                // the sum of the Sizes of dead, at most MaxInboxBytes
	consumers   []*consumer          // open consumers, a few: one per plugin instance
}

func newInbox(plugin string, opts *bus.Options, epoch time.Time) *inbox {
	return &inbox{
		plugin:   plugin,
		opts:     opts,
		epoch:    epoch,
		inflight: make(map[string]*entry),
		byID:     make(map[string]*entry),
		seen:     make(map[string]time.Duration),
	}
}

// publish stores env unless it is a duplicate, cancelled or expired.
func (ib *inbox) publish(env bus.Envelope, now time.Time) error {
	mono := now.Sub(ib.epoch)
	ib.sweepSeen(mono)
	if env.ID != "" {
		if forget, ok := ib.seen[env.ID]; ok && mono < forget {
			return nil
		}
		if until, ok := ib.cancels[env.ID]; ok && now.Before(until) {
			ib.remember(env.ID, mono)
			return nil
		}
	}
	if env.Expired(now) {
		ib.remember(env.ID, mono)
		return nil
	}
	size := int64(env.Size())
	if ib.full(size) {
		ib.sweepExpired(now)
		if ib.full(size) {
			return fmt.Errorf("busmem: publish to %q: %w", ib.plugin, bus.ErrInboxFull)
		}
	}
	ib.remember(env.ID, mono)

	env.Data = bytes.Clone(env.Data)
	if env.SentAt.IsZero() {
		env.SentAt = now
	}
	ib.seq++
	e := &entry{env: env, seq: ib.seq, tag: strconv.FormatUint(ib.seq, 10), hidx: -1}
	ib.ready.pushBack(e)
	ib.live++
	ib.bytes += size
	if env.ID != "" {
		ib.byID[env.ID] = e
	}
	ib.noteDeadline(env.Deadline)
	for _, c := range ib.consumers {
		if c.wantsEntries() {
			c.signal()
		}
	}
	return nil
}

// full reports whether the inbox has no room for an envelope of size bytes.
func (ib *inbox) full(size int64) bool {
	return ib.live >= ib.opts.MaxInbox || ib.bytes+size > ib.opts.MaxInboxBytes
}

// take hands c its next delivery: the in-flight entry whose processing timeout expired
// first, else the oldest ready entry. A consumer that holds Prefetch deliveries only takes
// back its own expired ones (holding no more than before), so that a single instance that
// does not settle its deliveries still gets them again, up to MaxAttempts. When there is
// nothing, take returns ok false and, if an in-flight entry may become deliverable to c
// later, the time when it does.
func (ib *inbox) take(c *consumer, now time.Time) (d bus.Delivery, ok bool, wakeAt time.Time) {
	for {
		e := ib.expired(c, now)
		if e == nil {
			break
		}
		ib.release(e)
		if ib.skip(e, now) {
			continue
		}
		return ib.deliver(e, c, now), true, time.Time{}
	}
	if c.held >= ib.opts.Prefetch {
		if len(c.timeouts) > 0 {
			wakeAt = c.timeouts[0].visibleAt
		}
		return bus.Delivery{}, false, wakeAt
	}
	for ib.ready.len() > 0 {
		e := ib.ready.popFront()
		if e.state == stateSettled {
			ib.tombs--
			continue
		}
		e.state = stateInFlight // with no owner and not in timeouts until deliver
		ib.inflight[e.tag] = e
		if ib.skip(e, now) {
			continue
		}
		return ib.deliver(e, c, now), true, time.Time{}
	}
	for _, o := range ib.consumers {
		if len(o.timeouts) > 0 && (wakeAt.IsZero() || o.timeouts[0].visibleAt.Before(wakeAt)) {
			wakeAt = o.timeouts[0].visibleAt
		}
	}
	return bus.Delivery{}, false, wakeAt
}

// expired returns the in-flight entry c may take again because its processing timeout
// expired, earliest first: any consumer's while c holds fewer than Prefetch deliveries,
// else only c's own. It returns nil when there is none.
func (ib *inbox) expired(c *consumer, now time.Time) *entry {
	if c.held >= ib.opts.Prefetch {
		if len(c.timeouts) > 0 && !c.timeouts[0].visibleAt.After(now) {
			return c.timeouts[0]
		}
		return nil
	}
	var first *entry
	for _, o := range ib.consumers {
		if len(o.timeouts) == 0 {
			continue
		}
		if e := o.timeouts[0]; !e.visibleAt.After(now) && (first == nil || e.visibleAt.Before(first.visibleAt)) {
			first = e
		}
	}
	return first
}

// skip settles e instead of delivering it when it is cancelled, expired or out of
// attempts, and reports whether it did. e is in inflight, without owner.
func (ib *inbox) skip(e *entry, now time.Time) bool {
	switch {
	case e.cancelled, e.env.Expired(now):
		ib.settle(e)
	case e.attempt >= ib.opts.MaxAttempts:
		ib.deadLetter(e, reasonMaxAttempts, now)
	default:
		return false
	}
	return true
}

// deliver puts e in flight with c. e is in inflight, without owner.
func (ib *inbox) deliver(e *entry, c *consumer, now time.Time) bus.Delivery {
	e.attempt++
	e.owner = c
	c.held++
	e.visibleAt = now.Add(ib.opts.ProcessingTimeout)
	// No waiting consumer needs waking for e's timeout: the Publish or Close that made e
	// ready signalled every consumer waiting for entries, and each of them takes e or
	// looks again after e was taken, and then sets its timer by the timeouts.
	c.timeouts.push(e)
	return bus.Delivery{Envelope: e.env, Tag: e.tag, Attempt: e.attempt}
}

// release takes an in-flight e from its owner, waking the owner if that frees a slot it is
// waiting for. e stays in inflight.
func (ib *inbox) release(e *entry) {
	c := e.owner
	if c == nil {
		return
	}
	c.timeouts.remove(e.hidx)
	e.owner = nil
	if c.held == ib.opts.Prefetch {
		c.signal()
	}
	c.held--
}

// settle removes e for good (acknowledged, dropped or dead-lettered). A ready e stays in
// ready as a tombstone.
func (ib *inbox) settle(e *entry) {
	switch e.state {
	case stateSettled:
		return
	case stateReady:
		ib.tombs++
	case stateInFlight:
		ib.release(e)
		delete(ib.inflight, e.tag)
	}
	ib.forget(e)
}

// forget marks e settled and no longer counts it. e is in none of ready (but as a
// tombstone), inflight and the timeouts.
func (ib *inbox) forget(e *entry) {
	e.state = stateSettled
	ib.live--
	ib.bytes -= int64(e.env.Size())
	if e.env.ID != "" && ib.byID[e.env.ID] == e {
		delete(ib.byID, e.env.ID)
	}
}

// deadLetter settles e onto the dead-letter list. The list is held in the host's memory, so
// it is bounded in bytes too: to MaxInboxBytes, oldest dropped first, like its count.
func (ib *inbox) deadLetter(e *entry, reason string, now time.Time) {
	ib.settle(e)
	size := int64(e.env.Size())
	for ib.dead.len() > 0 && (ib.dead.len() >= ib.opts.MaxDeadLetters || ib.deadBytes+size > ib.opts.MaxInboxBytes) {
		ib.deadBytes -= int64(ib.dead.popFront().Size())
	}
	ib.dead.pushBack(bus.DeadLetter{Envelope: e.env, Attempts: e.attempt, Reason: reason, At: now})
	ib.deadBytes += size
}

// requeue hands c's in-flight entries back, oldest first at the front of the queue, with
// their attempt counts unchanged.
func (ib *inbox) requeue(c *consumer) {
	if len(c.timeouts) == 0 {
		return
	}
	mine := slices.Clone(c.timeouts)
	slices.SortFunc(mine, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	for i := len(mine) - 1; i >= 0; i-- {
		e := mine[i]
		ib.release(e)
		delete(ib.inflight, e.tag)
		e.state = stateReady
		ib.ready.pushFront(e)
		ib.noteDeadline(e.env.Deadline)
	}
	for _, o := range ib.consumers {
		if o != c && o.wantsEntries() {
			o.signal()
		}
	}
}

// cancel withdraws the message id: a ready entry is settled, an in-flight one is marked
// so that it is not delivered again and its tag is reported to its holder.
func (ib *inbox) cancel(id string, until, now time.Time) {
	if limit := now.Add(ib.opts.DedupeWindow); until.IsZero() || until.After(limit) {
		until = limit
	}
	if until.After(now) {
		if ib.cancels == nil {
			ib.cancels = make(map[string]time.Time)
		}
		ib.cancels[id] = until
		if len(ib.cancels) >= ib.cancelSweep {
			for k, t := range ib.cancels {
				if !now.Before(t) {
					delete(ib.cancels, k)
				}
			}
			ib.cancelSweep = max(64, 2*len(ib.cancels))
		}
	}
	e := ib.byID[id]
	if e == nil {
		return
	}
	switch e.state {
	case stateReady:
		ib.settle(e)
		ib.compactReady()
	case stateInFlight:
		e.cancelled = true
		if e.owner != nil {
			select {
			case e.owner.cancelledChan() <- e.tag:
			default:
			}
		}
	}
}

// remember records id for dedupe; mono is now, since epoch.
func (ib *inbox) remember(id string, mono time.Duration) {
	if id == "" {
		return
	}
	forget := mono + ib.opts.DedupeWindow
	ib.seen[id] = forget
	ib.seenPeak = max(ib.seenPeak, len(ib.seen))
	ib.seenOrder.pushBack(seenID{id: id, forget: forget})
	// Memory stays bounded at any rate: beyond MaxDedupe, the oldest IDs go early.
	for ib.seenOrder.len() > ib.opts.MaxDedupe {
		s := ib.seenOrder.front()
		ib.seenOrder.popFront()
		if f, ok := ib.seen[s.id]; ok && f == s.forget {
			delete(ib.seen, s.id)
		}
	}
}

// sweepSeen forgets the IDs whose dedupe window has passed; mono is now, since epoch.
func (ib *inbox) sweepSeen(mono time.Duration) {
	for ib.seenOrder.len() > 0 {
		s := ib.seenOrder.front()
		if mono < s.forget {
			break
		}
		ib.seenOrder.popFront()
		if forget, ok := ib.seen[s.id]; ok && mono >= forget {
			delete(ib.seen, s.id)
		}
	}
	// Maps keep their peak size: after a burst, move what is left to a fresh one.
	if ib.seenPeak > 4096 && len(ib.seen) < ib.seenPeak/8 {
		seen := make(map[string]time.Duration, len(ib.seen))
		maps.Copy(seen, ib.seen)
		ib.seen = seen
		ib.seenPeak = len(seen)
	}
}

// sweepExpired drops the ready entries whose deadline has passed, if one may have.
func (ib *inbox) sweepExpired(now time.Time) {
	if ib.minDeadline.IsZero() || now.Before(ib.minDeadline) {
		return
	}
	var minDeadline time.Time
	ib.ready.filter(func(e *entry) bool {
		if e.state == stateSettled {
			return false
		}
		if e.env.Expired(now) {
			ib.forget(e)
			return false
		}
		if d := e.env.Deadline; !d.IsZero() && (minDeadline.IsZero() || d.Before(minDeadline)) {
			minDeadline = d
		}
		return true
	})
	ib.tombs = 0
	ib.minDeadline = minDeadline
}

// noteDeadline keeps minDeadline a lower bound of the deadlines of the ready entries as
// one with deadline d joins them.
func (ib *inbox) noteDeadline(d time.Time) {
	if !d.IsZero() && (ib.minDeadline.IsZero() || d.Before(ib.minDeadline)) {
		ib.minDeadline = d
	}
}

// compactReady drops the tombstones from ready once they are the majority.
func (ib *inbox) compactReady() {
	if ib.tombs < 64 || ib.tombs*2 < ib.ready.len() {
		return
	}
	ib.ready.filter(func(e *entry) bool { return e.state != stateSettled })
	ib.tombs = 0
}

// clear empties the inbox for Purge.
func (ib *inbox) clear() {
	for _, e := range ib.inflight {
		ib.release(e)
		e.state = stateSettled
	}
	ib.ready.reset()
	ib.tombs = 0
	ib.live = 0
	ib.bytes = 0
	ib.inflight = make(map[string]*entry)
	ib.byID = make(map[string]*entry)
	ib.seen = make(map[string]time.Duration)
	ib.seenPeak = 0
	ib.seenOrder.reset()
	ib.cancels = nil
	ib.cancelSweep = 0
	ib.minDeadline = time.Time{}
	ib.dead.reset()
	ib.deadBytes = 0
	for _, c := range ib.consumers {
		c.signal()
	}
}

// wakeWaitersBefore wakes the waiting consumers that would not otherwise look again by
// t, when an in-flight entry becomes deliverable again at t.
func (ib *inbox) wakeWaitersBefore(t time.Time) {
	for _, c := range ib.consumers {
		if c.waitUntil.IsZero() || c.waitUntil.After(t) {
			c.signal()
		}
	}
}

// consumer returns the open consumer named name, or nil.
func (ib *inbox) consumer(name string) *consumer {
	for _, c := range ib.consumers {
		if c.name == name {
			return c
		}
	}
	return nil
}

// removeConsumer forgets c, if it is open.
func (ib *inbox) removeConsumer(c *consumer) {
	if i := slices.Index(ib.consumers, c); i >= 0 {
		ib.consumers = slices.Delete(ib.consumers, i, i+1)
	}
}
