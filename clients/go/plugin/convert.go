package plugin

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file converts between the wire's protobuf types and the plain Go types authors see.
// Everything sent is made to fit the protocol's limits first: a frame the host rejects
// would end the whole stream.

// structToMap returns s as a fresh map; never nil. The data of the deliveries and replies
// received over gRPC is a raw Struct (payload.go), decoded here straight into the map.
//
// Decoding a raw Struct cannot fail: raw Structs hold either encodeStructMap's output or
// a payload that frameCodec checked as strictly as proto.Unmarshal would have, failing
// the frame, and so the stream, as it always did, when it was malformed. Should one fail
// all the same, s is taken for empty, as AsMap would take it: its bytes are never
// half-decoded.
func structToMap(s *structpb.Struct) map[string]any {
	if s == nil {
		return map[string]any{}
	}
	if len(s.GetFields()) == 0 {
		if raw := s.ProtoReflect().GetUnknown(); len(raw) > 0 {
			m, err := decodeStructMap(raw)
			if err != nil {
				return map[string]any{}
			}
			return m
		}
	}
	return s.AsMap()
}

// mapToStruct encodes m as a raw Struct (payload.go), for the binary wire only: it is
// never read back but by structToMap. Values structpb does not take directly (typed
// slices and maps, structs, invalid UTF-8) go through encoding/json, as they would in a
// JSON API.
func mapToStruct(m map[string]any) (*structpb.Struct, error) {
	if m == nil {
		return nil, nil
	}
	b, err := encodeStructMap(m)
	if err != nil {
		return nil, err
	}
	return rawStruct(b), nil
}

func emptyStruct() *structpb.Struct { return &structpb.Struct{Fields: map[string]*structpb.Value{}} }

// cleanString makes s valid UTF-8 (protobuf strings must be) and at most max bytes long,
// cut on a character boundary.
func cleanString(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func cleanPtr(s *string, max int) *string {
	if s == nil {
		return nil
	}
	c := cleanString(*s, max)
	return &c
}

// checksToProto converts at most 64 checks, as the protocol allows. A check without a name
// is named "unnamed"; one with an unknown status fails.
func checksToProto(checks []Check) []*pluginhostv1.Check {
	checks = checks[:min(len(checks), 64)]
	out := make([]*pluginhostv1.Check, 0, len(checks))
	for _, c := range checks {
		name := cleanString(c.Name, 128)
		if name == "" {
			name = "unnamed"
		}
		status := c.Status
		switch status {
		case StatusPass, StatusWarning, StatusFail:
		default:
			status = StatusFail
		}
		out = append(out, &pluginhostv1.Check{
			Name:           name,
			Status:         string(status),
			ResponseTimeMs: c.ResponseTimeMS,
			Details:        cleanPtr(c.Details, 4096),
			Value:          c.Value,
			Threshold:      c.Threshold,
			Unit:           cleanPtr(c.Unit, 32),
		})
	}
	return out
}

// changedFields lists the top-level fields that differ between two configurations.
func changedFields(old, cur *structpb.Struct) []string {
	var out []string
	for k, v := range cur.GetFields() {
		if ov, ok := old.GetFields()[k]; !ok || !proto.Equal(ov, v) {
			out = append(out, k)
		}
	}
	for k := range old.GetFields() {
		if _, ok := cur.GetFields()[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// valueToProto encodes a JSON value. Values structpb does not take directly (typed slices
// and maps, structs, invalid UTF-8) go through encoding/json, as they would in a JSON API.
func valueToProto(v any) (*structpb.Value, error) {
	if pv, err := structpb.NewValue(v); err == nil {
		return pv, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return nil, err
	}
	return structpb.NewValue(generic)
}

func entryFromProto(e *pluginhostv1.KvEntry) Entry {
	out := Entry{Key: e.GetKey(), Value: e.GetValue().AsInterface(), Version: e.GetVersion()}
	if t := e.GetExpiresAt(); t != nil {
		out.ExpiresAt = t.AsTime()
	}
	if t := e.GetUpdatedAt(); t != nil {
		out.UpdatedAt = t.AsTime()
	}
	return out
}

func providerFromProto(p *pluginv1.ServiceProvider) Provider {
	out := Provider{
		PluginID:  p.GetPluginId(),
		Name:      p.GetName(),
		Version:   p.GetVersion(),
		Category:  p.GetCategory(),
		Status:    p.GetStatus(),
		Services:  slices.Clone(p.GetServices()),
		Instances: int(p.GetInstances()),
	}
	for _, m := range p.GetMessageTypes() {
		out.MessageTypes = append(out.MessageTypes, MessageTypeInfo{
			Type:               m.GetType(),
			Description:        m.GetDescription(),
			RequiredPermission: m.GetRequiredPermission(),
		})
	}
	for _, e := range p.GetEndpoints() {
		out.Endpoints = append(out.Endpoints, Endpoint{
			Path:        e.GetPath(),
			Methods:     slices.Clone(e.GetMethods()),
			Description: e.GetDescription(),
		})
	}
	return out
}
