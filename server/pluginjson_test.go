package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/server"
)

// A plugin stream in the Connect protocol with the JSON codec gets its payloads whole. The
// host carries payloads as raw Struct bytes, which only binary protobuf writes: this holds
// because the handlers see binary protobuf alone (vanguard transcodes JSON and parses the
// payload on the way). A change there that let JSON reach the handlers would fail here.
func TestPluginStreamOverConnectJSONCarriesPayloads(t *testing.T) {
	buses(t, func(t *testing.T, tune func(*server.Config)) {
		e := startMessagingServer(t, tune)
		externalPlugin(e, "caller-plugin", map[string]any{"permissions": []string{"messages:send"}})
		externalPlugin(e, "json-plugin", nil)
		client := pluginhostv1connect.NewPluginHostServiceClient(nexus.DefaultHTTPClient(), e.URL, connect.WithProtoJSON())
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stream := client.Connect(ctx)
		stream.RequestHeader().Set("Authorization", "Bearer "+e.token(store.RolePlugin, "json-plugin"))
		if err := stream.Send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
			PluginId: "json-plugin", InstanceId: "j1", Version: "1.0.0", MessageTypes: []string{"echo"}}}}); err != nil {
			t.Fatal(err)
		}
		if first, err := stream.Receive(); err != nil || first.GetWelcome() == nil {
			t.Fatalf("no welcome: %v %v", first, err)
		}
		defer func() { _ = stream.CloseRequest(); _ = stream.CloseResponse() }()

		blob := strings.Repeat("é", 100)
		result := make(chan restResult, 1)
		go func() {
			result <- e.rest("POST", "/api/v1/plugins/caller-plugin/message", e.Admin, map[string]any{
				"target_plugin": "json-plugin", "message_type": "echo", "timeout_seconds": 15,
				"data": map[string]any{"blob": blob, "n": 3, "list": []any{true, nil, "x"}},
			})
		}()
		var d *pluginhostv1.Deliver
		for d == nil {
			res, err := stream.Receive()
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			d = res.GetDeliver()
		}
		got := d.GetData().AsMap()
		if got["blob"] != blob || got["n"] != 3.0 || len(got["list"].([]any)) != 3 {
			t.Fatalf("the delivery's data over JSON: %v", got)
		}
		reply, err := structpb.NewStruct(map[string]any{"echoed": got["blob"], "ok": true})
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{
			DeliveryId: d.GetDeliveryId(), Status: "success", Data: reply}}}); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-result:
			data, _ := r.data()["response"].(map[string]any)["data"].(map[string]any)
			if r.Status != http.StatusOK || data["echoed"] != blob || data["ok"] != true {
				t.Fatalf("reply: %d %s", r.Status, r.Raw)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("no reply")
		}
	})
}
