package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
)

var protocols = []struct {
	name string
	p    nexus.Protocol
}{
	{"connect", nexus.ProtocolConnect},
	{"connect-json", nexus.ProtocolConnectJSON},
	{"grpc", nexus.ProtocolGRPC},
	{"grpc-web", nexus.ProtocolGRPCWeb},
}

// restInto decodes the data of a REST answer into msg.
func restInto(t *testing.T, res restResult, msg proto.Message) {
	t.Helper()
	if res.Status != http.StatusOK {
		t.Fatalf("REST status %d: %s", res.Status, res.Raw)
	}
	data, err := json.Marshal(res.data())
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(data, msg); err != nil {
		t.Fatalf("REST data does not decode as %T: %v\n%s", msg, err, data)
	}
}

func TestSameResultsOnEveryProtocol(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	mustInstall(e, dependentManifest())
	ctx := context.Background()

	type read struct {
		name string
		grpc func(c *nexus.Client) (proto.Message, error)
		rest func() proto.Message
	}
	reads := []read{
		{"ListPlugins", func(c *nexus.Client) (proto.Message, error) {
			r, err := c.Plugins.ListPlugins(ctx, connect.NewRequest(&pluginv1.ListPluginsRequest{Category: "analytics"}))
			return msgOf(r, err)
		}, func() proto.Message {
			m := &pluginv1.ListPluginsResponse{}
			restInto(t, e.rest("GET", "/api/v1/plugins?category=analytics", e.Admin, nil), m)
			return m
		}},
		{"GetPlugin", func(c *nexus.Client) (proto.Message, error) {
			r, err := c.Plugins.GetPlugin(ctx, connect.NewRequest(&pluginv1.GetPluginRequest{PluginId: "analytics-plugin"}))
			return msgOf(r, err)
		}, func() proto.Message {
			m := &pluginv1.GetPluginResponse{}
			restInto(t, e.rest("GET", "/api/v1/plugins/analytics-plugin", e.Admin, nil), m)
			return m
		}},
		{"GetPluginConfig", func(c *nexus.Client) (proto.Message, error) {
			r, err := c.Plugins.GetPluginConfig(ctx, connect.NewRequest(&pluginv1.GetPluginConfigRequest{PluginId: "analytics-plugin"}))
			return msgOf(r, err)
		}, func() proto.Message {
			m := &pluginv1.GetPluginConfigResponse{}
			restInto(t, e.rest("GET", "/api/v1/plugins/analytics-plugin/config", e.Admin, nil), m)
			return m
		}},
		{"GetPluginPermissions", func(c *nexus.Client) (proto.Message, error) {
			r, err := c.Plugins.GetPluginPermissions(ctx, connect.NewRequest(&pluginv1.GetPluginPermissionsRequest{PluginId: "analytics-plugin"}))
			return msgOf(r, err)
		}, func() proto.Message {
			m := &pluginv1.GetPluginPermissionsResponse{}
			restInto(t, e.rest("GET", "/api/v1/plugins/analytics-plugin/permissions", e.Admin, nil), m)
			return m
		}},
	}
	for _, rd := range reads {
		t.Run(rd.name, func(t *testing.T) {
			want := rd.rest()
			for _, p := range protocols {
				got, err := rd.grpc(nexus.New(e.URL, nexus.WithToken(e.Admin), nexus.WithProtocol(p.p)))
				if err != nil {
					t.Fatalf("%s: %v", p.name, err)
				}
				if !proto.Equal(got, want) {
					t.Errorf("%s answer differs from REST:\n%v\nvs\n%v", p.name, got, want)
				}
			}
		})
	}

	t.Run("UpdatePluginConfig", func(t *testing.T) {
		for i, p := range protocols {
			c := nexus.New(e.URL, nexus.WithToken(e.Admin), nexus.WithProtocol(p.p))
			patch, _ := structpb.NewStruct(map[string]any{"batch_size": float64(100 + i)})
			r, err := c.Plugins.UpdatePluginConfig(ctx, connect.NewRequest(&pluginv1.UpdatePluginConfigRequest{PluginId: "analytics-plugin", Config: patch}))
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			if got := r.Msg.GetConfiguration().AsMap()["batch_size"]; got != float64(100+i) {
				t.Fatalf("%s: batch_size = %v", p.name, got)
			}
		}
		d := e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"batch_size": 555})
		if d["configuration"].(map[string]any)["batch_size"] != 555.0 {
			t.Fatalf("REST update: %v", d)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, p := range protocols {
			c := nexus.New(e.URL, nexus.WithToken(e.Admin), nexus.WithProtocol(p.p))
			_, err := c.Plugins.GetPlugin(ctx, connect.NewRequest(&pluginv1.GetPluginRequest{PluginId: "no-such-plugin"}))
			if nexus.ErrorCode(err) != "PLUGIN_NOT_FOUND" || connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("%s: %v", p.name, err)
			}
		}
		res := e.rest("GET", "/api/v1/plugins/no-such-plugin", e.Admin, nil)
		if res.Status != http.StatusNotFound || res.errorCode() != "PLUGIN_NOT_FOUND" || res.Body["success"] != false {
			t.Errorf("REST: %d %s", res.Status, res.Raw)
		}
	})
}

func msgOf[T any](r *connect.Response[T], err error) (proto.Message, error) {
	if err != nil {
		return nil, err
	}
	return any(r.Msg).(proto.Message), nil
}
