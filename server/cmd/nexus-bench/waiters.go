package main

import (
	"context"
	"fmt"
	"sync"
)

// waiters matches the replies a measuring client receives to the round trips waiting for
// them, by id: K is the id's type, V the reply's.
type waiters[K comparable, V any] struct {
	mu      sync.Mutex // guards next and pending
	next    uint64
	pending map[K]chan V

	dead chan struct{} // closed by stop, when the receiving side ended; err says why
	err  error         // assigned before dead is closed
}

func newWaiters[K comparable, V any]() *waiters[K, V] {
	return &waiters[K, V]{pending: make(map[K]chan V), dead: make(chan struct{})}
}

// call makes one round trip: it registers it under the id key makes of its sequence number
// (1, 2, ...), sends the request with send, and waits for the reply. The id is returned for
// the caller's messages.
func (w *waiters[K, V]) call(ctx context.Context, key func(n uint64) K, send func(id K) error) (K, V, error) {
	id, ch := w.add(key)
	if err := send(id); err != nil {
		w.forget(id)
		var zero V
		return id, zero, err
	}
	v, err := w.wait(ctx, id, ch)
	return id, v, err
}

// add registers a round trip under the id key makes of its sequence number (1, 2, ...).
func (w *waiters[K, V]) add(key func(n uint64) K) (K, chan V) {
	ch := make(chan V, 1)
	w.mu.Lock()
	w.next++
	id := key(w.next)
	w.pending[id] = ch
	w.mu.Unlock()
	return id, ch
}

// forget drops a round trip that gave up.
func (w *waiters[K, V]) forget(id K) {
	w.mu.Lock()
	delete(w.pending, id)
	w.mu.Unlock()
}

// resolve hands v to the round trip waiting for id; false when none does.
func (w *waiters[K, V]) resolve(id K, v V) bool {
	w.mu.Lock()
	ch, ok := w.pending[id]
	delete(w.pending, id)
	w.mu.Unlock()
	if ok {
		ch <- v
	}
	return ok
}

// wait waits for the reply ch carries, the end of the receiving side, or ctx.
func (w *waiters[K, V]) wait(ctx context.Context, id K, ch chan V) (V, error) {
	select {
	case v := <-ch:
		return v, nil
	case <-w.dead:
		var zero V
		return zero, fmt.Errorf("receiving replies: %w", w.err)
	case <-ctx.Done():
		w.forget(id)
		var zero V
		return zero, ctx.Err()
	}
}

// stop ends every wait: the receiving side ended, for err.
func (w *waiters[K, V]) stop(err error) {
	w.err = err
	close(w.dead)
}

func (w *waiters[K, V]) deadCh() <-chan struct{} { return w.dead }
