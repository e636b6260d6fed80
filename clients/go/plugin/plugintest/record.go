package plugintest

import (
	"context"
	"fmt"
	"slices"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file records what the plugin did, for the test to look at, and lets the test wait
// until it has done something.

// SentMessage is a message the plugin sent to another plugin (Session.Send).
type SentMessage struct {
	// ID is the message id the host gave it; "" when the host refused it.
	ID string
	// Target is the plugin it was sent to.
	Target string
	// Type is the message type.
	Type string
	// Data is the message's data.
	Data map[string]any
	// Err is the host's refusal (an *plugin.Error, as the plugin got it); nil when the
	// message went to the target's HandlePlugin handler.
	Err error
}

// EmittedEvent is an event the plugin emitted (Session.Emit).
type EmittedEvent struct {
	// ID is the event id the host gave it; "" when the host refused it.
	ID string
	// Type is the event type.
	Type string
	// Data is the event's data.
	Data map[string]any
	// Err is the host's refusal (an *plugin.Error, as the plugin got it); nil when the
	// event was published.
	Err error
}

// SentBroadcast is a broadcast the plugin sent (Session.Broadcast).
type SentBroadcast struct {
	// ID is the broadcast id the host gave it; "" when the host refused it.
	ID string
	// Type is the message type.
	Type string
	// Data is the broadcast's data.
	Data map[string]any
	// Categories and Exclude are the plugin's BroadcastOptions.
	Categories, Exclude []string
	// Err is the host's refusal (an *plugin.Error, as the plugin got it); nil when the
	// broadcast was sent.
	Err error
}

// LogEntry is an entry of the plugin's log: a record of Session.Logger, or a warning the
// host wrote about the plugin.
type LogEntry struct {
	// Time is when the record was made.
	Time time.Time
	// Level is DEBUG, INFO, WARNING or ERROR.
	Level string
	// Message is the record's message.
	Message string
	// Metadata holds the record's attributes; groups are nested objects.
	Metadata map[string]any
	// FromHost says that the host wrote the entry, not the plugin.
	FromHost bool
}

// Sent returns the messages the plugin has sent to other plugins, in the order the host
// received them.
func (h *Host) Sent() []SentMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.sent)
}

// Emitted returns the events the plugin has emitted, in order.
func (h *Host) Emitted() []EmittedEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.emitted)
}

// Broadcasts returns the broadcasts the plugin has sent, in order.
func (h *Host) Broadcasts() []SentBroadcast {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.broadcasts)
}

// Logs returns the plugin's log entries, in order. The plugin does not wait for its log
// records to reach the host: to look for one it has just written, use WaitFor.
func (h *Host) Logs() []LogEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.logs)
}

// Subscriptions returns the event type patterns the plugin subscribed to at run time
// (Plugin.Subscriptions, Session.Subscribe, less Session.Unsubscribe), sorted; those of
// Options.Subscriptions are not included. Patterns in the hello of a plugin without the
// permission events:subscribe are ignored, with a warning in its log, as the real host
// does.
func (h *Host) Subscriptions() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.subscriptionsLocked()
}

// WaitFor waits until cond returns true, and returns nil; or returns an error when ctx
// (or, when ctx has no deadline, Options.Timeout) ends first. cond is called at once, and
// again whenever the host records something the plugin did (a message, event, broadcast,
// log entry, subscription, key-value write), connects, disconnects or returns from Run;
// it should look at the host's records (Sent, Emitted, Logs, KV...).
func (h *Host) WaitFor(ctx context.Context, cond func() bool) error {
	ctx, cancel := h.bound(ctx)
	defer cancel()
	for {
		h.mu.Lock()
		changed := h.changed
		h.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("plugintest: the condition did not hold: %w", ctx.Err())
		}
	}
}

// record runs change under the host's lock, and wakes WaitFor.
func (h *Host) record(change func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	change()
	h.notifyLocked()
}

// notifyLocked wakes WaitFor; h.mu is held.
func (h *Host) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *Host) subscriptionsLocked() []string {
	out := make([]string, 0, len(h.subs))
	for p := range h.subs {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// recordLog records a log frame.
func (h *Host) recordLog(l *pluginhostv1.Log) {
	e := LogEntry{Level: l.GetLevel(), Message: l.GetMessage(), Metadata: fromStruct(l.GetMetadata())}
	if ts := l.GetTimestamp(); ts != nil {
		e.Time = ts.AsTime()
	}
	h.record(func() { h.logs = append(h.logs, e) })
}
