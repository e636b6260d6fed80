package bus

import (
	"context"
	"sync"
)

// Watchers fans announced events out to the local Watch channels; both buses use it. Send
// never blocks: a watcher whose buffer is full is dropped (its channel closed), so a slow
// watcher never holds memory. No goroutine runs per watcher: its context is watched with
// context.AfterFunc. It is safe for concurrent use.
type Watchers struct {
	buffer int

	mu  sync.Mutex            // guards set and the closing of the channels
	set map[*watcher]struct{} // nil once closed
}

// watcher is one Watch channel.
type watcher struct {
	ch   chan Envelope // closed exactly once, under Watchers.mu, when it leaves the set
	stop func() bool   // stops the context.AfterFunc that drops it; set before it is visible
}

// NewWatchers returns an empty set of watchers whose channels buffer buffer events.
func NewWatchers(buffer int) *Watchers {
	return &Watchers{buffer: buffer, set: map[*watcher]struct{}{}}
}

// Watch returns a channel of the events sent from now on, closed when ctx ends, when the
// watcher falls behind, or at Close.
func (ws *Watchers) Watch(ctx context.Context) <-chan Envelope {
	w := &watcher{ch: make(chan Envelope, ws.buffer)}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.set == nil || ctx.Err() != nil {
		close(w.ch)
		return w.ch
	}
	// The function runs on its own goroutine, so it simply waits for mu if ctx ends while
	// it is still held here.
	w.stop = context.AfterFunc(ctx, func() {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		if _, ok := ws.set[w]; ok {
			ws.dropLocked(w)
		}
	})
	ws.set[w] = struct{}{}
	return w.ch
}

// Send hands ev to every watcher without blocking; it reports false once closed.
func (ws *Watchers) Send(ev Envelope) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.set == nil {
		return false
	}
	for w := range ws.set {
		select {
		case w.ch <- ev:
		default:
			ws.dropLocked(w)
		}
	}
	return true
}

// Close closes every watcher for good; later Watch channels are closed at once.
func (ws *Watchers) Close() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for w := range ws.set {
		ws.dropLocked(w)
	}
	ws.set = nil
}

// dropLocked removes w and closes its channel. mu must be held and w present.
func (ws *Watchers) dropLocked(w *watcher) {
	delete(ws.set, w)
	close(w.ch)
	w.stop()
}
