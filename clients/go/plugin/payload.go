package plugin

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// This file codes message payloads, google.protobuf.Struct on the wire, straight between
// their binary encoding and the map[string]any that authors see. Building structpb
// objects on the way in and out cost more CPU and garbage than the rest of a message's
// handling.
//
// A payload travels inside the frames as a raw Struct: a *structpb.Struct with no fields
// whose unknown fields hold the encoding of its fields. proto.Marshal writes unknown
// fields as they are, so on the binary protobuf wire a raw Struct cannot be told from the
// Struct it encodes. It must never reach a JSON encoder (protojson drops unknown fields),
// nor code that reads its Fields: raw Structs are made only for the data of the frames
// the plugin sends (mapToStruct) and of the deliveries and replies it receives
// (frameCodec), which only go to the binary wire and to structToMap.

// Field numbers of google.protobuf.Struct, its map entries, Value and ListValue.
const (
	structFieldsNum protowire.Number = 1
	entryKeyNum     protowire.Number = 1
	entryValueNum   protowire.Number = 2
	valueNullNum    protowire.Number = 1
	valueNumberNum  protowire.Number = 2
	valueStringNum  protowire.Number = 3
	valueBoolNum    protowire.Number = 4
	valueStructNum  protowire.Number = 5
	valueListNum    protowire.Number = 6
	listValuesNum   protowire.Number = 1
)

// maxFastPathDepth is how deep the maps and lists encodeStructMap encodes directly may
// nest; deeper ones, rare, take the slow path, which also keeps the fast one's recursion
// bounded.
const maxFastPathDepth = 1000

// Tags (field number and wire type, as one byte) that the encoder writes.
const (
	tagStructFields = byte(structFieldsNum)<<3 | byte(protowire.BytesType)
	tagEntryKey     = byte(entryKeyNum)<<3 | byte(protowire.BytesType)
	tagEntryValue   = byte(entryValueNum)<<3 | byte(protowire.BytesType)
	tagNull         = byte(valueNullNum)<<3 | byte(protowire.VarintType)
	tagNumber       = byte(valueNumberNum)<<3 | byte(protowire.Fixed64Type)
	tagString       = byte(valueStringNum)<<3 | byte(protowire.BytesType)
	tagBool         = byte(valueBoolNum)<<3 | byte(protowire.VarintType)
	tagStruct       = byte(valueStructNum)<<3 | byte(protowire.BytesType)
	tagList         = byte(valueListNum)<<3 | byte(protowire.BytesType)
	tagListValue    = byte(listValuesNum)<<3 | byte(protowire.BytesType)
)

// errMalformedPayload is what decoding a payload that proto.Unmarshal would refuse
// returns, wrapped with the reason.
var errMalformedPayload = errors.New("plugin: malformed google.protobuf.Struct payload")

var (
	errPayloadWire  = fmt.Errorf("%w: invalid wire-format data", errMalformedPayload)
	errPayloadUTF8  = fmt.Errorf("%w: invalid UTF-8 in a string", errMalformedPayload)
	errPayloadDepth = fmt.Errorf("%w: exceeded the maximum nesting depth", errMalformedPayload)
)

// rawStruct returns a raw Struct holding b, the encoding of a Struct's fields. b is kept,
// not copied.
func rawStruct(b []byte) *structpb.Struct {
	s := &structpb.Struct{}
	if len(b) > 0 {
		s.ProtoReflect().SetUnknown(b)
	}
	return s
}

// encodeStructMap returns the binary encoding of the Struct that structpb.NewStruct makes
// of m, with mapToStruct's detour through encoding/json when structpb refuses m. Values
// of the types structpb takes are encoded directly; for a map holding anything else
// (whose meaning, through encoding/json, depends on the whole map: a float32 beside a
// []string is formatted as JSON, not converted), or nested deeper than the fast path
// goes, the structpb objects are built and marshalled as before. Entries are written in
// map order, as proto.Marshal does.
func encodeStructMap(m map[string]any) ([]byte, error) {
	if n, ok := structBound(m, 0); ok {
		return appendStructFields(make([]byte, 0, n), m), nil
	}
	s, err := buildStruct(m)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(s)
}

// decodeStructMap decodes b, a Struct's encoding, to what proto.Unmarshal into a Struct
// followed by AsMap returns, and fails where proto.Unmarshal fails: numbers are float64
// (NaN and the infinities the strings AsInterface makes of them), nulls nil, unknown
// fields skipped, fields of the wrong wire type skipped as unknown, repeated fields merged
// as protobuf merges them, invalid UTF-8 refused, nesting bounded as proto.Unmarshal's
// default recursion limit bounds it.
func decodeStructMap(b []byte) (map[string]any, error) {
	m := make(map[string]any, countFields(b, structFieldsNum))
	if err := walkStruct(b, m, protowire.DefaultRecursionLimit); err != nil {
		return nil, err
	}
	return m, nil
}

// checkStruct reports whether proto.Unmarshal would accept b as a Struct nested at a
// depth that leaves it depth levels of recursion, without building anything.
func checkStruct(b []byte, depth int) error { return walkStruct(b, nil, depth) }

// buildStruct is mapToStruct's encoding as it was before payloads were coded directly:
// structpb takes m as it is, or m as encoding/json sees it.
func buildStruct(m map[string]any) (*structpb.Struct, error) {
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

// Encoding. structBound and valueBound accept exactly what structpb.NewStruct and
// structpb.NewValue accept (up to maxFastPathDepth levels), and return a bound on the
// encoding's length, taking 5 bytes for every length prefix, so that the append functions
// that follow never fail and write into one allocation.

func structBound(m map[string]any, depth int) (int, bool) {
	if depth > maxFastPathDepth {
		return 0, false
	}
	n := 0
	for k, v := range m {
		if !utf8.ValidString(k) {
			return 0, false
		}
		vn, ok := valueBound(v, depth)
		if !ok {
			return 0, false
		}
		// entry tag, length; key tag, length, key; value tag, length, value
		n += 1 + 5 + 1 + 5 + len(k) + 1 + 5 + vn
	}
	return n, true
}

func valueBound(v any, depth int) (int, bool) {
	switch v := v.(type) {
	case nil, bool:
		return 2, true
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return 9, true
	case json.Number:
		if _, err := v.Float64(); err != nil {
			return 0, false
		}
		return 9, true
	case string:
		if !utf8.ValidString(v) {
			return 0, false
		}
		return 1 + 5 + len(v), true
	case []byte:
		return 1 + 5 + base64.StdEncoding.EncodedLen(len(v)), true
	case map[string]any:
		n, ok := structBound(v, depth+1)
		return 1 + 5 + n, ok
	case []any:
		if depth+1 > maxFastPathDepth {
			return 0, false
		}
		n := 0
		for _, e := range v {
			en, ok := valueBound(e, depth+1)
			if !ok {
				return 0, false
			}
			n += 1 + 5 + en
		}
		return 1 + 5 + n, true
	}
	return 0, false
}

// appendStructFields appends the encoding of m's fields. m has passed structBound.
func appendStructFields(b []byte, m map[string]any) []byte {
	for k, v := range m {
		b = append(b, tagStructFields)
		keyLen := 1 + protowire.SizeBytes(len(k))
		if vn, ok := scalarSize(v); ok {
			// The usual case: the entry's length is known before it is written.
			b = protowire.AppendVarint(b, uint64(keyLen+1+protowire.SizeBytes(vn)))
			b = appendStringField(b, tagEntryKey, k)
			b = append(b, tagEntryValue)
			b = protowire.AppendVarint(b, uint64(vn))
			b = appendValue(b, v)
			continue
		}
		b = append(b, 0)
		entry := len(b)
		b = appendStringField(b, tagEntryKey, k)
		b = append(b, tagEntryValue, 0)
		value := len(b)
		b = appendValue(b, v)
		b = closeLen(b, value)
		b = closeLen(b, entry)
	}
	return b
}

// appendValue appends the encoding of the Value structpb.NewValue makes of v.
func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, tagNull, 0)
	case bool:
		if v {
			return append(b, tagBool, 1)
		}
		return append(b, tagBool, 0)
	case int:
		return appendNumber(b, float64(v))
	case int8:
		return appendNumber(b, float64(v))
	case int16:
		return appendNumber(b, float64(v))
	case int32:
		return appendNumber(b, float64(v))
	case int64:
		return appendNumber(b, float64(v))
	case uint:
		return appendNumber(b, float64(v))
	case uint8:
		return appendNumber(b, float64(v))
	case uint16:
		return appendNumber(b, float64(v))
	case uint32:
		return appendNumber(b, float64(v))
	case uint64:
		return appendNumber(b, float64(v))
	case float32:
		return appendNumber(b, float64(v))
	case float64:
		return appendNumber(b, v)
	case json.Number:
		f, _ := v.Float64() // checked by valueBound
		return appendNumber(b, f)
	case string:
		return appendStringField(b, tagString, v)
	case []byte:
		b = append(b, tagString)
		b = protowire.AppendVarint(b, uint64(base64.StdEncoding.EncodedLen(len(v))))
		return base64.StdEncoding.AppendEncode(b, v)
	case map[string]any:
		b = append(b, tagStruct, 0)
		start := len(b)
		b = appendStructFields(b, v)
		return closeLen(b, start)
	case []any:
		b = append(b, tagList, 0)
		start := len(b)
		for _, e := range v {
			b = append(b, tagListValue)
			if en, ok := scalarSize(e); ok {
				b = protowire.AppendVarint(b, uint64(en))
				b = appendValue(b, e)
				continue
			}
			b = append(b, 0)
			elem := len(b)
			b = appendValue(b, e)
			b = closeLen(b, elem)
		}
		return closeLen(b, start)
	}
	return b // not reached: valueBound refuses other types
}

// scalarSize returns the length of the encoding of v when v is not a map or a list.
func scalarSize(v any) (int, bool) {
	switch v := v.(type) {
	case nil, bool:
		return 2, true
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, json.Number:
		return 9, true
	case string:
		return 1 + protowire.SizeBytes(len(v)), true
	case []byte:
		return 1 + protowire.SizeBytes(base64.StdEncoding.EncodedLen(len(v))), true
	}
	return 0, false
}

func appendNumber(b []byte, f float64) []byte {
	return protowire.AppendFixed64(append(b, tagNumber), math.Float64bits(f))
}

func appendStringField(b []byte, tag byte, s string) []byte {
	b = protowire.AppendVarint(append(b, tag), uint64(len(s)))
	return append(b, s...)
}

// closeLen writes the length prefix of the content that starts at start, in the byte
// reserved for it just before, moving the content when the prefix needs more bytes.
func closeLen(b []byte, start int) []byte {
	n := len(b) - start
	if n < 0x80 {
		b[start-1] = byte(n)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	b = append(b, make([]byte, extra)...)
	copy(b[start+extra:], b[start:start+n])
	protowire.AppendVarint(b[:start-1], uint64(n))
	return b
}

// Decoding. One walk both checks and, when given somewhere to put them, builds the values,
// so that checking (frameCodec) and decoding (structToMap) cannot disagree. It follows
// proto.Unmarshal's code for Struct, its map entries, Value and ListValue: depth counts
// every message and every map entry, as proto.Unmarshal's does, and unknown fields
// (and known ones of the wrong wire type) are skipped by protowire.ConsumeFieldValue,
// which is what proto.Unmarshal skips them with.

// walkStruct walks the fields of a Struct, putting its entries in m unless m is nil.
func walkStruct(b []byte, m map[string]any, depth int) error {
	if depth--; depth < 0 {
		return errPayloadDepth
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errPayloadWire
		}
		b = b[n:]
		if num == structFieldsNum {
			// A map entry counts as a level, before its wire type is looked at.
			if depth-1 < 0 {
				return errPayloadDepth
			}
			if typ == protowire.BytesType {
				v, n := protowire.ConsumeBytes(b)
				if n < 0 {
					return errPayloadWire
				}
				if err := walkEntry(v, m, depth-1); err != nil {
					return err
				}
				b = b[n:]
				continue
			}
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return errPayloadWire
		}
		b = b[n:]
	}
	return nil
}

// walkEntry walks a map entry of a Struct and sets it in m unless m is nil. A missing key
// is "", a missing value a Value with no kind (AsMap's nil); a repeated key replaces the
// earlier one, repeated values merge.
func walkEntry(b []byte, m map[string]any, depth int) error {
	var (
		key string
		val any
	)
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errPayloadWire
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == entryKeyNum || num == entryValueNum) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errPayloadWire
			}
			b = b[n:]
			if num == entryKeyNum {
				if !utf8.Valid(v) {
					return errPayloadUTF8
				}
				if m != nil {
					key = string(v)
				}
				continue
			}
			var err error
			if val, err = walkValue(v, val, m != nil, depth); err != nil {
				return err
			}
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return errPayloadWire
		}
		b = b[n:]
	}
	if m != nil {
		m[key] = val
	}
	return nil
}

// walkValue walks a Value merged into cur (the value of the same Value so far), and
// returns the result when build is set. As in a oneof, a kind replaces the one before it,
// except that a struct merges into a struct and a list into a list.
func walkValue(b []byte, cur any, build bool, depth int) (any, error) {
	if depth--; depth < 0 {
		return nil, errPayloadDepth
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, errPayloadWire
		}
		b = b[n:]
		switch {
		case (num == valueNullNum || num == valueBoolNum) && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, errPayloadWire
			}
			b = b[n:]
			if num == valueNullNum {
				cur = nil
			} else {
				cur = x != 0
			}
			continue
		case num == valueNumberNum && typ == protowire.Fixed64Type:
			x, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return nil, errPayloadWire
			}
			b = b[n:]
			if build {
				cur = numberValue(math.Float64frombits(x))
			}
			continue
		case num == valueStringNum && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errPayloadWire
			}
			b = b[n:]
			if !utf8.Valid(v) {
				return nil, errPayloadUTF8
			}
			if build {
				cur = string(v)
			}
			continue
		case num == valueStructNum && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errPayloadWire
			}
			b = b[n:]
			var m map[string]any
			if build {
				var ok bool
				if m, ok = cur.(map[string]any); !ok {
					m = make(map[string]any, countFields(v, structFieldsNum))
				}
			}
			if err := walkStruct(v, m, depth); err != nil {
				return nil, err
			}
			cur = m
			continue
		case num == valueListNum && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errPayloadWire
			}
			b = b[n:]
			var l []any
			if build {
				var ok bool
				if l, ok = cur.([]any); !ok {
					l = make([]any, 0, countFields(v, listValuesNum))
				}
			}
			l, err := walkList(v, l, build, depth)
			if err != nil {
				return nil, err
			}
			cur = l
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, errPayloadWire
		}
		b = b[n:]
	}
	if !build {
		return nil, nil
	}
	return cur, nil
}

// walkList walks a ListValue, appending its values to l when build is set.
func walkList(b []byte, l []any, build bool, depth int) ([]any, error) {
	if depth--; depth < 0 {
		return nil, errPayloadDepth
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, errPayloadWire
		}
		b = b[n:]
		if num == listValuesNum && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errPayloadWire
			}
			b = b[n:]
			e, err := walkValue(v, nil, build, depth)
			if err != nil {
				return nil, err
			}
			if build {
				l = append(l, e)
			}
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, errPayloadWire
		}
		b = b[n:]
	}
	return l, nil
}

// countFields counts the length-delimited fields num at the top of b, a message's
// encoding, up to anything malformed: a size hint for the map or slice they fill.
func countFields(b []byte, num protowire.Number) int {
	count := 0
	for len(b) > 0 {
		fn, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		if fn == num && typ == protowire.BytesType {
			count++
		}
		if n = protowire.ConsumeFieldValue(fn, typ, b); n < 0 {
			break
		}
		b = b[n:]
	}
	return count
}

// consumeTag reads a field's tag as proto.Unmarshal does: field numbers outside
// 1..2^29-1 are malformed.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

// numberValue is what Value.AsInterface makes of a number.
func numberValue(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return f
}
