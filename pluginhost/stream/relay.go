package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	relayv1 "github.com/nexus-platform/nexus/gen/go/nexus/relay/v1"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/presence"
)

// A call to a plugin's endpoint that lands on a replica where the plugin has no connected
// instance is carried through the bus's relay (bus.Relay) to a replica that has one, in the
// frames of relay.proto: the caller's side (replicaPeer) speaks to the serving side
// (servedCall) as it would to a plugin instance, with the same windows, and the serving side
// carries the call to its instance as if it had received it itself.

// aliveEvery is how often each side of a relayed call checks that the other replica runs.
const aliveEvery = time.Second

// relayCalls are the relayed calls of this replica, on either side.
type relayCalls struct {
	mu     sync.Mutex
	out    map[string]*httpCall   // calls this replica carries to another, by call id
	served map[string]*servedCall // calls this replica serves for another, by sender and call id
}

// useRelay makes the sessions share calls with the other replicas of b, if b is shared.
func (h *Sessions) useRelay(b bus.Bus) {
	r, ok := b.(bus.Relay)
	if !ok {
		return
	}
	h.relay = r
	h.relayed = &relayCalls{out: map[string]*httpCall{}, served: map[string]*servedCall{}}
	h.pres.OnAttach(func(i presence.Instance) { r.Hold(i.PluginID()) })
	h.pres.OnDetach(func(i presence.Instance) { r.Release(i.PluginID()) })
	r.ReceiveFrames(h.onRelayFrame)
}

// errNotHeld is the cause of the failure of a call relayed to a replica that no longer has
// an instance of the plugin: the call can go to another one.
var errNotHeld = errors.New("the server has no instance of the plugin any more")

// replicaPeer is the caller's side of a call carried to another replica.
type replicaPeer struct {
	h        *Sessions
	to       string
	pluginID string
	stop     chan struct{} // closed by detach
	dead     chan struct{} // closed when the serving replica stops running
	once     *sync.Once
}

func (h *Sessions) replicaPeer(to, pluginID string) *replicaPeer {
	return &replicaPeer{h: h, to: to, pluginID: pluginID, stop: make(chan struct{}), dead: make(chan struct{}), once: &sync.Once{}}
}

func (p *replicaPeer) attach(c *httpCall) {
	p.h.relayed.mu.Lock()
	p.h.relayed.out[c.id] = c
	p.h.relayed.mu.Unlock()
	go watchReplica(p.h.relay, p.to, p.stop, func() { close(p.dead) })
}

func (p *replicaPeer) detach(c *httpCall) {
	p.h.relayed.mu.Lock()
	delete(p.h.relayed.out, c.id)
	p.h.relayed.mu.Unlock()
	p.once.Do(func() { close(p.stop) })
}

func (p *replicaPeer) send(ctx context.Context, f *relayv1.Frame) error {
	f.From = p.h.bus.Replica()
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	if err := p.h.relay.SendFrame(ctx, p.to, b); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("%w: the call could not be relayed to the server holding plugin %s: %v", ErrCallFailed, p.pluginID, err)
	}
	return nil
}

func (p *replicaPeer) start(ctx context.Context, req *pluginhostv1.HttpRequest) error {
	return p.send(ctx, &relayv1.Frame{CallId: req.GetRequestId(), Frame: &relayv1.Frame_Start{Start: &relayv1.Start{PluginId: p.pluginID, Request: req}}})
}

func (p *replicaPeer) sendBody(ctx context.Context, b *pluginhostv1.HttpBody) error {
	return p.send(ctx, &relayv1.Frame{CallId: b.GetRequestId(), Frame: &relayv1.Frame_RequestBody{RequestBody: b}})
}

func (p *replicaPeer) sendWindow(ctx context.Context, w *pluginhostv1.HttpWindow) error {
	return p.send(ctx, &relayv1.Frame{CallId: w.GetRequestId(), Frame: &relayv1.Frame_ResponseWindow{ResponseWindow: w}})
}

func (p *replicaPeer) cancel(ctx context.Context, id, reason string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = p.send(cctx, &relayv1.Frame{CallId: id, Frame: &relayv1.Frame_Cancel{Cancel: &pluginhostv1.HttpCancel{RequestId: id, Reason: reason}}})
}

func (p *replicaPeer) gone() <-chan struct{} { return p.dead }

func (p *replicaPeer) goneErr() error {
	return fmt.Errorf("%w: the server holding plugin %s stopped during the call", ErrCallFailed, p.pluginID)
}

// watchReplica calls dead once the replica stops running, checking every aliveEvery until
// stop is closed. A check that cannot reach the bus does not count.
func watchReplica(r bus.Relay, replica string, stop <-chan struct{}, dead func()) {
	t := time.NewTicker(aliveEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), aliveEvery)
		alive, err := r.Alive(ctx, replica)
		cancel()
		if err == nil && !alive {
			dead()
			return
		}
	}
}

// onRelayFrame takes a frame from another replica (on the bus's reader: it never blocks).
func (h *Sessions) onRelayFrame(b []byte) {
	var f relayv1.Frame
	if err := proto.Unmarshal(b, &f); err != nil || f.GetCallId() == "" || f.GetFrom() == "" {
		h.log.Warn("stream: dropped an undecodable relay frame", "err", err)
		return
	}
	r := h.relayed
	switch x := f.Frame.(type) {
	case *relayv1.Frame_Start:
		h.startServed(&f, x.Start)
		return
	case *relayv1.Frame_RequestBody, *relayv1.Frame_ResponseWindow, *relayv1.Frame_Cancel:
		r.mu.Lock()
		sc := r.served[f.GetFrom()+"/"+f.GetCallId()]
		r.mu.Unlock()
		if sc == nil {
			return // the call ended
		}
		switch x := f.Frame.(type) {
		case *relayv1.Frame_RequestBody:
			sc.body.push(x.RequestBody.GetChunk(), x.RequestBody.GetDone())
		case *relayv1.Frame_ResponseWindow:
			sc.out.grant(x.ResponseWindow.GetBytes())
		case *relayv1.Frame_Cancel:
			sc.cancel(fmt.Errorf("the caller's server cancelled the call: %s", x.Cancel.GetReason()))
		}
		return
	}
	r.mu.Lock()
	c := r.out[f.GetCallId()]
	r.mu.Unlock()
	if c == nil {
		return
	}
	switch x := f.Frame.(type) {
	case *relayv1.Frame_Response:
		c.deliver(x.Response, x.Response.GetBody(), x.Response.GetDone())
	case *relayv1.Frame_ResponseBody:
		c.deliver(nil, x.ResponseBody.GetChunk(), x.ResponseBody.GetDone())
	case *relayv1.Frame_RequestWindow:
		c.grant(x.RequestWindow.GetBytes())
	case *relayv1.Frame_Failure:
		fl := x.Failure
		if fl.GetInstanceFailed() {
			c.fail(fmt.Errorf("%w: %s", ErrCallFailed, fl.GetMessage()))
		} else {
			var cause error
			if errs.Code(fl.GetCode()) == errs.PluginUnavailable {
				cause = errNotHeld
			}
			c.fail(errs.Wrap(errs.Code(fl.GetCode()), cause, "%s", fl.GetMessage()))
		}
	}
}

// servedCall is the serving side of a call relayed from another replica.
type servedCall struct {
	key      string
	id, from string
	body     *relayBody
	out      *relayWriter
	cancel   context.CancelCauseFunc
}

// startServed opens the serving side of a relayed call and carries it to an instance of
// this replica in the background.
func (h *Sessions) startServed(f *relayv1.Frame, st *relayv1.Start) {
	req := st.GetRequest()
	ctx, cancel := context.WithCancelCause(context.Background())
	if d := req.GetDeadline(); d != nil {
		var stop context.CancelFunc
		ctx, stop = context.WithDeadlineCause(ctx, d.AsTime(), errors.New("the endpoint's timeout passed"))
		go func() { <-ctx.Done(); stop() }()
	}
	sc := &servedCall{key: f.GetFrom() + "/" + f.GetCallId(), id: f.GetCallId(), from: f.GetFrom(), cancel: cancel}
	sc.body = newRelayBody(ctx, func(n int64) {
		err := h.sendRelay(ctx, sc, &relayv1.Frame{Frame: &relayv1.Frame_RequestWindow{RequestWindow: &pluginhostv1.HttpWindow{RequestId: sc.id, Bytes: n}}})
		if err != nil {
			// Without the grant the caller's side sends no more body: the call cannot go on.
			sc.cancel(fmt.Errorf("the window for more of the body could not be sent back: %w", err))
		}
	}, req.GetBody(), req.GetBodyDone())
	sc.out = &relayWriter{ctx: ctx, send: func(fr *relayv1.Frame) error { return h.sendRelay(ctx, sc, fr) }, id: sc.id,
		header: http.Header{}, grants: make(chan struct{}, 1)}
	sc.out.credit.Store(httpWindowBytes)
	h.relayed.mu.Lock()
	h.relayed.served[sc.key] = sc
	h.relayed.mu.Unlock()
	go h.serve(ctx, sc, st.GetPluginId(), req)
}

// serve carries a relayed call to an instance of this replica and its answer back.
func (h *Sessions) serve(ctx context.Context, sc *servedCall, pluginID string, req *pluginhostv1.HttpRequest) {
	stop := make(chan struct{})
	defer func() {
		close(stop)
		sc.cancel(errors.New("the call ended"))
		h.relayed.mu.Lock()
		delete(h.relayed.served, sc.key)
		h.relayed.mu.Unlock()
	}()
	go watchReplica(h.relay, sc.from, stop, func() { sc.cancel(errors.New("the caller's server stopped")) })

	fail := func(err error) {
		fl := &relayv1.Failure{Code: string(errs.CodeOf(err)), Message: errs.MessageOf(err), InstanceFailed: errors.Is(err, ErrCallFailed) || sc.out.started}
		if errs.Is(err, errs.PluginCommunicationTimeout) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			fl.Code, fl.InstanceFailed = string(errs.PluginCommunicationTimeout), false
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = h.sendRelay(sctx, sc, &relayv1.Frame{Frame: &relayv1.Frame_Failure{Failure: fl}})
	}
	sess := h.pickSession(pluginID)
	if sess == nil {
		fail(errs.New(errs.PluginUnavailable, "plugin %s has no connected instance on the server the call was relayed to", pluginID))
		return
	}
	call := callOf(req, sc.body)
	first, bodyDone, err := readChunk(call.Body)
	if err != nil {
		fail(fmt.Errorf("%w: %v", ErrCallFailed, err))
		return
	}
	if _, _, err := h.carry(ctx, sessionPeer{sess}, pluginID, call, first, bodyDone, sc.out); err != nil {
		fail(err)
		return
	}
	if err := sc.out.finish(); err != nil {
		fail(fmt.Errorf("%w: %v", ErrCallFailed, err))
	}
}

// sendRelay sends a frame of a served call to the replica that carried it.
func (h *Sessions) sendRelay(ctx context.Context, sc *servedCall, f *relayv1.Frame) error {
	f.CallId, f.From = sc.id, h.bus.Replica()
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	return h.relay.SendFrame(ctx, sc.from, b)
}

// callOf is the call a relayed request describes, its body read from body.
func callOf(req *pluginhostv1.HttpRequest, body io.Reader) HTTPCall {
	hdr := make(http.Header, len(req.GetHeaders()))
	for _, hh := range req.GetHeaders() {
		hdr[hh.GetName()] = hh.GetValues()
	}
	c := req.GetCaller()
	return HTTPCall{Method: req.GetMethod(), Path: req.GetPath(), Query: req.GetQuery(), Host: req.GetHost(), RemoteAddr: req.GetRemoteAddr(),
		Pattern: req.GetPattern(), PathParams: req.GetPathParams(), Header: hdr, Body: body,
		Caller: HTTPCaller{Authenticated: c.GetAuthenticated(), TokenID: c.GetTokenId(), Name: c.GetName(), Role: c.GetRole(), Plugin: c.GetPluginId()}}
}

// relayBody is the request body of a served call as it arrives, within the window the
// serving side grants as it reads.
type relayBody struct {
	ctx   context.Context
	grant func(n int64)

	mu       sync.Mutex
	chunks   [][]byte
	buffered int
	done     bool
	err      error
	signal   chan struct{}
	taken    int64 // read and not granted yet
}

func newRelayBody(ctx context.Context, grant func(int64), first []byte, done bool) *relayBody {
	b := &relayBody{ctx: ctx, grant: grant, done: done, signal: make(chan struct{}, 1)}
	if len(first) > 0 {
		b.chunks, b.buffered = [][]byte{first}, len(first)
	}
	return b
}

// push adds a chunk from the caller's side (it never blocks).
func (b *relayBody) push(chunk []byte, done bool) {
	b.mu.Lock()
	switch {
	case b.done:
	case b.buffered+len(chunk) > httpWindowBytes:
		b.err = errors.New("the caller's server sent more of the body than its window")
	default:
		if len(chunk) > 0 {
			b.chunks = append(b.chunks, chunk)
			b.buffered += len(chunk)
		}
		b.done = done
	}
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

func (b *relayBody) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		if b.err != nil {
			err := b.err
			b.mu.Unlock()
			return 0, err
		}
		if len(b.chunks) > 0 {
			n := copy(p, b.chunks[0])
			if n == len(b.chunks[0]) {
				b.chunks = b.chunks[1:]
			} else {
				b.chunks[0] = b.chunks[0][n:]
			}
			b.buffered -= n
			b.taken += int64(n)
			var grant int64
			if b.taken >= httpChunkBytes || (len(b.chunks) == 0 && !b.done) {
				grant, b.taken = b.taken, 0
			}
			b.mu.Unlock()
			if grant > 0 {
				b.grant(grant)
			}
			return n, nil
		}
		if b.done {
			b.mu.Unlock()
			return 0, io.EOF
		}
		b.mu.Unlock()
		select {
		case <-b.signal:
		case <-b.ctx.Done():
			return 0, context.Cause(b.ctx)
		}
	}
}

// relayWriter is the http.ResponseWriter of a served call: what the instance answers goes
// to the caller's side in frames, within the window that side grants.
type relayWriter struct {
	ctx    context.Context
	send   func(*relayv1.Frame) error
	id     string
	header http.Header
	status int
	buf    []byte
	// started says the answer's head was sent; err is the first failure to send, after
	// which nothing more is sent.
	started bool
	err     error

	credit atomic.Int64
	grants chan struct{}
}

func (w *relayWriter) Header() http.Header { return w.header }

func (w *relayWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *relayWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.buf = append(w.buf, p...)
	for len(w.buf) >= httpChunkBytes || w.err != nil {
		if err := w.sendChunk(false); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush sends what was written.
func (w *relayWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	for !w.started || len(w.buf) > 0 {
		if err := w.sendChunk(false); err != nil {
			return // the call fails on its next Write, or in finish
		}
	}
}

// finish sends the rest of the answer and its end.
func (w *relayWriter) finish() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	for len(w.buf) > httpChunkBytes {
		if err := w.sendChunk(false); err != nil {
			return err
		}
	}
	return w.sendChunk(true)
}

// sendChunk sends the head (first) and up to one chunk of the answer, within the window.
func (w *relayWriter) sendChunk(done bool) error {
	if w.err != nil {
		return w.err
	}
	n := min(len(w.buf), httpChunkBytes)
	for w.credit.Load() < int64(n) {
		select {
		case <-w.grants:
		case <-w.ctx.Done():
			return context.Cause(w.ctx)
		}
	}
	w.credit.Add(-int64(n))
	chunk := w.buf[:n:n]
	w.buf = w.buf[n:]
	f := &relayv1.Frame{Frame: &relayv1.Frame_ResponseBody{ResponseBody: &pluginhostv1.HttpBody{RequestId: w.id, Chunk: chunk, Done: done}}}
	if !w.started {
		hs := make([]*pluginhostv1.HttpHeader, 0, len(w.header))
		for k, v := range w.header {
			hs = append(hs, &pluginhostv1.HttpHeader{Name: k, Values: v})
		}
		f.Frame = &relayv1.Frame_Response{Response: &pluginhostv1.HttpResponse{RequestId: w.id, Status: int32(w.status), Headers: hs, Body: chunk, Done: done}}
		w.started = true
	}
	w.err = w.send(f)
	return w.err
}

// grant adds response credit from the caller's side.
func (w *relayWriter) grant(n int64) {
	w.credit.Add(n)
	select {
	case w.grants <- struct{}{}:
	default:
	}
}
