package plugin

import (
	"bytes"
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
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/clients/go/plugin/framewire"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// flowWindowBytes is the HTTP/2 flow-control window of the stream and of the connection.
const flowWindowBytes = 4 << 20

// minKeepalive is the shortest ping interval grpc-go allows; shorter ones are raised to it.
const minKeepalive = 10 * time.Second

// connectStreamDesc describes PluginHostService.Connect to grpc-go, which needs no
// generated stubs for one call: messages use frameCodec.
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
	// codec encodes and decodes every call's frames.
	codec frameCodec
}

// newGRPCTransport makes the client for o.host (already checked to be an http:// or
// https:// URL): plaintext HTTP/2 for http://, TLS verified against the system's roots
// for https://. It does not connect: the first open does.
func newGRPCTransport(o *options) (*grpcTransport, error) {
	u, err := url.Parse(o.host)
	if err != nil {
		return nil, fmt.Errorf("plugin: host %q: %w", o.host, err)
	}
	if u.Scheme == "unix" {
		// A Unix socket (a confined plugin's host): plaintext HTTP/2, grpc-go's own
		// unix resolver, and the host's procedure at the root.
		return newGRPCClient(o, "unix://"+u.Path, "localhost", insecure.NewCredentials(), "")
	}
	creds, port := insecure.NewCredentials(), "80"
	if u.Scheme == "https" {
		creds, port = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}), "443"
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	// passthrough hands the address to the dialer as it is, which resolves it on every
	// dial, as net/http does.
	return newGRPCClient(o, "passthrough:///"+addr, u.Host, creds, strings.TrimRight(u.EscapedPath(), "/"))
}

// newGRPCClient makes the transport's client for target; authority is the :authority
// (and TLS server name) an HTTP client would send, prefix the host URL's path.
func newGRPCClient(o *options, target, authority string, creds credentials.TransportCredentials, prefix string) (*grpcTransport, error) {
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// The same :authority (and TLS server name) as an HTTP client would send.
		grpc.WithAuthority(authority),
		// The host bounds the frames it sends (its max-message-bytes); like connect-go's
		// client, the SDK takes what comes rather than guess that setting.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
		// While the host is unreachable, grpc-go redials on the schedule of
		// WithReconnectBackoff (open resets it when a new attempt begins).
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.Config{
			BaseDelay: o.backoffInitial, Multiplier: 2, Jitter: 0.2, MaxDelay: o.backoffMax,
		}}),
		// Fixed flow-control windows, which turn grpc-go's BDP estimation off: with it,
		// each frame from the host that finds no estimate under way (in request-reply
		// traffic, nearly every one) made the SDK send a PING and a WINDOW_UPDATE, and the
		// host write the PING's ACK, which the SDK then read: a write and a read more, with
		// their wake-ups, for every HTTP call (see BenchmarkPluginEndpoint). One window
		// holds the largest frame the host sends by default (its max-message-bytes, 4 MiB).
		grpc.WithInitialWindowSize(flowWindowBytes),
		grpc.WithInitialConnWindowSize(flowWindowBytes),
	}
	if o.keepalive > 0 {
		dopts = append(dopts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: max(o.keepalive, minKeepalive), Timeout: o.keepaliveTimeout,
		}))
	}
	codec, err := newFrameCodec()
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, fmt.Errorf("plugin: host %q: %w", o.host, err)
	}
	return &grpcTransport{
		cc:            cc,
		method:        prefix + pluginhostv1connect.PluginHostServiceConnectProcedure,
		authorization: "Bearer " + o.token,
		codec:         codec,
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
	cs, err := t.cc.NewStream(ctx, &connectStreamDesc, t.method, grpc.WaitForReady(true), grpc.ForceCodecV2(t.codec))
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

// Field numbers of the frames whose data frameCodec leaves encoded.
const (
	responseDeliverNum protowire.Number = 2 // ConnectResponse.deliver
	responseReplyNum   protowire.Number = 3 // ConnectResponse.reply
	payloadDataNum     protowire.Number = 6 // Deliver.data and RequestReply.data alike
)

// frameCodec is grpc-go's proto codec, except that it does not parse the data of the
// host's deliveries and replies into structpb objects: their frames get a raw Struct
// (payload.go) holding the data's bytes, which structToMap decodes straight into the map
// the handler sees. The data is checked here all the same, exactly as proto.Unmarshal
// would have checked it: a malformed payload fails the frame, and so Receive, as before,
// and never reaches a handler. The rest of a frame is decoded, and frames are encoded, by
// the code vtprotobuf generates for the plugin stream's messages, with proto.Unmarshal's
// verdicts and proto.Marshal's bytes (package framewire); frames of an unusual shape go to the
// protobuf runtime.
//
// Its name is grpc-go's proto codec's, "proto": calls carry the content-type
// application/grpc+proto, which the host takes as it takes application/grpc.
type frameCodec struct {
	// proto is grpc-go's own proto codec, for the frames the generated code does not
	// handle. Codecs are safe for concurrent use.
	proto encoding.CodecV2
	// request and response are the shapes of ConnectRequest and ConnectResponse, plain the
	// members of ConnectRequest's frame that hold no Struct (the generated code writes them
	// whole), and payloads the payload frames it may write with framewire.MarshalPayload, by
	// member. Assigned once, in newFrameCodec.
	request, response *framewire.Shape
	plain             map[protowire.Number]bool
	payloads          map[protowire.Number]bool
}

// Where the frames the SDK sends keep their payload: ConnectRequest.reply (2), send (3),
// emit (4) and broadcast (8), whose data is field 3, 4, 3 and 3.
var (
	replyPayload     = framewire.PayloadField{Frame: 2, Data: 3}
	sendPayload      = framewire.PayloadField{Frame: 3, Data: 4}
	emitPayload      = framewire.PayloadField{Frame: 4, Data: 3}
	broadcastPayload = framewire.PayloadField{Frame: 8, Data: 3}
)

func newFrameCodec() (frameCodec, error) {
	c := encoding.GetCodecV2(grpcproto.Name)
	if c == nil {
		return frameCodec{}, errors.New("plugin: grpc-go's proto codec is not registered")
	}
	fc := frameCodec{
		proto:    c,
		request:  framewire.NewShape((&pluginhostv1.ConnectRequest{}).ProtoReflect().Descriptor()),
		response: framewire.NewShape((&pluginhostv1.ConnectResponse{}).ProtoReflect().Descriptor()),
		payloads: map[protowire.Number]bool{},
	}
	fc.plain = fc.request.Plain()
	for _, p := range []framewire.PayloadField{replyPayload, sendPayload, emitPayload, broadcastPayload} {
		fc.payloads[p.Frame] = fc.request.Field(p.Frame).Spliceable(p.Data)
	}
	return fc, nil
}

func (c frameCodec) Name() string { return c.proto.Name() }

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	req, ok := v.(*pluginhostv1.ConnectRequest)
	if !ok {
		return c.proto.Marshal(v)
	}
	var (
		p     framewire.PayloadField
		inner framewire.VTMessage
		data  *structpb.Struct
	)
	switch f := req.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Reply:
		p, inner, data = replyPayload, f.Reply, f.Reply.GetData()
	case *pluginhostv1.ConnectRequest_Send:
		p, inner, data = sendPayload, f.Send, f.Send.GetData()
	case *pluginhostv1.ConnectRequest_Emit:
		p, inner, data = emitPayload, f.Emit, f.Emit.GetData()
	case *pluginhostv1.ConnectRequest_Broadcast:
		p, inner, data = broadcastPayload, f.Broadcast, f.Broadcast.GetData()
	default:
		if fd := req.ProtoReflect().WhichOneof(requestFrameOneof); fd != nil && c.plain[fd.Number()] {
			return framewire.MarshalVT(req)
		}
		return c.proto.Marshal(v)
	}
	if c.payloads[p.Frame] {
		if b, ok := framewire.MarshalPayload(req, p, inner, data); ok {
			return b, nil
		}
	}
	return c.proto.Marshal(v)
}

// requestFrameOneof is ConnectRequest's oneof frame.
var requestFrameOneof = (&pluginhostv1.ConnectRequest{}).ProtoReflect().Descriptor().Oneofs().ByName("frame")

// Unmarshal reads the frame from data, which grpc-go frees when Unmarshal returns: the
// raw Struct gets its own copy of the payload, and the generated code (or proto.Unmarshal)
// copies the rest of the frame.
func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	res, ok := v.(*pluginhostv1.ConnectResponse)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	// A frame that came in one buffer (the usual case) is not copied.
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return c.unmarshalResponse(buf.ReadOnlyData(), res)
}

// unmarshalResponse does what proto.Unmarshal(b, res) does, leaving the data of a delivery
// or a reply encoded in a raw Struct (with a copy of its bytes) when b is just that frame
// with its data field once. Any other frame, or one that cannot be cut up so (a repeated
// field would merge), is decoded whole.
func (c frameCodec) unmarshalResponse(b []byte, res *pluginhostv1.ConnectResponse) error {
	num, frame, ok := soleField(b)
	if !ok || (num != responseDeliverNum && num != responseReplyNum) {
		return c.unmarshalWhole(b, res)
	}
	before, payload, after, ok := cutField(frame, payloadDataNum)
	if !ok {
		return c.unmarshalWhole(b, res)
	}
	// The Struct is nested in the frame, itself in the ConnectResponse: proto.Unmarshal
	// would reach it with two levels of recursion spent.
	if err := checkStruct(payload, protowire.DefaultRecursionLimit-2); err != nil {
		return err
	}
	data := rawStruct(bytes.Clone(payload))
	// The frame's fields around the data, decoded in turn (both decoders merge), are the
	// frame but for the data. The generated code decodes them when both are canonical;
	// otherwise proto.Unmarshal does, with the one level of recursion the frame spends.
	shape := c.response.Field(num)
	fast := shape.Canonical(before) && shape.Canonical(after)
	opts := proto.UnmarshalOptions{Merge: true, RecursionLimit: protowire.DefaultRecursionLimit - 1}
	res.Reset()
	if num == responseDeliverNum {
		d := &pluginhostv1.Deliver{}
		if err := unmarshalAround(fast, opts, before, after, d); err != nil {
			return err
		}
		d.Data = data
		res.Frame = &pluginhostv1.ConnectResponse_Deliver{Deliver: d}
		return nil
	}
	r := &pluginhostv1.RequestReply{}
	if err := unmarshalAround(fast, opts, before, after, r); err != nil {
		return err
	}
	r.Data = data
	res.Frame = &pluginhostv1.ConnectResponse_Reply{Reply: r}
	return nil
}

// unmarshalWhole decodes b into res as proto.Unmarshal does, with the generated code when b
// is canonical.
func (c frameCodec) unmarshalWhole(b []byte, res *pluginhostv1.ConnectResponse) error {
	if !c.response.Canonical(b) {
		return proto.Unmarshal(b, res)
	}
	res.Reset()
	return res.UnmarshalVT(b)
}

// vtUnmarshaler is the generated decoding of a message, which merges into it.
type vtUnmarshaler interface {
	proto.Message
	UnmarshalVT([]byte) error
}

func unmarshalAround(fast bool, opts proto.UnmarshalOptions, before, after []byte, m vtUnmarshaler) error {
	decode := func(b []byte) error {
		if fast {
			return m.UnmarshalVT(b)
		}
		return opts.Unmarshal(b, m)
	}
	if len(before) > 0 {
		if err := decode(before); err != nil {
			return err
		}
	}
	if len(after) > 0 {
		return decode(after)
	}
	return nil
}

// soleField returns the number and content of the message field that b, a message's
// encoding, consists of; false when b is anything else.
func soleField(b []byte) (protowire.Number, []byte, bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || typ != protowire.BytesType {
		return 0, nil, false
	}
	v, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return 0, nil, false
	}
	return num, v, true
}

// cutField splits b, a message's encoding, into the fields before the length-delimited
// field num, that field's content, and the fields after it; false when b is malformed, or
// does not hold field num exactly once, length-delimited.
func cutField(b []byte, num protowire.Number) (before, content, after []byte, ok bool) {
	start, end := -1, -1
	for i := 0; i < len(b); {
		fn, typ, n := protowire.ConsumeTag(b[i:])
		if n < 0 || fn > protowire.MaxValidNumber {
			return nil, nil, nil, false
		}
		if fn == num {
			if start >= 0 || typ != protowire.BytesType {
				return nil, nil, nil, false
			}
			v, m := protowire.ConsumeBytes(b[i+n:])
			if m < 0 {
				return nil, nil, nil, false
			}
			start, end, content = i, i+n+m, v
			i = end
			continue
		}
		m := protowire.ConsumeFieldValue(fn, typ, b[i+n:])
		if m < 0 {
			return nil, nil, nil, false
		}
		i += n + m
	}
	if start < 0 {
		return nil, nil, nil, false
	}
	return b[:start], content, b[end:], true
}
