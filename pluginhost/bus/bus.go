// Package bus carries inter-plugin traffic: direct messages with replies, broadcasts and
// events. Every plugin has an inbox; the instances of a plugin that are connected read it as
// one consumer group, each instance under its own consumer name, so they share its load.
//
// Two implementations pass one conformance suite (package bustest): Memory, the single-node
// default, and Redis (Redis Streams), for durability and several host replicas.
//
// Delivery is at least once. A delivery stays in flight until it is settled: Ack (done),
// DeadLetter (give up now) or, for messages, the host acks when the reply arrives. A delivery
// that is not settled within the processing timeout becomes deliverable again, to any
// consumer of the inbox, with its Attempt raised; Extend pushes that timeout back while a
// handler is still working. Once a delivery has been attempted MaxAttempts times it goes to the
// plugin's dead-letter list instead of being delivered again. Envelope IDs are idempotency
// keys: publishing the same ID to the same inbox twice within DedupeWindow stores it once.
//
// Memory is bounded: an inbox holds at most MaxInbox entries that are not yet acknowledged
// (delivered or not), of at most MaxInboxBytes in all (see Envelope.Size); Publish beyond
// either bound fails with ErrInboxFull instead of growing without bound or dropping entries. Trimming only ever removes acknowledged entries. A consumer holds
// at most Prefetch unsettled deliveries; Next blocks until one is settled.
package bus

import (
	"context"
	"errors"
	"time"
)

// Kind says what an envelope is.
type Kind uint8

// The kinds of envelope.
const (
	// KindMessage is a direct message; its handler's reply goes to ReplyTo.
	KindMessage Kind = 1
	// KindBroadcast is a broadcast message, settled with Ack.
	KindBroadcast Kind = 2
	// KindEvent is an event, settled with Ack.
	KindEvent Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindMessage:
		return "message"
	case KindBroadcast:
		return "broadcast"
	case KindEvent:
		return "event"
	}
	return "unknown"
}

// Envelope is one unit of traffic addressed to one plugin's inbox.
type Envelope struct {
	// ID is the message, broadcast or event id. It is the idempotency key: the same across
	// every redelivery, and across the inboxes a broadcast or event fans out to.
	ID   string
	Kind Kind
	// Source is the sending plugin id, or "admin", "user" or "system".
	Source string
	// Target is the plugin whose inbox the envelope goes to.
	Target string
	// Type is the message type or the event type.
	Type string
	// Data is the payload (a JSON object); the bus never looks inside.
	Data []byte
	// Deadline, for messages, is when the sender stops waiting: an envelope whose deadline
	// has passed is never delivered. Zero means none.
	Deadline time.Time
	// ReplyTo, for messages, is the Replica address of the host replica waiting for the reply.
	ReplyTo string
	// SentAt is when the envelope was published.
	SentAt time.Time
}

// Size is what the envelope counts for against MaxInboxBytes: the bytes of its payload and
// of its strings. Every implementation counts the same, so that one bound means the same on
// each.
func (e Envelope) Size() int {
	return len(e.Data) + len(e.ID) + len(e.Source) + len(e.Target) + len(e.Type) + len(e.ReplyTo)
}

// Expired reports whether the envelope has a deadline that has passed at now.
func (e Envelope) Expired(now time.Time) bool {
	return !e.Deadline.IsZero() && !now.Before(e.Deadline)
}

// Delivery is an envelope handed to one consumer.
type Delivery struct {
	Envelope
	// Tag identifies the delivery to Ack, Extend and DeadLetter. It is stable across
	// redeliveries of the same inbox entry.
	Tag string
	// Attempt is 1 on the first delivery and grows with every redelivery.
	Attempt int
}

// Reply is a plugin's answer to a message, or the host's answer on its behalf.
type Reply struct {
	// MessageID is the ID of the message answered.
	MessageID string
	// Status is "success" or "error".
	Status string
	// Data is the answer's payload (a JSON object), possibly empty.
	Data []byte
	// ErrorCode, when the host answers instead of the plugin (for example when the message
	// could not be delivered), is one of the API's error codes; empty otherwise.
	ErrorCode    string
	ErrorMessage string
}

// DeadLetter is an envelope that could not be processed.
type DeadLetter struct {
	Envelope
	// Attempts is how many times it was delivered.
	Attempts int
	// Reason says why it was dead-lettered ("max attempts exceeded" or the plugin's reason).
	Reason string
	// At is when it was dead-lettered.
	At time.Time
}

// Notice is broadcast to every host replica sharing the bus.
type Notice struct {
	// Kind is NoticeEvent or NoticeCancel.
	Kind NoticeKind
	// Event, for NoticeEvent, is the event (Target empty): what external watchers see.
	// For NoticeCancel, ID is the cancelled message and Target its target plugin.
	Envelope
}

// NoticeKind says what a notice is.
type NoticeKind uint8

// The kinds of notice.
const (
	NoticeEvent  NoticeKind = 1
	NoticeCancel NoticeKind = 2
)

// Errors the bus returns; implementations wrap them with context, so test with errors.Is.
var (
	// ErrInboxFull means the target's inbox holds MaxInbox unacknowledged entries, or has no
	// room left for the envelope's Size within MaxInboxBytes.
	ErrInboxFull = errors.New("bus: inbox full")
	// ErrUnavailable means the bus cannot reach its backend (e.g. Redis is down). Calls
	// fail fast with it rather than hang; the bus reconnects by itself.
	ErrUnavailable = errors.New("bus: unavailable")
	// ErrClosed means the bus or the consumer was closed.
	ErrClosed = errors.New("bus: closed")
	// ErrUnknownDelivery means the tag names no delivery in flight for this consumer (it was
	// settled already, or claimed by another consumer after its timeout).
	ErrUnknownDelivery = errors.New("bus: unknown delivery")
)

// DefaultMaxInboxBytes is the default of Options.MaxInboxBytes.
const DefaultMaxInboxBytes = 64 << 20

// Options tune a bus. Zero values take the defaults.
type Options struct {
	// ProcessingTimeout is how long a delivery may stay unsettled before it is delivered
	// again. Default 30s.
	ProcessingTimeout time.Duration
	// MaxAttempts bounds deliveries of one entry; the next one dead-letters it. Default 5.
	MaxAttempts int
	// MaxInbox bounds the unacknowledged entries of one inbox. Default 10000.
	MaxInbox int
	// MaxInboxBytes bounds the sum of the Sizes of the unacknowledged entries of one inbox:
	// an envelope that would take it past the bound is refused. Default 64 MiB.
	MaxInboxBytes int64
	// MaxDeadLetters bounds each plugin's dead-letter list (oldest dropped first, approximately).
	// Default 1000.
	MaxDeadLetters int
	// Prefetch bounds the unsettled deliveries of one consumer. Default 64.
	Prefetch int
	// DedupeWindow is how long an envelope ID is remembered per inbox. Default 2m.
	DedupeWindow time.Duration
	// MaxDedupe bounds the IDs remembered per inbox where the bus holds them in the host's
	// memory (the in-memory bus); beyond it the oldest are forgotten early. Default 100000.
	MaxDedupe int
	// WatchBuffer is the buffer of each Watch channel. Default 256.
	WatchBuffer int
}

// WithDefaults returns o with zero values replaced by the defaults.
func (o Options) WithDefaults() Options {
	if o.ProcessingTimeout <= 0 {
		o.ProcessingTimeout = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.MaxInbox <= 0 {
		o.MaxInbox = 10000
	}
	if o.MaxInboxBytes <= 0 {
		o.MaxInboxBytes = DefaultMaxInboxBytes
	}
	if o.MaxDeadLetters <= 0 {
		o.MaxDeadLetters = 1000
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 64
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = 2 * time.Minute
	}
	if o.MaxDedupe <= 0 {
		o.MaxDedupe = 100000
	}
	if o.WatchBuffer <= 0 {
		o.WatchBuffer = 256
	}
	return o
}

// Bus is the inter-plugin transport. It is safe for concurrent use.
type Bus interface {
	// Publish appends env to the inbox of env.Target. It returns ErrInboxFull when the inbox
	// is full and ErrUnavailable when the backend cannot be reached. Publishing an ID the
	// inbox has seen within DedupeWindow succeeds without storing it again.
	Publish(ctx context.Context, env Envelope) error
	// PublishAll publishes each envelope (to its own Target), in one round trip where the
	// backend allows it. The result has one error (or nil) per envelope.
	PublishAll(ctx context.Context, envs []Envelope) []error

	// Consume opens the consumer named consumer (one per plugin instance) on plugin's inbox.
	// Deliveries that were in flight under the same consumer name (an instance that
	// reconnects) are delivered again first. Opening a consumer name that is already open
	// fails.
	Consume(ctx context.Context, plugin, consumer string) (Consumer, error)
	// Live reports whether plugin's inbox has a consumer open anywhere (on any replica).
	Live(ctx context.Context, plugin string) (bool, error)

	// Cancel withdraws a message: if it has not been delivered it never will be; if it is in
	// flight, the consumer holding it reports its tag on Cancelled. until bounds how long the
	// cancellation is remembered (the message's deadline).
	Cancel(ctx context.Context, target, messageID string, until time.Time) error

	// Replica is this bus's reply address, for Envelope.ReplyTo.
	Replica() string
	// Reply sends r to the replica at address to.
	Reply(ctx context.Context, to string, r Reply) error
	// Replies carries the replies addressed to this replica. It has one reader (the host's
	// router) and is closed by Close.
	Replies() <-chan Reply

	// Announce sends an event to the watchers on every replica (see Watch).
	Announce(ctx context.Context, ev Envelope) error
	// Watch returns the events announced from now on. The channel is closed when ctx ends,
	// when the bus closes, or when the watcher falls WatchBuffer events behind (slow
	// watchers are dropped, never allowed to hold memory).
	Watch(ctx context.Context) <-chan Envelope

	// DeadLetters returns up to limit of plugin's dead letters, newest first.
	DeadLetters(ctx context.Context, plugin string, limit int) ([]DeadLetter, error)
	// Purge removes plugin's inbox and dead letters (the plugin was uninstalled).
	Purge(ctx context.Context, plugin string) error
	// Depth reports how many entries of plugin's inbox are unacknowledged (delivered or not).
	Depth(ctx context.Context, plugin string) (int, error)

	// Close stops the bus; open consumers end with ErrClosed.
	Close() error
}

// Consumer reads one plugin's inbox for one instance.
type Consumer interface {
	// Next returns the next delivery: first this consumer's own unsettled deliveries from a
	// previous session, then deliveries whose processing timeout expired (from any consumer),
	// then new entries, oldest first. Expired messages and cancelled messages are settled
	// and skipped; entries past MaxAttempts are dead-lettered and skipped. Next blocks while
	// the consumer holds Prefetch unsettled deliveries. It returns ctx.Err() when ctx ends and
	// ErrClosed after Close.
	Next(ctx context.Context) (Delivery, error)
	// Ack settles a delivery as done.
	Ack(ctx context.Context, tag string) error
	// Extend keeps the delivery from being redelivered for d from now.
	Extend(ctx context.Context, tag string, d time.Duration) error
	// DeadLetter settles a delivery by moving it to the dead-letter list with reason.
	DeadLetter(ctx context.Context, tag, reason string) error
	// Cancelled reports tags of this consumer's in-flight messages that their sender
	// cancelled. The consumer still settles them.
	Cancelled() <-chan string
	// Close ends the consumer. Its unsettled deliveries become deliverable to the other
	// consumers at once (without counting as an attempt). If the host dies instead, they
	// become deliverable after the processing timeout.
	Close() error
}

// InboxStats are the figures of one plugin's inbox, for monitoring.
type InboxStats struct {
	// Depth is the entries stored and not settled (waiting or in flight), as Depth.
	Depth int
	// DeadLetters is the entries in the inbox's dead-letter list.
	DeadLetters int
}

// InboxStatser is implemented by buses that read the figures of many inboxes at once
// (busmem's, and busredis's in one pipeline): for /metrics at each scrape.
type InboxStatser interface {
	InboxStats(ctx context.Context, plugins []string) ([]InboxStats, error)
}

// Pinger is implemented by buses whose backend can be out of reach (busredis's): Ping
// reports whether it serves now, with ErrUnavailable when it does not. A bus without it
// (busmem's) is always reachable.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Notifier is implemented by consumers that can be read without a goroutine blocked in
// Next while there is nothing to read (busmem's): a plugin instance that is idle then costs
// no goroutine for its deliveries.
type Notifier interface {
	// TryNextOrNotify returns the delivery Next would return at once (ok true). When Next
	// would wait instead (nothing is ready, or the consumer holds Prefetch unsettled
	// deliveries), it returns ok false and registers fn, to be called once when Next might
	// return something or fail: an entry was published or handed back, a delivery of the
	// consumer was settled and freed a Prefetch slot, an in-flight entry's processing
	// timeout expired (the consumer's own or, while it holds fewer than Prefetch, another
	// consumer's; Extend moves that time), or the consumer or the bus was closed. fn runs
	// on the goroutine that makes it so (a publisher's, a settle's, a Close's) or on a
	// timer's; the caller then calls TryNextOrNotify again. fn may be called when there is
	// nothing to take after all (the caller registers again), but is never left uncalled
	// when there is. A call withdraws the function an earlier call registered, if it was
	// not called yet. After Close it returns ErrClosed and registers nothing. fn may be
	// called while the bus holds locks: it must not block, and must not call the consumer
	// (it starts the goroutine that does).
	TryNextOrNotify(fn func()) (d Delivery, ok bool, err error)
}

// AsyncSettler is implemented by consumers whose settling takes a round trip to a backend
// (busredis): the host settles without waiting, so that a session's receive loop goes on
// reading its plugin's frames and no goroutine waits for each settle. done is called once
// with what the waiting form would have returned, on another goroutine (or before the call
// returns when nothing had to be sent); it must not block. A consumer's settles in progress
// are done before its Close hands its deliveries back.
type AsyncSettler interface {
	// AckAsync acknowledges the delivery under tag, as Ack does.
	AckAsync(tag string, done func(error))
	// AckReplyAsync sends the reply r to the replica at to and acknowledges the message
	// delivered under tag, in one round trip instead of the two of Reply and Ack. The reply
	// is sent even when the consumer no longer holds the delivery (done gets
	// ErrUnknownDelivery then): the work is done and its sender may still wait. A reply to
	// a waiter in this process is handed to it before AckReplyAsync returns.
	AckReplyAsync(tag, to string, r Reply, done func(error))
}

// AsyncPublisher is implemented by buses whose publishes take a round trip to a backend:
// PublishAsync queues env and returns at once, and done is called once with what Publish
// would have returned (on another goroutine, or before PublishAsync returns when env could
// not be queued); done must not block. The envelopes one goroutine queues are stored in the
// order it queued them, so a caller that must keep an order (a plugin's messages, in the
// order its stream carries them) need not wait for each before queueing the next.
type AsyncPublisher interface {
	PublishAsync(ctx context.Context, env Envelope, done func(error))
}

// ReplyDispatcher is implemented by buses that can hand the replies addressed to this
// replica straight to a function, on the goroutine that replies (or that reads them from
// elsewhere), instead of through Replies: one goroutine hand-off less per message. Once
// DispatchReplies is called, Replies carries nothing more. fn must not block, and may be
// called from several goroutines at once.
type ReplyDispatcher interface {
	DispatchReplies(fn func(Reply))
}

// Relay is implemented by buses shared by several host replicas: it carries frames of work
// that must run on another replica, such as a call to a plugin's HTTP endpoint that lands on
// a replica where the plugin has no connected instance. Frames between two replicas arrive
// in the order they were sent. The bus never looks inside them.
type Relay interface {
	// Hold records that this replica has a connected instance of plugin (one more); Release
	// that it has one less. Neither blocks: the bus tells the other replicas in the
	// background, and keeps telling them while the plugin is held.
	Hold(plugin string)
	Release(plugin string)
	// Holders returns the other replicas that hold plugin, in no particular order.
	Holders(ctx context.Context, plugin string) ([]string, error)
	// Alive reports whether the replica at address replica is running: a replica that stops
	// without closing its bus (SIGKILL) stops being alive within seconds.
	Alive(ctx context.Context, replica string) (bool, error)
	// SendFrame sends frame to the replica at address to.
	SendFrame(ctx context.Context, to string, frame []byte) error
	// ReceiveFrames hands every frame sent to this replica to fn, on the bus's reader
	// goroutine: fn must not block. Frames that arrive before it is called are dropped.
	ReceiveFrames(fn func(frame []byte))
}
