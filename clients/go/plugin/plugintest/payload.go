package plugintest

import (
	"encoding/json"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file converts between the test's Go values and the stream's protobuf values. Values
// go through encoding/json, as the SDK's do, so that the plugin sees what it would see from
// a real host: numbers are float64, structs are objects.

// toStruct encodes m as a Struct; nil is an empty object.
func toStruct(m map[string]any) (*structpb.Struct, error) {
	s := &structpb.Struct{}
	if m == nil {
		return s, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return s, nil
}

// toValue encodes v, anything encoding/json encodes, as a Value.
func toValue(v any) (*structpb.Value, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := &structpb.Value{}
	if err := protojson.Unmarshal(b, out); err != nil {
		return nil, err
	}
	return out, nil
}

// fromStruct decodes s; nil is an empty map.
func fromStruct(s *structpb.Struct) map[string]any {
	if s == nil {
		return map[string]any{}
	}
	return s.AsMap()
}

// normalize returns m as the plugin sees it after the trip through JSON.
func normalize(m map[string]any) (map[string]any, error) {
	s, err := toStruct(m)
	if err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	return fromStruct(s), nil
}

// sameJSON reports whether two JSON values are equal.
func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

func checksFromProto(in []*pluginhostv1.Check) []plugin.Check {
	out := make([]plugin.Check, 0, len(in))
	for _, c := range in {
		out = append(out, plugin.Check{
			Name: c.GetName(), Status: plugin.Status(c.GetStatus()), ResponseTimeMS: c.ResponseTimeMs,
			Details: c.Details, Value: c.Value, Threshold: c.Threshold, Unit: c.Unit,
		})
	}
	return out
}

func providerToProto(p plugin.Provider) *pluginv1.ServiceProvider {
	out := &pluginv1.ServiceProvider{
		PluginId: p.PluginID, Name: p.Name, Version: p.Version, Category: p.Category, Status: p.Status,
		Services: slices.Clone(p.Services), Instances: int32(p.Instances),
	}
	for _, m := range p.MessageTypes {
		out.MessageTypes = append(out.MessageTypes, &pluginv1.MessageTypeInfo{
			Type: m.Type, Description: m.Description, RequiredPermission: m.RequiredPermission,
		})
	}
	for _, e := range p.Endpoints {
		out.Endpoints = append(out.Endpoints, &pluginv1.ApiEndpoint{Path: e.Path, Methods: slices.Clone(e.Methods), Description: e.Description})
	}
	return out
}
