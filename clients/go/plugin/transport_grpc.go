package plugin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// minKeepalive is the shortest ping interval grpc-go allows; shorter ones are raised to it.
const minKeepalive = 10 * time.Second

// connectStreamDesc describes PluginHostService.Connect to grpc-go, which needs no
// generated stubs for one call: messages use its default (proto) codec.
var connectStreamDesc = grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true}

// grpcTransport opens streams with grpc-go's client, over one connection (redialled when
// it breaks) for the whole of Run. Its transport batches the frames of a busy stream into
// few writes, where net/http's HTTP/2 transport makes a write per frame; and the host
// serves gRPC plugin streams on grpc-go's own server transport.
type grpcTransport struct {
	// These fields are assigned once, in newGRPCTransport.
	cc *grpc.ClientConn
	// method is the call's path: the host URL's path, if any, then the procedure.
	method string
	// authorization is the bearer token, sent as metadata with every call.
	authorization string
}

// newGRPCTransport makes the client for o.host (already checked to be an http:// or
// https:// URL): plaintext HTTP/2 for http://, TLS verified against the system's roots
// for https://. It does not connect: the first open does.
func newGRPCTransport(o *options) (*grpcTransport, error) {
	u, err := url.Parse(o.host)
	if err != nil {
		return nil, fmt.Errorf("plugin: host %q: %w", o.host, err)
	}
	creds, port := insecure.NewCredentials(), "80"
	if u.Scheme == "https" {
		creds, port = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}), "443"
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// The same :authority (and TLS server name) as an HTTP client would send.
		grpc.WithAuthority(u.Host),
		// The host bounds the frames it sends (its max-message-bytes); like connect-go's
		// client, the SDK takes what comes rather than guess that setting.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
		// While the host is unreachable, grpc-go redials on the schedule of
		// WithReconnectBackoff (open resets it when a new attempt begins).
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.Config{
			BaseDelay: o.backoffInitial, Multiplier: 2, Jitter: 0.2, MaxDelay: o.backoffMax,
		}}),
	}
	if o.keepalive > 0 {
		dopts = append(dopts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: max(o.keepalive, minKeepalive), Timeout: o.keepaliveTimeout,
		}))
	}
	// passthrough hands the address to the dialer as it is, which resolves it on every
	// dial, as net/http does.
	cc, err := grpc.NewClient("passthrough:///"+addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("plugin: host %q: %w", o.host, err)
	}
	return &grpcTransport{
		cc:            cc,
		method:        strings.TrimRight(u.EscapedPath(), "/") + pluginhostv1connect.PluginHostServiceConnectProcedure,
		authorization: "Bearer " + o.token,
	}, nil
}

// open starts a call once the connection is ready: it waits for the host to be reachable
// for as long as ctx allows (the runner bounds it with the handshake timeout).
func (t *grpcTransport) open(ctx context.Context) (clientStream, error) {
	if t.cc.GetState() == connectivity.TransientFailure {
		// The last dial failed and grpc-go waits before the next: this attempt is the
		// runner's, so dial now.
		t.cc.ResetConnectBackoff()
	}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", t.authorization))
	cs, err := t.cc.NewStream(ctx, &connectStreamDesc, t.method, grpc.WaitForReady(true))
	if err != nil {
		cancel()
		return nil, fromStatus(err)
	}
	return &grpcStream{cs: cs, cancel: cancel}, nil
}

func (t *grpcTransport) close() {
	// Close fails only when the client is already closed.
	_ = t.cc.Close()
}

// grpcStream adapts grpc-go's client stream to clientStream.
type grpcStream struct {
	cs grpc.ClientStream
	// cancel aborts the call; grpc-go releases the stream once it is called.
	cancel context.CancelFunc
}

func (s *grpcStream) Send(f *pluginhostv1.ConnectRequest) error {
	return fromStatus(s.cs.SendMsg(f))
}

func (s *grpcStream) Receive() (*pluginhostv1.ConnectResponse, error) {
	res := &pluginhostv1.ConnectResponse{}
	if err := s.cs.RecvMsg(res); err != nil {
		return nil, fromStatus(err)
	}
	return res, nil
}

func (s *grpcStream) CloseSend() error { return fromStatus(s.cs.CloseSend()) }

func (s *grpcStream) Close() error {
	s.cancel()
	return nil
}

// fromStatus turns a grpc-go status error into the *connect.Error that connect-go's client
// returns for the same status: the same code (both number gRPC's codes alike) and message,
// and the same details, among them the google.rpc.ErrorInfo whose reason is the API's
// error code. isFatal and nexus.ErrorCode then classify the errors of both transports
// alike. io.EOF, and errors that carry no status, are returned as they are.
func fromStatus(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	ce := connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
	for _, d := range st.Proto().GetDetails() {
		if detail, derr := connect.NewErrorDetail(d); derr == nil {
			ce.AddDetail(detail)
		}
	}
	return ce
}
