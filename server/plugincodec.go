package server

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
)

// pluginCodec is the protobuf codec of the grpc-go plugin server. It decodes the frames
// that carry a payload (send, reply, emit, broadcast) without parsing the payload: the
// payload's bytes are checked as proto.Unmarshal would check them and kept as a raw Struct
// (pluginhost/rawstruct), which the host hands to the bus and on to the receiving plugin
// as they are. Every other frame, and every frame of an unusual shape, is decoded by
// proto.Unmarshal; encoding is grpc-go's own protobuf codec.
type pluginCodec struct{ proto encoding.CodecV2 }

func newPluginCodec() pluginCodec { return pluginCodec{proto: encoding.GetCodecV2("proto")} }

// Name keeps the content subtype "proto": on the wire this is the ordinary protobuf codec.
func (pluginCodec) Name() string { return "proto" }

func (c pluginCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

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
	b := data.Materialize()
	rest, payload, n, ok := rawstruct.Cut(b, requestPayloads)
	if !ok {
		return proto.Unmarshal(b, req)
	}
	if err := rawstruct.Validate(payload, payloadDepth); err != nil {
		return fmt.Errorf("decoding a frame: %w", err)
	}
	if err := proto.Unmarshal(rest, req); err != nil {
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
