package plugin_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	nexus "github.com/nexus-platform/nexus/clients/go"
	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// The other tests' fake host serves the stream with connect-go; these run the SDK's
// default transport against a grpc-go server, with PluginHostService.Connect registered by
// hand as the real host does (server/plugingrpc.go).

// grpcHost serves PluginHostService.Connect with grpc-go on 127.0.0.1, checking the token
// and running script for every stream once its hello has been read.
type grpcHost struct {
	t      *testing.T
	addr   string
	URL    string
	script func(s *grpcHostStream) error

	// calls counts Connect calls, refused ones included; hellos those that said hello.
	calls, hellos atomic.Int32
	// mu guards srv, the server serving now.
	mu  sync.Mutex
	srv *grpc.Server
}

// grpcHostStream is the host's side of one stream.
type grpcHostStream struct {
	t      *testing.T
	n      int // 1 for the first stream
	ss     grpc.ServerStream
	hello  *pluginhostv1.Hello
	method string // the call's path
	auth   string // the authorization metadata
}

func startGRPCHost(t *testing.T, script func(s *grpcHostStream) error) *grpcHost {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &grpcHost{t: t, addr: ln.Addr().String(), URL: "http://" + ln.Addr().String(), script: script}
	h.serve(ln)
	t.Cleanup(h.stop)
	return h
}

func (h *grpcHost) baseURL() string { return h.URL }

// serve starts a server on ln.
func (h *grpcHost) serve(ln net.Listener) {
	// Calls to another path (behind a path prefix) reach the same handler.
	gs := grpc.NewServer(grpc.WaitForHandlers(true), grpc.UnknownServiceHandler(h.connect))
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: pluginhostv1connect.PluginHostServiceName,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName: "Connect", Handler: h.connect, ServerStreams: true, ClientStreams: true,
		}},
	}, struct{}{})
	h.mu.Lock()
	h.srv = gs
	h.mu.Unlock()
	go func() { _ = gs.Serve(ln) }()
}

// stop stops the server, closing its connections, and waits for its handlers.
func (h *grpcHost) stop() {
	h.mu.Lock()
	gs := h.srv
	h.mu.Unlock()
	gs.Stop()
}

func (h *grpcHost) connect(_ any, ss grpc.ServerStream) error {
	h.calls.Add(1)
	method, _ := grpc.MethodFromServerStream(ss)
	var auth string
	if md, ok := metadata.FromIncomingContext(ss.Context()); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			auth = v[0]
		}
	}
	if auth != "Bearer "+testToken {
		return refusal(codes.Unauthenticated, "UNAUTHENTICATED")
	}
	first := &pluginhostv1.ConnectRequest{}
	if err := ss.RecvMsg(first); err != nil {
		return err
	}
	if first.GetHello() == nil {
		h.t.Errorf("host: first frame is %T, want hello", first.GetFrame())
		return status.Error(codes.InvalidArgument, "hello first")
	}
	n := int(h.hellos.Add(1))
	return h.script(&grpcHostStream{t: h.t, n: n, ss: ss, hello: first.GetHello(), method: method, auth: auth})
}

// refusal is how the host refuses a plugin: a status with an ErrorInfo naming the API's
// error code.
func refusal(code codes.Code, reason string) error {
	st, err := status.New(code, "refused").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "nexus"})
	if err != nil {
		return status.Error(code, "refused")
	}
	return st.Err()
}

func (s *grpcHostStream) send(res *pluginhostv1.ConnectResponse) {
	if err := s.ss.SendMsg(res); err != nil {
		s.t.Errorf("host: send %T: %v", res.GetFrame(), err)
	}
}

func (s *grpcHostStream) welcome() {
	s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Welcome{Welcome: &pluginhostv1.Welcome{
		SessionId: "grpc-" + strconv.Itoa(s.n), InstanceId: s.hello.GetInstanceId(), HostVersion: "9.9.9",
		Config: mustStruct(s.t, map[string]any{"mode": "fast"}),
	}}})
}

// receive returns the plugin's next frame.
func (s *grpcHostStream) receive() (*pluginhostv1.ConnectRequest, error) {
	f := &pluginhostv1.ConnectRequest{}
	if err := s.ss.RecvMsg(f); err != nil {
		return nil, err
	}
	return f, nil
}

// drainEOF reads until the plugin closes its side, which it must do cleanly.
func (s *grpcHostStream) drainEOF() error {
	for {
		if _, err := s.receive(); err != nil {
			if !errors.Is(err, io.EOF) {
				s.t.Errorf("host: stream ended with %v, want a clean close", err)
			}
			return nil
		}
	}
}

func TestGRPCTransport(t *testing.T) {
	t.Parallel()
	t.Run("hello, welcome and messages", func(t *testing.T) {
		t.Parallel()
		type seen struct {
			hello        *pluginhostv1.Hello
			method, auth string
			reply        *pluginhostv1.DeliveryReply
			send         *pluginhostv1.Send
			closed       error
		}
		result := make(chan seen, 1)
		exchanged := make(chan struct{})
		h := startGRPCHost(t, func(s *grpcHostStream) error {
			got := seen{hello: s.hello, method: s.method, auth: s.auth}
			s.welcome()
			s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{
				DeliveryId: "d1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m1", Source: "billing", Type: "echo",
				Data: mustStruct(t, map[string]any{"n": 1}),
			}}})
			for got.reply == nil || got.send == nil {
				f, err := s.receive()
				if err != nil {
					t.Errorf("host: %v", err)
					return err
				}
				switch {
				case f.GetReply() != nil:
					got.reply = f.GetReply()
				case f.GetSend() != nil:
					got.send = f.GetSend()
					s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
						RequestId: got.send.GetRequestId(), MessageId: "msg-1", Status: "success",
						Data: mustStruct(t, map[string]any{"total": 42}),
					}}})
				}
			}
			close(exchanged)
			for {
				if _, err := s.receive(); err != nil {
					got.closed = err
					result <- got
					return nil
				}
			}
		})
		sessions := make(chan *plugin.Session, 1)
		run := startPlugin(t, h, plugin.Plugin{
			Version:      "1.0.0",
			MessageTypes: []string{"echo"},
			OnStart: func(_ context.Context, s *plugin.Session) error {
				sessions <- s
				return nil
			},
			OnMessage: func(_ context.Context, m plugin.Message) (map[string]any, error) {
				return map[string]any{"echo": m.Data["n"], "from": m.Source}, nil
			},
		}, plugin.WithInstanceID("worker-1"))
		s := receive(t, sessions, "OnStart")
		if s.SessionID() != "grpc-1" || s.Config()["mode"] != "fast" || s.HostVersion() != "9.9.9" {
			t.Errorf("session %q, config %v, host %q", s.SessionID(), s.Config(), s.HostVersion())
		}
		r, err := s.Send(testContext(t), "billing", "total", map[string]any{"order": "o1"})
		if err != nil || r.MessageID != "msg-1" || r.Status != "success" || r.Data["total"] != 42.0 {
			t.Errorf("Send = %+v, %v", r, err)
		}
		receive(t, exchanged, "the reply to d1")
		run.cancel()
		if err := run.wait(t); err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}

		got := receive(t, result, "the stream's end")
		want := &pluginhostv1.Hello{PluginId: testPluginID, InstanceId: "worker-1", Version: "1.0.0", Sdk: "nexus-go/" + plugin.SDKVersion, MessageTypes: []string{"echo"}}
		if !proto.Equal(got.hello, want) {
			t.Errorf("hello = %v, want %v", got.hello, want)
		}
		if got.method != pluginhostv1connect.PluginHostServiceConnectProcedure || got.auth != "Bearer "+testToken {
			t.Errorf("call to %q with authorization %q", got.method, got.auth)
		}
		if rep := got.reply; rep.GetDeliveryId() != "d1" || rep.GetStatus() != "success" || !equalJSON(rep.GetData().AsMap(), map[string]any{"echo": 1, "from": "billing"}) {
			t.Errorf("reply = %v", rep)
		}
		if snd := got.send; snd.GetTargetPlugin() != "billing" || snd.GetMessageType() != "total" || snd.GetData().AsMap()["order"] != "o1" {
			t.Errorf("send = %v", snd)
		}
		if !errors.Is(got.closed, io.EOF) {
			t.Errorf("stream ended with %v, want a clean close", got.closed)
		}
	})

	t.Run("refusal is fatal", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name   string
			opt    plugin.Option
			reason string
			code   connect.Code
		}{
			{"bad token", plugin.WithToken("nxt_wrong"), "UNAUTHENTICATED", connect.CodeUnauthenticated},
			{"permission denied", nil, "PLUGIN_PERMISSION_DENIED", connect.CodePermissionDenied},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				h := startGRPCHost(t, func(*grpcHostStream) error {
					return refusal(codes.PermissionDenied, "PLUGIN_PERMISSION_DENIED")
				})
				var opts []plugin.Option
				if tc.opt != nil {
					opts = append(opts, tc.opt)
				}
				run := startPlugin(t, h, plugin.Plugin{OnStart: func(context.Context, *plugin.Session) error {
					t.Error("OnStart ran without a welcome")
					return nil
				}}, opts...)
				err := run.wait(t)
				if err == nil || plugin.ErrorCode(err) != tc.reason || nexus.ErrorCode(err) != tc.reason || connect.CodeOf(err) != tc.code {
					t.Fatalf("Run = %v, want a %s error", err, tc.reason)
				}
				if n := h.calls.Load(); n != 1 {
					t.Errorf("%d calls, want 1 (no retry)", n)
				}
			})
		}
	})

	t.Run("stream dropped", func(t *testing.T) {
		t.Parallel()
		reports := make(chan string, 2)
		h := startGRPCHost(t, func(s *grpcHostStream) error {
			s.welcome()
			s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HealthCheck{
				HealthCheck: &pluginhostv1.HealthCheckRequest{CheckId: "hc-" + strconv.Itoa(s.n)}}})
			for {
				f, err := s.receive()
				if err != nil {
					return err
				}
				if r := f.GetHealthReport(); r != nil {
					reports <- r.GetCheckId()
					break
				}
			}
			if s.n == 1 {
				return status.Error(codes.Unavailable, "host restarting")
			}
			return s.drainEOF()
		})
		var starts atomic.Int32
		startPlugin(t, h, plugin.Plugin{OnStart: func(context.Context, *plugin.Session) error {
			starts.Add(1)
			return nil
		}})
		for _, want := range []string{"hc-1", "hc-2"} {
			if got := receive(t, reports, "health report "+want); got != want {
				t.Errorf("report %s, want %s", got, want)
			}
		}
		if n := h.hellos.Load(); n != 2 {
			t.Errorf("%d hellos, want 2", n)
		}
		if n := starts.Load(); n != 1 {
			t.Errorf("OnStart ran %d times, want once", n)
		}
	})

	t.Run("host restarts", func(t *testing.T) {
		t.Parallel()
		welcomed := make(chan int, 2)
		h := startGRPCHost(t, func(s *grpcHostStream) error {
			s.welcome()
			welcomed <- s.n
			for {
				if _, err := s.receive(); err != nil {
					return nil
				}
			}
		})
		startPlugin(t, h, plugin.Plugin{})
		if n := receive(t, welcomed, "the first welcome"); n != 1 {
			t.Fatalf("stream %d welcomed first", n)
		}
		h.stop()
		// While the host is away, the plugin's connections fail: two are let in and
		// closed at once, then the host listens again on the same address.
		gate, err := net.Listen("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = gate.(*net.TCPListener).SetDeadline(time.Now().Add(waitTime))
		for range 2 {
			c, err := gate.Accept()
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
		}
		_ = gate.Close()
		ln, err := net.Listen("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		h.serve(ln)
		if n := receive(t, welcomed, "a welcome after the host came back"); n != 2 {
			t.Errorf("stream %d welcomed, want 2", n)
		}
	})

	t.Run("unix socket", func(t *testing.T) {
		// A confined plugin's host: NEXUS_HOST=unix:///path.
		t.Parallel()
		sock := filepath.Join(t.TempDir(), "host.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		methods := make(chan string, 1)
		h := &grpcHost{t: t, addr: sock, URL: "unix://" + sock, script: func(s *grpcHostStream) error {
			methods <- s.method
			s.welcome()
			return s.drainEOF()
		}}
		h.serve(ln)
		t.Cleanup(h.stop)
		started := make(chan struct{})
		startPlugin(t, h, plugin.Plugin{OnStart: func(context.Context, *plugin.Session) error {
			close(started)
			return nil
		}})
		receive(t, started, "OnStart")
		if got := receive(t, methods, "a call"); got != pluginhostv1connect.PluginHostServiceConnectProcedure {
			t.Errorf("call to %q", got)
		}
	})

	t.Run("bad hosts", func(t *testing.T) {
		t.Parallel()
		for _, host := range []string{"unix://relative/host.sock", "unix:host.sock", "ftp://127.0.0.1:21", "http://"} {
			err := plugin.Run(context.Background(), plugin.Plugin{}, plugin.WithHost(host), plugin.WithToken(testToken), plugin.WithPluginID(testPluginID))
			if err == nil || !strings.Contains(err.Error(), "unix:///path") {
				t.Errorf("host %q: %v", host, err)
			}
		}
	})

	t.Run("path prefix", func(t *testing.T) {
		t.Parallel()
		methods := make(chan string, 1)
		h := startGRPCHost(t, func(s *grpcHostStream) error {
			methods <- s.method
			s.welcome()
			return s.drainEOF()
		})
		started := make(chan struct{})
		startPlugin(t, h, plugin.Plugin{OnStart: func(context.Context, *plugin.Session) error {
			close(started)
			return nil
		}}, plugin.WithHost(h.URL+"/nexus-api/"))
		receive(t, started, "OnStart")
		if got, want := receive(t, methods, "a call"), "/nexus-api"+pluginhostv1connect.PluginHostServiceConnectProcedure; got != want {
			t.Errorf("call to %q, want %q", got, want)
		}
	})
}
