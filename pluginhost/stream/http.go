package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// httpCall is the host's side of one call on a session.
type httpCall struct {
	id   string
	sess *session

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

var callSeq atomic.Uint64

// CallHTTP carries call to one connected instance of plugin pluginID and writes its answer
// to w as it comes. It returns an error for the caller (PLUGIN_UNAVAILABLE with no
// instance, PLUGIN_COMMUNICATION_TIMEOUT when ctx's deadline passes first, ErrCallFailed
// when the instance goes away) only while nothing is written to w; after that the answer
// is cut short and the error is ErrCallFailed or ctx's. The plugin's handler is cancelled
// when ctx ends.
func (h *Sessions) CallHTTP(ctx context.Context, pluginID string, call HTTPCall, w http.ResponseWriter) error {
	sess := h.pickSession(pluginID)
	if sess == nil {
		return errs.New(errs.PluginUnavailable, "plugin %s has no connected instance to answer %s %s", pluginID, call.Method, call.Path)
	}
	c := &httpCall{id: fmt.Sprintf("http_%s_%d", newFrameID(), callSeq.Add(1)), sess: sess,
		signal: make(chan struct{}, 1), grants: make(chan struct{}, 1)}
	c.credit.Store(httpWindowBytes)
	sess.mu.Lock()
	if sess.calls == nil {
		sess.calls = map[string]*httpCall{}
	}
	sess.calls[c.id] = c
	sess.mu.Unlock()
	defer func() {
		sess.mu.Lock()
		delete(sess.calls, c.id)
		sess.mu.Unlock()
	}()

	first, bodyDone, err := readChunk(call.Body)
	if err != nil {
		return errs.Wrap(errs.ValidationError, err, "reading the request body failed")
	}
	c.credit.Add(-int64(len(first)))
	req := requestFrame(c.id, call, first, bodyDone)
	if d, ok := ctx.Deadline(); ok {
		req.Deadline = timestamppb.New(d)
	}
	if err := sess.send(ctx, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpRequest{HttpRequest: req}}); err != nil {
		return err
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
			// Bounded: a plugin that does not read its stream must not hold the caller.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = sess.enqueue(cctx, httpCancel(c.id, reason))
			cancel()
		}
	}()
	if !bodyDone {
		go c.pumpBody(ctx, call.Body)
	}
	start := time.Now()
	wrote, err := c.answer(ctx, w)
	finished = err == nil
	c.mu.Lock()
	status := 0
	if c.head != nil {
		status = int(c.head.GetStatus())
	}
	c.mu.Unlock()
	who := call.Caller.TokenID
	if who == "" {
		host, _, err := net.SplitHostPort(call.RemoteAddr)
		if err != nil {
			host = call.RemoteAddr
		}
		who = "anonymous@" + host
	}
	h.metrics.ObserveRequest(pluginID, who, time.Since(start), err != nil || status >= 500)
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

// pickSession returns one connected instance of the plugin, in turn.
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

// pumpBody sends the rest of the request body within the plugin's window.
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
			case <-c.sess.done:
				return
			}
		}
		c.credit.Add(-int64(len(chunk)))
		f := &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpRequestBody{HttpRequestBody: &pluginhostv1.HttpBody{
			RequestId: c.id, Chunk: chunk, Done: done}}}
		if err := c.sess.send(ctx, f); err != nil || done {
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
		if wrote && flusher != nil {
			flusher.Flush()
		}
		if done {
			return wrote, nil
		}
		if n > 0 {
			grant := &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HttpResponseWindow{HttpResponseWindow: &pluginhostv1.HttpWindow{
				RequestId: c.id, Bytes: int64(n)}}}
			if err := c.sess.send(ctx, grant); err != nil {
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
		case <-c.sess.done:
			return wrote, fmt.Errorf("%w: plugin %s disconnected", ErrCallFailed, c.sess.pluginID)
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
		c.err = fmt.Errorf("%w: plugin %s answered the call twice", ErrCallFailed, c.sess.pluginID)
	case head == nil && c.head == nil:
		c.err = fmt.Errorf("%w: plugin %s sent body before its answer's status", ErrCallFailed, c.sess.pluginID)
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
			c.err = fmt.Errorf("%w: plugin %s sent more than its window", ErrCallFailed, c.sess.pluginID)
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
