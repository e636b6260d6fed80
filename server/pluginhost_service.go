package server

import (
	"context"
	"io"
	"sync"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// pluginHostService implements nexus.pluginhost.v1.PluginHostService.
type pluginHostService struct {
	pluginhostv1connect.UnimplementedPluginHostServiceHandler
	sessions  sessionServer
	validator protovalidate.Validator
}

// sessionServer is what pluginHostService needs of the host (a *pluginhost.Host): serving
// the session of one plugin instance.
type sessionServer interface {
	ServeSession(ctx context.Context, caller pluginhost.SessionCaller, stream pluginhost.Stream) error
}

func (p pluginHostService) Connect(ctx context.Context, stream *connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]) error {
	principal, ok := principalFrom(ctx)
	if !ok || principal.PluginID == "" {
		return errs.New(errs.PluginPermissionDenied, "only plugin tokens may open a plugin stream")
	}
	return p.sessions.ServeSession(ctx, pluginhost.SessionCaller{PluginID: principal.PluginID, TokenID: principal.TokenID},
		&validatingStream{BidiStream: stream, v: p.validator, body: callInfoFrom(ctx).body})
}

// validatingStream checks each frame a plugin sends against the proto's rules. A bad frame
// that carries a request id comes back as a pluginhost.InvalidFrame, so that the session
// answers that request with VALIDATION_ERROR and carries on; any other bad frame ends it.
type validatingStream struct {
	*connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]
	v protovalidate.Validator
	// body is the HTTP request body of the stream (nil if unknown); End closes it.
	body    io.Closer
	endOnce sync.Once
}

// End makes the stream's pending and later Receive calls fail, so that the session ends and
// the handler returns with the session's reason (the plugin reads it in the trailers). It is
// a pluginhost.StreamEnder. A Send blocked because the plugin stopped reading is not
// released: connect-go offers no way to, on net/http's HTTP/2 server.
func (s *validatingStream) End(error) {
	if s.body != nil {
		s.endOnce.Do(func() { _ = s.body.Close() })
	}
}

func (s *validatingStream) Receive() (*pluginhostv1.ConnectRequest, error) {
	req, err := s.BidiStream.Receive()
	if err != nil {
		return nil, err
	}
	if err := validateFrame(s.v, req); err != nil {
		return nil, err
	}
	return req, nil
}

// requestIDOf returns the request id of a plugin's request frame, or "".
func requestIDOf(req *pluginhostv1.ConnectRequest) string {
	switch f := req.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Send:
		return f.Send.GetRequestId()
	case *pluginhostv1.ConnectRequest_Emit:
		return f.Emit.GetRequestId()
	case *pluginhostv1.ConnectRequest_Broadcast:
		return f.Broadcast.GetRequestId()
	case *pluginhostv1.ConnectRequest_Subscribe:
		return f.Subscribe.GetRequestId()
	case *pluginhostv1.ConnectRequest_Kv:
		return f.Kv.GetRequestId()
	case *pluginhostv1.ConnectRequest_Discover:
		return f.Discover.GetRequestId()
	}
	return ""
}
