package plugin

import (
	"context"
	"errors"
	"strconv"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file holds the plumbing of the plugin's own requests (send, emit, broadcast,
// subscribe, kv, discover): each gets a request id, waits for a connection while there is
// none, and waits for the host's reply with that request id. The wait ends early when the
// caller's context ends, when the connection breaks (PLUGIN_UNAVAILABLE: whether the host
// acted on the request is unknown) or when Run is over.

// call sends the frame that build makes for a new request id and waits for the host's
// reply. A reply with an error code is returned as an *Error. When ctx ends first, abandon
// (if not nil) is called with the connection and the request id, to tell the host, and
// ctx.Err() is returned.
func (s *Session) call(ctx context.Context, build func(requestID string) *pluginhostv1.ConnectRequest, abandon func(c *conn, requestID string)) (*pluginhostv1.RequestReply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := s.waitConn(ctx)
	if err != nil {
		return nil, err
	}
	id := s.requestPrefix + "-" + strconv.FormatUint(s.requestSeq.Add(1), 10)
	replies := c.expect(id)
	if err := c.send(ctx, build(id)); err != nil {
		c.forget(id)
		if errors.Is(err, errConnClosed) {
			return nil, errConnectionLost
		}
		return nil, err
	}
	handOffReceive(ctx)
	select {
	case rep := <-replies:
		return settle(rep)
	case <-c.recvDone:
		c.forget(id)
		// The receive goroutine may have handed over the reply just before it exited.
		select {
		case rep := <-replies:
			return settle(rep)
		default:
		}
		return nil, errConnectionLost
	case <-ctx.Done():
		c.forget(id)
		if abandon != nil {
			abandon(c, id)
		}
		return nil, ctx.Err()
	}
}

// waitConn returns the current connection, waiting for one while the plugin is
// disconnected.
func (s *Session) waitConn(ctx context.Context) (*conn, error) {
	for {
		select {
		case <-s.stopped:
			return nil, errStopped
		default:
		}
		s.mu.RLock()
		c, connected := s.conn, s.connected
		s.mu.RUnlock()
		if c != nil {
			return c, nil
		}
		select {
		case <-connected:
		case <-s.stopped:
			return nil, errStopped
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// settle turns the host's reply into an error when it carries an error code.
func settle(rep *pluginhostv1.RequestReply) (*pluginhostv1.RequestReply, error) {
	if code := rep.GetErrorCode(); code != "" {
		return nil, &Error{Code: code, Message: rep.GetErrorMessage()}
	}
	return rep, nil
}

// expect registers request id, and returns the channel its reply will arrive on.
func (c *conn) expect(id string) <-chan *pluginhostv1.RequestReply {
	ch := make(chan *pluginhostv1.RequestReply, 1)
	c.mu.Lock()
	c.requests[id] = ch
	c.mu.Unlock()
	return ch
}

// forget drops request id: its reply, if one comes, is ignored.
func (c *conn) forget(id string) {
	c.mu.Lock()
	delete(c.requests, id)
	c.mu.Unlock()
}

// resolve hands rep to the request waiting for it, and reports whether one was.
func (c *conn) resolve(rep *pluginhostv1.RequestReply) bool {
	c.mu.Lock()
	ch, ok := c.requests[rep.GetRequestId()]
	delete(c.requests, rep.GetRequestId())
	c.mu.Unlock()
	if ok {
		ch <- rep // never blocks: room for one, and the id is gone from the map
	}
	return ok
}
