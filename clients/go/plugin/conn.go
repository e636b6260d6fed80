package plugin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// errConnClosed is returned when a frame is sent on a connection that is gone.
var errConnClosed = errors.New("plugin: connection closed")

// conn is one stream to the host. Frames are written by the goroutines that send them,
// with no goroutine in between (a hand-off to a writer goroutine cost a scheduler wake-up
// per frame, which showed in the latency of every message): a send that finds no write
// under way writes its frame, then the frames queued meanwhile; one that finds a write
// under way queues its frame for that writer and returns. Only
// the goroutine that owns the receive side (the handshake, then receive and its
// successors, see dispatch.go) calls Receive; Close is called once it has exited.
type conn struct {
	stream clientStream
	// ctx is the stream's context; cancel aborts the call.
	ctx    context.Context
	cancel context.CancelFunc
	logger *slog.Logger

	// wmu guards writing, queue and idle.
	wmu sync.Mutex
	// writing is set while a sender writes (its frame, then the queue); no one else
	// writes meanwhile, and nothing is written once the request side is closed.
	writing bool
	// queue holds the frames sent during a write, for the writer; at most sendQueue.
	queue []*pluginhostv1.ConnectRequest
	// idle, made by the first who waits, is closed when the write under way ends (the
	// queue is empty, or a write failed): for senders waiting for room in a full queue and
	// for closeSend.
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

	// mu guards requests and handlers.
	mu sync.Mutex
	// requests holds the plugin's requests waiting for the host's reply, by request id.
	// Each channel has room for the one reply.
	requests map[string]chan *pluginhostv1.RequestReply
	// handlers holds, by delivery id, the cancel functions of the message handlers that
	// run for deliveries of this connection, for the host's cancel frames.
	handlers map[string]context.CancelCauseFunc

	// wg tracks the receive side (one goroutine at a time holds it).
	wg sync.WaitGroup
}

func newConn(ctx context.Context, cancel context.CancelFunc, s clientStream, logger *slog.Logger) *conn {
	return &conn{
		stream:   s,
		ctx:      ctx,
		cancel:   cancel,
		logger:   logger,
		stopped:  make(chan struct{}),
		shutdown: make(chan *pluginhostv1.Shutdown, 1),
		recvDone: make(chan struct{}),
		requests: map[string]chan *pluginhostv1.RequestReply{},
		handlers: map[string]context.CancelCauseFunc{},
	}
}

// send writes f to the stream, or queues it for the write under way, after the frames
// sent before it. It fails when the connection is gone, or when ctx is done while the
// queue is full.
func (c *conn) send(ctx context.Context, f *pluginhostv1.ConnectRequest) error {
	c.wmu.Lock()
	for {
		select {
		case <-c.stopped:
			c.wmu.Unlock()
			return errConnClosed
		default:
		}
		if !c.writing {
			break
		}
		if len(c.queue) < sendQueue {
			c.queue = append(c.queue, f)
			c.wmu.Unlock()
			return nil
		}
		idle := c.idleChan()
		c.wmu.Unlock()
		select {
		case <-idle:
		case <-c.stopped:
			return errConnClosed
		case <-ctx.Done():
			return ctx.Err()
		}
		c.wmu.Lock()
	}
	c.writing = true
	c.wmu.Unlock()
	if !c.write(f) {
		c.endWrite(false)
		return errConnClosed
	}
	var batch []*pluginhostv1.ConnectRequest
	for {
		c.wmu.Lock()
		if len(c.queue) == 0 {
			// Ended under the same lock as the check, or a frame queued in between would
			// be left behind.
			c.endWriteLocked(true)
			c.wmu.Unlock()
			return nil
		}
		batch, c.queue = c.queue, batch[:0]
		c.wmu.Unlock()
		for i, g := range batch {
			batch[i] = nil
			if !c.write(g) {
				c.endWrite(false)
				return nil // f itself went out
			}
		}
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
		c.queue = nil
		c.stop()
	}
	if c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// idleChan returns the channel closed when the write under way ends; wmu must be held.
func (c *conn) idleChan() <-chan struct{} {
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
		idle := c.idleChan()
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
