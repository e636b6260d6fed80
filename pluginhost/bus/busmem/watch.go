package busmem

import (
	"bytes"
	"context"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// Announce sends ev to every watcher without blocking: a watcher whose buffer is full is
// dropped and its channel closed.
func (b *Bus) Announce(_ context.Context, ev bus.Envelope) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	ev.Data = bytes.Clone(ev.Data) // the watchers share one copy, not the caller's slice
	if !b.watchers.Send(ev) {
		return bus.ErrClosed
	}
	return nil
}

// Watch returns the events announced from now on. The channel is closed when ctx ends,
// when the bus closes, or when the watcher falls WatchBuffer events behind.
func (b *Bus) Watch(ctx context.Context) <-chan bus.Envelope { return b.watchers.Watch(ctx) }
