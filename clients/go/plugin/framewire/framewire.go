// Package framewire lets the plugin stream's codecs, the host's (server/plugincodec.go) and
// the Go SDK's (clients/go/plugin), use the marshalling code that vtprotobuf generates for
// the stream's messages (MarshalVT, UnmarshalVT) and still give proto.Marshal's bytes and
// proto.Unmarshal's verdicts. It imports only protobuf and grpc-go, so the SDK keeps
// importing nothing of the host's, and the host shares the SDK's package.
package framewire

import (
	"slices"
	"unicode/utf8"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// What the codecs must take care of:
//
//   - UnmarshalVT checks less than proto.Unmarshal (no UTF-8 check of strings, no recursion
//     limit; it refuses a known field of an unexpected wire type, which proto keeps as
//     unknown; vtprotobuf's code for the well-known types drops unknown fields). So the
//     codec hands it only encodings that Shape.Canonical has checked: every string
//     valid UTF-8, every known field of its declared wire type, no google.protobuf.Struct
//     (the payloads are cut out before), no unknown field in a well-known type. Any other
//     encoding goes to proto.Unmarshal, which gives its own verdict.
//   - vtprotobuf's code for google.protobuf.Struct writes a Struct's fields and never its
//     unknown fields, so it would write a raw Struct (a payload carried undecoded: no
//     fields, the encoding of its fields held as unknown fields) as an empty one. The codecs
//     write the payload frames with MarshalPayload, which puts the raw bytes where the
//     generated code wrote the empty Struct, and the frames that hold a Struct anywhere else
//     (never on the message path) with proto.Marshal.

// VTMessage is the generated fast marshalling of a message.
type VTMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
}

// Shape is what a codec knows of a message type, from its descriptor.
type Shape struct {
	// wkt is set for google.protobuf's messages, whose generated code drops unknown fields.
	wkt bool
	// isStruct is set for google.protobuf.Struct, Value and ListValue.
	isStruct bool
	// holdsStruct is set when a message of this type may hold a Struct (a field of a
	// Struct type, or of a message type that holds one). Only Struct, Value and ListValue
	// refer to each other, and they are isStruct from the start, so one pass suffices.
	holdsStruct bool
	fields      map[protowire.Number]*wireField
}

// wireField is a known field of a Shape.
type wireField struct {
	typ protowire.Type // the wire type its kind is written with
	// packed is set for repeated numbers, which may also come packed (length-delimited).
	packed bool
	utf8   bool   // a string that proto.Unmarshal checks for valid UTF-8
	msg    *Shape // for message fields and map entries
}

// maxCanonicalDepth is the nesting Canonical follows: far more than the plugin protocol's
// messages have (Struct, the only recursive type, is never canonical); deeper encodings go
// to proto.Unmarshal, which applies the runtime's recursion limit.
const maxCanonicalDepth = 32

// NewShape returns the shape of md and of the message types it refers to.
func NewShape(md protoreflect.MessageDescriptor) *Shape {
	return buildShape(md, map[protoreflect.FullName]*Shape{})
}

// Field is the shape of the message in field num, nil when num is not a message field.
func (s *Shape) Field(num protowire.Number) *Shape {
	if f := s.fields[num]; f != nil {
		return f.msg
	}
	return nil
}

// Plain is the set of s's message fields whose messages hold no Struct anywhere: for a frame
// message, the members the generated code writes exactly as proto.Marshal does.
func (s *Shape) Plain() map[protowire.Number]bool {
	plain := map[protowire.Number]bool{}
	for num, f := range s.fields {
		if f.msg != nil && !f.msg.holdsStruct {
			plain[num] = true
		}
	}
	return plain
}

func buildShape(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*Shape) *Shape {
	if s := seen[md.FullName()]; s != nil {
		return s
	}
	s := &Shape{wkt: md.ParentFile().Package() == "google.protobuf", fields: map[protowire.Number]*wireField{}}
	switch md.FullName() {
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		s.isStruct, s.holdsStruct = true, true
	}
	seen[md.FullName()] = s
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		f := &wireField{typ: wireTypeOf(fd.Kind())}
		switch fd.Kind() {
		case protoreflect.MessageKind, protoreflect.GroupKind:
			f.msg = buildShape(fd.Message(), seen)
			s.holdsStruct = s.holdsStruct || f.msg.holdsStruct
		case protoreflect.StringKind:
			f.utf8 = fd.ParentFile().Syntax() != protoreflect.Proto2
		case protoreflect.BytesKind:
		default:
			f.packed = fd.IsList()
		}
		s.fields[fd.Number()] = f
	}
	return s
}

func wireTypeOf(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}

// Canonical reports whether b, the encoding of a message of this shape, is one that
// proto.Unmarshal accepts and that UnmarshalVT decodes to the same message (see the top
// of this file). false says nothing about b: proto.Unmarshal decides then.
func (s *Shape) Canonical(b []byte) bool { return s.canonical(b, maxCanonicalDepth) }

func (s *Shape) canonical(b []byte, depth int) bool {
	if depth <= 0 || s.isStruct {
		return false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return false
		}
		b = b[n:]
		f := s.fields[num]
		if f == nil {
			if s.wkt {
				return false
			}
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return false
			}
			b = b[m:]
			continue
		}
		switch {
		case typ == protowire.BytesType && f.typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 || (f.utf8 && !utf8.Valid(v)) || (f.msg != nil && !f.msg.canonical(v, depth-1)) {
				return false
			}
			b = b[m:]
		case typ == f.typ && typ != protowire.StartGroupType:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return false
			}
			b = b[m:]
		case typ == protowire.BytesType && f.packed:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 || !packedValid(v, f.typ) {
				return false
			}
			b = b[m:]
		default:
			return false
		}
	}
	return true
}

// packedValid reports whether v is a sequence of values of wire type typ.
func packedValid(v []byte, typ protowire.Type) bool {
	switch typ {
	case protowire.Fixed32Type:
		return len(v)%4 == 0
	case protowire.Fixed64Type:
		return len(v)%8 == 0
	}
	for len(v) > 0 {
		_, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return false
		}
		v = v[n:]
	}
	return true
}

// PayloadField is where a payload frame keeps its payload: field Frame of the frame
// message (a oneof member) holds a message whose field Data is the Struct.
type PayloadField struct {
	Frame, Data protowire.Number
}

// Spliceable reports whether the message of shape s, the frame's member, holds no Struct but
// the payload in field data (and in the fields unset, which the caller checks for each
// message), so that MarshalPayload may write it.
func (s *Shape) Spliceable(data protowire.Number, unset ...protowire.Number) bool {
	for num, f := range s.fields {
		if num != data && !slices.Contains(unset, num) && f.msg != nil && f.msg.holdsStruct {
			return false
		}
	}
	f := s.fields[data]
	return f != nil && f.msg != nil && f.msg.isStruct
}

// marshalPayloadFrame writes the frame whose member (field p.Frame) is inner and whose
// payload is data, a raw Struct (no fields, the encoding of its fields held as unknown
// fields): the generated code writes inner with the payload as an empty Struct (its tag
// and a zero length), and the raw bytes take that empty Struct's place. The bytes are
// those proto.Marshal writes. ok is false when inner's encoding is not as expected (the
// caller then marshals with proto).
func marshalPayloadFrame(p PayloadField, inner VTMessage, raw []byte) (mem.BufferSlice, bool, error) {
	vtLen := inner.SizeVT()
	empty := protowire.SizeTag(p.Data) + 1
	innerLen := vtLen - empty + protowire.SizeTag(p.Data) + protowire.SizeVarint(uint64(len(raw))) + len(raw)
	total := protowire.SizeTag(p.Frame) + protowire.SizeVarint(uint64(innerLen)) + innerLen
	fb := allocFrame(total)
	buf := fb.b
	// inner goes at the end of buf: the fields after the payload are then in place, those
	// before it move to the front, and the payload fills the gap.
	vt := buf[total-vtLen:]
	if _, err := inner.MarshalToSizedBufferVT(vt); err != nil {
		fb.free()
		return nil, false, err
	}
	at := emptyFieldAt(vt, p.Data)
	if at < 0 {
		fb.free()
		return nil, false, nil
	}
	w := protowire.AppendVarint(protowire.AppendTag(buf[:0], p.Frame, protowire.BytesType), uint64(innerLen))
	w = append(w, vt[:at]...) // copy moves within buf; the source lies after the destination
	w = protowire.AppendVarint(protowire.AppendTag(w, p.Data, protowire.BytesType), uint64(len(raw)))
	w = append(w, raw...)
	if len(w) != total-(vtLen-at-empty) {
		fb.free()
		return nil, false, nil
	}
	return fb.buffers(), true, nil
}

// MarshalPayload writes frame, whose member inner (field p.Frame) holds data as its payload
// (field p.Data), with the generated code: a raw Struct (a payload carried undecoded) goes
// where the generated code wrote an empty one. ok is false when the generated code cannot
// give proto.Marshal's bytes for it (a Struct with both fields and unknown fields, an
// encoding not as expected): the caller then marshals with proto.
func MarshalPayload(frame VTMessage, p PayloadField, inner VTMessage, data *structpb.Struct) (b mem.BufferSlice, ok bool) {
	raw, isRaw, fast := rawPayload(data)
	switch {
	case !fast:
		return nil, false
	case !isRaw:
		b, err := MarshalVT(frame)
		return b, err == nil
	}
	b, ok, err := marshalPayloadFrame(p, inner, raw)
	return b, ok && err == nil
}

// MarshalVT writes m with its generated code.
func MarshalVT(m VTMessage) (mem.BufferSlice, error) {
	fb := allocFrame(m.SizeVT())
	if _, err := m.MarshalToSizedBufferVT(fb.b); err != nil {
		fb.free()
		return nil, err
	}
	return fb.buffers(), nil
}

// emptyFieldAt is the offset in b, a message's encoding, of field num written as an empty
// message (its tag and a zero length), or -1.
func emptyFieldAt(b []byte, num protowire.Number) int {
	for off := 0; off < len(b); {
		fnum, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return -1
		}
		if fnum == num {
			if typ != protowire.BytesType || off+n >= len(b) || b[off+n] != 0 {
				return -1
			}
			return off
		}
		m := protowire.ConsumeFieldValue(fnum, typ, b[off+n:])
		if m < 0 {
			return -1
		}
		off += n + m
	}
	return -1
}

// frameBuf is a frame's buffer: from grpc-go's buffer pool when the frame is large enough
// for pooling to pay (as grpc-go's proto codec decides), else allocated.
type frameBuf struct {
	b  []byte
	bp *[]byte // the pool's buffer, nil when b is allocated
}

func allocFrame(n int) frameBuf {
	if mem.IsBelowBufferPoolingThreshold(n) {
		return frameBuf{b: make([]byte, n)}
	}
	bp := mem.DefaultBufferPool().Get(n)
	return frameBuf{b: *bp, bp: bp}
}

// free returns a pooled buffer that will not be sent.
func (f frameBuf) free() {
	if f.bp != nil {
		mem.DefaultBufferPool().Put(f.bp)
	}
}

// buffers hands the buffer to grpc-go, which returns a pooled one once it is written.
func (f frameBuf) buffers() mem.BufferSlice {
	if f.bp == nil {
		return mem.BufferSlice{mem.SliceBuffer(f.b)}
	}
	return mem.BufferSlice{mem.NewBuffer(f.bp, mem.DefaultBufferPool())}
}

// rawPayload classifies a payload: isRaw with its bytes for a raw Struct (no fields, the
// encoding of its fields held as unknown fields); otherwise (nil, an empty Struct, a
// Struct with fields) the generated code writes it as proto.Marshal would, unless fast is
// false (a Struct with both fields and unknown fields, which neither the host nor the SDK
// makes).
func rawPayload(s *structpb.Struct) (raw []byte, isRaw, fast bool) {
	if s == nil {
		return nil, false, true
	}
	u := s.ProtoReflect().GetUnknown()
	if len(s.GetFields()) > 0 {
		return nil, false, len(u) == 0
	}
	return u, len(u) > 0, true
}
