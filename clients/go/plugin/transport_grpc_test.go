package plugin

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// These tests hold frameCodec to grpc-go's proto codec, and check that raw Structs cross
// both transports as the Structs they encode.

func testCodec(t testing.TB) frameCodec {
	t.Helper()
	c, err := newFrameCodec()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// payloadData returns the data of a delivery or reply.
func payloadData(res *pluginhostv1.ConnectResponse) *structpb.Struct {
	if d := res.GetDeliver(); d != nil {
		return d.GetData()
	}
	return res.GetReply().GetData()
}

// isRaw says whether s is a raw Struct.
func isRaw(s *structpb.Struct) bool {
	return s != nil && len(s.GetFields()) == 0 && len(s.ProtoReflect().GetUnknown()) > 0
}

// splitBuffers cuts b into buffers of at most size bytes (one buffer when size is 0), as
// grpc-go may hand a frame over.
func splitBuffers(b []byte, size int) mem.BufferSlice {
	if size <= 0 || size >= len(b) {
		return mem.BufferSlice{mem.SliceBuffer(b)}
	}
	var s mem.BufferSlice
	for len(b) > 0 {
		n := min(size, len(b))
		s = append(s, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return s
}

// checkFrame fails t unless frameCodec's Unmarshal of b (handed over in buffers of split
// bytes) agrees with proto.Unmarshal: the same verdict, the same data for structToMap, and
// the same frame once the data is parsed. The input is overwritten afterwards, as grpc-go
// reuses its buffers: what the codec returned must not change.
func checkFrame(t testing.TB, c frameCodec, b []byte, split int) (*pluginhostv1.ConnectResponse, error) {
	t.Helper()
	want := &pluginhostv1.ConnectResponse{}
	wantErr := proto.Unmarshal(b, want)
	in := append([]byte(nil), b...)
	got := &pluginhostv1.ConnectResponse{}
	err := c.Unmarshal(splitBuffers(in, split), got)
	clear(in)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("frameCodec error %v, proto.Unmarshal error %v (frame %x)", err, wantErr, b)
	}
	if err != nil {
		return got, err
	}
	if gm, wm := structToMap(payloadData(got)), structToMap(payloadData(want)); !sameValue(gm, wm) {
		t.Fatalf("data %#v, want %#v (frame %x)", gm, wm, b)
	}
	if (payloadData(got) == nil) != (payloadData(want) == nil) {
		t.Fatalf("data %v, want %v", payloadData(got), payloadData(want))
	}
	// Marshalling writes a raw Struct's bytes as they are; parsing them again gives the
	// frame proto.Unmarshal would have given.
	enc, err := proto.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	parsed := &pluginhostv1.ConnectResponse{}
	if err := proto.Unmarshal(enc, parsed); err != nil {
		t.Fatalf("the frame does not parse again: %v", err)
	}
	if !proto.Equal(parsed, want) {
		t.Fatalf("frame %v, want %v", parsed, want)
	}
	return got, nil
}

func marshalFrame(t testing.TB, res *pluginhostv1.ConnectResponse) []byte {
	t.Helper()
	b, err := proto.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func deliverFrame(d *pluginhostv1.Deliver) *pluginhostv1.ConnectResponse {
	return &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: d}}
}

func replyFrame(r *pluginhostv1.RequestReply) *pluginhostv1.ConnectResponse {
	return &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: r}}
}

func testDeliver(data *structpb.Struct) *pluginhostv1.Deliver {
	return &pluginhostv1.Deliver{
		DeliveryId: "d-1", Kind: pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE, Id: "m-1", Source: "billing", Type: "invoice.created",
		Data: data, Deadline: timestamppb.New(time.Unix(1700000000, 5)), Attempt: 2,
	}
}

func mustRaw(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := mapToStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// kvValue is a google.protobuf.Value n+1 lists deep, with a null in the innermost when
// null is set.
func kvValue(n int, null bool) *structpb.Value {
	inner := &structpb.ListValue{}
	if null {
		inner.Values = []*structpb.Value{structpb.NewNullValue()}
	}
	v := structpb.NewListValue(inner)
	for range n {
		v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
	}
	return v
}

// TestFieldNumbers checks frameCodec's field numbers against the generated descriptors.
func TestFieldNumbers(t *testing.T) {
	t.Parallel()
	fieldNum := func(m proto.Message, name protoreflect.Name) protowire.Number {
		return m.ProtoReflect().Descriptor().Fields().ByName(name).Number()
	}
	for _, tt := range []struct {
		got, want protowire.Number
		what      string
	}{
		{responseDeliverNum, fieldNum(&pluginhostv1.ConnectResponse{}, "deliver"), "ConnectResponse.deliver"},
		{responseReplyNum, fieldNum(&pluginhostv1.ConnectResponse{}, "reply"), "ConnectResponse.reply"},
		{payloadDataNum, fieldNum(&pluginhostv1.Deliver{}, "data"), "Deliver.data"},
		{payloadDataNum, fieldNum(&pluginhostv1.RequestReply{}, "data"), "RequestReply.data"},
		{structFieldsNum, fieldNum(&structpb.Struct{}, "fields"), "Struct.fields"},
		{valueNullNum, fieldNum(&structpb.Value{}, "null_value"), "Value.null_value"},
		{valueNumberNum, fieldNum(&structpb.Value{}, "number_value"), "Value.number_value"},
		{valueStringNum, fieldNum(&structpb.Value{}, "string_value"), "Value.string_value"},
		{valueBoolNum, fieldNum(&structpb.Value{}, "bool_value"), "Value.bool_value"},
		{valueStructNum, fieldNum(&structpb.Value{}, "struct_value"), "Value.struct_value"},
		{valueListNum, fieldNum(&structpb.Value{}, "list_value"), "Value.list_value"},
		{listValuesNum, fieldNum(&structpb.ListValue{}, "values"), "ListValue.values"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s is field %d, not %d", tt.what, tt.want, tt.got)
		}
	}
}

func TestFrameCodecUnmarshal(t *testing.T) {
	t.Parallel()
	c := testCodec(t)
	blob := mustRaw(t, blobPayload())
	nested := mustRaw(t, nestedPayload())
	payload := func(s *structpb.Struct) []byte { return s.ProtoReflect().GetUnknown() }
	reply := &pluginhostv1.RequestReply{
		RequestId: "r-1", MessageId: "m-9", Status: "success", Data: nested, Id: "e-1", Recipients: []string{"a", "b"},
		Kv:        &pluginhostv1.KvResult{Found: true, Entries: []*pluginhostv1.KvEntry{{Key: "k", Value: structpb.NewStringValue("v"), Version: 3}}},
		Providers: []*pluginv1.ServiceProvider{{PluginId: "billing", Services: []string{"invoices"}}},
	}
	tests := []struct {
		name    string
		frame   []byte
		raw     bool // the data must come out as a raw Struct
		wantErr bool
	}{
		{name: "deliver blob", frame: marshalFrame(t, deliverFrame(testDeliver(blob))), raw: true},
		{name: "deliver nested", frame: marshalFrame(t, deliverFrame(testDeliver(nested))), raw: true},
		{name: "deliver empty data", frame: marshalFrame(t, deliverFrame(testDeliver(&structpb.Struct{})))},
		{name: "deliver without data", frame: marshalFrame(t, deliverFrame(testDeliver(nil)))},
		{name: "deliver data alone", frame: deliverWith(lenField(payloadDataNum, payload(blob))), raw: true},
		{name: "deliver data first", frame: deliverWith(lenField(payloadDataNum, payload(blob)), varintField(8, 3)), raw: true},
		{name: "deliver data last", frame: deliverWith(lenField(1, []byte("d")), lenField(payloadDataNum, payload(blob))), raw: true},
		{name: "deliver fields repeated around the data", frame: deliverWith(
			lenField(1, []byte("d1")), lenField(7, varintField(1, 5)), varintField(8, 1), lenField(payloadDataNum, payload(nested)),
			lenField(1, []byte("d2")), lenField(7, varintField(2, 9)), varintField(99, 1), groupField(100, fixed32Field(1, 1)),
		), raw: true},
		{name: "deliver unknown fields around the data", frame: deliverWith(fixed64Field(50, 1), lenField(payloadDataNum, payload(blob)), lenField(51, []byte{0xff})), raw: true},
		{name: "deliver non-minimal tags", frame: cat([]byte{0x92, 0x00}, protowire.AppendVarint(nil, uint64(len(lenField(payloadDataNum, payload(blob))))), lenField(payloadDataNum, payload(blob))), raw: true},
		{name: "reply", frame: marshalFrame(t, replyFrame(reply)), raw: true},
		{name: "reply without data", frame: marshalFrame(t, replyFrame(&pluginhostv1.RequestReply{RequestId: "r-2", Recipients: []string{"x"}}))},
		{name: "welcome", frame: marshalFrame(t, &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Welcome{Welcome: &pluginhostv1.Welcome{SessionId: "s", Config: nested}}})},
		{name: "empty frame", frame: nil},
		// Shapes left to proto.Unmarshal.
		{name: "data twice", frame: deliverWith(lenField(payloadDataNum, payload(blob)), lenField(payloadDataNum, payload(nested)))},
		{name: "data of the wrong wire type", frame: deliverWith(varintField(payloadDataNum, 1))},
		{name: "data and data of the wrong wire type", frame: deliverWith(lenField(payloadDataNum, payload(blob)), varintField(payloadDataNum, 1))},
		{name: "deliver twice", frame: cat(marshalFrame(t, deliverFrame(testDeliver(blob))), marshalFrame(t, deliverFrame(&pluginhostv1.Deliver{Attempt: 5, Data: nested})))},
		{name: "deliver then reply", frame: cat(marshalFrame(t, deliverFrame(testDeliver(blob))), marshalFrame(t, replyFrame(reply)))},
		{name: "frame and an unknown field", frame: cat(marshalFrame(t, deliverFrame(testDeliver(blob))), varintField(20, 1))},
		{name: "deliver of the wrong wire type", frame: varintField(responseDeliverNum, 1)},
		// Malformed frames fail in both.
		{name: "data with invalid UTF-8", frame: marshalFrame(t, deliverFrame(testDeliver(rawStruct(entry("k", strValue("\xff")))))), wantErr: true},
		{name: "reply data with invalid UTF-8 key", frame: marshalFrame(t, replyFrame(&pluginhostv1.RequestReply{Data: rawStruct(entry("\xc3", numValue(1)))})), wantErr: true},
		{name: "data truncated inside", frame: deliverWith(lenField(payloadDataNum, entry("k", strValue("abc"))[:6])), wantErr: true},
		{name: "data with a stray end group", frame: deliverWith(lenField(payloadDataNum, protowire.AppendTag(nil, 4, protowire.EndGroupType))), wantErr: true},
		{name: "data field number 0", frame: deliverWith(lenField(payloadDataNum, []byte{0x00, 0x01})), wantErr: true},
		{name: "invalid UTF-8 before the data", frame: deliverWith(lenField(1, []byte{0xff}), lenField(payloadDataNum, payload(blob))), wantErr: true},
		{name: "invalid UTF-8 after the data", frame: deliverWith(lenField(payloadDataNum, payload(blob)), lenField(4, []byte{0xff})), wantErr: true},
		{name: "malformed timestamp after the data", frame: deliverWith(lenField(payloadDataNum, payload(blob)), lenField(7, []byte{0x08})), wantErr: true},
		{name: "truncated frame", frame: marshalFrame(t, deliverFrame(testDeliver(blob)))[:40], wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, split := range []int{0, 1, 7} {
				got, err := checkFrame(t, c, tt.frame, split)
				if (err != nil) != tt.wantErr {
					t.Fatalf("error %v, want error %v", err, tt.wantErr)
				}
				if err == nil && isRaw(payloadData(got)) != tt.raw {
					t.Fatalf("raw data %v, want %v", isRaw(payloadData(got)), tt.raw)
				}
			}
		})
	}
}

// TestFrameCodecDepth walks across proto.Unmarshal's recursion limit with the data, and
// with a KV value beside it in a reply: the verdicts must flip at the same depth.
func TestFrameCodecDepth(t *testing.T) {
	t.Parallel()
	c := testCodec(t)
	check := func(frame func(int, []byte) []byte) func(int, []byte) error {
		return func(n int, tail []byte) error {
			got, err := checkFrame(t, c, frame(n, tail), 0)
			if err == nil && !isRaw(payloadData(got)) {
				t.Fatal("the data is not raw")
			}
			return err
		}
	}
	// The Struct is 2 levels down; then as in TestDecodeStructMapDepth.
	checkAroundLimit(t, protowire.DefaultRecursionLimit/3-1, structTails, check(func(n int, tail []byte) []byte {
		return deliverWith(lenField(payloadDataNum, nestedStructs(n, tail)))
	}))
	checkAroundLimit(t, protowire.DefaultRecursionLimit/2-3, listTails, check(func(n int, tail []byte) []byte {
		return lenField(responseReplyNum, lenField(payloadDataNum, nestedLists(n, tail)))
	}))
	// ConnectResponse, RequestReply, KvResult, KvEntry, Value, ListValue, then Value and
	// ListValue a level.
	data := mustRaw(t, blobPayload())
	checkAroundLimit(t, protowire.DefaultRecursionLimit/2-3, listTails, check(func(n int, tail []byte) []byte {
		return marshalFrame(t, replyFrame(&pluginhostv1.RequestReply{
			Data: data,
			Kv:   &pluginhostv1.KvResult{Entries: []*pluginhostv1.KvEntry{{Key: "k", Value: kvValue(n, tail != nil)}}},
		}))
	}))
}

// deliverWith is a delivery frame of the given fields.
func deliverWith(fields ...[]byte) []byte { return lenField(responseDeliverNum, fields...) }

func FuzzFrameCodec(f *testing.F) {
	blob, _ := mapToStruct(blobPayload())
	nested, _ := mapToStruct(nestedPayload())
	for _, res := range []*pluginhostv1.ConnectResponse{
		deliverFrame(testDeliver(blob)),
		deliverFrame(testDeliver(nested)),
		deliverFrame(testDeliver(nil)),
		replyFrame(&pluginhostv1.RequestReply{RequestId: "r", Data: nested, Kv: &pluginhostv1.KvResult{Entries: []*pluginhostv1.KvEntry{{Key: "k", Value: kvValue(3, true)}}}}),
		{Frame: &pluginhostv1.ConnectResponse_Welcome{Welcome: &pluginhostv1.Welcome{SessionId: "s"}}},
	} {
		b, err := proto.Marshal(res)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0))
	}
	f.Add(deliverWith(lenField(1, []byte("d")), lenField(payloadDataNum, entry("k", strValue("\xff"))), varintField(8, 1)), uint8(3))
	f.Add(deliverWith(lenField(payloadDataNum, entry("k", listValue(numValue(1)), structValue())), lenField(payloadDataNum)), uint8(1))
	c := testCodec(f)
	f.Fuzz(func(t *testing.T, b []byte, split uint8) {
		checkFrame(t, c, b, int(split))
	})
}

func BenchmarkFrameUnmarshal(b *testing.B) {
	c := testCodec(b)
	for name, m := range map[string]map[string]any{"blob": blobPayload(), "nested": nestedPayload()} {
		frame := marshalFrame(b, deliverFrame(testDeliver(mustRaw(b, m))))
		// old is what grpc-go's proto codec did, new frameCodec; each then gives the
		// handler its map.
		for _, impl := range []struct {
			name  string
			codec interface {
				Unmarshal(mem.BufferSlice, any) error
			}
		}{{"old", c.proto}, {"new", c}} {
			b.Run(name+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					res := &pluginhostv1.ConnectResponse{}
					if err := impl.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(frame)}, res); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(name+"/"+impl.name+"+map", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					res := &pluginhostv1.ConnectResponse{}
					if err := impl.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(frame)}, res); err != nil {
						b.Fatal(err)
					}
					_ = structToMap(res.GetDeliver().GetData())
				}
			})
		}
	}
}

// payloadHost serves PluginHostService.Connect with grpc-go: it checks the plugin's first
// frame with check, then sends frames.
type payloadHost struct {
	t      *testing.T
	check  func(*pluginhostv1.ConnectRequest)
	frames []*pluginhostv1.ConnectResponse
	// contentType is the call's content-type; guarded by mu.
	mu          sync.Mutex
	contentType string
}

func (h *payloadHost) connect(_ any, ss grpc.ServerStream) error {
	if md, ok := metadata.FromIncomingContext(ss.Context()); ok {
		h.mu.Lock()
		h.contentType = strings.Join(md.Get("content-type"), ",")
		h.mu.Unlock()
	}
	first := &pluginhostv1.ConnectRequest{}
	if err := ss.RecvMsg(first); err != nil {
		return err
	}
	h.check(first)
	for _, f := range h.frames {
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
	// Wait for the plugin to go.
	for {
		if err := ss.RecvMsg(&pluginhostv1.ConnectRequest{}); err != nil {
			return nil
		}
	}
}

// TestGRPCTransportPayloads runs payloads through the gRPC transport and a grpc-go host:
// the host reads a raw Struct as the Struct it encodes, the plugin the host's data as a
// raw Struct, and a malformed payload fails Receive, as it did before frameCodec.
func TestGRPCTransportPayloads(t *testing.T) {
	t.Parallel()
	sent := nestedPayload()
	wantSent, _ := legacyMapToStruct(sent)
	hostData, _ := structpb.NewStruct(map[string]any{"blob": strings.Repeat("y", 300), "n": 2})
	h := &payloadHost{
		t: t,
		check: func(f *pluginhostv1.ConnectRequest) {
			if !proto.Equal(f.GetSend().GetData(), wantSent) {
				t.Errorf("host: data %v, want %v", f.GetSend().GetData().AsMap(), wantSent.AsMap())
			}
		},
		frames: []*pluginhostv1.ConnectResponse{
			deliverFrame(testDeliver(hostData)),
			replyFrame(&pluginhostv1.RequestReply{RequestId: "r-1", Data: hostData}),
			deliverFrame(testDeliver(rawStruct(entry("k", strValue("\xff"))))),
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.WaitForHandlers(true), grpc.UnknownServiceHandler(h.connect))
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)

	tr, err := newGRPCTransport(&options{host: "http://" + ln.Addr().String(), token: "t", backoffInitial: time.Second, backoffMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.close)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := tr.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{
		RequestId: "r-1", TargetPlugin: "billing", MessageType: "total", Data: mustRaw(t, sent),
	}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		res, err := s.Receive()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if d := payloadData(res); !isRaw(d) || !sameValue(structToMap(d), hostData.AsMap()) {
			t.Fatalf("frame %d: data %v (raw %v), want %v", i, structToMap(d), isRaw(d), hostData.AsMap())
		}
	}
	_, err = s.Receive()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInternal {
		t.Fatalf("Receive of a malformed payload: %v, want an internal error", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.contentType != "application/grpc+proto" {
		t.Errorf("content-type %q, want application/grpc+proto", h.contentType)
	}
}

// connectHost serves PluginHostService.Connect with connect-go, as payloadHost does.
type connectHost struct {
	pluginhostv1connect.UnimplementedPluginHostServiceHandler
	check  func(*pluginhostv1.ConnectRequest)
	frames []*pluginhostv1.ConnectResponse
}

func (h *connectHost) Connect(_ context.Context, stream *connect.BidiStream[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]) error {
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	h.check(first)
	for _, f := range h.frames {
		if err := stream.Send(f); err != nil {
			return err
		}
	}
	for {
		if _, err := stream.Receive(); err != nil {
			return nil
		}
	}
}

// TestConnectTransportPayloads runs a raw Struct through connect-go's transport (binary
// protobuf, as WithHTTPClient sets it up): the host reads it as the Struct it encodes.
func TestConnectTransportPayloads(t *testing.T) {
	t.Parallel()
	sent := nestedPayload()
	wantSent, _ := legacyMapToStruct(sent)
	hostData, _ := structpb.NewStruct(map[string]any{"l": []any{1, "x"}})
	got := make(chan *structpb.Struct, 1)
	h := &connectHost{
		check:  func(f *pluginhostv1.ConnectRequest) { got <- f.GetEmit().GetData() },
		frames: []*pluginhostv1.ConnectResponse{deliverFrame(testDeliver(hostData))},
	}
	mux := http.NewServeMux()
	mux.Handle(pluginhostv1connect.NewPluginHostServiceHandler(h))
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	tr := newConnectTransport(&options{host: "http://" + ln.Addr().String(), token: "t", httpClient: nexus.DefaultHTTPClient()})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := tr.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Emit{Emit: &pluginhostv1.Emit{
		RequestId: "r-1", Type: "order.paid", Data: mustRaw(t, sent),
	}}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if d := payloadData(res); !sameValue(structToMap(d), hostData.AsMap()) {
		t.Fatalf("data %v, want %v", structToMap(d), hostData.AsMap())
	}
	select {
	case d := <-got:
		if !proto.Equal(d, wantSent) {
			t.Fatalf("host: data %v, want %v", d.AsMap(), wantSent.AsMap())
		}
	case <-ctx.Done():
		t.Fatal("the host got no frame")
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

// TestFrameCodecWritesWhatProtoWrites: the frames the SDK sends, written by the codec (the
// generated code, a raw payload put in place), are byte for byte what proto.Marshal writes.
func TestFrameCodecWritesWhatProtoWrites(t *testing.T) {
	c := testCodec(t)
	for num, ok := range c.payloads {
		if !ok {
			t.Fatalf("frame %d is not written by the generated code: the test checks nothing", num)
		}
	}
	data, err := mapToStruct(blobPayload())
	if err != nil {
		t.Fatal(err)
	}
	frames := map[string]*pluginhostv1.ConnectRequest{
		"send":              {Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: "r1", TargetPlugin: "echo", MessageType: "m", Data: data, TimeoutSeconds: 30}}},
		"reply":             {Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{DeliveryId: "d1", Status: "success", Data: data}}},
		"emit":              {Frame: &pluginhostv1.ConnectRequest_Emit{Emit: &pluginhostv1.Emit{RequestId: "r2", Type: "user.login", Data: data}}},
		"broadcast":         {Frame: &pluginhostv1.ConnectRequest_Broadcast{Broadcast: &pluginhostv1.BroadcastSend{RequestId: "r3", MessageType: "note", Data: data}}},
		"reply, no payload": {Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{DeliveryId: "d2", Status: "error", ErrorMessage: "no"}}},
		"ack":               {Frame: &pluginhostv1.ConnectRequest_Ack{Ack: &pluginhostv1.Ack{DeliveryId: "d3", Action: pluginhostv1.AckAction_ACK_ACTION_DONE}}},
		"log":               {Frame: &pluginhostv1.ConnectRequest_Log{Log: &pluginhostv1.Log{Level: "INFO", Message: "m", Metadata: data}}},
	}
	for name, f := range frames {
		t.Run(name, func(t *testing.T) {
			want, err := proto.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			bs, err := c.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			got := bs.Materialize()
			bs.Free()
			if !bytes.Equal(got, want) {
				t.Fatalf("the codec wrote\n%x\nproto.Marshal writes\n%x", got, want)
			}
		})
	}
}
