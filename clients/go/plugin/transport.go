package plugin

import (
	"context"

	"connectrpc.com/connect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// transport opens the plugin's streams to the host. There are two: grpc-go's client, the
// default (transport_grpc.go), and connect-go's gRPC client over the caller's HTTP client
// (WithHTTPClient). Both speak gRPC, and both report errors as *connect.Error, so the
// rest of the SDK does not know which one it uses.
type transport interface {
	// open starts a PluginHostService.Connect call. ctx bounds the call's whole life:
	// canceling it aborts the stream.
	open(ctx context.Context) (clientStream, error)
	// close releases the transport's connections. It is called once, when Run ends and
	// every stream is closed.
	close()
}

// clientStream is the client side of one Connect call. Send and CloseSend are called one
// at a time (by the conn's writer of the moment), Receive by one goroutine at a time (the
// handshake, then the receive side), and Close once the receive side has ended and the
// stream's context is canceled; a Send may still be under way then (grpc-go and connect-go
// both allow it: the canceled call fails it).
type clientStream interface {
	// Send sends a frame. io.EOF means the host ended the stream: Receive says why.
	Send(*pluginhostv1.ConnectRequest) error
	// Receive returns the host's next frame. It returns io.EOF when the host ended the
	// stream cleanly, and otherwise an error that *connect.Error describes when it comes
	// from the host or the connection (see isFatal, nexus.ErrorCode).
	Receive() (*pluginhostv1.ConnectResponse, error)
	// CloseSend closes the request side.
	CloseSend() error
	// Close releases what is left of the stream.
	Close() error
}

// newTransport returns the transport that o asks for.
func newTransport(o *options) (transport, error) {
	if o.httpClient != nil {
		return newConnectTransport(o), nil
	}
	return newGRPCTransport(o)
}

// connectTransport opens streams with connect-go's gRPC client over the caller's HTTP
// client, which it leaves open.
type connectTransport struct {
	client pluginhostv1connect.PluginHostServiceClient
}

func newConnectTransport(o *options) *connectTransport {
	c := nexus.New(o.host, nexus.WithToken(o.token), nexus.WithHTTPClient(o.httpClient), nexus.WithProtocol(nexus.ProtocolGRPC))
	return &connectTransport{client: c.PluginHost}
}

func (t *connectTransport) open(ctx context.Context) (clientStream, error) {
	// The request goes out with the first frame; until then nothing can fail.
	return connectStream{t.client.Connect(ctx)}, nil
}

func (t *connectTransport) close() {}

// connectStream adapts connect-go's client stream to clientStream.
type connectStream struct {
	s *connect.BidiStreamForClient[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]
}

func (c connectStream) Send(f *pluginhostv1.ConnectRequest) error { return c.s.Send(f) }

func (c connectStream) Receive() (*pluginhostv1.ConnectResponse, error) { return c.s.Receive() }

func (c connectStream) CloseSend() error { return c.s.CloseRequest() }

func (c connectStream) Close() error { return c.s.CloseResponse() }
