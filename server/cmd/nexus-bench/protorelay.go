package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
)

// Reference C: the same three processes as baseline A, speaking the plugin protocol's own
// frames. The client sends a `send` frame (ConnectRequest), the relay turns it into a
// `deliver` frame (ConnectResponse) for the echo, the echo answers with a `reply` frame
// (ConnectRequest), and the relay returns it to the client as a `reply` (ConnectResponse).
// Frames are encoded by grpc-go's protobuf codec; ids are strings, as the host's are. The
// payload is the host path's Struct {"blob": ...}, and like baseline A's bytes no process
// parses it: every process cuts it out of the frame undecoded and checks it, as the host
// does (pluginhost/rawstruct), and the client compares the reply's bytes. Nothing else of
// the host is there: no authentication, frame validation, permissions, bus, at-least-once
// bookkeeping, metrics, and no SDK (whose plugins get their payload as Go maps). It is what
// the protocol's framing costs on its own, between baseline A and the host.

// protoExchange is reference C's service: protocol frames, payloads passed through.
var protoExchange = exchange{service: "nexusbench.ProtoRelay", codec: newPassThroughCodec()}

// passThroughCodec is the reference's protobuf codec: the payload of the frames that carry
// one is cut out undecoded, checked, and kept as a raw Struct (as the host's plugin codec
// does); encoding is grpc-go's.
type passThroughCodec struct{ proto encoding.CodecV2 }

func (passThroughCodec) Name() string { return "proto" }

func (c passThroughCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

// The payload fields: ConnectRequest's reply (2) and send (3) frames' data (3 and 4), and
// ConnectResponse's deliver (2) and reply (3) frames' data (6 and 6).
var (
	requestPayloads  = rawstruct.Paths{2: 3, 3: 4}
	responsePayloads = rawstruct.Paths{2: 6, 3: 6}
)

// framePayloadDepth is what the protobuf runtime's recursion limit leaves for a payload
// two levels down in a frame.
const framePayloadDepth = protowire.DefaultRecursionLimit - 2

func newPassThroughCodec() passThroughCodec {
	return passThroughCodec{proto: encoding.GetCodecV2("proto")}
}

func (c passThroughCodec) Unmarshal(data mem.BufferSlice, v any) error {
	var paths rawstruct.Paths
	switch v.(type) {
	case *pluginhostv1.ConnectRequest:
		paths = requestPayloads
	case *pluginhostv1.ConnectResponse:
		paths = responsePayloads
	default:
		return c.proto.Unmarshal(data, v)
	}
	m := v.(proto.Message)
	b := data.Materialize() // the payload aliases it, so it must not be grpc-go's buffer
	rest, payload, _, ok := rawstruct.Cut(b, paths)
	if !ok {
		return proto.Unmarshal(b, m)
	}
	if err := rawstruct.Validate(payload, framePayloadDepth); err != nil {
		return err
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	raw := rawstruct.Wrap(payload)
	switch f := m.(type) {
	case *pluginhostv1.ConnectRequest:
		switch g := f.GetFrame().(type) {
		case *pluginhostv1.ConnectRequest_Reply:
			g.Reply.Data = raw
		case *pluginhostv1.ConnectRequest_Send:
			g.Send.Data = raw
		}
	case *pluginhostv1.ConnectResponse:
		switch g := f.GetFrame().(type) {
		case *pluginhostv1.ConnectResponse_Deliver:
			g.Deliver.Data = raw
		case *pluginhostv1.ConnectResponse_Reply:
			g.Reply.Data = raw
		}
	}
	return nil
}

// protoEchoMain is the reference's echo: it answers every deliver frame with a reply frame
// carrying the delivery's data (undecoded).
func protoEchoMain(ctx context.Context, args []string, out io.Writer) error {
	if err := parseChildFlags(flag.NewFlagSet(roleProtoEcho, flag.ContinueOnError), args); err != nil {
		return err
	}
	return protoExchange.serve(ctx, func(_ any, ss grpc.ServerStream) error {
		for {
			in := &pluginhostv1.ConnectResponse{}
			if err := ss.RecvMsg(in); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			d := in.GetDeliver()
			if d == nil {
				return fmt.Errorf("expected a deliver frame, got %T", in.GetFrame())
			}
			if err := ss.SendMsg(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{
				DeliveryId: d.GetDeliveryId(), Status: "success", Data: d.GetData(),
			}}}); err != nil {
				return err
			}
		}
	}, out)
}

// protoRelay forwards its clients' send frames as deliver frames over one upstream stream
// and routes the replies back by delivery id.
type protoRelay struct {
	up     grpc.ClientStream
	sendMu sync.Mutex // serialises up.SendMsg

	mu     sync.Mutex // guards next and routes
	next   uint64
	routes map[string]protoRoute
}

// protoRoute is where a reply goes back to: the client's stream, request id and message id.
type protoRoute struct {
	down             grpc.ServerStream
	requestID, msgID string
}

func (r *protoRelay) serveClient(_ any, down grpc.ServerStream) error {
	for {
		in := &pluginhostv1.ConnectRequest{}
		if err := down.RecvMsg(in); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		s := in.GetSend()
		if s == nil {
			return fmt.Errorf("expected a send frame, got %T", in.GetFrame())
		}
		r.mu.Lock()
		r.next++
		n := strconv.FormatUint(r.next, 16)
		tag, msgID := "d_"+n, "msg_"+n
		r.routes[tag] = protoRoute{down: down, requestID: s.GetRequestId(), msgID: msgID}
		r.mu.Unlock()
		d := &pluginhostv1.Deliver{
			DeliveryId: tag, Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: msgID, Source: senderPluginID,
			Type: s.GetMessageType(), Data: s.GetData(), Attempt: 1,
			Deadline: timestamppb.New(time.Now().Add(time.Duration(s.GetTimeoutSeconds()) * time.Second)),
		}
		r.sendMu.Lock()
		err := r.up.SendMsg(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: d}})
		r.sendMu.Unlock()
		if err != nil {
			return fmt.Errorf("forward upstream: %w", err)
		}
	}
}

// routeReplies receives the echo's reply frames and returns each to its client.
func (r *protoRelay) routeReplies() error {
	for {
		in := &pluginhostv1.ConnectRequest{}
		if err := r.up.RecvMsg(in); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
		rep := in.GetReply()
		if rep == nil {
			return fmt.Errorf("expected a reply frame, got %T", in.GetFrame())
		}
		r.mu.Lock()
		rt, ok := r.routes[rep.GetDeliveryId()]
		delete(r.routes, rep.GetDeliveryId())
		r.mu.Unlock()
		if !ok {
			return fmt.Errorf("upstream replied to unknown delivery %q", rep.GetDeliveryId())
		}
		_ = rt.down.SendMsg(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
			RequestId: rt.requestID, MessageId: rt.msgID, Status: rep.GetStatus(), Data: rep.GetData(),
		}}})
	}
}

// protoRelayMain is the reference's relay process.
func protoRelayMain(ctx context.Context, args []string, out io.Writer) error {
	return middleMain(ctx, args, out, roleProtoRelay, protoExchange, func(up grpc.ClientStream) relayer {
		return &protoRelay{up: up, routes: make(map[string]protoRoute)}
	})
}

// protoClient does round trips of send frames over one stream to the relay.
type protoClient struct {
	*waiters[string, *pluginhostv1.RequestReply]
	cs grpc.ClientStream
	// data is the payload as a raw Struct, want its encoding; data is only read by
	// SendMsg, so it is shared by every round trip.
	data *structpb.Struct
	want string

	sendMu sync.Mutex
}

func (c *protoClient) roundTrip(ctx context.Context) error {
	id, rep, err := c.call(ctx, func(n uint64) string { return "r" + strconv.FormatUint(n, 10) }, func(id string) error {
		c.sendMu.Lock()
		defer c.sendMu.Unlock()
		err := c.cs.SendMsg(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{
			RequestId: id, TargetPlugin: echoPluginID, MessageType: echoMessageType, Data: c.data, TimeoutSeconds: 30,
		}}})
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if got, err := rawstruct.Bytes(rep.GetData()); err != nil || rep.GetStatus() != "success" || string(got) != c.want {
		return fmt.Errorf("reply %s does not carry the payload back", id)
	}
	return nil
}

func (c *protoClient) receive() {
	for {
		in := &pluginhostv1.ConnectResponse{}
		if err := c.cs.RecvMsg(in); err != nil {
			c.stop(err)
			return
		}
		rep := in.GetReply()
		if !c.resolve(rep.GetRequestId(), rep) {
			c.stop(fmt.Errorf("reply to unknown request %q", rep.GetRequestId()))
			return
		}
	}
}

// protoClientMain is the reference's measuring client.
func protoClientMain(ctx context.Context, args []string, out io.Writer) error {
	return clientMain(ctx, args, out, roleProtoClient, protoExchange, func(cs grpc.ClientStream, payload int) (roundTripper, error) {
		data, err := structpb.NewStruct(map[string]any{"blob": payloadText(payload)})
		if err != nil {
			return nil, err
		}
		enc, err := proto.Marshal(data)
		if err != nil {
			return nil, err
		}
		return &protoClient{waiters: newWaiters[string, *pluginhostv1.RequestReply](), cs: cs, data: rawstruct.Wrap(enc), want: string(enc)}, nil
	})
}

// runProtoRelay runs reference C: echo, relay, then the measuring client.
func (b *bench) runProtoRelay(ctx context.Context) (Measurement, error) {
	return b.runChain(ctx, [3]string{roleProtoEcho, roleProtoRelay, roleProtoClient})
}
