package plugin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// errConnClosed is returned when a frame is sent on a connection that is gone.
var errConnClosed = errors.New("plugin: connection closed")

// conn is one stream to the host. Frames are written by the goroutines that send them,
// with no goroutine in between (a hand-off to a writer goroutine cost a scheduler wake-up
// per frame, which showed in the latency of every message): a send that finds no write
// under way writes its frame, then the frames queued meanwhile (up to drainShare, then a
// goroutine takes over); one that finds a write under way queues its frame for that writer
// and returns. Only
// the goroutine that owns the receive side (the handshake, then receive and its
// successors, see dispatch.go) calls Receive; Close is called once it has exited.
type conn struct {
	stream clientStream
	// ctx is the stream's context; cancel aborts the call.
	ctx    context.Context
	cancel context.CancelFunc
	logger *slog.Logger

	// slots holds a token for each frame queued or being written: at most sendQueue, and
	// senders beyond wait for room in turn (a channel serves blocked senders in order).
	slots chan struct{}
	// wmu guards writing, queue and idle.
	wmu sync.Mutex
	// writing is set while a sender writes (its frame, then the queue); no one else
	// writes meanwhile, and nothing is written once the request side is closed.
	writing bool
	// queue holds the frames sent during a write, for the writer.
	queue []*pluginhostv1.ConnectRequest
	// idle, made by the first who waits, is closed when the write under way ends: for
	// closeSend.
	idle chan struct{}
	// stopped is closed (stop) when the request side is closed, a write failed or the
	// connection is closed; sends fail from then on.
	stopped  chan struct{}
	stopOnce sync.Once

	// shutdown carries the host's first shutdown request to the session loop.
	shutdown chan *pluginhostv1.Shutdown
	// recvDone is closed when the receive side ends; recvErr is written before. Its
	// closing is what fails the requests still waiting for a reply.
	recvDone chan struct{}
	recvErr  error

	// processingTimeout is the welcome's processing timeout of event and broadcast
	// deliveries (0 when the host did not say). It is assigned once, before the receive
	// goroutine starts.
	processingTimeout time.Duration

	// mu guards requests, handlers and calls.
	mu sync.Mutex
	// requests holds the plugin's requests waiting for the host's reply, by request id.
	// Each channel has room for the one reply.
	requests map[string]chan *pluginhostv1.RequestReply
	// handlers holds, by delivery id, the contexts of the message handlers that run for
	// deliveries of this connection, for the host's cancel frames.
	handlers map[string]*handlerContext
	// calls holds the HTTP calls served on this connection, by request id.
	calls map[string]*httpCall

	// inline is the inline run of the goroutine that holds the receive side while it runs a
	// job (see receive), nil when none does.
	inline atomic.Pointer[inlineRun]

	// wg tracks the receive side (one goroutine at a time holds it).
	wg sync.WaitGroup
}

func newConn(ctx context.Context, cancel context.CancelFunc, s clientStream, logger *slog.Logger) *conn {
	return &conn{
		stream:   s,
		ctx:      ctx,
		cancel:   cancel,
		logger:   logger,
		slots:    make(chan struct{}, sendQueue),
		stopped:  make(chan struct{}),
		shutdown: make(chan *pluginhostv1.Shutdown, 1),
		recvDone: make(chan struct{}),
		requests: map[string]chan *pluginhostv1.RequestReply{},
		handlers: map[string]*handlerContext{},
		calls:    map[string]*httpCall{},
	}
}

// send writes f to the stream, or queues it for the write under way, after the frames
// sent before it. It fails when the connection is gone, or when ctx is done while
// sendQueue frames already wait (senders waiting for room get it in turn).
func (c *conn) send(ctx context.Context, f *pluginhostv1.ConnectRequest) error {
	select {
	case <-c.stopped:
		return errConnClosed
	default:
	}
	select {
	case c.slots <- struct{}{}:
	case <-c.stopped:
		return errConnClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	c.wmu.Lock()
	select {
	case <-c.stopped:
		c.wmu.Unlock()
		<-c.slots
		return errConnClosed
	default:
	}
	if c.writing {
		c.queue = append(c.queue, f)
		c.wmu.Unlock()
		return nil
	}
	c.writing = true
	c.wmu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			c.endWrite(false) // or no one would write again
			panic(p)
		}
	}()
	ok := c.write(f)
	<-c.slots
	if !ok {
		c.endWrite(false)
		return errConnClosed
	}
	c.drain(drainShare)
	return nil
}

// drainShare is how many queued frames a sender writes after its own before it hands the
// rest of the write to a goroutine: a send is never held up long by the frames of others
// (under a steady load the queue may never be empty).
const drainShare = sendQueue / 4

// drain writes the queued frames, then ends the write when the queue is empty; the caller is
// the writer. After limit frames (none: no limit) it hands the write over to a new
// goroutine and returns.
func (c *conn) drain(limit int) {
	var batch []*pluginhostv1.ConnectRequest
	done := 0
	for {
		c.wmu.Lock()
		if len(c.queue) == 0 {
			// Ended under the same lock as the check, or a frame queued in between would
			// be left behind.
			c.endWriteLocked(true)
			c.wmu.Unlock()
			return
		}
		if limit > 0 && done >= limit {
			c.wmu.Unlock()
			go c.drain(0)
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.wmu.Unlock()
		for i, g := range batch {
			batch[i] = nil
			ok := c.write(g)
			<-c.slots
			if !ok {
				for range batch[i+1:] {
					<-c.slots // dropped
				}
				c.endWrite(false)
				return
			}
		}
		done += len(batch)
	}
}

func (c *conn) stop() { c.stopOnce.Do(func() { close(c.stopped) }) }

// endWrite ends the write under way; after a failed one the connection is stopped and
// the queued frames are dropped.
func (c *conn) endWrite(ok bool) {
	c.wmu.Lock()
	c.endWriteLocked(ok)
	c.wmu.Unlock()
}

func (c *conn) endWriteLocked(ok bool) {
	c.writing = false
	if !ok {
		for range c.queue {
			<-c.slots // dropped
		}
		c.queue = nil
		c.stop()
	}
	if c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// idleLocked returns a channel closed when the write under way ends; wmu must be held.
func (c *conn) idleLocked() <-chan struct{} {
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	return c.idle
}

// write sends f; the caller is the writer.
func (c *conn) write(f *pluginhostv1.ConnectRequest) bool {
	err := c.stream.Send(f)
	if err == nil {
		return true
	}
	// io.EOF means the host ended the stream; Receive reports why. Any other error leaves
	// Receive possibly blocked, so the call is aborted.
	if !errors.Is(err, io.EOF) {
		c.cancel()
	}
	c.logger.Debug("plugin: send failed", "error", err)
	return false
}

// closeSend closes the request side once the frames sent before are out, unless a write
// failed already; no frame is written after it. It gives up at deadline.
func (c *conn) closeSend(deadline <-chan struct{}) {
	c.wmu.Lock()
	for c.writing {
		idle := c.idleLocked()
		c.wmu.Unlock()
		select {
		case <-idle:
		case <-deadline:
			return
		}
		c.wmu.Lock()
	}
	select {
	case <-c.stopped:
		c.wmu.Unlock()
		return
	default:
	}
	c.stop()
	c.wmu.Unlock()
	if err := c.stream.CloseSend(); err != nil {
		c.logger.Debug("plugin: closing the request side", "error", err)
	}
}

// close ends the connection and waits for its receive side. Gracefully (only once the
// receive goroutine runs): the frames being written go out, the request side is closed and
// the host has until timeout to end the response side. Otherwise at once.
func (c *conn) close(graceful bool, timeout time.Duration) {
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		c.closeSend(ctx.Done())
		select {
		case <-c.recvDone:
		case <-ctx.Done():
		}
		cancel()
	}
	c.cancel()
	c.stop()
	c.wg.Wait()
	if err := c.stream.Close(); err != nil {
		c.logger.Debug("plugin: closing the stream", "error", err)
	}
}
