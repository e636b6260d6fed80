package server

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/clients/go/plugin/framewire"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
)

// pluginCodec is the protobuf codec of the grpc-go plugin server. It decodes the frames
// that carry a payload (send, reply, emit, broadcast) without parsing the payload: the
// payload's bytes are checked as proto.Unmarshal would check them and kept as a raw Struct
// (pluginhost/rawstruct), which the host hands to the bus and on to the receiving plugin
// as they are. The rest of a frame is decoded, and frames are encoded, by the code
// vtprotobuf generates for the plugin stream's messages, with proto.Unmarshal's verdicts
// and proto.Marshal's bytes (package framewire); frames of an unusual shape go to the protobuf
// runtime.
type pluginCodec struct {
	proto encoding.CodecV2
	// request and response are the shapes of ConnectRequest and ConnectResponse; deliver
	// and reply say whether the payload frames may be written by framewire.MarshalPayload.
	// Assigned once, in newPluginCodec.
	request, response *framewire.Shape
	deliver, reply    bool
	// plain are the members of ConnectResponse's frame that hold no Struct: the generated
	// code writes them whole.
	plain map[protowire.Number]bool
}

// The host's payload frames: ConnectResponse.deliver (2) and reply (3), whose data is field 6.
var (
	deliverPayload = framewire.PayloadField{Frame: 2, Data: 6}
	replyPayload   = framewire.PayloadField{Frame: 3, Data: 6}
)

// replyKV is RequestReply.kv.
const replyKV = 9

func newPluginCodec() pluginCodec {
	c := pluginCodec{
		proto:    encoding.GetCodecV2("proto"),
		request:  framewire.NewShape((&pluginhostv1.ConnectRequest{}).ProtoReflect().Descriptor()),
		response: framewire.NewShape((&pluginhostv1.ConnectResponse{}).ProtoReflect().Descriptor()),
	}
	c.plain = c.response.Plain()
	c.deliver = c.response.Field(deliverPayload.Frame).Spliceable(deliverPayload.Data)
	// A reply's key-value result holds Values (Marshal checks that it has none).
	c.reply = c.response.Field(replyPayload.Frame).Spliceable(replyPayload.Data, replyKV)
	return c
}

// Name keeps the content subtype "proto": on the wire this is the ordinary protobuf codec.
func (pluginCodec) Name() string { return "proto" }

func (c pluginCodec) Marshal(v any) (mem.BufferSlice, error) {
	res, ok := v.(*pluginhostv1.ConnectResponse)
	if !ok {
		return c.proto.Marshal(v)
	}
	var (
		p     framewire.PayloadField
		inner framewire.VTMessage
		data  *structpb.Struct
	)
	switch f := res.GetFrame().(type) {
	case *pluginhostv1.ConnectResponse_Deliver:
		if !c.deliver {
			return c.proto.Marshal(v)
		}
		p, inner, data = deliverPayload, f.Deliver, f.Deliver.GetData()
	case *pluginhostv1.ConnectResponse_Reply:
		if !c.reply || f.Reply.GetKv() != nil {
			return c.proto.Marshal(v)
		}
		p, inner, data = replyPayload, f.Reply, f.Reply.GetData()
	default:
		if fd := res.ProtoReflect().WhichOneof(frameOneof); fd != nil && c.plain[fd.Number()] {
			return framewire.MarshalVT(res)
		}
		return c.proto.Marshal(v)
	}
	if b, ok := framewire.MarshalPayload(res, p, inner, data); ok {
		return b, nil
	}
	return c.proto.Marshal(v)
}

// frameOneof is ConnectResponse's oneof frame.
var frameOneof = (&pluginhostv1.ConnectResponse{}).ProtoReflect().Descriptor().Oneofs().ByName("frame")

// requestPayloads are ConnectRequest's payload fields: reply (2), send (3), emit (4) and
// broadcast (8) carry a Struct data field (3, 4, 3 and 3).
var requestPayloads = rawstruct.Paths{2: 3, 3: 4, 4: 3, 8: 3}

// payloadDepth is what is left of the protobuf runtime's recursion limit for a payload:
// the frame and its request message are two levels above it.
const payloadDepth = protowire.DefaultRecursionLimit - 2

// frameBox is what grpcStream.Receive decodes a frame into: the frame, and why it could not
// be decoded. grpc-go turns a codec's error into codes.Internal, a fault of the server's,
// while a frame that is not valid protobuf (invalid UTF-8 in a string, nesting past the
// recursion limit, a truncated field) is the plugin's: with the box, the codec succeeds and
// hands the failure to Receive, which answers it as the Connect transport does
// (invalid_argument).
type frameBox struct {
	req *pluginhostv1.ConnectRequest
	err error
}

func (c pluginCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *frameBox:
		m.err = c.unmarshalFrame(data, m.req)
		return nil
	case *pluginhostv1.ConnectRequest:
		return c.unmarshalFrame(data, m)
	}
	return c.proto.Unmarshal(data, v)
}

// unmarshalFrame decodes a frame into req, its payload kept raw.
func (c pluginCodec) unmarshalFrame(data mem.BufferSlice, req *pluginhostv1.ConnectRequest) error {
	// The payload keeps pointing into b, so b must be ours: Materialize copies out of
	// grpc-go's pooled buffers.
	// The strings and bytes that UnmarshalVTUnsafe decodes point into b (or rest, which
	// Cut allocates) too; neither is written again.
	b := data.Materialize()
	rest, payload, n, ok := rawstruct.Cut(b, requestPayloads)
	if !ok {
		return c.unmarshalRequest(b, req)
	}
	if err := rawstruct.Validate(payload, payloadDepth); err != nil {
		return fmt.Errorf("decoding a frame: %w", err)
	}
	if err := c.unmarshalRequest(rest, req); err != nil {
		return err
	}
	// rest is the one frame field n, so the oneof holds that frame.
	raw := rawstruct.Wrap(payload)
	switch f := req.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Reply:
		f.Reply.Data = raw
	case *pluginhostv1.ConnectRequest_Send:
		f.Send.Data = raw
	case *pluginhostv1.ConnectRequest_Emit:
		f.Emit.Data = raw
	case *pluginhostv1.ConnectRequest_Broadcast:
		f.Broadcast.Data = raw
	default:
		return fmt.Errorf("decoding a frame: field %d has no payload", n)
	}
	return nil
}

// unmarshalRequest decodes b into req as proto.Unmarshal does, with the generated code when
// b is canonical (package framewire).
func (c pluginCodec) unmarshalRequest(b []byte, req *pluginhostv1.ConnectRequest) error {
	if !c.request.Canonical(b) {
		return proto.Unmarshal(b, req)
	}
	req.Reset()
	return req.UnmarshalVTUnsafe(b)
}
