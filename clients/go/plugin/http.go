package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// The flow control of HTTP bodies (see pluginhost.proto): each side may have
// httpWindowBytes of one call's body in flight beyond what the other side has granted,
// in chunks of at most httpChunkBytes.
const (
	httpWindowBytes = 256 << 10
	httpChunkBytes  = 64 << 10
)

// Caller is who called one of the plugin's HTTP endpoints, as the host authenticated them.
// The host never passes the caller's token.
type Caller struct {
	// Authenticated is false for a call without a token to a public endpoint.
	Authenticated bool
	// TokenID and Name identify the token the caller presented.
	TokenID, Name string
	// Role is admin, user or plugin.
	Role string
	// PluginID is the plugin a plugin token belongs to.
	PluginID string
}

type callerKey struct{}

// CallerOf returns the caller of the HTTP request whose context is ctx (see Plugin.HTTP).
func CallerOf(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// errNoHTTPHandler answers HTTP calls when the plugin has no HTTP handler.
var errNoHTTPHandler = errors.New("this plugin serves no HTTP endpoints")

// httpCall is one HTTP call the host carries to this instance.
type httpCall struct {
	id      string
	c       *conn
	session *Session
	ctx     context.Context
	cancel  context.CancelCauseFunc
	body    *httpBody

	// mu guards credit; grants signal more.
	mu     sync.Mutex
	credit int64 // response body bytes this side may still send
	grants chan struct{}
}

// httpRequest registers an HTTP call and returns the work of serving it, for the caller to
// run on the goroutine that read the request (see receive) when OnStart is done: the
// handler starts without a scheduler wake-up, on a worker whose stack has grown already (a
// fresh goroutine per call grew its stack on every call, a tenth of the SDK's CPU in
// BenchmarkPluginEndpoint's profile). Before OnStart is done, a goroutine waits for it and
// serves the call. A call the host ended before its handler started is dropped unserved.
func (r *runner) httpRequest(c *conn, req *pluginhostv1.HttpRequest) (run func()) {
	parent, stopDeadline := c.ctx, context.CancelFunc(func() {})
	if d := req.GetDeadline(); d != nil {
		parent, stopDeadline = context.WithDeadline(c.ctx, d.AsTime())
	}
	ctx, cancelCall := context.WithCancelCause(parent)
	cancel := func(cause error) { cancelCall(cause); stopDeadline() }
	call := &httpCall{id: req.GetRequestId(), c: c, session: r.session, ctx: ctx, cancel: cancel, credit: httpWindowBytes, grants: make(chan struct{}, 1)}
	call.body = newHTTPBody(call, req.GetBody(), req.GetBodyDone())
	c.mu.Lock()
	c.calls[call.id] = call
	c.mu.Unlock()
	r.control.Add(1)
	serve := func() {
		defer r.control.Done()
		defer func() {
			c.mu.Lock()
			delete(c.calls, call.id)
			c.mu.Unlock()
			cancel(nil)
		}()
		if ctx.Err() != nil {
			return
		}
		r.serveHTTP(call, req)
	}
	select {
	case <-r.started:
		return serve
	default:
	}
	go func() {
		select {
		case <-r.started:
		case <-ctx.Done():
		}
		serve()
	}()
	return nil
}

// httpFrame hands a body chunk, a window or a cancel to its call.
func (c *conn) httpFrame(id string, f func(*httpCall)) bool {
	c.mu.Lock()
	call := c.calls[id]
	c.mu.Unlock()
	if call == nil {
		return false
	}
	f(call)
	return true
}

// serveHTTP runs the plugin's handler for call and sends its answer.
func (r *runner) serveHTTP(call *httpCall, req *pluginhostv1.HttpRequest) {
	w := &httpResponse{call: call, header: http.Header{}}
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("plugin: the HTTP handler panicked", "request_id", call.id, "panic", fmt.Sprint(p))
			if !w.sent {
				w.header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
				w.status, w.buf = http.StatusInternalServerError, []byte("the plugin's handler failed\n")
			}
		}
		w.finish(req.GetMethod())
	}()
	hr, err := httpRequestOf(call, req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.p.HTTP == nil {
		http.Error(w, errNoHTTPHandler.Error(), http.StatusNotImplemented)
		return
	}
	r.p.HTTP.ServeHTTP(w, hr)
}

// httpRequestOf builds the net/http request of a call.
func httpRequestOf(call *httpCall, req *pluginhostv1.HttpRequest) (*http.Request, error) {
	u, err := url.Parse(req.GetPath())
	if err != nil {
		return nil, fmt.Errorf("bad request path: %w", err)
	}
	u.RawQuery = req.GetQuery()
	c := req.GetCaller()
	ctx := context.WithValue(call.ctx, callerKey{}, Caller{Authenticated: c.GetAuthenticated(), TokenID: c.GetTokenId(),
		Name: c.GetName(), Role: c.GetRole(), PluginID: c.GetPluginId()})
	ctx = context.WithValue(ctx, sessionKey{}, call.session)
	hr, err := http.NewRequestWithContext(ctx, req.GetMethod(), u.String(), call.body)
	if err != nil {
		return nil, err
	}
	hr.RequestURI = u.RequestURI()
	hr.Host, hr.RemoteAddr, hr.Pattern = req.GetHost(), req.GetRemoteAddr(), req.GetPattern()
	for _, h := range req.GetHeaders() {
		for _, v := range h.GetValues() {
			hr.Header.Add(h.GetName(), v)
		}
	}
	hr.ContentLength = -1
	if n, err := strconv.ParseInt(hr.Header.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		hr.ContentLength = n
	}
	if req.GetBodyDone() && len(req.GetBody()) == 0 {
		hr.ContentLength, hr.Body = 0, http.NoBody
	}
	for k, v := range req.GetPathParams() {
		hr.SetPathValue(k, v)
	}
	return hr, nil
}

// grant adds response body credit from the host.
func (call *httpCall) grant(n int64) {
	call.mu.Lock()
	call.credit += n
	call.mu.Unlock()
	select {
	case call.grants <- struct{}{}:
	default:
	}
}

// take waits until n bytes of response body may be sent, and takes them.
func (call *httpCall) take(n int64) error {
	for {
		call.mu.Lock()
		if call.credit >= n {
			call.credit -= n
			call.mu.Unlock()
			return nil
		}
		call.mu.Unlock()
		select {
		case <-call.grants:
		case <-call.ctx.Done():
			return context.Cause(call.ctx)
		}
	}
}

// send writes one frame of the call's answer.
func (call *httpCall) send(f *pluginhostv1.ConnectRequest) error {
	return call.c.send(call.ctx, f)
}

// httpResponse is the http.ResponseWriter of a call: the status and headers go with the
// first bytes (or a Flush); the body goes in chunks within the host's window.
type httpResponse struct {
	call   *httpCall
	header http.Header
	status int
	sent   bool   // the http_response frame is sent
	buf    []byte // body bytes not sent yet
	err    error  // the call failed: writes fail
}

func (w *httpResponse) Header() http.Header { return w.header }

func (w *httpResponse) WriteHeader(status int) {
	if w.status != 0 || w.sent || status < 200 {
		return // informational answers are not carried; the first final status wins
	}
	w.status = status
}

func (w *httpResponse) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.WriteHeader(http.StatusOK)
	n := len(p)
	w.buf = append(w.buf, p...)
	for len(w.buf) >= httpChunkBytes {
		if err := w.flushChunk(httpChunkBytes, false); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Flush sends what is written so far (the headers at least): streaming answers such as
// Server-Sent Events reach the caller as they are written.
func (w *httpResponse) Flush() {
	w.WriteHeader(http.StatusOK)
	for (len(w.buf) > 0 || !w.sent) && w.err == nil {
		_ = w.flushChunk(min(len(w.buf), httpChunkBytes), false)
	}
}

// finish sends the rest of the answer and ends it. An answer that fits in one frame and
// was not flushed gets its Content-Length, as net/http gives it to a handler that returns
// without flushing: the host then writes the whole answer to its caller at once, instead of
// chunked with its end in a write of its own.
func (w *httpResponse) finish(method string) {
	w.WriteHeader(http.StatusOK)
	if !w.sent && len(w.buf) <= httpChunkBytes && bodyAllowed(w.status) && w.header.Get("Content-Length") == "" &&
		w.header.Get("Transfer-Encoding") == "" && w.header.Get("Trailer") == "" && (method != http.MethodHead || len(w.buf) > 0) {
		w.header.Set("Content-Length", strconv.Itoa(len(w.buf)))
	}
	for w.err == nil {
		last := len(w.buf) <= httpChunkBytes
		if err := w.flushChunk(min(len(w.buf), httpChunkBytes), last); err != nil || last {
			return
		}
	}
}

// flushChunk sends the first n buffered bytes, with the status and headers if they are not
// sent yet; done ends the answer.
func (w *httpResponse) flushChunk(n int, done bool) error {
	if err := context.Cause(w.call.ctx); err != nil {
		// The host gave up on the call (its deadline, the caller gone): nothing more of
		// the answer is wanted.
		w.err = err
		return err
	}
	if err := w.call.take(int64(n)); err != nil {
		w.err = err
		return err
	}
	chunk := w.buf[:n:n]
	var f *pluginhostv1.ConnectRequest
	if !w.sent {
		hs := make([]*pluginhostv1.HttpHeader, 0, len(w.header))
		for k, v := range w.header {
			hs = append(hs, &pluginhostv1.HttpHeader{Name: k, Values: v})
		}
		f = &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpResponse{HttpResponse: &pluginhostv1.HttpResponse{
			RequestId: w.call.id, Status: int32(w.status), Headers: hs, Body: chunk, Done: done}}}
		w.sent = true
	} else {
		f = &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpResponseBody{HttpResponseBody: &pluginhostv1.HttpBody{
			RequestId: w.call.id, Chunk: chunk, Done: done}}}
	}
	w.buf = w.buf[n:]
	if err := w.call.send(f); err != nil {
		w.err = err
		return err
	}
	return nil
}

// bodyAllowed reports whether a final answer with status may have a body (RFC 9110 15.3.5,
// 15.4.5).
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// httpBody is a call's request body: chunks from the host, read by the handler; what is
// read is granted back to the host, so the host never has more than a window in flight.
type httpBody struct {
	call *httpCall

	mu       sync.Mutex
	chunks   [][]byte
	buffered int
	done     bool
	more     chan struct{} // signalled when a chunk arrives or the body ends
	unacked  int           // bytes read and not yet granted back
}

func newHTTPBody(call *httpCall, first []byte, done bool) *httpBody {
	b := &httpBody{call: call, done: done, more: make(chan struct{}, 1)}
	if len(first) > 0 {
		b.chunks, b.buffered = [][]byte{first}, len(first)
	}
	return b
}

// push adds a chunk from the host. A host that sends beyond the window ends the call.
func (b *httpBody) push(chunk []byte, done bool) {
	b.mu.Lock()
	if len(chunk) > 0 {
		b.chunks = append(b.chunks, chunk)
		b.buffered += len(chunk)
	}
	b.done = b.done || done
	over := b.buffered > httpWindowBytes
	b.mu.Unlock()
	if over {
		b.call.cancel(errors.New("plugin: the host sent more request body than the window allows"))
	}
	select {
	case b.more <- struct{}{}:
	default:
	}
}

func (b *httpBody) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		if len(b.chunks) > 0 {
			n := copy(p, b.chunks[0])
			if n == len(b.chunks[0]) {
				b.chunks = b.chunks[1:]
			} else {
				b.chunks[0] = b.chunks[0][n:]
			}
			b.buffered -= n
			b.unacked += n
			grant := 0
			if b.unacked >= httpWindowBytes/4 && !b.done {
				grant, b.unacked = b.unacked, 0
			}
			b.mu.Unlock()
			if grant > 0 {
				_ = b.call.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpWindow{
					HttpWindow: &pluginhostv1.HttpWindow{RequestId: b.call.id, Bytes: int64(grant)}}})
			}
			return n, nil
		}
		done := b.done
		b.mu.Unlock()
		if done {
			return 0, io.EOF
		}
		select {
		case <-b.more:
		case <-b.call.ctx.Done():
			return 0, context.Cause(b.call.ctx)
		}
	}
}

func (b *httpBody) Close() error { return nil }
