package server_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/server"
)

// rawFrame is a frame whose encoding is exactly b: a ConnectRequest made of unknown fields
// alone, which both transports' protobuf codecs write out as they are.
func rawFrame(b []byte) *pluginhostv1.ConnectRequest {
	f := &pluginhostv1.ConnectRequest{}
	f.ProtoReflect().SetUnknown(b)
	return f
}

// emitBytes encodes an emit frame (ConnectRequest field 4) from its fields: request_id 1,
// type 2 and, unless nil, data 3 (the encoding of a google.protobuf.Struct).
func emitBytes(requestID, typ string, data []byte) []byte {
	var emit []byte
	emit = protowire.AppendTag(emit, 1, protowire.BytesType)
	emit = protowire.AppendString(emit, requestID)
	emit = protowire.AppendTag(emit, 2, protowire.BytesType)
	emit = protowire.AppendString(emit, typ)
	if data != nil {
		emit = protowire.AppendTag(emit, 3, protowire.BytesType)
		emit = protowire.AppendBytes(emit, data)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), emit)
}

// structOf encodes a google.protobuf.Struct of one field, key, whose google.protobuf.Value
// is value (encoded).
func structOf(key string, value []byte) []byte {
	var entry []byte
	entry = protowire.AppendTag(entry, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, key)
	entry = protowire.AppendTag(entry, 2, protowire.BytesType)
	entry = protowire.AppendBytes(entry, value)
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), entry)
}

// stringValue encodes a google.protobuf.Value holding the string s (string_value, 3), UTF-8
// or not.
func stringValue(s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, 3, protowire.BytesType), s)
}

// nestedStruct encodes a Struct nested levels deep: {"a": {"a": ... {"a": null}}}. It
// writes the bytes outside in, in one pass (wrapping inside out would copy them once per
// level), from the lengths it works out inside out first.
func nestedStruct(levels int) []byte {
	entryLen := func(value int) int { return 3 + 1 + protowire.SizeVarint(uint64(value)) + value } // key "a", value
	structLen := func(value int) int { e := entryLen(value); return 1 + protowire.SizeVarint(uint64(e)) + e }
	// values[i] is the length of the Value i levels above the innermost (null) one.
	values := make([]int, levels)
	values[0] = 2
	for i := 1; i < levels; i++ {
		s := structLen(values[i-1])
		values[i] = 1 + protowire.SizeVarint(uint64(s)) + s
	}
	var b []byte
	// structHead writes a Struct holding a Value of length value, up to that Value.
	structHead := func(value int) {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entryLen(value)))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, "a")
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(value))
	}
	structHead(values[levels-1])
	for i := levels - 1; i >= 1; i-- {
		b = protowire.AppendTag(b, 5, protowire.BytesType) // struct_value
		b = protowire.AppendVarint(b, uint64(structLen(values[i-1])))
		structHead(values[i-1])
	}
	return protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), 0) // null_value
}

// TestMalformedFrameEndsTheSessionAsInvalidArgumentOnBothTransports: a frame that is not
// valid protobuf for its message (invalid UTF-8 in a string field, in the frame or in its
// payload; a payload nested 20,000 levels, past the protobuf runtime's limit) ends the
// session with invalid_argument and VALIDATION_ERROR, over gRPC (grpc-go) as over Connect.
func TestMalformedFrameEndsTheSessionAsInvalidArgumentOnBothTransports(t *testing.T) {
	e := startMessagingServer(t, func(*server.Config) {})
	externalPlugin(e, "frame-plugin", map[string]any{"permissions": []string{"events:emit"}})
	token := e.token(store.RolePlugin, "frame-plugin")
	frames := []struct {
		name  string
		frame []byte
	}{
		{"invalid UTF-8 in a frame field", emitBytes("req-1", "order.\xff\xfe", nil)},
		{"invalid UTF-8 in a payload", emitBytes("req-1", "order.created", structOf("name", stringValue("bad \xc3\x28 string")))},
		{"a payload nested 20000 levels", emitBytes("req-1", "order.created", nestedStruct(20000))},
	}
	for _, transport := range []string{"grpc", "connect"} {
		for _, tc := range frames {
			t.Run(transport+"/"+tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				s, err := openRawSession(t, ctx, e, transport, "frame-plugin", token)
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if err := s.send(rawFrame(tc.frame)); err != nil {
					t.Fatalf("send: %v", err)
				}
				end := endOf(t, s)
				var code connect.Code
				var reason string
				if transport == "grpc" {
					st := grpcstatus.Convert(end)
					code = connect.Code(st.Code())
					if st.Code() == codes.OK {
						code = connect.CodeUnknown
					}
					reason = grpcReason(st)
				} else {
					code = connect.CodeOf(end)
					reason = connectReason(end)
				}
				if code != connect.CodeInvalidArgument || reason != "VALIDATION_ERROR" {
					t.Fatalf("the session ended with %v (code %v, reason %q); want invalid_argument, VALIDATION_ERROR", end, code, reason)
				}
				// The next subtest connects the same instance: wait until this one is gone.
				waitFor(t, "the instance to be detached", 10*time.Second, func() bool {
					_, p := status(e, "frame-plugin")
					return p["runtime"].(map[string]any)["instances"] == 0.0
				})
			})
		}
	}
}

// connectReason is the reason of the google.rpc.ErrorInfo detail of a Connect error.
func connectReason(err error) string {
	ce, ok := err.(*connect.Error)
	if !ok {
		return ""
	}
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok {
				return info.GetReason()
			}
		}
	}
	return ""
}

// grpcReason is the reason of the google.rpc.ErrorInfo detail of a gRPC status.
func grpcReason(st *grpcstatus.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
