package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// These tests hold the direct payload codec to what it replaces: legacyMapToStruct and
// proto.Marshal on the way out, proto.Unmarshal and AsMap on the way in.

// legacyMapToStruct is mapToStruct as it was before payload.go, kept here as the reference.
func legacyMapToStruct(m map[string]any) (*structpb.Struct, error) {
	if m == nil {
		return nil, nil
	}
	if s, err := structpb.NewStruct(m); err == nil {
		return s, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		return nil, err
	}
	return structpb.NewStruct(generic)
}

// legacyDecode is what receiving a payload used to be: proto.Unmarshal, then AsMap.
func legacyDecode(b []byte) (map[string]any, error) {
	var s structpb.Struct
	if err := proto.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	return s.AsMap(), nil
}

// checkEncode fails t unless encodeStructMap(m) fails where legacyMapToStruct fails and
// otherwise decodes to the very Struct legacyMapToStruct makes (compared as deterministic
// encodings: bit for bit, -0 and NaN included).
func checkEncode(t testing.TB, m map[string]any) {
	t.Helper()
	want, wantErr := legacyMapToStruct(m)
	got, err := encodeStructMap(m)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("encodeStructMap error %v, legacy error %v", err, wantErr)
	}
	if err != nil {
		return
	}
	var s structpb.Struct
	if err := proto.Unmarshal(got, &s); err != nil {
		t.Fatalf("proto.Unmarshal of the encoding: %v", err)
	}
	det := proto.MarshalOptions{Deterministic: true}
	gb, err := det.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	wb, err := det.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gb, wb) {
		t.Fatalf("encoding means %v, want %v", s.AsMap(), want.AsMap())
	}
}

// checkDecode fails t unless decodeStructMap(b) and checkStruct agree with legacyDecode:
// the same verdict and, on success, the same map.
func checkDecode(t testing.TB, b []byte) (map[string]any, error) {
	t.Helper()
	want, wantErr := legacyDecode(b)
	got, err := decodeStructMap(b)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("decodeStructMap(%x) error %v, proto.Unmarshal error %v", b, err, wantErr)
	}
	if cerr := checkStruct(b, protowire.DefaultRecursionLimit); (cerr != nil) != (wantErr != nil) {
		t.Fatalf("checkStruct(%x) error %v, proto.Unmarshal error %v", b, cerr, wantErr)
	}
	if err == nil && !sameValue(got, want) {
		t.Fatalf("decodeStructMap(%x) = %#v, want %#v", b, got, want)
	}
	return got, err
}

// sameValue compares decoded payloads exactly: numbers bit for bit, and an empty map or
// slice differs from a nil one.
func sameValue(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case float64:
		f, ok := b.(float64)
		return ok && math.Float64bits(a) == math.Float64bits(f)
	case string, bool:
		return a == b
	case map[string]any:
		m, ok := b.(map[string]any)
		if !ok || len(a) != len(m) || (a == nil) != (m == nil) {
			return false
		}
		for k, v := range a {
			w, ok := m[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		l, ok := b.([]any)
		if !ok || len(a) != len(l) || (a == nil) != (l == nil) {
			return false
		}
		for i := range a {
			if !sameValue(a[i], l[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// Wire-format builders for the decoding tests.

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func lenField(num protowire.Number, content ...[]byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, cat(content...))
}

func varintField(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func fixed64Field(num protowire.Number, v uint64) []byte {
	return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
}

func fixed32Field(num protowire.Number, v uint32) []byte {
	return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), v)
}

func groupField(num protowire.Number, content ...[]byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.StartGroupType)
	b = append(b, cat(content...)...)
	return protowire.AppendTag(b, num, protowire.EndGroupType)
}

// entry is a Struct's field: a map entry of key and value (a Value's fields).
func entry(key string, value ...[]byte) []byte {
	return lenField(structFieldsNum, lenField(entryKeyNum, []byte(key)), lenField(entryValueNum, value...))
}

func strValue(s string) []byte       { return lenField(valueStringNum, []byte(s)) }
func numValue(f float64) []byte      { return fixed64Field(valueNumberNum, math.Float64bits(f)) }
func structValue(f ...[]byte) []byte { return lenField(valueStructNum, f...) }
func listValue(v ...[]byte) []byte {
	var elems [][]byte
	for _, e := range v {
		elems = append(elems, lenField(listValuesNum, e))
	}
	return lenField(valueListNum, elems...)
}

// nestedStructs is a Struct n levels deep, {"a": {"a": ... {}}}, whose innermost Struct
// holds the fields inner.
func nestedStructs(n int, inner []byte) []byte {
	return wrap(n, inner, func(size int) []byte {
		// entry{key: "a", value: Value{struct_value: the Struct so far}}
		value := 1 + protowire.SizeBytes(size)
		entry := 3 + 1 + protowire.SizeBytes(value)
		h := protowire.AppendVarint([]byte{tagStructFields}, uint64(entry))
		h = append(h, tagEntryKey, 1, 'a', tagEntryValue)
		h = protowire.AppendVarint(h, uint64(value))
		return protowire.AppendVarint(append(h, tagStruct), uint64(size))
	})
}

// nestedLists is a Struct holding a list n+1 levels deep, {"a": [[...[]]]}, whose
// innermost ListValue holds the fields inner.
func nestedLists(n int, inner []byte) []byte {
	v := wrap(n, lenField(valueListNum, inner), func(size int) []byte {
		// Value{list_value: ListValue{values: [the Value so far]}}
		h := protowire.AppendVarint([]byte{tagList}, uint64(1+protowire.SizeBytes(size)))
		return protowire.AppendVarint(append(h, tagListValue), uint64(size))
	})
	return entry("a", v)
}

// wrap puts inner in n levels of the header that header makes for content of the given
// size, in linear time.
func wrap(n int, inner []byte, header func(size int) []byte) []byte {
	headers := make([][]byte, n)
	size := len(inner)
	for i := range n {
		h := header(size)
		headers[n-1-i] = h
		size += len(h)
	}
	out := make([]byte, 0, size)
	for _, h := range headers {
		out = append(out, h...)
	}
	return append(out, inner...)
}

// Innermost fields for nestedStructs, each one level deeper than the one before (the
// second is a map entry of the wrong wire type: it counts as a level all the same), and
// for nestedLists: all the depths around the recursion limit are reached.
var (
	structTails = [][]byte{nil, varintField(structFieldsNum, 1), entry("a")}
	listTails   = [][]byte{nil, lenField(listValuesNum)}
)

// checkAroundLimit runs check on frames n levels deep for every n in [around-3,
// around+3] and every tail, and fails t unless, for each tail, some are accepted and
// some refused: the window holds the limit.
func checkAroundLimit(t *testing.T, around int, tails [][]byte, check func(n int, tail []byte) error) {
	t.Helper()
	for i, tail := range tails {
		var ok, failed int
		for n := around - 3; n <= around+3; n++ {
			if err := check(n, tail); err != nil {
				failed++
			} else {
				ok++
			}
		}
		if ok == 0 || failed == 0 {
			t.Errorf("tail %d: %d accepted and %d refused around the limit: the window misses it", i, ok, failed)
		}
	}
}

func TestDecodeStructMap(t *testing.T) {
	t.Parallel()
	nan := math.Float64frombits(0x7ff8000000000001)
	tests := []struct {
		name    string
		wire    []byte
		want    map[string]any // checked as well as the agreement with proto
		wantErr bool
	}{
		{name: "empty", wire: nil, want: map[string]any{}},
		{name: "string", wire: entry("blob", strValue("hello")), want: map[string]any{"blob": "hello"}},
		{name: "numbers", wire: cat(
			entry("n", numValue(1.5)), entry("z", numValue(math.Copysign(0, -1))),
			entry("nan", numValue(nan)), entry("inf", numValue(math.Inf(1))), entry("-inf", numValue(math.Inf(-1))),
			entry("big", numValue(1<<60)),
		), want: map[string]any{"n": 1.5, "z": math.Copysign(0, -1), "nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "big": float64(1 << 60)}},
		{name: "bools and nulls", wire: cat(
			entry("t", varintField(valueBoolNum, 1)), entry("f", varintField(valueBoolNum, 0)),
			entry("t2", varintField(valueBoolNum, 300)), entry("null", varintField(valueNullNum, 0)),
			entry("null5", varintField(valueNullNum, 5)), entry("nokind"),
		), want: map[string]any{"t": true, "f": false, "t2": true, "null": nil, "null5": nil, "nokind": nil}},
		{name: "nested", wire: entry("o", structValue(
			entry("l", listValue(strValue("x"), numValue(2), listValue(), structValue())),
			entry("e", structValue()),
		)), want: map[string]any{"o": map[string]any{"l": []any{"x", 2.0, []any{}, map[string]any{}}, "e": map[string]any{}}}},
		{name: "entry without key", wire: lenField(structFieldsNum, lenField(entryValueNum, strValue("v"))), want: map[string]any{"": "v"}},
		{name: "entry without value", wire: lenField(structFieldsNum, lenField(entryKeyNum, []byte("k"))), want: map[string]any{"k": nil}},
		{name: "empty entry", wire: lenField(structFieldsNum), want: map[string]any{"": nil}},
		{name: "repeated key replaces", wire: cat(entry("k", structValue(entry("a", strValue("1")))), entry("k", structValue(entry("b", strValue("2"))))),
			want: map[string]any{"k": map[string]any{"b": "2"}}},
		{name: "repeated key in an entry", wire: lenField(structFieldsNum, lenField(entryKeyNum, []byte("a")), lenField(entryValueNum, strValue("v")), lenField(entryKeyNum, []byte("b"))),
			want: map[string]any{"b": "v"}},
		{name: "repeated value merges structs", wire: lenField(structFieldsNum, lenField(entryKeyNum, []byte("k")),
			lenField(entryValueNum, structValue(entry("a", strValue("1")))), lenField(entryValueNum, structValue(entry("b", strValue("2"))))),
			want: map[string]any{"k": map[string]any{"a": "1", "b": "2"}}},
		{name: "repeated value appends lists", wire: lenField(structFieldsNum, lenField(entryKeyNum, []byte("k")),
			lenField(entryValueNum, listValue(strValue("1"))), lenField(entryValueNum, listValue(strValue("2")))),
			want: map[string]any{"k": []any{"1", "2"}}},
		{name: "repeated value keeps a kind an empty one does not set", wire: lenField(structFieldsNum, lenField(entryKeyNum, []byte("k")),
			lenField(entryValueNum, numValue(3)), lenField(entryValueNum)),
			want: map[string]any{"k": 3.0}},
		{name: "kinds replace each other", wire: entry("k", structValue(entry("a", strValue("1"))), numValue(1), structValue(entry("b", strValue("2")))),
			want: map[string]any{"k": map[string]any{"b": "2"}}},
		{name: "struct kind twice merges", wire: entry("k", structValue(entry("a", strValue("1"))), structValue(entry("b", strValue("2")))),
			want: map[string]any{"k": map[string]any{"a": "1", "b": "2"}}},
		{name: "list kind twice appends", wire: entry("k", listValue(numValue(1)), listValue(numValue(2))),
			want: map[string]any{"k": []any{1.0, 2.0}}},
		{name: "null after string", wire: entry("k", strValue("x"), varintField(valueNullNum, 0)), want: map[string]any{"k": nil}},
		{name: "unknown fields everywhere", wire: cat(
			varintField(2, 7), fixed32Field(3, 1), groupField(4, varintField(1, 1), groupField(2)), lenField(99, []byte{0xff}),
			lenField(structFieldsNum, varintField(3, 1), lenField(entryKeyNum, []byte("k")), lenField(entryValueNum, fixed32Field(9, 1), strValue("v"), lenField(7, []byte{0xff}))),
			entry("l", lenField(valueListNum, varintField(2, 1), lenField(listValuesNum, numValue(1)), groupField(5))),
		), want: map[string]any{"k": "v", "l": []any{1.0}}},
		{name: "wrong wire types are unknown fields", wire: cat(
			varintField(structFieldsNum, 1), fixed64Field(structFieldsNum, 1),
			lenField(structFieldsNum, varintField(entryKeyNum, 1), fixed32Field(entryValueNum, 1)),
			entry("a", varintField(valueNumberNum, 1), fixed64Field(valueStringNum, 1), lenField(valueBoolNum, []byte{1}),
				lenField(valueNullNum), varintField(valueStructNum, 1), fixed32Field(valueListNum, 1)),
			entry("b", lenField(valueListNum, varintField(listValuesNum, 3))),
			entry("c", groupField(valueStructNum)),
		), want: map[string]any{"": nil, "a": nil, "b": []any{}, "c": nil}},
		{name: "non-minimal varints", wire: []byte{0x8a, 0x00, 0x87, 0x80, 0x00, 0x0a, 0x01, 'k', 0x12, 0x02, 0x20, 0x01},
			want: map[string]any{"k": true}},
		{name: "invalid UTF-8 in unknown bytes", wire: cat(lenField(5, []byte{0xff}), entry("k", lenField(9, []byte{0xc0}))), want: map[string]any{"k": nil}},
		{name: "invalid UTF-8 key", wire: entry("\xff", strValue("v")), wantErr: true},
		{name: "invalid UTF-8 key overwritten", wire: lenField(structFieldsNum, lenField(entryKeyNum, []byte{0xff}), lenField(entryKeyNum, []byte("k"))), wantErr: true},
		{name: "invalid UTF-8 value", wire: entry("k", strValue("a\xc3")), wantErr: true},
		{name: "invalid UTF-8 deep", wire: entry("k", listValue(structValue(entry("x", strValue("\xed\xa0\x80"))))), wantErr: true},
		{name: "truncated length", wire: entry("k", strValue("value"))[:5], wantErr: true},
		{name: "truncated number", wire: entry("k", numValue(1))[:8], wantErr: true},
		{name: "truncated tag", wire: []byte{0x80}, wantErr: true},
		{name: "field number 0", wire: []byte{0x02, 0x00}, wantErr: true},
		{name: "field number 0 in a value", wire: entry("k", []byte{0x00, 0x00}), wantErr: true},
		{name: "field number too large", wire: protowire.AppendVarint(protowire.AppendTag(nil, protowire.MaxValidNumber+1, protowire.VarintType), 1), wantErr: true},
		{name: "field number too large in an entry", wire: lenField(structFieldsNum, protowire.AppendVarint(protowire.AppendTag(nil, protowire.MaxValidNumber+1, protowire.VarintType), 1)), wantErr: true},
		{name: "largest field number", wire: varintField(protowire.MaxValidNumber, 1), want: map[string]any{}},
		{name: "stray end group", wire: protowire.AppendTag(nil, 3, protowire.EndGroupType), wantErr: true},
		{name: "stray end group on a known field", wire: protowire.AppendTag(nil, structFieldsNum, protowire.EndGroupType), wantErr: true},
		{name: "mismatched end group", wire: cat(protowire.AppendTag(nil, 3, protowire.StartGroupType), protowire.AppendTag(nil, 4, protowire.EndGroupType)), wantErr: true},
		{name: "unterminated group", wire: protowire.AppendTag(nil, 3, protowire.StartGroupType), wantErr: true},
		{name: "reserved wire type", wire: []byte{0x0e}, wantErr: true},
		{name: "reserved wire type in a list", wire: entry("k", lenField(valueListNum, []byte{0x0f})), wantErr: true},
		{name: "varint overflow", wire: cat(varintField(2, 0)[:1], bytes.Repeat([]byte{0xff}, 9), []byte{0x02}), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkDecode(t, tt.wire)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if err == nil && !sameValue(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestDecodeStructMapDepth walks across proto.Unmarshal's recursion limit, where the
// verdict must flip at the same depth.
func TestDecodeStructMapDepth(t *testing.T) {
	t.Parallel()
	check := func(wire func(int, []byte) []byte) func(int, []byte) error {
		return func(n int, tail []byte) error {
			_, err := checkDecode(t, wire(n, tail))
			return err
		}
	}
	// 1 level for the Struct, then 3 a level: entry, Value, Struct.
	checkAroundLimit(t, protowire.DefaultRecursionLimit/3, structTails, check(nestedStructs))
	// 1 for the Struct, 2 for the entry and its Value, 1 for the ListValue, then 2 a
	// level: Value, ListValue.
	checkAroundLimit(t, protowire.DefaultRecursionLimit/2-2, listTails, check(nestedLists))
}

// TestEncodeStructMap counts allocations: it does not run in parallel.
func TestEncodeStructMap(t *testing.T) {
	type point struct {
		X float32 `json:"x"`
		Y string  `json:"y"`
	}
	type named map[string]any
	deep := map[string]any{}
	for range 1500 { // deeper than the fast path goes
		deep = map[string]any{"a": deep, "l": []any{1}}
	}
	tests := []struct {
		name string
		in   map[string]any
		// fast says that the fast path encodes in, in at most one allocation.
		fast bool
	}{
		{name: "empty", in: map[string]any{}, fast: true},
		{name: "blob", in: map[string]any{"blob": strings.Repeat("x", 256)}, fast: true},
		{name: "long strings", in: map[string]any{"a": map[string]any{"b": strings.Repeat("é", 10000)}, "l": []any{strings.Repeat("y", 20000), []any{strings.Repeat("z", 200)}}}, fast: true},
		{name: "scalars", in: map[string]any{
			"nil": nil, "t": true, "f": false, "s": "", "u": "ü", "i": -1, "i8": int8(-8), "i16": int16(-16), "i32": int32(-32), "i64": int64(math.MinInt64),
			"ui": uint(1), "u8": uint8(255), "u16": uint16(65535), "u32": uint32(math.MaxUint32), "u64": uint64(math.MaxUint64),
			"f32": float32(0.1), "f64": 0.1, "2^53+1": int64(1<<53 + 1), "bytes": []byte("hello?"), "nobytes": []byte(nil),
		}, fast: true},
		{name: "special numbers", in: map[string]any{"nan": math.NaN(), "inf": math.Inf(1), "-inf": math.Inf(-1), "-0": math.Copysign(0, -1), "f32nan": float32(math.NaN()), "f32-0": float32(math.Copysign(0, -1))}, fast: true},
		{name: "json numbers", in: map[string]any{"a": json.Number("12.5"), "b": json.Number("-0"), "c": json.Number("1e308"), "d": json.Number("0x1p-2"), "e": json.Number("Inf")}, fast: true},
		{name: "nested", in: map[string]any{"o": map[string]any{"l": []any{1, "x", nil, []any{}, map[string]any{}, []any{[]any{true}}}}, "n": map[string]any(nil), "nl": []any(nil)}, fast: true},
		{name: "nested deep", in: deep},
		// Whatever structpb refuses sends the whole map through encoding/json.
		{name: "typed slice", in: map[string]any{"tags": []string{"a", "b"}, "f32": float32(0.1), "n": map[string]any(nil), "nl": []any(nil), "b": []byte("x")}},
		{name: "struct", in: map[string]any{"p": point{X: 1.5, Y: "y"}, "pp": &point{}}},
		{name: "named map", in: map[string]any{"m": named{"a": 1}}},
		{name: "invalid UTF-8 key", in: map[string]any{"a\xffb": 1, "f32": float32(0.1)}},
		{name: "invalid UTF-8 value", in: map[string]any{"a": "x\xff\xfey", "l": []any{"\xc0"}}},
		{name: "json number out of range", in: map[string]any{"a": json.Number("1e400")}},
		{name: "json number invalid", in: map[string]any{"a": json.Number("one")}},
		{name: "json number with invalid UTF-8 beside", in: map[string]any{"a": json.Number("Inf"), "b": "\xff"}},
		{name: "NaN with a typed slice", in: map[string]any{"a": math.NaN(), "b": []string{}}},
		{name: "unsupported", in: map[string]any{"c": make(chan int)}},
		{name: "unsupported deep", in: map[string]any{"l": []any{map[string]any{"f": func() {}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkEncode(t, tt.in)
			if !tt.fast {
				return
			}
			if _, ok := structBound(tt.in, 0); !ok {
				t.Fatal("not taken by the fast path")
			}
			if n := testing.AllocsPerRun(5, func() { _, _ = encodeStructMap(tt.in) }); n > 1 {
				t.Errorf("%v allocations, want at most 1", n)
			}
		})
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	for name, m := range map[string]map[string]any{
		"blob":   blobPayload(),
		"nested": nestedPayload(),
		"empty":  {},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := encodeStructMap(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := checkDecode(t, b)
			if err != nil {
				t.Fatal(err)
			}
			want, err := legacyMapToStruct(m)
			if err != nil {
				t.Fatal(err)
			}
			if !sameValue(got, want.AsMap()) {
				t.Fatalf("round trip gives %#v, want %#v", got, want.AsMap())
			}
		})
	}
}

func TestMapToStructIsRaw(t *testing.T) {
	t.Parallel()
	if s, err := mapToStruct(nil); s != nil || err != nil {
		t.Fatalf("mapToStruct(nil) = %v, %v; want nil, nil", s, err)
	}
	empty, err := mapToStruct(map[string]any{})
	if err != nil || empty == nil {
		t.Fatalf("mapToStruct(empty) = %v, %v", empty, err)
	}
	if b, _ := proto.Marshal(empty); len(b) != 0 {
		t.Fatalf("an empty map encodes to %x", b)
	}
	m := nestedPayload()
	s, err := mapToStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.GetFields()) != 0 {
		t.Fatal("mapToStruct built the Struct's fields")
	}
	enc, err := encodeStructMap(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := proto.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(enc) {
		t.Fatalf("a raw Struct marshals to %d bytes, want its %d", len(got), len(enc))
	}
	// Map order varies between encodings: compare meanings.
	want, _ := legacyMapToStruct(m)
	if !sameValue(structToMap(s), want.AsMap()) {
		t.Fatalf("structToMap(mapToStruct(m)) = %#v, want %#v", structToMap(s), want.AsMap())
	}
	var parsed structpb.Struct
	if err := proto.Unmarshal(got, &parsed); err != nil || !proto.Equal(&parsed, want) {
		t.Fatalf("a raw Struct marshals to %v (%v), want %v", parsed.AsMap(), err, want.AsMap())
	}
}

func TestStructToMap(t *testing.T) {
	t.Parallel()
	real, _ := structpb.NewStruct(map[string]any{"a": 1, "l": []any{"x"}})
	withUnknown := &structpb.Struct{}
	withUnknown.ProtoReflect().SetUnknown(varintField(7, 1))
	tests := []struct {
		name string
		in   *structpb.Struct
		want map[string]any
	}{
		{"nil", nil, map[string]any{}},
		{"empty", &structpb.Struct{}, map[string]any{}},
		{"parsed", real, map[string]any{"a": 1.0, "l": []any{"x"}}},
		{"raw", rawStruct(cat(entry("a", numValue(1)), entry("l", listValue(strValue("x"))))), map[string]any{"a": 1.0, "l": []any{"x"}}},
		{"only unknown fields", withUnknown, map[string]any{}},
		// Unreachable from the wire (frameCodec refuses the frame): never half-decoded.
		{"malformed raw", rawStruct(cat(entry("a", numValue(1)), entry("b", strValue("\xff")))), map[string]any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := structToMap(tt.in)
			if !sameValue(got, tt.want) {
				t.Fatalf("structToMap = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func FuzzDecodeStructMap(f *testing.F) {
	for _, m := range []map[string]any{{}, blobPayload(), nestedPayload(), {"n": math.NaN(), "z": math.Copysign(0, -1), "l": []any{nil, true, []any{}}}} {
		b, err := encodeStructMap(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(cat(varintField(2, 7), groupField(4, varintField(1, 1)), lenField(structFieldsNum, lenField(entryValueNum, strValue("v")), lenField(entryValueNum, structValue(entry("x", numValue(1)))))))
	f.Add(entry("k", structValue(entry("a", strValue("1"))), listValue(numValue(1)), listValue(numValue(2))))
	f.Add(entry("\xff", strValue("v")))
	f.Add(nestedStructs(40, entry("a", strValue("x"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}

func FuzzEncodeStructMap(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x02ab\x0fxyz\x11\x02\x01\x12\x02"))
	f.Add([]byte("\x02\x01\xff\x0c\x00\x00\xc0\x7f\x15\x01a"))
	f.Add([]byte("\x04\x01k\x0e\x031e3\x01l\x16\x01x\x01m\x18"))
	f.Add([]byte("\x02\x01a\x11\x03\x01b\x12\x03\x00\x0f\x01\xfe\x01c\x19\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &valueGen{data: b}
		checkEncode(t, g.object(0))
	})
}

// valueGen builds maps for FuzzEncodeStructMap out of the fuzzer's bytes: every type
// structpb takes, some that only encoding/json takes, and some that neither does.
type valueGen struct{ data []byte }

func (g *valueGen) byte() byte {
	if len(g.data) == 0 {
		return 0
	}
	c := g.data[0]
	g.data = g.data[1:]
	return c
}

func (g *valueGen) uint64() uint64 {
	var x uint64
	for range 8 {
		x = x<<8 | uint64(g.byte())
	}
	return x
}

// str is up to 15 bytes taken as they are: not always UTF-8.
func (g *valueGen) str() string {
	n := min(int(g.byte()%16), len(g.data))
	s := string(g.data[:n])
	g.data = g.data[n:]
	return s
}

func (g *valueGen) object(depth int) map[string]any {
	n := int(g.byte() % 5)
	m := make(map[string]any, n)
	for range n {
		m[g.str()] = g.value(depth + 1)
	}
	return m
}

func (g *valueGen) value(depth int) any {
	kind := g.byte() % 28
	if depth > 6 && kind >= 17 && kind <= 18 {
		kind = 0
	}
	switch kind {
	case 0:
		return nil
	case 1:
		return g.byte()&1 == 1
	case 2:
		return int(g.uint64())
	case 3:
		return int8(g.byte())
	case 4:
		return int16(g.uint64())
	case 5:
		return int32(g.uint64())
	case 6:
		return int64(g.uint64())
	case 7:
		return uint(g.uint64())
	case 8:
		return uint8(g.byte())
	case 9:
		return uint16(g.uint64())
	case 10:
		return uint32(g.uint64())
	case 11:
		return g.uint64()
	case 12:
		return math.Float32frombits(uint32(g.uint64()))
	case 13:
		return math.Float64frombits(g.uint64())
	case 14:
		return json.Number(g.str())
	case 15:
		return g.str()
	case 16:
		return []byte(g.str())
	case 17:
		return g.object(depth)
	case 18:
		l := make([]any, g.byte()%4)
		for i := range l {
			l[i] = g.value(depth + 1)
		}
		return l
	case 19:
		return map[string]any(nil)
	case 20:
		return []any(nil)
	case 21:
		return []string{g.str()}
	case 22:
		return struct {
			A float32
			B string `json:"b,omitempty"`
		}{math.Float32frombits(uint32(g.uint64())), g.str()}
	case 23:
		return []float64{math.NaN(), math.Inf(-1), math.Copysign(0, -1), 1e-320}[g.byte()%4]
	case 24:
		return map[string]string{g.str(): g.str()}
	case 25:
		return make(chan int)
	case 26:
		return fmt.Errorf("%s", g.str()) // a struct pointer: encoding/json sees {}
	default:
		return json.Number([]string{"1e400", "-0", "NaN", "0x1p-2", "1_0", "+1", ".5", "1e-400"}[g.byte()%8])
	}
}

// Payloads for the benchmarks.

// blobPayload is the payload of the SDK's load benchmark.
func blobPayload() map[string]any { return map[string]any{"blob": strings.Repeat("x", 256)} }

// nestedPayload is an order as a plugin might send it.
func nestedPayload() map[string]any {
	items := []any{}
	for i := range 5 {
		items = append(items, map[string]any{
			"sku": fmt.Sprintf("SKU-%05d", i), "name": "Widget, blue, large", "qty": i + 1, "price": 9.99 + float64(i), "gift": i%2 == 0,
		})
	}
	return map[string]any{
		"order": map[string]any{
			"id":       "ord_01HZX3Q8J5V9K2M4N6P8R0T2W4",
			"items":    items,
			"customer": map[string]any{"id": "cus_42", "email": "ada@example.com", "tags": []any{"vip", "eu"}, "address": map[string]any{"city": "Zürich", "zip": "8001"}},
			"total":    59.95,
			"paid":     true,
			"coupon":   nil,
		},
		"source":    "checkout",
		"timestamp": "2025-11-24T12:00:00Z",
		"attempt":   1,
	}
}

func BenchmarkPayloadEncode(b *testing.B) {
	for name, m := range map[string]map[string]any{"blob": blobPayload(), "nested": nestedPayload()} {
		b.Run(name+"/old", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, err := legacyMapToStruct(m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := proto.Marshal(s); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/new", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, err := mapToStruct(m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := proto.Marshal(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPayloadDecode(b *testing.B) {
	for name, m := range map[string]map[string]any{"blob": blobPayload(), "nested": nestedPayload()} {
		enc, err := encodeStructMap(m)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/old", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := legacyDecode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/new", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeStructMap(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
