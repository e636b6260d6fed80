package rawstruct

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// The tests' oracle: no serving path needs raw Structs parsed (see the package comment).

// Materialize parses, in place, every raw Struct reachable from m (through message, list
// and map fields), so that m can be written as JSON. A raw Struct that does not parse is
// an error (Validate keeps such bytes out).
func Materialize(m proto.Message) error {
	if m == nil {
		return nil
	}
	return materialize(m.ProtoReflect())
}

var structName = (&structpb.Struct{}).ProtoReflect().Descriptor().FullName()

func materialize(m protoreflect.Message) error {
	if !m.IsValid() {
		return nil
	}
	if m.Descriptor().FullName() == structName {
		if s, ok := m.Interface().(*structpb.Struct); ok && len(s.GetFields()) == 0 {
			u := m.GetUnknown()
			if len(u) == 0 {
				return nil
			}
			parsed := &structpb.Struct{}
			if err := proto.Unmarshal(u, parsed); err != nil {
				return err
			}
			s.Fields = parsed.Fields
			// Fields of other numbers stay unknown, as they would in a parsed Struct.
			m.SetUnknown(parsed.ProtoReflect().GetUnknown())
			return nil
		}
		// A parsed Struct may hold raw ones in its values: go on below.
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = materialize(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = materialize(mv.Message())
				return err == nil
			})
		case fd.Message() != nil && !fd.IsMap():
			err = materialize(v.Message())
		}
		return err == nil
	})
	return err
}
