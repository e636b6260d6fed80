package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// recordingStream is a clientStream that records what is sent; gate, when not nil, holds
// every Send until it can receive from it; failAt makes the Send of that many frames fail.
type recordingStream struct {
	mu        sync.Mutex
	sent      []string
	closed    bool // CloseSend was called
	afterSend bool // a Send came after CloseSend
	gate      chan struct{}
	failAt    int
}

func (s *recordingStream) Send(f *pluginhostv1.ConnectRequest) error {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.afterSend = true
	}
	if s.failAt > 0 && len(s.sent)+1 >= s.failAt {
		return io.EOF
	}
	s.sent = append(s.sent, f.GetLog().GetMessage())
	return nil
}

func (s *recordingStream) Receive() (*pluginhostv1.ConnectResponse, error) { select {} }

func (s *recordingStream) CloseSend() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

func (s *recordingStream) Close() error { return nil }

func logFrame(msg string) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Log{Log: &pluginhostv1.Log{Message: msg}}}
}

func testConn(s clientStream) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return newConn(ctx, cancel, s, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// Concurrent senders: every frame goes out once, each sender's in its order, and the
// request side closes after them.
func TestConnSendsInOrderAndClosesAfter(t *testing.T) {
	s := &recordingStream{}
	c := testConn(s)
	const senders, each = 16, 200
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := c.send(context.Background(), logFrame(fmt.Sprintf("%d/%d", g, i))); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.closeSend(nil)
	if err := c.send(context.Background(), logFrame("late")); !errors.Is(err, errConnClosed) {
		t.Fatalf("a send after closeSend: %v, want errConnClosed", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sent) != senders*each || !s.closed || s.afterSend {
		t.Fatalf("sent %d frames (want %d), closed %v, a frame after the close %v", len(s.sent), senders*each, s.closed, s.afterSend)
	}
	next := make([]int, senders)
	for _, m := range s.sent {
		g, i, _ := strings.Cut(m, "/")
		gi, _ := strconv.Atoi(g)
		ii, _ := strconv.Atoi(i)
		if ii != next[gi] {
			t.Fatalf("sender %d: frame %d went out where %d was due", gi, ii, next[gi])
		}
		next[gi]++
	}
}

// While a write is held up, sends queue until sendQueue frames are queued or in writing;
// beyond, they wait, and give up when their context ends. Released, the queue goes out in
// order.
func TestConnQueueIsBounded(t *testing.T) {
	s := &recordingStream{gate: make(chan struct{})}
	c := testConn(s)
	first := make(chan error, 1)
	go func() { first <- c.send(context.Background(), logFrame("first")) }()
	// Wait until the first send writes (and holds the write).
	for {
		c.wmu.Lock()
		w := c.writing
		c.wmu.Unlock()
		if w {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// With the frame being written, sendQueue frames are queued or in writing.
	for i := range sendQueue - 1 {
		if err := c.send(context.Background(), logFrame(strconv.Itoa(i))); err != nil {
			t.Fatalf("queued send %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.send(ctx, logFrame("over")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a send beyond the queue: %v, want the context's error", err)
	}
	close(s.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sent) != sendQueue || s.sent[0] != "first" || s.sent[sendQueue-1] != strconv.Itoa(sendQueue-2) {
		t.Fatalf("sent %d frames, first %q", len(s.sent), s.sent[0])
	}
}

// A failed write stops the connection: the queue is dropped and later sends fail.
func TestConnStopsOnFailedWrite(t *testing.T) {
	s := &recordingStream{failAt: 3}
	c := testConn(s)
	for i := range 2 {
		if err := c.send(context.Background(), logFrame(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.send(context.Background(), logFrame("fails")); !errors.Is(err, errConnClosed) {
		t.Fatalf("the failing send: %v, want errConnClosed", err)
	}
	select {
	case <-c.stopped:
	default:
		t.Fatal("the connection is not stopped after a failed write")
	}
	if err := c.send(context.Background(), logFrame("after")); !errors.Is(err, errConnClosed) {
		t.Fatalf("a send after the failure: %v, want errConnClosed", err)
	}
}

// slowStream is a clientStream whose Send takes a while.
type slowStream struct{ recordingStream }

func (s *slowStream) Send(f *pluginhostv1.ConnectRequest) error {
	time.Sleep(50 * time.Microsecond)
	return s.recordingStream.Send(f)
}

// Under a steady load from other senders, no send is held up writing their frames for
// long: the writer hands the rest of the write over after its share.
func TestConnWriterIsNotHeldByOthers(t *testing.T) {
	c := testConn(&slowStream{})
	stop := time.Now().Add(1500 * time.Millisecond)
	var mu sync.Mutex
	var longest time.Duration
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				start := time.Now()
				if err := c.send(context.Background(), logFrame("x")); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				d := time.Since(start)
				mu.Lock()
				longest = max(longest, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	c.closeSend(nil)
	if longest > 500*time.Millisecond {
		t.Fatalf("a send took %v under load from others", longest)
	}
}
