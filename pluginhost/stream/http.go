package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The flow control of HTTP bodies (pluginhost.proto): each side may have httpWindowBytes
// of one call's body in flight beyond what the other side granted, in chunks of at most
// httpChunkBytes.
const (
	httpWindowBytes = 256 << 10
	httpChunkBytes  = 64 << 10
)

// HTTPCall is a call to one of a plugin's HTTP endpoints, as the transport received it.
type HTTPCall struct {
	Method, Path, Query, Host, RemoteAddr string
	// Pattern is the endpoint's pattern that matched ("GET /api/v1/users/{id}"), and
	// PathParams the values of its wildcards.
	Pattern    string
	PathParams map[string]string
	// Header is passed without hop-by-hop headers and without Authorization.
	Header http.Header
	Caller HTTPCaller
	// Body is read in chunks as the plugin takes them; nil for none.
	Body io.Reader
}

// HTTPCaller is who calls: never the token.
type HTTPCaller struct {
	Authenticated               bool
	TokenID, Name, Role, Plugin string
}

// ErrCallFailed is wrapped by the error of a call whose plugin instance went away (or broke
// the protocol) before its answer ended.
var ErrCallFailed = errors.New("the plugin instance failed during the call")

// hopByHop are the headers that concern one connection, never passed on (RFC 9110 7.6.1).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// httpCall is the host's side of one call: carried to an instance of the plugin over its
// session, or to another replica that has one (relay.go).
type httpCall struct {
	id   string
	peer callPeer
	who  string // "plugin x", for errors

	mu       sync.Mutex
	head     *pluginhostv1.HttpResponse // the answer's start, once it came
	chunks   [][]byte                   // answer bytes received and not written yet
	buffered int
	done     bool  // the answer's last bytes came
	err      error // the call broke
	signal   chan struct{}

	credit atomic.Int64  // request body bytes the host may still send
	grants chan struct{} // signalled when credit grows
}

// callPeer is where a call's frames go: a plugin instance's session (sessionPeer), or a
// replica that has one (replicaPeer). Its answers come back through httpCall's deliver,
// grant and fail.
type callPeer interface {
	// attach makes the peer's answers to c reach it; detach stops them.
	attach(c *httpCall)
	detach(c *httpCall)
	start(ctx context.Context, req *pluginhostv1.HttpRequest) error
	sendBody(ctx context.Context, b *pluginhostv1.HttpBody) error
	sendWindow(ctx context.Context, w *pluginhostv1.HttpWindow) error
	// cancel ends the call on the peer's side; it gives up after a second.
	cancel(ctx context.Context, id, reason string)
	// gone is closed when the peer can answer no more, for the reason goneErr gives.
	gone() <-chan struct{}
	goneErr() error
}

var callSeq atomic.Uint64

// CallHTTP carries call to one connected instance of plugin pluginID, on this replica or
// through the bus's relay on another one, and writes its answer to w as it comes. It
// returns an error for the caller (PLUGIN_UNAVAILABLE with no instance anywhere,
// PLUGIN_COMMUNICATION_TIMEOUT when ctx's deadline passes first, ErrCallFailed when the
// instance goes away) only while nothing is written to w; after that the answer is cut
// short and the error is ErrCallFailed or ctx's. The plugin's handler is cancelled when ctx
// ends. The call counts in the plugin's metrics here, where it was received.
func (h *Sessions) CallHTTP(ctx context.Context, pluginID string, call HTTPCall, w http.ResponseWriter) error {
	start := time.Now()
	status, wrote, err := h.routeCall(ctx, pluginID, call, w)
	who := call.Caller.TokenID
	if who == "" {
		host, _, err := net.SplitHostPort(call.RemoteAddr)
		if err != nil {
			host = call.RemoteAddr
		}
		who = "anonymous@" + host
	}
	// A failure is a 5xx answer, or none, unless the caller went away first.
	failed := status >= 500 || (err != nil && !errors.Is(ctx.Err(), context.Canceled))
	h.metrics.ObserveRequest(pluginID, who, time.Since(start), failed)
	switch {
	case err == nil:
		return nil
	case wrote:
		return err
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errs.New(errs.PluginCommunicationTimeout, "plugin %s did not answer %s %s in time: %v", pluginID, call.Method, call.Path, context.Cause(ctx))
	}
	return err
}

// routeCall carries the call to an instance on this replica, or else to a replica that
// has one; when that replica has none any more (and the request can be sent again: its
// body came whole in the first chunk), to the next.
func (h *Sessions) routeCall(ctx context.Context, pluginID string, call HTTPCall, w http.ResponseWriter) (status int, wrote bool, err error) {
	first, bodyDone, err := readChunk(call.Body)
	if err != nil {
		return 0, false, errs.Wrap(errs.ValidationError, err, "reading the request body failed")
	}
	if sess := h.pickSession(pluginID); sess != nil {
		return h.carry(ctx, sessionPeer{sess}, pluginID, call, first, bodyDone, w)
	}
	unavailable := errs.New(errs.PluginUnavailable, "plugin %s has no connected instance to answer %s %s", pluginID, call.Method, call.Path)
	if h.relay == nil {
		return 0, false, unavailable
	}
	holders, err := h.relay.Holders(ctx, pluginID)
	if err != nil {
		return 0, false, errs.Wrap(errs.PluginUnavailable, err, "plugin %s has no connected instance on this server, and the other servers could not be asked", pluginID)
	}
	rand.Shuffle(len(holders), func(i, j int) { holders[i], holders[j] = holders[j], holders[i] })
	for _, to := range holders {
		status, wrote, err = h.carry(ctx, h.replicaPeer(to, pluginID), pluginID, call, first, bodyDone, w)
		if err == nil || wrote || !bodyDone || !errors.Is(err, errNotHeld) {
			return status, wrote, err
		}
	}
	return 0, false, unavailable
}

// carry carries one call to peer: the request (with the first chunk of its body), the
// rest of the body within the peer's window, and the answer to w. It cancels the call on
// the peer's side unless the answer came whole.
func (h *Sessions) carry(ctx context.Context, peer callPeer, pluginID string, call HTTPCall, first []byte, bodyDone bool, w http.ResponseWriter) (status int, wrote bool, err error) {
	c := &httpCall{id: fmt.Sprintf("http_%s_%d", newFrameID(), callSeq.Add(1)), peer: peer, who: "plugin " + pluginID,
		signal: make(chan struct{}, 1), grants: make(chan struct{}, 1)}
	c.credit.Store(httpWindowBytes - int64(len(first)))
	peer.attach(c)
	defer peer.detach(c)

	req := requestFrame(c.id, call, first, bodyDone)
	if d, ok := ctx.Deadline(); ok {
		req.Deadline = timestamppb.New(d)
	}
	if err := peer.start(ctx, req); err != nil {
		return 0, false, err
	}
	finished := false
	defer func() {
		if !finished {
			// The caller went away, the deadline passed or the instance broke: the
			// plugin's handler stops.
			reason := "the call ended"
			if ctx.Err() != nil {
				reason = context.Cause(ctx).Error()
			}
			peer.cancel(ctx, c.id, reason)
		}
	}()
	if !bodyDone {
		go c.pumpBody(ctx, call.Body)
	}
	wrote, err = c.answer(ctx, w)
	finished = err == nil
	c.mu.Lock()
	if c.head != nil {
		status = int(c.head.GetStatus())
	}
	c.mu.Unlock()
	return status, wrote, err
}

// pickSession returns one connected instance of the plugin on this replica, in turn.
func (h *Sessions) pickSession(pluginID string) *session {
	insts := h.pres.Instances(pluginID)
	if len(insts) == 0 {
		return nil
	}
	start := int(h.rr.Add(1))
	for i := range insts {
		if s, ok := insts[(start+i)%len(insts)].(*session); ok {
			return s
		}
	}
	return nil
}

// readChunk reads up to one chunk of body; done when the body ended within it.
func readChunk(body io.Reader) ([]byte, bool, error) {
	if body == nil || body == http.NoBody {
		return nil, true, nil
	}
	buf := make([]byte, httpChunkBytes)
	n, err := io.ReadFull(body, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return buf[:n], true, nil
	case err != nil:
		return nil, false, err
	}
	return buf[:n], false, nil
}

// pumpBody sends the rest of the request body within the peer's window.
func (c *httpCall) pumpBody(ctx context.Context, body io.Reader) {
	for {
		chunk, done, err := readChunk(body)
		if err != nil {
			c.fail(fmt.Errorf("reading the request body: %w", err))
			return
		}
		for c.credit.Load() < int64(len(chunk)) {
			select {
			case <-c.grants:
			case <-ctx.Done():
				return
			case <-c.peer.gone():
				return
			}
		}
		c.credit.Add(-int64(len(chunk)))
		if err := c.peer.sendBody(ctx, &pluginhostv1.HttpBody{RequestId: c.id, Chunk: chunk, Done: done}); err != nil {
			if ctx.Err() == nil {
				c.fail(fmt.Errorf("%w: the request body could not be passed on: %v", ErrCallFailed, errs.MessageOf(err)))
			}
			return
		}
		if done {
			return
		}
	}
}

// answer waits for the plugin's answer and writes it to w, granting the plugin more
// window as the caller takes the bytes. wrote says whether anything reached w.
func (c *httpCall) answer(ctx context.Context, w http.ResponseWriter) (wrote bool, err error) {
	flusher, _ := w.(http.Flusher)
	for {
		c.mu.Lock()
		head, chunks, done, cerr := c.head, c.chunks, c.done, c.err
		c.chunks, c.buffered = nil, 0
		c.mu.Unlock()
		if cerr != nil {
			return wrote, cerr
		}
		if head != nil && !wrote {
			for _, hh := range head.GetHeaders() {
				if isHopByHop(hh.GetName()) {
					continue
				}
				for _, v := range hh.GetValues() {
					w.Header().Add(hh.GetName(), v)
				}
			}
			w.WriteHeader(int(head.GetStatus()))
			wrote = true
		}
		n := 0
		for _, b := range chunks {
			if _, err := w.Write(b); err != nil {
				return wrote, err // the caller went away
			}
			n += len(b)
		}
		if done {
			// Not flushed: net/http then sends a whole small answer with its length, in
			// one write.
			return wrote, nil
		}
		if wrote && flusher != nil {
			flusher.Flush()
		}
		if n > 0 {
			if err := c.peer.sendWindow(ctx, &pluginhostv1.HttpWindow{RequestId: c.id, Bytes: int64(n)}); err != nil {
				if ctx.Err() != nil {
					return wrote, context.Cause(ctx)
				}
				return wrote, fmt.Errorf("%w: %v", ErrCallFailed, errs.MessageOf(err))
			}
		}
		select {
		case <-c.signal:
		case <-ctx.Done():
			return wrote, context.Cause(ctx)
		case <-c.peer.gone():
			return wrote, c.peer.goneErr()
		}
	}
}

// deliver takes a frame of the plugin's answer (from the session's receive loop; it never
// blocks). A plugin that sends beyond its window, or answers twice, breaks the call.
func (c *httpCall) deliver(head *pluginhostv1.HttpResponse, chunk []byte, done bool) {
	c.mu.Lock()
	switch {
	case c.done || c.err != nil:
	case head != nil && c.head != nil:
		c.err = fmt.Errorf("%w: %s answered the call twice", ErrCallFailed, c.who)
	case head == nil && c.head == nil:
		c.err = fmt.Errorf("%w: %s sent body before its answer's status", ErrCallFailed, c.who)
	default:
		if head != nil {
			c.head = head
		}
		if len(chunk) > 0 {
			c.chunks = append(c.chunks, chunk)
			c.buffered += len(chunk)
		}
		c.done = done
		if c.buffered > httpWindowBytes {
			c.err = fmt.Errorf("%w: %s sent more than its window", ErrCallFailed, c.who)
		}
	}
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// fail breaks the call.
func (c *httpCall) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// grant adds request body credit from the plugin.
func (c *httpCall) grant(n int64) {
	c.credit.Add(n)
	select {
	case c.grants <- struct{}{}:
	default:
	}
}

// sessionPeer carries calls to a plugin instance connected to this replica.
type sessionPeer struct{ s *session }

func (p sessionPeer) attach(c *httpCall) {
	p.s.mu.Lock()
	if p.s.calls == nil {
		p.s.calls = map[string]*httpCall{}
	}
	p.s.calls[c.id] = c
	p.s.mu.Unlock()
}

func (p sessionPeer) detach(c *httpCall) {
	p.s.mu.Lock()
	delete(p.s.calls, c.id)
	p.s.mu.Unlock()
}

func (p sessionPeer) start(ctx context.Context, req *pluginhostv1.HttpRequest) error {
	return p.s.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpRequest{HttpRequest: req}})
}

func (p sessionPeer) sendBody(ctx context.Context, b *pluginhostv1.HttpBody) error {
	return p.s.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpRequestBody{HttpRequestBody: b}})
}

func (p sessionPeer) sendWindow(ctx context.Context, w *pluginhostv1.HttpWindow) error {
	return p.s.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpResponseWindow{HttpResponseWindow: w}})
}

func (p sessionPeer) cancel(ctx context.Context, id, reason string) {
	// Bounded: a plugin that does not read its stream must not hold the caller.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = p.s.enqueue(cctx, httpCancel(id, reason))
}

func (p sessionPeer) gone() <-chan struct{} { return p.s.done }

func (p sessionPeer) goneErr() error {
	return fmt.Errorf("%w: plugin %s disconnected", ErrCallFailed, p.s.pluginID)
}

// httpFrame hands a frame of the plugin to its call, if the call still waits.
func (s *session) httpFrame(id string, f func(*httpCall)) {
	s.mu.Lock()
	c := s.calls[id]
	s.mu.Unlock()
	if c != nil {
		f(c)
	}
}

func requestFrame(id string, call HTTPCall, first []byte, bodyDone bool) *pluginhostv1.HttpRequest {
	hs := make([]*pluginhostv1.HttpHeader, 0, len(call.Header))
	for k, v := range call.Header {
		if isHopByHop(k) || strings.EqualFold(k, "Authorization") {
			continue
		}
		hs = append(hs, &pluginhostv1.HttpHeader{Name: k, Values: v})
	}
	r := &pluginhostv1.HttpRequest{
		RequestId: id, Method: call.Method, Path: call.Path, Pattern: call.Pattern, PathParams: call.PathParams,
		Query: call.Query, Headers: hs, Body: first, BodyDone: bodyDone, Host: call.Host, RemoteAddr: call.RemoteAddr,
		Caller: &pluginhostv1.HttpCaller{Authenticated: call.Caller.Authenticated, TokenId: call.Caller.TokenID,
			Name: call.Caller.Name, Role: call.Caller.Role, PluginId: call.Caller.Plugin},
	}
	return r
}

func httpCancel(id, reason string) *pluginhostv1.ConnectResponse {
	return &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpCancel{HttpCancel: &pluginhostv1.HttpCancel{RequestId: id, Reason: reason}}}
}

func isHopByHop(name string) bool {
	for _, h := range hopByHop {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}
