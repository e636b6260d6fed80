package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

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
