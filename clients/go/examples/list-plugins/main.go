// Command list-plugins lists the plugins of a Nexus server with the Go client.
//
//	NEXUS_URL=http://127.0.0.1:8080 NEXUS_TOKEN=... go run ./clients/go/examples/list-plugins
package main

import (
	"context"
	"fmt"
	"os"

	"connectrpc.com/connect"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
)

func main() {
	url := os.Getenv("NEXUS_URL")
	if url == "" {
		url = "http://127.0.0.1:8080"
	}
	client := nexus.New(url, nexus.WithToken(os.Getenv("NEXUS_TOKEN")), nexus.WithProtocol(nexus.ProtocolGRPC))
	res, err := client.Plugins.ListPlugins(context.Background(), connect.NewRequest(&pluginv1.ListPluginsRequest{}))
	if err != nil {
		fmt.Fprintf(os.Stderr, "list plugins: %s (%v)\n", nexus.ErrorCode(err), err)
		os.Exit(1)
	}
	for _, p := range res.Msg.GetPlugins() {
		fmt.Printf("%-24s %-8s %-9s %s\n", p.GetId(), p.GetVersion(), p.GetStatus(), p.GetName())
	}
	s := res.Msg.GetSummary()
	fmt.Printf("%d installed, %d active, %d inactive, %d in error\n", s.GetTotal(), s.GetActive(), s.GetInactive(), s.GetError())
}
