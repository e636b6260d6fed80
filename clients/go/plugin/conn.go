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

// conn is one stream to the host. Only its pump goroutine calls Send and CloseSend; only
// the goroutine that owns the receive side (the handshake, then receive) calls Receive;
// Close is called once both have exited.
type conn struct {
	stream clientStream
	// ctx is the stream's context; cancel aborts the call.
	ctx    context.Context
	cancel context.CancelFunc
	logger *slog.Logger

	// out feeds the pump. It is never closed: senders select on stopped instead.
	out chan *pluginhostv1.ConnectRequest
	// flush is closed (once, through flushOnce) to ask the pump to send what is queued, close
	// the request side and exit.
	flush     chan struct{}
	flushOnce sync.Once
	// stopped is closed when the pump exits; sends fail from then on.
	stopped chan struct{}

	// shutdown carries the host's first shutdown request to the session loop.
	shutdown chan *pluginhostv1.Shutdown
	// recvDone is closed when the receive goroutine exits; recvErr is written before. Its
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

	// wg tracks the pump and receive goroutines.
	wg sync.WaitGroup
}

func newConn(ctx context.Context, cancel context.CancelFunc, s clientStream, logger *slog.Logger) *conn {
	c := &conn{
		stream:   s,
		ctx:      ctx,
		cancel:   cancel,
		logger:   logger,
		out:      make(chan *pluginhostv1.ConnectRequest, sendQueue),
		flush:    make(chan struct{}),
		stopped:  make(chan struct{}),
		shutdown: make(chan *pluginhostv1.Shutdown, 1),
		recvDone: make(chan struct{}),
		requests: map[string]chan *pluginhostv1.RequestReply{},
		handlers: map[string]context.CancelCauseFunc{},
	}
	c.wg.Add(1)
	go c.pump()
	return c
}

// send queues f for the pump. It fails when the connection is gone or ctx is done.
func (c *conn) send(ctx context.Context, f *pluginhostv1.ConnectRequest) error {
	select {
	case <-c.stopped:
		return errConnClosed
	default:
	}
	select {
	case c.out <- f:
		return nil
	case <-c.stopped:
		return errConnClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pump is the only goroutine that writes to the stream.
func (c *conn) pump() {
	defer c.wg.Done()
	defer close(c.stopped)
	defer func() {
		if err := c.stream.CloseSend(); err != nil {
			c.logger.Debug("plugin: closing the request side", "error", err)
		}
	}()
	for {
		select {
		case f := <-c.out:
			if !c.write(f) {
				return
			}
		case <-c.flush:
			for {
				select {
				case f := <-c.out:
					if !c.write(f) {
						return
					}
				default:
					return
				}
			}
		case <-c.ctx.Done():
			return
		}
	}
}

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

// close ends the connection and waits for its goroutines. Gracefully (only once the receive
// goroutine runs): the queued frames are sent, the request side is closed and the host has
// until timeout to end the response side. Otherwise at once.
func (c *conn) close(graceful bool, timeout time.Duration) {
	if graceful {
		c.flushOnce.Do(func() { close(c.flush) })
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		select {
		case <-c.stopped:
		case <-ctx.Done():
		}
		select {
		case <-c.recvDone:
		case <-ctx.Done():
		}
		cancel()
	}
	c.cancel()
	c.wg.Wait()
	if err := c.stream.Close(); err != nil {
		c.logger.Debug("plugin: closing the stream", "error", err)
	}
}
