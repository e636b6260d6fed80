package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/validate"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// This file holds a fake host: the SDK must not import the real one, so each test scripts
// the host's side of the stream.

const (
	testPluginID = "analytics-plugin"
	testToken    = "nxt_test-token"
	// waitTime bounds every wait in the tests; nothing should take nearly as long.
	waitTime = 5 * time.Second
)

// fakeHost serves PluginHostService.Connect on 127.0.0.1 with h2c, running script for every
// connection once its hello has been read.
type fakeHost struct {
	pluginhostv1connect.UnimplementedPluginHostServiceHandler
	t      *testing.T
	script func(ctx context.Context, s *hostStream) error
	URL    string

	// hellos counts connections that said hello.
	hellos atomic.Int32
	// handlers tracks running Connect calls, so that none outlives the test.
	handlers  sync.WaitGroup
	closeOnce sync.Once
	srv       *http.Server
	served    chan struct{}
}

// hostStream is the host's side of one connection.
type hostStream struct {
	t      *testing.T
	n      int // 1 for the first connection
	stream *connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]
	header http.Header
	hello  *pluginhostv1.Hello
}

func startHost(t *testing.T, script func(ctx context.Context, s *hostStream) error) *fakeHost {
	t.Helper()
	h := &fakeHost{t: t, script: script, served: make(chan struct{})}
	mux := http.NewServeMux()
	// Like the real host, the fake validates every frame and ends the stream on an invalid
	// one: a test fails if the SDK sends a frame the host would reject.
	mux.Handle(pluginhostv1connect.NewPluginHostServiceHandler(h, connect.WithInterceptors(validate.NewInterceptor())))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	h.srv = &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: waitTime}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.URL = "http://" + ln.Addr().String()
	go func() {
		defer close(h.served)
		if err := h.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(h.close)
	return h
}

// close stops the server and waits for its handlers.
func (h *fakeHost) close() {
	h.closeOnce.Do(func() {
		_ = h.srv.Close()
		<-h.served
		h.handlers.Wait()
	})
}

func (h *fakeHost) Connect(ctx context.Context, stream *connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]) error {
	h.handlers.Add(1)
	defer h.handlers.Done()
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		h.t.Errorf("host: first frame is %T, want hello", first.GetFrame())
		return connect.NewError(connect.CodeInvalidArgument, errors.New("hello first"))
	}
	n := int(h.hellos.Add(1))
	return h.script(ctx, &hostStream{t: h.t, n: n, stream: stream, header: stream.RequestHeader().Clone(), hello: first.GetHello()})
}

func (s *hostStream) send(res *pluginhostv1.ConnectResponse) {
	if err := s.stream.Send(res); err != nil {
		s.t.Errorf("host: send %T: %v", res.GetFrame(), err)
	}
}

func (s *hostStream) welcome(config map[string]any, permissions ...string) {
	s.welcomeWith(&pluginhostv1.Welcome{GrantedPermissions: permissions}, config)
}

// welcomeWith sends w, completed with the session's facts and config.
func (s *hostStream) welcomeWith(w *pluginhostv1.Welcome, config map[string]any) {
	cfg, err := structpb.NewStruct(config)
	if err != nil {
		s.t.Errorf("host: config: %v", err)
		return
	}
	w.SessionId = fmt.Sprintf("sess-%d", s.n)
	w.InstanceId = s.hello.GetInstanceId()
	w.Config = cfg
	w.HostVersion = "9.9.9"
	s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Welcome{Welcome: w}})
}

func (s *hostStream) healthCheck(id string) {
	s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HealthCheck{
		HealthCheck: &pluginhostv1.HealthCheckRequest{CheckId: id}}})
}

func (s *hostStream) deliver(d *pluginhostv1.Deliver) {
	s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: d}})
}

// next returns the next frame that match accepts, skipping the others; nil when the stream
// ends first.
func (s *hostStream) next(what string, match func(*pluginhostv1.ConnectRequest) bool) *pluginhostv1.ConnectRequest {
	for {
		f, err := s.stream.Receive()
		if err != nil {
			s.t.Errorf("host: waiting for %s: %v", what, err)
			return nil
		}
		if match(f) {
			return f
		}
	}
}

func (s *hostStream) healthReport() *pluginhostv1.HealthReport {
	return s.next("health_report", func(f *pluginhostv1.ConnectRequest) bool { return f.GetHealthReport() != nil }).GetHealthReport()
}

func (s *hostStream) reply() *pluginhostv1.DeliveryReply {
	return s.next("reply", func(f *pluginhostv1.ConnectRequest) bool { return f.GetReply() != nil }).GetReply()
}

func (s *hostStream) ack() *pluginhostv1.Ack {
	return s.next("ack", func(f *pluginhostv1.ConnectRequest) bool { return f.GetAck() != nil }).GetAck()
}

func (s *hostStream) configAck() *pluginhostv1.ConfigAck {
	return s.next("config_ack", func(f *pluginhostv1.ConnectRequest) bool { return f.GetConfigAck() != nil }).GetConfigAck()
}

// request returns the plugin's next request of its own (send, emit, broadcast, subscribe,
// kv, discover or cancel_send); nil when the stream ends first.
func (s *hostStream) request() *pluginhostv1.ConnectRequest {
	return s.next("request", isRequest)
}

func isRequest(f *pluginhostv1.ConnectRequest) bool {
	switch f.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Send, *pluginhostv1.ConnectRequest_Emit,
		*pluginhostv1.ConnectRequest_Broadcast, *pluginhostv1.ConnectRequest_Subscribe,
		*pluginhostv1.ConnectRequest_Kv, *pluginhostv1.ConnectRequest_Discover,
		*pluginhostv1.ConnectRequest_CancelSend:
		return true
	}
	return false
}

// requestID returns the request id of a request frame.
func requestID(f *pluginhostv1.ConnectRequest) string {
	switch r := f.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Send:
		return r.Send.GetRequestId()
	case *pluginhostv1.ConnectRequest_Emit:
		return r.Emit.GetRequestId()
	case *pluginhostv1.ConnectRequest_Broadcast:
		return r.Broadcast.GetRequestId()
	case *pluginhostv1.ConnectRequest_Subscribe:
		return r.Subscribe.GetRequestId()
	case *pluginhostv1.ConnectRequest_Kv:
		return r.Kv.GetRequestId()
	case *pluginhostv1.ConnectRequest_Discover:
		return r.Discover.GetRequestId()
	case *pluginhostv1.ConnectRequest_CancelSend:
		return r.CancelSend.GetRequestId()
	}
	return ""
}

// answer sends rep, the reply to one of the plugin's requests.
func (s *hostStream) answer(rep *pluginhostv1.RequestReply) {
	s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: rep}})
}

// serveRequests answers the plugin's requests with answer until the stream ends; a nil
// answer leaves the request unanswered. Every request frame is recorded in order.
func (s *hostStream) serveRequests(answer func(f *pluginhostv1.ConnectRequest) *pluginhostv1.RequestReply) []*pluginhostv1.ConnectRequest {
	var seen []*pluginhostv1.ConnectRequest
	for {
		f, err := s.stream.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.t.Errorf("host: stream ended with %v", err)
			}
			return seen
		}
		if !isRequest(f) {
			continue
		}
		seen = append(seen, f)
		if rep := answer(f); rep != nil {
			rep.RequestId = requestID(f)
			s.answer(rep)
		}
	}
}

func (s *hostStream) log() *pluginhostv1.Log {
	return s.next("log", func(f *pluginhostv1.ConnectRequest) bool { return f.GetLog() != nil }).GetLog()
}

// drain reads until the plugin closes its side and returns the error that ended the read:
// io.EOF for a clean close. Frames read on the way are returned too.
func (s *hostStream) drain() ([]*pluginhostv1.ConnectRequest, error) {
	var frames []*pluginhostv1.ConnectRequest
	for {
		f, err := s.stream.Receive()
		if err != nil {
			return frames, err
		}
		frames = append(frames, f)
	}
}

// drainEOF is the usual end of a script: wait for the plugin to close its side.
func (s *hostStream) drainEOF() error {
	if _, err := s.drain(); !errors.Is(err, io.EOF) {
		s.t.Errorf("host: stream ended with %v, want a clean close", err)
	}
	return nil
}

// runningPlugin is a Run in its own goroutine.
type runningPlugin struct {
	cancel context.CancelFunc
	done   chan error
}

// host is a test host: fakeHost, or grpcHost (transport_test.go).
type host interface{ baseURL() string }

func (h *fakeHost) baseURL() string { return h.URL }

// startPlugin runs p against h until the test ends.
func startPlugin(t *testing.T, h host, p plugin.Plugin, opts ...plugin.Option) *runningPlugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitTime)
	base := []plugin.Option{
		plugin.WithHost(h.baseURL()),
		plugin.WithToken(testToken),
		plugin.WithPluginID(testPluginID),
		plugin.WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond),
		plugin.WithLogger(slog.New(slog.DiscardHandler)),
		plugin.WithStderr(io.Discard),
	}
	r := &runningPlugin{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- plugin.Run(ctx, p, append(base, opts...)...) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitTime):
			t.Errorf("Run did not return after its context was canceled")
		}
	})
	return r
}

// wait returns Run's result.
func (r *runningPlugin) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(waitTime):
		t.Fatal("Run did not return")
		return nil
	}
}

// receive waits for a value on ch.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTime):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// freezer is a TCP proxy whose connections can be frozen: bytes stop flowing both ways but
// nothing is closed, as when a network path dies without TCP noticing.
type freezer struct {
	URL    string
	ln     net.Listener
	target string
	// mu guards conns and frozen.
	mu     sync.Mutex
	conns  []net.Conn
	frozen chan struct{} // closed by freeze; connections accepted later get a new one
	wg     sync.WaitGroup
}

func startFreezer(t *testing.T, targetURL string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{URL: "http://" + ln.Addr().String(), ln: ln, target: strings.TrimPrefix(targetURL, "http://"), frozen: make(chan struct{})}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

// freeze freezes the connections open now.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.frozen)
	f.frozen = make(chan struct{})
}

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		client, err := f.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, client, server)
		frozen := f.frozen
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(server, client, frozen)
		go f.pipe(client, server, frozen)
	}
}

// pipe copies src to dst until either fails, dropping what it reads once frozen.
func (f *freezer) pipe(dst, src net.Conn, frozen <-chan struct{}) {
	defer f.wg.Done()
	defer func() {
		_ = dst.Close()
		_ = src.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-frozen:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}
