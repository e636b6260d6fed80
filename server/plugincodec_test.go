package server

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
)

func TestPluginCodecKeepsPayloadsRaw(t *testing.T) {
	data, err := structpb.NewStruct(map[string]any{"blob": strings.Repeat("y", 300), "n": 2.0, "list": []any{true, nil}})
	if err != nil {
		t.Fatal(err)
	}
	frames := []*pluginhostv1.ConnectRequest{
		{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: "r1", TargetPlugin: "echo-plugin", MessageType: "echo", Data: data, TimeoutSeconds: 3}}},
		{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{DeliveryId: "d1", Status: "success", Data: data}}},
		{Frame: &pluginhostv1.ConnectRequest_Emit{Emit: &pluginhostv1.Emit{RequestId: "r2", Type: "user.login", Data: data}}},
		{Frame: &pluginhostv1.ConnectRequest_Broadcast{Broadcast: &pluginhostv1.BroadcastSend{RequestId: "r3", MessageType: "note", Data: data}}},
		{Frame: &pluginhostv1.ConnectRequest_Ack{Ack: &pluginhostv1.Ack{DeliveryId: "d2", Action: pluginhostv1.AckAction_ACK_ACTION_DONE}}},
	}
	c := newPluginCodec()
	for _, f := range frames {
		b, err := proto.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		var got pluginhostv1.ConnectRequest
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil {
			t.Fatalf("%T: %v", f.GetFrame(), err)
		}
		if _, isAck := f.GetFrame().(*pluginhostv1.ConnectRequest_Ack); !isAck {
			// The payload stays raw: no fields parsed, its bytes held as they came.
			d := payloadOf(&got)
			if d == nil || len(d.GetFields()) != 0 || len(d.ProtoReflect().GetUnknown()) == 0 {
				t.Fatalf("%T: the payload was parsed or lost: %v", f.GetFrame(), d)
			}
		}
		// Re-encoded, it is the same frame.
		again, err := proto.Marshal(&got)
		if err != nil {
			t.Fatal(err)
		}
		var back pluginhostv1.ConnectRequest
		if err := proto.Unmarshal(again, &back); err != nil || !proto.Equal(&back, f) {
			t.Fatalf("%T: decoded by the codec and encoded again: %v (%v), want %v", f.GetFrame(), &back, err, f)
		}
	}

	// A payload proto.Unmarshal refuses (a key that is not UTF-8) fails the frame here too.
	var entry []byte
	entry = protowire.AppendTag(entry, 1, protowire.BytesType)
	entry = protowire.AppendBytes(entry, []byte{0xff, 0xfe})
	var badData []byte
	badData = protowire.AppendTag(badData, 1, protowire.BytesType)
	badData = protowire.AppendBytes(badData, entry)
	bad := &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: "r9", Data: rawstruct.Wrap(badData)}}}
	b, err := proto.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	if proto.Unmarshal(b, &pluginhostv1.ConnectRequest{}) == nil {
		t.Fatal("the malformed frame is accepted by proto.Unmarshal: the test checks nothing")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &pluginhostv1.ConnectRequest{}); err == nil {
		t.Fatal("the codec accepted a payload proto.Unmarshal refuses")
	}
}

func payloadOf(req *pluginhostv1.ConnectRequest) *structpb.Struct {
	switch f := req.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Send:
		return f.Send.GetData()
	case *pluginhostv1.ConnectRequest_Reply:
		return f.Reply.GetData()
	case *pluginhostv1.ConnectRequest_Emit:
		return f.Emit.GetData()
	case *pluginhostv1.ConnectRequest_Broadcast:
		return f.Broadcast.GetData()
	}
	return nil
}

// TestPluginCodecWritesWhatProtoWrites: the frames the host sends, written by the codec
// (the generated code, the raw payloads put in place), are byte for byte what
// proto.Marshal writes, the raw payloads included; a Struct with fields (the welcome's
// configuration) parses back to the same frame.
func TestPluginCodecWritesWhatProtoWrites(t *testing.T) {
	data, err := structpb.NewStruct(map[string]any{"blob": strings.Repeat("y", 300), "n": 2.0})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := proto.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawstruct.Wrap(enc)
	big := rawstruct.Wrap(mustMarshal(t, mustStruct(t, map[string]any{"blob": strings.Repeat("z", 64<<10)})))
	deadline := timestamppb.New(time.Unix(1700000000, 5))
	frames := map[string]*pluginhostv1.ConnectResponse{
		"deliver": {Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{
			DeliveryId: "d_1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "msg_1", Source: "a-plugin", Type: "echo",
			Data: raw, Attempt: 2, Deadline: deadline}}},
		"deliver, pooled buffer": {Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{DeliveryId: "d_2", Data: big, Attempt: 1}}},
		"deliver, empty payload": {Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{DeliveryId: "d_3", Data: &structpb.Struct{}}}},
		"deliver, no payload":    {Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{DeliveryId: "d_4"}}},
		"deliver, parsed payload": {Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{
			DeliveryId: "d_5", Data: mustStruct(t, map[string]any{"k": "v"})}}},
		"reply": {Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
			RequestId: "r1", MessageId: "msg_1", Status: "success", Data: raw}}},
		"reply with kv": {Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
			RequestId: "r2", Data: raw, Kv: &pluginhostv1.KvResult{Entries: []*pluginhostv1.KvEntry{{Key: "k", Value: structpb.NewStringValue("v")}}}}}},
		"error reply": {Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{
			RequestId: "r3", ErrorCode: "PLUGIN_UNAVAILABLE", ErrorMessage: "gone"}}},
		"cancel": {Frame: &pluginhostv1.ConnectResponse_Cancel{Cancel: &pluginhostv1.Cancel{DeliveryId: "d_1", Id: "msg_1", Reason: "cancelled"}}},
		"welcome": {Frame: &pluginhostv1.ConnectResponse_Welcome{Welcome: &pluginhostv1.Welcome{
			SessionId: "s", Config: mustStruct(t, map[string]any{"a": 1.0, "b": []any{"x", true}}), GrantedPermissions: []string{"events:emit"}}}},
	}
	c := newPluginCodec()
	if !c.deliver || !c.reply {
		t.Fatal("the payload frames are not written by the generated code: the test checks nothing")
	}
	for name, f := range frames {
		t.Run(name, func(t *testing.T) {
			want := mustMarshal(t, f)
			bs, err := c.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			got := bs.Materialize()
			bs.Free()
			if _, hasMap := f.GetFrame().(*pluginhostv1.ConnectResponse_Welcome); hasMap || name == "deliver, parsed payload" {
				// A Struct's map is written in no fixed order: compare the frames.
				var back pluginhostv1.ConnectResponse
				if err := proto.Unmarshal(got, &back); err != nil || !proto.Equal(&back, f) {
					t.Fatalf("the codec wrote %x (%v), which parses to %v; want %v", got, err, &back, f)
				}
				return
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("the codec wrote\n%x\nproto.Marshal writes\n%x", got, want)
			}
		})
	}
}

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzPluginCodec: whatever a plugin sends, the codec's verdict is proto.Unmarshal's, and a
// frame it accepts is the frame proto.Unmarshal gives (its payload, kept raw, included).
func FuzzPluginCodec(f *testing.F) {
	data := mustStruct(f, map[string]any{"blob": "yyy", "n": 2.0, "list": []any{true, nil}})
	for _, req := range []*pluginhostv1.ConnectRequest{
		{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: "r1", TargetPlugin: "echo-plugin", MessageType: "echo", Data: data, TimeoutSeconds: 3}}},
		{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{DeliveryId: "d1", Status: "success", Data: data}}},
		{Frame: &pluginhostv1.ConnectRequest_Ack{Ack: &pluginhostv1.Ack{DeliveryId: "d2", Action: pluginhostv1.AckAction_ACK_ACTION_DONE}}},
		{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{PluginId: "p", MessageTypes: []string{"a", "b"}}}},
		{Frame: &pluginhostv1.ConnectRequest_Log{Log: &pluginhostv1.Log{Level: "INFO", Message: "m", Metadata: data, Timestamp: timestamppb.Now()}}},
		{Frame: &pluginhostv1.ConnectRequest_Kv{Kv: &pluginhostv1.KvRequest{RequestId: "k"}}},
	} {
		f.Add(mustMarshal(f, req))
	}
	f.Add(emitFrame("req-1", "order.\xff\xfe"))
	c := newPluginCodec()
	f.Fuzz(func(t *testing.T, b []byte) {
		want := &pluginhostv1.ConnectRequest{}
		wantErr := proto.Unmarshal(b, want)
		got := &pluginhostv1.ConnectRequest{}
		err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bytes.Clone(b))}, got)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("codec error %v, proto.Unmarshal error %v (frame %x)", err, wantErr, b)
		}
		if err != nil {
			return
		}
		// The raw payload marshals to its bytes: parsed again, the frame is proto's.
		var back pluginhostv1.ConnectRequest
		if err := proto.Unmarshal(mustMarshal(t, got), &back); err != nil || !proto.Equal(&back, want) {
			t.Fatalf("decoded %v (%v), want %v (frame %x)", &back, err, want, b)
		}
	})
}

// emitFrame encodes an emit frame (ConnectRequest field 4) of a request id and a type.
func emitFrame(requestID, typ string) []byte {
	var emit []byte
	emit = protowire.AppendTag(emit, 1, protowire.BytesType)
	emit = protowire.AppendString(emit, requestID)
	emit = protowire.AppendTag(emit, 2, protowire.BytesType)
	emit = protowire.AppendString(emit, typ)
	return protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), emit)
}
