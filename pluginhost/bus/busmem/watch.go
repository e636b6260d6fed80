package busmem

import (
	"bytes"
	"context"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// watcher is one Watch channel.
type watcher struct {
	ch   chan bus.Envelope // closed exactly once, under Bus.watchMu, when w leaves watchers
	stop func() bool       // stops the context.AfterFunc that drops w; set before w is visible
}

// Announce sends ev to every watcher without blocking: a watcher whose buffer is full is
// dropped and its channel closed.
func (b *Bus) Announce(_ context.Context, ev bus.Envelope) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	ev.Data = bytes.Clone(ev.Data) // the watchers share one copy, not the caller's slice
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	if b.watchers == nil {
		return bus.ErrClosed
	}
	for w := range b.watchers {
		select {
		case w.ch <- ev:
		default:
			b.dropWatcherLocked(w)
		}
	}
	return nil
}

// Watch returns the events announced from now on. The channel is closed when ctx ends,
// when the bus closes, or when the watcher falls WatchBuffer events behind. No goroutine
// runs for a watcher: ctx is watched with context.AfterFunc.
func (b *Bus) Watch(ctx context.Context) <-chan bus.Envelope {
	w := &watcher{ch: make(chan bus.Envelope, b.opts.WatchBuffer)}
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	if b.watchers == nil || ctx.Err() != nil {
		close(w.ch)
		return w.ch
	}
	// The function runs on its own goroutine, so it simply waits for watchMu if ctx ends
	// while we still hold it.
	w.stop = context.AfterFunc(ctx, func() {
		b.watchMu.Lock()
		defer b.watchMu.Unlock()
		if _, ok := b.watchers[w]; ok {
			b.dropWatcherLocked(w)
		}
	})
	b.watchers[w] = struct{}{}
	return w.ch
}

// dropWatcherLocked removes w and closes its channel. watchMu must be held and w present.
func (b *Bus) dropWatcherLocked(w *watcher) {
	delete(b.watchers, w)
	close(w.ch)
	w.stop()
}

// closeWatchers closes every watcher for good.
func (b *Bus) closeWatchers() {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	for w := range b.watchers {
		b.dropWatcherLocked(w)
	}
	b.watchers = nil
}
