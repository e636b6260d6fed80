// Package rawstruct carries google.protobuf.Struct payloads through the host as their
// encoded bytes, so that a message routed from one plugin to another is never parsed into
// structpb objects and encoded again (that was the largest part of the host's CPU per
// routed message in nexus-bench's profile).
//
// A raw Struct is a *structpb.Struct with no fields whose unknown fields hold the encoding
// of its fields. proto.Marshal writes unknown fields as they are, so a raw Struct
// marshals to exactly the bytes it holds: on the binary protobuf wire it is
// indistinguishable from the parsed Struct. It must not reach a JSON encoder (protojson
// drops unknown fields). No serving path lets it: raw Structs live only in plugin stream
// frames, which are written as binary protobuf (the Connect handlers too, behind vanguard,
// which parses payloads on its way to JSON; server/pluginjson_test.go holds it to that).
package rawstruct

import (
	"errors"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Wrap returns a raw Struct holding b, the encoding of a Struct's fields (as Validate
// accepts). b is kept, not copied.
func Wrap(b []byte) *structpb.Struct {
	s := &structpb.Struct{}
	Fill(s, b)
	return s
}

// Fill makes s, a new empty Struct, a raw Struct holding b, as Wrap does: for a Struct
// allocated together with the frame that carries it.
func Fill(s *structpb.Struct, b []byte) {
	if len(b) > 0 {
		s.ProtoReflect().SetUnknown(b)
	}
}

// Bytes returns the encoding of s: the bytes a raw Struct holds (not copied), or s
// marshalled. nil and an empty Struct encode to nil.
func Bytes(s *structpb.Struct) ([]byte, error) {
	if s == nil {
		return nil, nil
	}
	if len(s.GetFields()) == 0 {
		// With no fields, the encoding is the unknown fields alone.
		if u := s.ProtoReflect().GetUnknown(); len(u) > 0 {
			return u, nil
		}
		return nil, nil
	}
	return proto.Marshal(s)
}

// ErrInvalid is returned for bytes that are not the encoding of a Struct.
var ErrInvalid = errors.New("rawstruct: payload is not a valid google.protobuf.Struct encoding")

// errDepth is returned when nesting exceeds the protobuf runtime's recursion limit.
var errDepth = errors.New("rawstruct: payload nested beyond the protobuf recursion limit")

// Validate reports whether b is the encoding of a google.protobuf.Struct that
// proto.Unmarshal accepts, with depth message levels left before the protobuf runtime's
// recursion limit (protowire.DefaultRecursionLimit for a Struct decoded on its own; less
// by the levels of the messages around it in a frame). It has proto.Unmarshal's verdicts:
// well-formed wire data, strings (keys and string values) in valid UTF-8, field numbers in
// range; fields of unknown numbers or unexpected wire types are skipped, as proto skips
// them. It allocates nothing.
func Validate(b []byte, depth int) error {
	return validStruct(b, depth)
}

// The field numbers of struct.proto's messages.
const (
	structFields     = 1 // Struct.fields: map<string, Value>
	entryKey         = 1
	entryValue       = 2
	valueNull        = 1 // varint
	valueNumber      = 2 // fixed64
	valueString      = 3
	valueBool        = 4 // varint
	valueStruct      = 5
	valueList        = 6
	listValues       = 1 // ListValue.values: repeated Value
	protoMaxFieldNum = protowire.MaxValidNumber
)

// walk calls field for every field of the message encoded in b; field returns the length
// of the value it consumed, or -1 to have the value skipped as unknown, or an error.
func walk(b []byte, field func(num protowire.Number, typ protowire.Type, v []byte) (int, error)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protoMaxFieldNum {
			return ErrInvalid
		}
		b = b[n:]
		m, err := field(num, typ, b)
		if err != nil {
			return err
		}
		if m < 0 {
			if m = protowire.ConsumeFieldValue(num, typ, b); m < 0 {
				return ErrInvalid
			}
		}
		b = b[m:]
	}
	return nil
}

// bytesField consumes a length-delimited value, returning its contents and its length.
func bytesField(b []byte) ([]byte, int, error) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return nil, 0, ErrInvalid
	}
	return v, n, nil
}

func validStruct(b []byte, depth int) error {
	if depth--; depth < 0 {
		return errDepth
	}
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		if num != structFields {
			return -1, nil
		}
		// The runtime counts the map entry's level before it looks at the wire type, so a
		// field 1 of any type may be one level too deep.
		if depth-1 < 0 {
			return 0, errDepth
		}
		if typ != protowire.BytesType {
			return -1, nil
		}
		entry, n, err := bytesField(v)
		if err != nil {
			return 0, err
		}
		return n, validEntry(entry, depth)
	})
}

func validEntry(b []byte, depth int) error {
	if depth--; depth < 0 {
		return errDepth
	}
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		if typ != protowire.BytesType || (num != entryKey && num != entryValue) {
			return -1, nil
		}
		inner, n, err := bytesField(v)
		if err != nil {
			return 0, err
		}
		if num == entryKey {
			if !utf8.Valid(inner) {
				return 0, ErrInvalid
			}
			return n, nil
		}
		return n, validValue(inner, depth)
	})
}

func validValue(b []byte, depth int) error {
	if depth--; depth < 0 {
		return errDepth
	}
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		switch {
		case (num == valueNull || num == valueBool) && typ == protowire.VarintType:
			if _, n := protowire.ConsumeVarint(v); n >= 0 {
				return n, nil
			}
			return 0, ErrInvalid
		case num == valueNumber && typ == protowire.Fixed64Type:
			if _, n := protowire.ConsumeFixed64(v); n >= 0 {
				return n, nil
			}
			return 0, ErrInvalid
		case (num == valueString || num == valueStruct || num == valueList) && typ == protowire.BytesType:
			inner, n, err := bytesField(v)
			if err != nil {
				return 0, err
			}
			switch num {
			case valueString:
				if !utf8.Valid(inner) {
					return 0, ErrInvalid
				}
			case valueStruct:
				err = validStruct(inner, depth)
			default:
				err = validList(inner, depth)
			}
			return n, err
		}
		return -1, nil
	})
}

func validList(b []byte, depth int) error {
	if depth--; depth < 0 {
		return errDepth
	}
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		if num != listValues || typ != protowire.BytesType {
			return -1, nil
		}
		inner, n, err := bytesField(v)
		if err != nil {
			return 0, err
		}
		return n, validValue(inner, depth)
	})
}

// Paths names the payload fields of a frame message whose fields form a oneof: Paths[n] is
// the number of the Struct field inside the message of the frame's field n (0 for a
// field without one).
type Paths []protowire.Number

// Cut takes the payload out of an encoded frame: when b is exactly one field, of a number
// n with a payload field in paths, whose length-delimited value holds that payload field
// exactly once, it returns b re-encoded without the payload field, the payload's bytes
// (aliasing b), and n. ok is false for any other shape, and for malformed data: decode
// those frames the ordinary way. The payload is not checked: Validate it.
func Cut(b []byte, paths Paths) (rest, payload []byte, n protowire.Number, ok bool) {
	num, typ, tn := protowire.ConsumeTag(b)
	if tn < 0 || typ != protowire.BytesType || int(num) >= len(paths) || paths[num] == 0 {
		return nil, nil, 0, false
	}
	inner, vn := protowire.ConsumeBytes(b[tn:])
	if vn < 0 || tn+vn != len(b) {
		return nil, nil, 0, false
	}
	// Find the one occurrence of the payload field in inner.
	want := paths[num]
	start, end := -1, -1
	for off := 0; off < len(inner); {
		fnum, ftyp, fn := protowire.ConsumeTag(inner[off:])
		if fn < 0 {
			return nil, nil, 0, false
		}
		m := protowire.ConsumeFieldValue(fnum, ftyp, inner[off+fn:])
		if m < 0 {
			return nil, nil, 0, false
		}
		if fnum == want {
			if start >= 0 || ftyp != protowire.BytesType {
				return nil, nil, 0, false // repeated (proto would merge) or not a message
			}
			start, end = off, off+fn+m
			v, _ := protowire.ConsumeBytes(inner[off+fn:])
			payload = v
		}
		off += fn + m
	}
	if start < 0 {
		return nil, nil, 0, false
	}
	innerLen := len(inner) - (end - start)
	rest = make([]byte, 0, protowire.SizeTag(num)+protowire.SizeVarint(uint64(innerLen))+innerLen)
	rest = protowire.AppendTag(rest, num, protowire.BytesType)
	rest = protowire.AppendVarint(rest, uint64(innerLen))
	rest = append(rest, inner[:start]...)
	rest = append(rest, inner[end:]...)
	return rest, payload, num, true
}
