package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/rawstruct"
)

func TestPassThroughCodecKeepsPayloadsUndecoded(t *testing.T) {
	data, err := structpb.NewStruct(map[string]any{"blob": "xyz", "n": 2.0})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	codec := newPassThroughCodec()
	for _, tc := range []struct {
		frame proto.Message
		fresh func() proto.Message
		data  func(proto.Message) *structpb.Struct
	}{
		{
			&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: "r1", TargetPlugin: "bench-echo", MessageType: "echo", Data: data}}},
			func() proto.Message { return &pluginhostv1.ConnectRequest{} },
			func(m proto.Message) *structpb.Struct { return m.(*pluginhostv1.ConnectRequest).GetSend().GetData() },
		},
		{
			&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{DeliveryId: "d1", Status: "success", Data: data}}},
			func() proto.Message { return &pluginhostv1.ConnectRequest{} },
			func(m proto.Message) *structpb.Struct { return m.(*pluginhostv1.ConnectRequest).GetReply().GetData() },
		},
		{
			&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{DeliveryId: "d1", Id: "msg_1", Data: data}}},
			func() proto.Message { return &pluginhostv1.ConnectResponse{} },
			func(m proto.Message) *structpb.Struct {
				return m.(*pluginhostv1.ConnectResponse).GetDeliver().GetData()
			},
		},
		{
			&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{RequestId: "r1", Status: "success", Data: data}}},
			func() proto.Message { return &pluginhostv1.ConnectResponse{} },
			func(m proto.Message) *structpb.Struct { return m.(*pluginhostv1.ConnectResponse).GetReply().GetData() },
		},
	} {
		wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.frame)
		if err != nil {
			t.Fatal(err)
		}
		got := tc.fresh()
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
			t.Fatalf("%T: %v", tc.frame, err)
		}
		d := tc.data(got)
		if len(d.GetFields()) != 0 {
			t.Errorf("%T: the payload was parsed: %v", tc.frame, d)
		}
		if raw, _ := rawstruct.Bytes(d); !bytes.Equal(raw, enc) {
			t.Errorf("%T: payload bytes %x, want %x", tc.frame, raw, enc)
		}
		// The rest of the frame is decoded, and the frame encodes back to the same bytes.
		again, err := proto.MarshalOptions{Deterministic: true}.Marshal(got)
		if err != nil || !bytes.Equal(again, wire) {
			t.Errorf("%T: decoded %v, which encodes to %x (%v), want %x", tc.frame, got, again, err, wire)
		}
		// A frame whose payload is not a Struct's encoding is refused, as proto would:
		// here a key that is not UTF-8 ({"\xff": null} by hand; proto.Marshal refuses it).
		bad := proto.Clone(tc.frame)
		proto.Reset(tc.data(bad))
		tc.data(bad).ProtoReflect().SetUnknown([]byte{0x0a, 0x05, 0x0a, 0x01, 0xff, 0x12, 0x00})
		wire, err = proto.Marshal(bad)
		if err != nil {
			t.Fatal(err)
		}
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, tc.fresh()); err == nil {
			t.Errorf("%T: a payload with invalid UTF-8 was accepted", tc.frame)
		}
	}
}

// TestProtoRelayRoundTrips runs reference C's three roles in this process and makes round
// trips through them.
func TestProtoRelayRoundTrips(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	serve := func(main childRole, args ...string) (string, chan error) {
		r, w := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- main(ctx, args, w); w.Close() }()
		var addr ready
		if err := json.NewDecoder(r).Decode(&addr); err != nil {
			t.Fatalf("no address: %v", err)
		}
		go io.Copy(io.Discard, r)
		return addr.Addr, done
	}
	echoAddr, echoDone := serve(protoEchoMain)
	relayAddr, relayDone := serve(protoRelayMain, "-upstream", echoAddr)

	var out bytes.Buffer
	err := protoClientMain(ctx, []string{"-addr", relayAddr, "-payload", "100", "-duration", "200ms", "-warmup", "50ms", "-concurrency", "8"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	var m Measurement
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("client output %q: %v", out.String(), err)
	}
	if m.Samples == 0 || m.RoundTrips == 0 || m.P50us <= 0 {
		t.Fatalf("no round trips measured: %+v", m)
	}
	cancel()
	for _, done := range []chan error{relayDone, echoDone} {
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}
}
