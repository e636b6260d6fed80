package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/protoadapt"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/identity"
)

// newPluginGRPC returns a grpc-go server for PluginHostService.Connect alone: the gRPC
// calls of plugin streams, routed to it by the listener (see sniff.go). It authenticates
// the plugin token, validates frames like the Connect handler does, and runs the same
// session code (Host.ServeSession).
func (s *Server) newPluginGRPC(validator protovalidate.Validator) *grpc.Server {
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(int(s.cfg.MaxMessageBytes)),
		grpc.MaxSendMsgSize(int(s.cfg.MaxMessageBytes)),
		// Payloads pass through undecoded (plugincodec.go).
		grpc.ForceServerCodecV2(newPluginCodec()),
		// Fixed flow-control windows: with the default dynamic sizing (BDP estimation) nearly
		// every frame received made grpc-go send a PING and a WINDOW_UPDATE, two writes and
		// reads more on the path of every plugin HTTP call (BenchmarkPluginEndpoint: 6.4
		// writes per call against 4.2 without; p50 ratio 1.39 -> 1.25). 4 MiB is at most what
		// a plugin may have in flight unread; BDP would grow to 16 MiB.
		grpc.InitialWindowSize(4<<20),
		grpc.InitialConnWindowSize(4<<20),
		// The SDK pings idle connections to find dead ones; allow it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Each stream's context can be canceled by the host (grpcStream.End).
		grpc.InTapHandle(func(ctx context.Context, _ *tap.Info) (context.Context, error) {
			ctx, cancel := context.WithCancel(ctx)
			return context.WithValue(ctx, streamEndKey{}, cancel), nil
		}),
		// Connections are routed by their first request: one that opened a gRPC plugin
		// stream is dedicated to plugin streams.
		grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
			return status.Error(codes.Unimplemented, "this connection carries gRPC plugin streams only (it began with one): "+
				"make other calls on another connection")
		}),
	)
	handler := func(_ any, ss grpc.ServerStream) error {
		ctx := ss.Context()
		end, ok := ctx.Value(streamEndKey{}).(context.CancelFunc)
		if !ok {
			return status.Error(codes.Internal, "the stream cannot be served")
		}
		var token string
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if v := md.Get("authorization"); len(v) > 0 {
				token = v[0]
			}
		}
		p, err := s.authenticatePlugin(ctx, token)
		if err != nil {
			return grpcError(err)
		}
		start := time.Now()
		// The session runs on the call's goroutine: End cancels the stream's context,
		// which fails the session's blocked Send and Receive, so it always returns.
		stream := &grpcStream{ss: ss, v: validator, end: end}
		stream.finish, _ = grpc.ServerTransportStreamFromContext(ctx).(statusWriter)
		err = s.host.Sessions().ServeSession(ctx, pluginhost.SessionCaller{PluginID: p.PluginID, TokenID: p.TokenID}, stream)
		if stream.ended.Load() && stream.endErr != nil {
			// The host gave up on the stream (the plugin does not read it, or said no
			// hello in time): that is what the plugin is told.
			err = stream.endErr
		}
		s.log.Info("call", "procedure", pluginhostv1connect.PluginHostServiceConnectProcedure, "protocol", "grpc",
			"plugin_id", p.PluginID, "duration_ms", time.Since(start).Milliseconds(), "error", errorText(err))
		if err != nil {
			return grpcError(err)
		}
		return nil
	}
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: pluginhostv1connect.PluginHostServiceName,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName: "Connect", Handler: handler, ServerStreams: true, ClientStreams: true,
		}},
		Metadata: "nexus/pluginhost/v1/pluginhost.proto",
	}, struct{}{})
	return gs
}

// authenticatePlugin resolves the bearer token of a plugin stream; only plugin tokens may
// open one.
func (s *Server) authenticatePlugin(ctx context.Context, header string) (identity.Principal, error) {
	token, ok := identity.BearerToken(header)
	if !ok {
		return identity.Principal{}, errs.New(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token>")
	}
	p, err := s.ids.Authenticate(ctx, token)
	if err != nil {
		return identity.Principal{}, err
	}
	if p.PluginID == "" {
		return identity.Principal{}, errs.New(errs.PluginPermissionDenied, "only plugin tokens may open a plugin stream")
	}
	return p, nil
}

// streamEndKey is the context key of the function that cancels a plugin stream's context
// (set for each stream by the server's tap handle).
type streamEndKey struct{}

// statusWriter is the method of grpc-go's transport stream (v1.85) that ends a stream with
// a status, as the server does when a handler returns.
type statusWriter interface {
	WriteStatus(*status.Status) error
}

// grpcStream adapts a grpc-go server stream to pluginhost.Stream. It is a
// pluginhost.StreamEnder: End ends the stream while the call's handler, which runs the
// session, may be blocked in a Send (a plugin that stopped reading: flow control) or a
// Receive. It writes the stream's status (the reason, for the plugin) and cancels the
// stream's context; grpc-go (v1.85) fails both calls once that context ends (the stream's
// write quota and receive buffer wait on it), as server/stall_test.go exercises under the
// race detector. A failing Send or Receive writes a status of its own (CANCELED) unless
// one was written, hence the status first. Later calls fail here without reaching grpc-go.
type grpcStream struct {
	ss  grpc.ServerStream
	v   protovalidate.Validator
	end context.CancelFunc // cancels the stream's context
	// finish writes the stream's status; nil if grpc-go offers no such method (then the
	// plugin reads CANCELED rather than the reason).
	finish statusWriter

	endOnce sync.Once
	endErr  error       // why End was called; written before ended is set
	ended   atomic.Bool // set by End
}

func (g *grpcStream) End(err error) {
	g.endOnce.Do(func() {
		g.endErr = err
		g.ended.Store(true)
		if g.finish != nil {
			st := status.Convert(errStreamEnded)
			if err != nil {
				st = status.Convert(grpcError(err))
			}
			_ = g.finish.WriteStatus(st)
		}
		g.end()
	})
}

// errStreamEnded is what Send and Receive return once the host ended the stream.
var errStreamEnded = status.Error(codes.Unavailable, "the host ended this stream")

func (g *grpcStream) Receive() (*pluginhostv1.ConnectRequest, error) {
	if g.isEnded() {
		return nil, errStreamEnded
	}
	box := frameBox{req: &pluginhostv1.ConnectRequest{}}
	if err := g.ss.RecvMsg(&box); err != nil {
		return nil, err
	}
	if box.err != nil {
		return nil, errs.New(errs.ValidationError, "a frame could not be decoded: %v", box.err)
	}
	req := box.req
	if err := validateFrame(g.v, req); err != nil {
		return nil, err
	}
	return req, nil
}

func (g *grpcStream) Send(res *pluginhostv1.ConnectResponse) error {
	if g.isEnded() {
		return errStreamEnded
	}
	return g.ss.SendMsg(res)
}

func (g *grpcStream) isEnded() bool { return g.ended.Load() }

// grpcError turns an error into a gRPC status with the same details as a Connect error
// (ErrorInfo carrying the API's code, BadRequest, the details Struct).
func grpcError(err error) error {
	ce := toConnect(toDomain(err))
	st := status.New(codes.Code(ce.Code()), ce.Message())
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if withDetail, werr := st.WithDetails(protoadapt.MessageV1Of(v)); werr == nil {
			st = withDetail
		}
	}
	return st.Err()
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
