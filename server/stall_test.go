package server_test

import (
	"context"
	"errors"
	"io"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/server"
)

// TestPluginThatStopsReadingLosesItsSession: a plugin on a gRPC stream sends messages and
// never reads its stream again. Once the replies it does not read fill its queue, the host
// ends the session: the stream ends with PLUGIN_UNAVAILABLE (what the plugin reads when it
// reads again), the instance is disconnected, and the host goes on serving the others.
func TestPluginThatStopsReadingLosesItsSession(t *testing.T) {
	e := startMessagingServer(t, func(c *server.Config) { c.ProcessingTimeout = 2 * time.Second })
	externalPlugin(e, "echo-plugin", nil)
	externalPlugin(e, "stalled-plugin", map[string]any{"permissions": []string{"messages:send"}})
	externalPlugin(e, "other-plugin", map[string]any{"permissions": []string{"messages:send"}})
	runInstance(e, "echo-plugin", "e1", plugin.Plugin{
		OnMessage: func(_ context.Context, m plugin.Message) (map[string]any, error) { return m.Data, nil },
	})
	var other *plugin.Session
	runInstance(e, "other-plugin", "o1", plugin.Plugin{
		OnStart: func(_ context.Context, s *plugin.Session) error { other = s; return nil },
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := openStalledSession(t, ctx, e)

	// 1000 messages (under the 1024 a session may have waiting), each reply about 600
	// bytes: far more than the window and the host's queue for the stream hold.
	data, _ := structpb.NewStruct(map[string]any{"pad": strings.Repeat("x", 512)})
	for i := range 1000 {
		if err := cs.SendMsg(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{
			RequestId: "r" + strconv.Itoa(i), TargetPlugin: "echo-plugin", MessageType: "ping", Data: data, TimeoutSeconds: 20}}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	waitFor(t, "the host to end the stalled session", 15*time.Second, func() bool {
		_, p := status(e, "stalled-plugin")
		return p["runtime"].(map[string]any)["instances"] == 0.0
	})

	// Reading again, the plugin gets what the window held, then the end of the stream.
	var recvErr error
	for n := 0; ; n++ {
		var f pluginhostv1.ConnectResponse
		if recvErr = cs.RecvMsg(&f); recvErr != nil {
			break
		}
		if n > 1000 {
			t.Fatal("the stream did not end")
		}
	}
	if errors.Is(recvErr, io.EOF) || grpcstatus.Code(recvErr) != codes.Unavailable || !strings.Contains(recvErr.Error(), "does not read its stream") {
		t.Fatalf("the stream ended with %v; want Unavailable: the plugin does not read its stream", recvErr)
	}

	// The host goes on: another plugin's messages are answered.
	reply, err := other.Send(ctx, "echo-plugin", "ping", map[string]any{"n": 1.0})
	if err != nil || reply.Data["n"] != 1.0 {
		t.Fatalf("another plugin's message: %+v %v", reply, err)
	}
}

// openStalledSession connects an instance of stalled-plugin on a raw gRPC stream whose
// flow-control window is a fixed 64 KiB (no BDP growth, so the host's sends block soon),
// says hello, reads the welcome and waits until the instance is attached. The caller
// decides what it sends and whether it ever reads again.
func openStalledSession(t *testing.T, ctx context.Context, e *env) grpc.ClientStream {
	t.Helper()
	u, err := url.Parse(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	callCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+e.token(store.RolePlugin, "stalled-plugin"))
	cs, err := conn.NewStream(callCtx, &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true},
		pluginhostv1connect.PluginHostServiceConnectProcedure)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
		PluginId: "stalled-plugin", InstanceId: "s1", Version: "1.0.0", Sdk: "raw-grpc-test"}}}); err != nil {
		t.Fatal(err)
	}
	var welcome pluginhostv1.ConnectResponse
	if err := cs.RecvMsg(&welcome); err != nil || welcome.GetWelcome() == nil {
		t.Fatalf("no welcome: %v %v", &welcome, err)
	}
	waitFor(t, "the stalled plugin to be connected", 10*time.Second, func() bool {
		_, p := status(e, "stalled-plugin")
		return p["runtime"].(map[string]any)["instances"] == 1.0
	})
	return cs
}
