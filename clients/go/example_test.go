package nexus_test

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
)

// A client for a server on the default address, speaking gRPC, with an admin token.
func ExampleNew() {
	client := nexus.New("http://127.0.0.1:8080", nexus.WithToken("nxt_..."), nexus.WithProtocol(nexus.ProtocolGRPC))
	res, err := client.Plugins.GetPlugin(context.Background(), connect.NewRequest(&pluginv1.GetPluginRequest{PluginId: "analytics-plugin"}))
	if nexus.ErrorCode(err) == "PLUGIN_NOT_FOUND" {
		fmt.Println("not installed")
		return
	}
	if err != nil {
		fmt.Println(nexus.ErrorCode(err), err)
		return
	}
	fmt.Println(res.Msg.GetPlugin().GetVersion())
}
