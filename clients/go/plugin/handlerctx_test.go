package plugin

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type lifeKey struct{}

// newTestHandlerContext is a handler context registered on a bare conn, its life a context
// carrying a value; deadline zero means none.
func newTestHandlerContext(t *testing.T, deadline time.Time) (*handlerContext, context.CancelCauseFunc, *atomic.Pointer[time.Time]) {
	t.Helper()
	life, stop := context.WithCancelCause(context.WithValue(context.Background(), lifeKey{}, "life"))
	t.Cleanup(func() { stop(nil) })
	ended := &atomic.Pointer[time.Time]{}
	c := &conn{handlers: map[string]*handlerContext{}}
	h := &handlerContext{parent: life, lifeEnded: ended, deadline: deadline, c: c, id: "d1"}
	c.handlers["d1"] = h
	return h, stop, ended
}

// TestHandlerContextBuiltLate checks that a handler context used for the first time after
// its cancellations, deadline and the plugin's end is in the state the eagerly built
// contexts (WithCancelCause of the life, WithDeadline of that) would be in: the first of
// those events decides Err and Cause.
func TestHandlerContextBuiltLate(t *testing.T) {
	errLife := errors.New("plugin stopped")
	now := time.Now()
	at := func(d time.Duration) time.Time { return now.Add(d) }
	for _, tc := range []struct {
		name      string
		deadline  time.Time
		cause     error     // recorded before the build
		causeAt   time.Time // when
		lifeEnded time.Time // zero: the life goes on
		wantErr   error
		wantCause error
	}{
		{name: "nothing happened", deadline: at(time.Hour)},
		{name: "no deadline", wantErr: nil},
		{name: "sender canceled", deadline: at(time.Hour), cause: errSenderCanceled, causeAt: at(-time.Second),
			wantErr: context.Canceled, wantCause: errSenderCanceled},
		{name: "deadline passed", deadline: at(-time.Second), wantErr: context.DeadlineExceeded, wantCause: context.DeadlineExceeded},
		{name: "canceled, then deadline passed", deadline: at(-time.Second), cause: errSenderCanceled, causeAt: at(-2 * time.Second),
			wantErr: context.Canceled, wantCause: errSenderCanceled},
		{name: "deadline passed, then the host's cancel", deadline: at(-2 * time.Second), cause: errSenderDeadline, causeAt: at(-time.Second),
			wantErr: context.DeadlineExceeded, wantCause: context.DeadlineExceeded},
		{name: "released", deadline: at(time.Hour), cause: context.Canceled, causeAt: at(-time.Second),
			wantErr: context.Canceled, wantCause: context.Canceled},
		{name: "life ended", deadline: at(time.Hour), lifeEnded: at(-time.Second), wantErr: context.Canceled, wantCause: errLife},
		{name: "life ended, then deadline passed", deadline: at(-time.Second), lifeEnded: at(-2 * time.Second),
			wantErr: context.Canceled, wantCause: errLife},
		{name: "deadline passed, then life ended", deadline: at(-2 * time.Second), lifeEnded: at(-time.Second),
			wantErr: context.DeadlineExceeded, wantCause: context.DeadlineExceeded},
		{name: "canceled, then life ended", deadline: at(time.Hour), cause: errSenderCanceled, causeAt: at(-2 * time.Second), lifeEnded: at(-time.Second),
			wantErr: context.Canceled, wantCause: errSenderCanceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, stopLife, ended := newTestHandlerContext(t, tc.deadline)
			h.cause, h.causeAt = tc.cause, tc.causeAt
			if !tc.lifeEnded.IsZero() {
				stopLife(errLife)
				le := tc.lifeEnded
				ended.Store(&le)
			}
			if err := h.Err(); err != tc.wantErr {
				t.Errorf("Err() = %v, want %v", err, tc.wantErr)
			}
			if cause := context.Cause(h); cause != tc.wantCause {
				t.Errorf("Cause = %v, want %v", cause, tc.wantCause)
			}
			dl, ok := h.Deadline()
			if ok != !tc.deadline.IsZero() || !dl.Equal(tc.deadline) {
				t.Errorf("Deadline() = %v, %v, want %v", dl, ok, tc.deadline)
			}
			if v := h.Value(lifeKey{}); v != "life" {
				t.Errorf("Value(lifeKey) = %v, want the life's value", v)
			}
			select {
			case <-h.Done():
				if tc.wantErr == nil {
					t.Error("Done is closed, want it open")
				}
			default:
				if tc.wantErr != nil {
					t.Error("Done is open, want it closed")
				}
			}
			// As a parent: a child sees the same.
			child, cancel := context.WithCancel(h)
			defer cancel()
			if err := child.Err(); err != tc.wantErr {
				t.Errorf("child Err() = %v, want %v", err, tc.wantErr)
			}
			if tc.wantCause != nil {
				if cause := context.Cause(child); cause != tc.wantCause {
					t.Errorf("child Cause = %v, want %v", cause, tc.wantCause)
				}
			}
		})
	}
}

// TestHandlerContextBuiltFirst checks a context built before it is canceled: canceled by
// the host (the cause reaches its children), by its release, by the plugin's end.
func TestHandlerContextBuiltFirst(t *testing.T) {
	t.Run("host cancel", func(t *testing.T) {
		h, _, _ := newTestHandlerContext(t, time.Now().Add(time.Hour))
		child, cancel := context.WithCancel(h)
		defer cancel()
		if h.senderGaveUp() {
			t.Fatal("senderGaveUp before any cancel")
		}
		h.cancelCause(errSenderDeadline)
		h.cancelCause(errSenderCanceled) // the first cause stays
		<-child.Done()
		if err, cause := child.Err(), context.Cause(child); err != context.Canceled || cause != errSenderDeadline {
			t.Errorf("child: Err %v, Cause %v; want Canceled, %v", err, cause, errSenderDeadline)
		}
		if !h.senderGaveUp() {
			t.Error("senderGaveUp = false after the host's cancel")
		}
		h.release()
		if context.Cause(h) != errSenderDeadline {
			t.Errorf("Cause after release = %v, want %v", context.Cause(h), errSenderDeadline)
		}
		if len(h.c.handlers) != 0 {
			t.Error("release left the handler registered")
		}
	})
	t.Run("release", func(t *testing.T) {
		h, _, _ := newTestHandlerContext(t, time.Now().Add(time.Hour))
		done := h.Done()
		h.release()
		<-done
		if h.Err() != context.Canceled || h.senderGaveUp() {
			t.Errorf("after release: Err %v, senderGaveUp %v; want Canceled, false", h.Err(), h.senderGaveUp())
		}
	})
	t.Run("life ends", func(t *testing.T) {
		h, stopLife, _ := newTestHandlerContext(t, time.Time{})
		done := h.Done()
		errLife := errors.New("plugin stopped")
		stopLife(errLife)
		<-done
		if context.Cause(h) != errLife {
			t.Errorf("Cause = %v, want the life's", context.Cause(h))
		}
	})
}

// TestHandlerContextUnbuilt checks the cancellations of a context nobody used: recorded,
// the first one kept, and senderGaveUp answered without building it.
func TestHandlerContextUnbuilt(t *testing.T) {
	h, _, _ := newTestHandlerContext(t, time.Now().Add(time.Hour))
	h.cancelCause(errSenderCanceled)
	h.cancelCause(errSenderDeadline)
	if !h.senderGaveUp() {
		t.Error("senderGaveUp = false after the host's cancel")
	}
	h.release()
	if h.built.Load() != nil {
		t.Error("the context was built by cancelCause, senderGaveUp or release")
	}
	if h.Err() != context.Canceled || context.Cause(h) != errSenderCanceled {
		t.Errorf("Err %v, Cause %v; want Canceled, %v", h.Err(), context.Cause(h), errSenderCanceled)
	}
}

// TestHandlerContextConcurrentBuild checks that concurrent first uses build it once: every
// caller gets the same Done channel (run with -race).
func TestHandlerContextConcurrentBuild(t *testing.T) {
	h, _, _ := newTestHandlerContext(t, time.Now().Add(time.Hour))
	var wg sync.WaitGroup
	chans := make([]<-chan struct{}, 8)
	for i := range chans {
		wg.Go(func() { chans[i] = h.Done() })
	}
	wg.Go(func() { h.cancelCause(errSenderCanceled) })
	wg.Wait()
	for _, ch := range chans[1:] {
		if ch != chans[0] {
			t.Fatal("Done returned different channels")
		}
	}
	<-chans[0]
	if context.Cause(h) != errSenderCanceled {
		t.Errorf("Cause = %v, want %v", context.Cause(h), errSenderCanceled)
	}
}
