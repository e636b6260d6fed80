package rawstruct

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sample(t testing.TB) *structpb.Struct {
	return mustStruct(t, map[string]any{
		"blob":   strings.Repeat("x", 256),
		"n":      42.5,
		"ok":     true,
		"none":   nil,
		"list":   []any{"a", 1.0, map[string]any{"deep": []any{false}}},
		"nested": map[string]any{"k": "v", "é": "ü"},
	})
}

func TestWrapMarshalsToItsBytes(t *testing.T) {
	b, err := proto.Marshal(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	raw := Wrap(b)
	out, err := proto.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("a raw Struct marshals to %x, want %x", out, b)
	}
	got, err := Bytes(raw)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Bytes(raw) = %x, %v; want the wrapped bytes", got, err)
	}
	// Inside a frame too: the deliver frame with a raw payload is the frame with the parsed one.
	parsed := &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{DeliveryId: "d1", Data: sample(t)}}}
	rawFrame := &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Deliver{Deliver: &pluginhostv1.Deliver{DeliveryId: "d1", Data: Wrap(b)}}}
	var back pluginhostv1.ConnectResponse
	if err := proto.Unmarshal(mustMarshal(t, rawFrame), &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(parsed, &back) {
		t.Fatalf("a frame with a raw payload decodes to %v, want %v", &back, parsed)
	}
}

func TestBytes(t *testing.T) {
	for name, s := range map[string]*structpb.Struct{"nil": nil, "empty": {}, "empty fields": {Fields: map[string]*structpb.Value{}}, "raw empty": Wrap(nil)} {
		if b, err := Bytes(s); b != nil || err != nil {
			t.Errorf("%s: Bytes = %x, %v; want nil, nil", name, b, err)
		}
	}
	s := sample(t)
	b, err := Bytes(s)
	if err != nil {
		t.Fatal(err)
	}
	var back structpb.Struct
	if err := proto.Unmarshal(b, &back); err != nil || !proto.Equal(&back, s) {
		t.Fatalf("Bytes of a parsed Struct does not decode to it: %v", err)
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMaterialize(t *testing.T) {
	b := mustMarshal(t, sample(t))
	want := &structpb.ListValue{Values: []*structpb.Value{
		structpb.NewStructValue(sample(t)),
		structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"in": structpb.NewStructValue(sample(t))}}),
	}}
	got := &structpb.ListValue{Values: []*structpb.Value{
		structpb.NewStructValue(Wrap(b)),
		structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"in": structpb.NewStructValue(Wrap(b))}}),
	}}
	if err := Materialize(got); err != nil {
		t.Fatal(err)
	}
	wj, _ := protojson.Marshal(want)
	gj, err := protojson.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var wv, gv structpb.ListValue
	_ = protojson.Unmarshal(wj, &wv)
	_ = protojson.Unmarshal(gj, &gv)
	if !proto.Equal(&wv, &gv) {
		t.Fatalf("materialized JSON %s, want %s", gj, wj)
	}

	frame := &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: &pluginhostv1.RequestReply{RequestId: "r", Data: Wrap(b)}}}
	if err := Materialize(frame); err != nil {
		t.Fatal(err)
	}
	if got := frame.GetReply().GetData(); !proto.Equal(got, sample(t)) || len(got.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("the frame's payload was not materialized: %v", got)
	}

	bad := &pluginhostv1.Deliver{Data: Wrap([]byte{0x0a, 0x05})}
	if err := Materialize(bad); err == nil {
		t.Fatal("a raw Struct holding malformed bytes materialized without an error")
	}
}

// protoVerdict is proto.Unmarshal's verdict on b as a Struct at the runtime's default limit.
func protoVerdict(b []byte) error {
	return proto.Unmarshal(b, &structpb.Struct{})
}

func TestValidateCases(t *testing.T) {
	valid := mustMarshal(t, sample(t))
	entry := func(key []byte, value []byte) []byte {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendBytes(e, key)
		if value != nil {
			e = protowire.AppendTag(e, 2, protowire.BytesType)
			e = protowire.AppendBytes(e, value)
		}
		var s []byte
		s = protowire.AppendTag(s, 1, protowire.BytesType)
		return protowire.AppendBytes(s, e)
	}
	str := func(v []byte) []byte {
		var b []byte
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		return protowire.AppendBytes(b, v)
	}
	cases := map[string][]byte{
		"valid":                  valid,
		"empty":                  nil,
		"truncated":              valid[:len(valid)-3],
		"invalid UTF-8 key":      entry([]byte{0xff}, str([]byte("v"))),
		"invalid UTF-8 value":    entry([]byte("k"), str([]byte{0xc3})),
		"unknown field":          append(protowire.AppendTag(nil, 7, protowire.VarintType), 1),
		"wrong wire type fields": append(protowire.AppendTag(nil, 1, protowire.VarintType), 1),
		"entry without value":    entry([]byte("k"), nil),
		"field number zero":      {0x00, 0x01},
		"overlong varint":        append(protowire.AppendTag(nil, 5, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"NaN number":             mustMarshal(t, &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())}}),
	}
	for name, b := range cases {
		want := protoVerdict(b) == nil
		got := Validate(b, protowire.DefaultRecursionLimit) == nil
		if got != want {
			t.Errorf("%s: Validate accepts=%v, proto.Unmarshal accepts=%v", name, got, want)
		}
	}
	if Validate(cases["invalid UTF-8 key"], protowire.DefaultRecursionLimit) == nil || Validate(valid, protowire.DefaultRecursionLimit) != nil {
		t.Fatal("the verdicts above are not both ways") // guards the table against agreeing vacuously
	}
}

// nested is a Struct nested n levels deep through struct_value.
func nested(n int) []byte {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{"leaf": structpb.NewBoolValue(true)}}
	for range n {
		s = &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStructValue(s)}}
	}
	b, err := proto.MarshalOptions{}.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestValidateDepthMatchesProto(t *testing.T) {
	// Each level is Struct, map entry and Value: three of the runtime's levels.
	limit := protowire.DefaultRecursionLimit/3 + 2
	boundary := -1
	for n := limit - 6; n <= limit+2; n++ {
		b := nested(n)
		want := protoVerdict(b)
		got := Validate(b, protowire.DefaultRecursionLimit)
		if (got == nil) != (want == nil) {
			t.Fatalf("nesting %d: Validate %v, proto.Unmarshal %v", n, got, want)
		}
		if want != nil && boundary < 0 {
			boundary = n
		}
	}
	if boundary < 0 {
		t.Fatal("no nesting in the range reached proto's limit: the test checks nothing")
	}
	if err := Validate(nested(boundary), protowire.DefaultRecursionLimit); !errors.Is(err, errDepth) {
		t.Fatalf("too deep: %v, want errDepth", err)
	}
}

// The runtime counts a map entry's level before it checks the entry's wire type: a field 1
// that is not length-delimited at the deepest level is too deep all the same.
func TestValidateDepthOfMistypedEntry(t *testing.T) {
	leaf := []byte{0x08, 0x01} // Struct.fields as a varint: skipped as unknown, but one level down
	build := func(levels int) []byte {
		b := leaf
		for range levels {
			// Struct{fields: {"k": Value{struct_value: b}}}
			var value, entry, st []byte
			value = protowire.AppendTag(value, 5, protowire.BytesType)
			value = protowire.AppendBytes(value, b)
			entry = protowire.AppendTag(entry, 1, protowire.BytesType)
			entry = protowire.AppendBytes(entry, []byte("k"))
			entry = protowire.AppendTag(entry, 2, protowire.BytesType)
			entry = protowire.AppendBytes(entry, value)
			st = protowire.AppendTag(st, 1, protowire.BytesType)
			b = protowire.AppendBytes(st, entry)
		}
		return b
	}
	sawRefusal := false
	for levels := protowire.DefaultRecursionLimit/3 - 3; levels <= protowire.DefaultRecursionLimit/3+1; levels++ {
		b := build(levels)
		want := protoVerdict(b)
		if got := Validate(b, protowire.DefaultRecursionLimit); (got == nil) != (want == nil) {
			t.Fatalf("%d levels: Validate %v, proto.Unmarshal %v", levels, got, want)
		}
		sawRefusal = sawRefusal || want != nil
	}
	if !sawRefusal {
		t.Fatal("no nesting reached proto's limit: the test checks nothing")
	}
}

func FuzzValidate(f *testing.F) {
	f.Add(mustMarshal(f, sample(f)))
	f.Add([]byte{})
	f.Add(nested(3))
	f.Add(mustMarshal(f, &structpb.Struct{Fields: map[string]*structpb.Value{"l": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNullValue()}})}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		want := protoVerdict(b)
		got := Validate(b, protowire.DefaultRecursionLimit)
		if (got == nil) != (want == nil) {
			t.Fatalf("Validate(%x) = %v, proto.Unmarshal = %v", b, got, want)
		}
		if got == nil {
			// An accepted payload marshals to the same bytes raw and materializes to the parse.
			raw := Wrap(b)
			if err := Materialize(raw); err != nil {
				t.Fatalf("Materialize of accepted bytes: %v", err)
			}
			var parsed structpb.Struct
			_ = proto.Unmarshal(b, &parsed)
			if !proto.Equal(raw, &parsed) {
				t.Fatalf("materialized %v, want %v", raw, &parsed)
			}
		}
	})
}

// requestPaths are ConnectRequest's payload fields, as the host's codec cuts them.
var requestPaths = Paths{2: 3, 3: 4, 4: 3, 8: 3}

func TestCut(t *testing.T) {
	data := sample(t)
	frames := map[string]*pluginhostv1.ConnectRequest{
		"send":      {Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: "r1", TargetPlugin: "echo-plugin", MessageType: "echo", Data: data, TimeoutSeconds: 5}}},
		"reply":     {Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{DeliveryId: "d1", Status: "success", Data: data}}},
		"emit":      {Frame: &pluginhostv1.ConnectRequest_Emit{Emit: &pluginhostv1.Emit{RequestId: "r2", Type: "user.login", Data: data}}},
		"broadcast": {Frame: &pluginhostv1.ConnectRequest_Broadcast{Broadcast: &pluginhostv1.BroadcastSend{RequestId: "r3", MessageType: "note", Data: data}}},
	}
	for name, f := range frames {
		b := mustMarshal(t, f)
		rest, payload, n, ok := Cut(b, requestPaths)
		if !ok {
			t.Fatalf("%s: not cut", name)
		}
		var gotData structpb.Struct
		if err := proto.Unmarshal(payload, &gotData); err != nil || !proto.Equal(&gotData, data) {
			t.Fatalf("%s: payload %x is not the Struct's encoding (%v)", name, payload, err)
		}
		var got pluginhostv1.ConnectRequest
		if err := proto.Unmarshal(rest, &got); err != nil {
			t.Fatalf("%s: rest does not decode: %v", name, err)
		}
		setData(&got, n, Wrap(payload))
		if err := Materialize(&got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(f, &got) {
			t.Fatalf("%s: cut and put back gives %v, want %v", name, &got, f)
		}
	}
	notCut := map[string][]byte{
		"no payload":  mustMarshal(t, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: "r"}}}),
		"other frame": mustMarshal(t, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Ack{Ack: &pluginhostv1.Ack{DeliveryId: "d"}}}),
		"two fields":  append(mustMarshal(t, frames["send"]), mustMarshal(t, frames["reply"])...),
		"payload twice": func() []byte {
			inner := append(mustMarshal(t, &pluginhostv1.Send{Data: data}), mustMarshal(t, &pluginhostv1.Send{Data: data})...)
			return protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), inner)
		}(),
		"truncated": mustMarshal(t, frames["send"])[:20],
		"empty":     nil,
	}
	for name, b := range notCut {
		if _, _, _, ok := Cut(b, requestPaths); ok {
			t.Errorf("%s: cut, want the ordinary decoding", name)
		}
	}
}

// setData puts a payload into the frame field n of req (the test's copy of the codec's
// switch).
func setData(req *pluginhostv1.ConnectRequest, n protowire.Number, s *structpb.Struct) {
	switch n {
	case 2:
		req.GetReply().Data = s
	case 3:
		req.GetSend().Data = s
	case 4:
		req.GetEmit().Data = s
	case 8:
		req.GetBroadcast().Data = s
	}
}

func FuzzCut(f *testing.F) {
	data := mustStruct(f, map[string]any{"blob": "abc", "n": 1.0})
	f.Add(mustMarshal(f, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: "r1", TargetPlugin: "echo-plugin", MessageType: "echo", Data: data}}}))
	f.Add(mustMarshal(f, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{DeliveryId: "d", Status: "error", Data: data, ErrorMessage: "x"}}}))
	f.Add(mustMarshal(f, &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Emit{Emit: &pluginhostv1.Emit{Type: "a.b", Data: data}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var want pluginhostv1.ConnectRequest
		wantErr := proto.Unmarshal(b, &want)
		rest, payload, n, ok := Cut(b, requestPaths)
		if !ok {
			return
		}
		// What the codec does with a cut frame: validate the payload (its Struct is three
		// levels down), decode the rest, put the payload back raw.
		var got pluginhostv1.ConnectRequest
		gotErr := Validate(payload, protowire.DefaultRecursionLimit-2)
		if gotErr == nil {
			gotErr = proto.Unmarshal(rest, &got)
		}
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("cut decoding: %v; proto.Unmarshal: %v", gotErr, wantErr)
		}
		if gotErr != nil {
			return
		}
		setData(&got, n, Wrap(payload))
		if err := Materialize(&got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&want, &got) {
			t.Fatalf("cut decoding %v, want %v", &got, &want)
		}
	})
}
