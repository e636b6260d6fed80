package stream

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// aliveRelay answers Alive as told; the rest of bus.Relay is not used.
type aliveRelay struct {
	bus.Relay
	answers chan error // nil: alive; errDead: not alive; anything else: the check failed
	checks  atomic.Int32
}

var errDead = errors.New("dead")

func (r *aliveRelay) Alive(ctx context.Context, replica string) (bool, error) {
	r.checks.Add(1)
	switch err := <-r.answers; {
	case err == nil:
		return true, nil
	case errors.Is(err, errDead):
		return false, nil
	default:
		return false, err
	}
}

// A replica that stops running (a SIGKILL leaves no frame behind) ends the calls relayed to
// and from it; a check that cannot reach the bus does not.
func TestWatchReplica(t *testing.T) {
	r := &aliveRelay{answers: make(chan error, 3)}
	r.answers <- nil
	r.answers <- bus.ErrUnavailable
	r.answers <- errDead
	dead := make(chan struct{})
	go watchReplica(r, "b", make(chan struct{}), func() { close(dead) })
	select {
	case <-dead:
	case <-time.After(10 * aliveEvery):
		t.Fatal("a dead replica was not noticed")
	}
	if n := r.checks.Load(); n != 3 {
		t.Fatalf("dead after %d checks, want 3", n)
	}

	// Stopped watching: no more checks, nothing called.
	r2 := &aliveRelay{answers: make(chan error, 1)}
	stop := make(chan struct{})
	close(stop)
	watchReplica(r2, "b", stop, func() { t.Error("called after stop") })
	if r2.checks.Load() != 0 {
		t.Fatal("checked after stop")
	}
}
