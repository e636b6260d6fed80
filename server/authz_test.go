package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// call is one RPC made through the Go client.
type call func(ctx context.Context, c *nexus.Client) error

func unary[Req, Res any](f func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg *Req) call {
	return func(ctx context.Context, _ *nexus.Client) error {
		_, err := f(ctx, connect.NewRequest(msg))
		return err
	}
}

// drain reads a server stream to its end and returns its error.
func drain[Res any](stream *connect.ServerStreamForClient[Res], err error) error {
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
	}
	return stream.Err()
}

// rpcCalls returns one representative call of every RPC of the API. The plugin token used
// in the matrix is bound to analytics-plugin.
func rpcCalls(t *testing.T, c *nexus.Client, matrixPkg []byte) map[string]call {
	cfg, _ := structpb.NewStruct(map[string]any{"batch_size": 20})
	p := c.Plugins
	return map[string]call{
		"ListPlugins":             unary(p.ListPlugins, &pluginv1.ListPluginsRequest{}),
		"GetPlugin":               unary(p.GetPlugin, &pluginv1.GetPluginRequest{PluginId: "analytics-plugin"}),
		"InstallPlugin":           unary(p.InstallPlugin, &pluginv1.InstallPluginRequest{Source: "file", PackageData: matrixPkg, ForceReinstall: true}),
		"UpdatePlugin":            unary(p.UpdatePlugin, &pluginv1.UpdatePluginRequest{PluginId: "analytics-plugin", Version: "latest"}),
		"UninstallPlugin":         unary(p.UninstallPlugin, &pluginv1.UninstallPluginRequest{PluginId: "matrix-plugin"}),
		"RollbackPlugin":          unary(p.RollbackPlugin, &pluginv1.RollbackPluginRequest{PluginId: "analytics-plugin", BackupId: "backup_x"}),
		"ListBackups":             unary(p.ListBackups, &pluginv1.ListBackupsRequest{PluginId: "analytics-plugin"}),
		"GetPluginConfig":         unary(p.GetPluginConfig, &pluginv1.GetPluginConfigRequest{PluginId: "analytics-plugin"}),
		"UpdatePluginConfig":      unary(p.UpdatePluginConfig, &pluginv1.UpdatePluginConfigRequest{PluginId: "analytics-plugin", Config: cfg}),
		"EnablePlugin":            unary(p.EnablePlugin, &pluginv1.EnablePluginRequest{PluginId: "analytics-plugin"}),
		"DisablePlugin":           unary(p.DisablePlugin, &pluginv1.DisablePluginRequest{PluginId: "analytics-plugin"}),
		"RestartPlugin":           unary(p.RestartPlugin, &pluginv1.RestartPluginRequest{PluginId: "analytics-plugin"}),
		"GetPluginHealth":         unary(p.GetPluginHealth, &pluginv1.GetPluginHealthRequest{PluginId: "analytics-plugin"}),
		"GetPluginMetrics":        unary(p.GetPluginMetrics, &pluginv1.GetPluginMetricsRequest{PluginId: "analytics-plugin"}),
		"GetPluginLogs":           unary(p.GetPluginLogs, &pluginv1.GetPluginLogsRequest{PluginId: "analytics-plugin"}),
		"GetPluginPermissions":    unary(p.GetPluginPermissions, &pluginv1.GetPluginPermissionsRequest{PluginId: "analytics-plugin"}),
		"UpdatePluginPermissions": unary(p.UpdatePluginPermissions, &pluginv1.UpdatePluginPermissionsRequest{PluginId: "analytics-plugin", SecurityLevel: "high"}),
		"TailPluginLogs": func(ctx context.Context, c *nexus.Client) error {
			return drain(c.Plugins.TailPluginLogs(ctx, connect.NewRequest(&pluginv1.TailPluginLogsRequest{PluginId: "analytics-plugin"})))
		},
		"SearchPlugins":    unary(c.Repositories.SearchPlugins, &pluginv1.SearchPluginsRequest{Query: "x"}),
		"ListRepositories": unary(c.Repositories.ListRepositories, &pluginv1.ListRepositoriesRequest{}),
		"SyncRepositories": unary(c.Repositories.SyncRepositories, &pluginv1.SyncRepositoriesRequest{}),
		"SendMessage": unary(c.Messaging.SendMessage, &pluginv1.SendMessageRequest{
			PluginId: "analytics-plugin", TargetPlugin: "analytics-plugin", MessageType: "ping"}),
		"Broadcast": unary(c.Messaging.Broadcast, &pluginv1.BroadcastRequest{MessageType: "note"}),
		"WatchEvents": func(ctx context.Context, c *nexus.Client) error {
			// An allowed watch stays open: it is ended after a moment, which is no refusal.
			ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			return drain(c.Messaging.WatchEvents(ctx, connect.NewRequest(&pluginv1.WatchEventsRequest{})))
		},
		"EmitEvent":       unary(c.Messaging.EmitEvent, &pluginv1.EmitEventRequest{Type: "matrix.checked"}),
		"ListServices":    unary(c.Messaging.ListServices, &pluginv1.ListServicesRequest{}),
		"ListDeadLetters": unary(c.Messaging.ListDeadLetters, &pluginv1.ListDeadLettersRequest{PluginId: "analytics-plugin"}),
		"ListReplicas":    unary(c.Cluster.ListReplicas, &pluginv1.ListReplicasRequest{}),
		"Connect": func(ctx context.Context, c *nexus.Client) error {
			stream := c.PluginHost.Connect(ctx)
			if err := stream.Send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{
				Hello: &pluginhostv1.Hello{PluginId: "analytics-plugin"}}}); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			_, err := stream.Receive()
			_ = stream.CloseRequest()
			_ = stream.CloseResponse()
			return err
		},
	}
}

// allowed is the expected authorization table, stated independently of the server's.
var allowed = map[string][]store.Role{
	"ListPlugins":             {store.RoleAdmin, store.RoleUser},
	"GetPlugin":               {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"InstallPlugin":           {store.RoleAdmin},
	"UpdatePlugin":            {store.RoleAdmin},
	"UninstallPlugin":         {store.RoleAdmin},
	"RollbackPlugin":          {store.RoleAdmin},
	"ListBackups":             {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"GetPluginConfig":         {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"UpdatePluginConfig":      {store.RoleAdmin},
	"EnablePlugin":            {store.RoleAdmin},
	"DisablePlugin":           {store.RoleAdmin},
	"RestartPlugin":           {store.RoleAdmin},
	"GetPluginHealth":         {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"GetPluginMetrics":        {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"GetPluginLogs":           {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"GetPluginPermissions":    {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"UpdatePluginPermissions": {store.RoleAdmin},
	"TailPluginLogs":          {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"SearchPlugins":           {store.RoleAdmin, store.RoleUser},
	"ListRepositories":        {store.RoleAdmin, store.RoleUser},
	"SyncRepositories":        {store.RoleAdmin},
	"SendMessage":             {store.RoleAdmin, store.RolePlugin},
	"Broadcast":               {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"WatchEvents":             {store.RoleAdmin, store.RoleUser},
	"EmitEvent":               {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"ListServices":            {store.RoleAdmin, store.RoleUser, store.RolePlugin},
	"ListDeadLetters":         {store.RoleAdmin, store.RolePlugin},
	"ListReplicas":            {store.RoleAdmin, store.RoleUser},
	"Connect":                 {store.RolePlugin},
}

func TestAuthorizationMatrix(t *testing.T) {
	e := startServer(t)
	// The plugin may send, so that what the matrix sees is the role check alone.
	m := analyticsManifest("1.2.0")
	m["permissions"] = append(m["permissions"].([]string), "messages:send")
	mustInstall(e, m)
	matrixPkg := pkg(t, map[string]any{
		"id": "matrix-plugin", "name": "Matrix", "version": "1.0.0", "entry_point": "bin/matrix-plugin",
	}, map[string]string{"bin/matrix-plugin": "#!/bin/sh\n"})
	pluginToken := e.token(store.RolePlugin, "analytics-plugin")
	callers := []struct {
		name  string
		role  store.Role
		token string
	}{
		{"no token", "", ""},
		{"bad token", "", "nxt_not-a-real-token"},
		{"user", store.RoleUser, e.User},
		{"plugin", store.RolePlugin, pluginToken},
		{"admin", store.RoleAdmin, e.Admin},
	}
	// The count of RPCs is checked so that a new RPC cannot skip the matrix.
	if n := len(rpcCalls(t, nexus.New(e.URL), matrixPkg)); n != len(allowed) || n != 29 {
		t.Fatalf("matrix covers %d RPCs, table %d; want 29", n, len(allowed))
	}
	for _, caller := range callers {
		client := nexus.New(e.URL, nexus.WithToken(caller.token))
		for name, rpc := range rpcCalls(t, client, matrixPkg) {
			t.Run(fmt.Sprintf("%s/%s", name, caller.name), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err := rpc(ctx, client)
				code := nexus.ErrorCode(err)
				switch {
				case caller.role == "":
					if code != "UNAUTHENTICATED" || connect.CodeOf(err) != connect.CodeUnauthenticated {
						t.Fatalf("want UNAUTHENTICATED, got %q (%v)", code, err)
					}
				case !contains(allowed[name], caller.role):
					if code != "PLUGIN_PERMISSION_DENIED" || connect.CodeOf(err) != connect.CodePermissionDenied {
						t.Fatalf("want PLUGIN_PERMISSION_DENIED, got %q (%v)", code, err)
					}
				default:
					if code == "UNAUTHENTICATED" || code == "PLUGIN_PERMISSION_DENIED" {
						t.Fatalf("%s may call %s, got %q (%v)", caller.role, name, code, err)
					}
				}
			})
		}
	}
}

func contains(roles []store.Role, r store.Role) bool {
	for _, x := range roles {
		if x == r {
			return true
		}
	}
	return false
}

func TestPluginTokenActsOnlyAsItsPlugin(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	mustInstall(e, dependentManifest())
	c := nexus.New(e.URL, nexus.WithToken(e.token(store.RolePlugin, "analytics-plugin")))
	ctx := context.Background()
	_, err := c.Plugins.GetPluginConfig(ctx, connect.NewRequest(&pluginv1.GetPluginConfigRequest{PluginId: "user-management"}))
	if nexus.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
		t.Fatalf("reading another plugin's config: %v", err)
	}
	_, err = c.Messaging.SendMessage(ctx, connect.NewRequest(&pluginv1.SendMessageRequest{
		PluginId: "user-management", TargetPlugin: "analytics-plugin", MessageType: "ping"}))
	if nexus.ErrorCode(err) != "PLUGIN_PERMISSION_DENIED" {
		t.Fatalf("sending as another plugin: %v", err)
	}
	res, err := c.Plugins.GetPluginConfig(ctx, connect.NewRequest(&pluginv1.GetPluginConfigRequest{PluginId: "analytics-plugin"}))
	if err != nil {
		t.Fatalf("reading its own config: %v", err)
	}
	if res.Msg.GetConfiguration().AsMap()["batch_size"] != 50.0 {
		t.Fatalf("own config = %v", res.Msg.GetConfiguration().AsMap())
	}
}

func TestOnlyPluginsAndAdminsNameASender(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	mustInstall(e, dependentManifest())
	for _, c := range []struct {
		token, sender, want string
	}{
		{e.User, "user-management", "PLUGIN_PERMISSION_DENIED"},
		{e.token(store.RolePlugin, "analytics-plugin"), "user-management", "PLUGIN_PERMISSION_DENIED"},
		{e.token(store.RolePlugin, "user-management"), "user-management", ""},
		{e.Admin, "user-management", ""},
		// Named by an admin, but the plugin lacks messages:send.
		{e.Admin, "analytics-plugin", "PLUGIN_PERMISSION_DENIED"},
	} {
		c2 := nexus.New(e.URL, nexus.WithToken(c.token))
		_, err := c2.Messaging.Broadcast(context.Background(), connect.NewRequest(&pluginv1.BroadcastRequest{MessageType: "note", SenderPlugin: c.sender}))
		if got := nexus.ErrorCode(err); got != c.want {
			t.Errorf("sender %s: got %s (%v), want %s", c.sender, got, err, c.want)
		}
	}
}

func TestRevokedTokenIsRefused(t *testing.T) {
	e := startServer(t)
	plain, tok, err := e.srv.Identity().Create(context.Background(), "short-lived", store.RoleUser, "")
	if err != nil {
		t.Fatal(err)
	}
	c := nexus.New(e.URL, nexus.WithToken(plain))
	if _, err := c.Plugins.ListPlugins(context.Background(), connect.NewRequest(&pluginv1.ListPluginsRequest{})); err != nil {
		t.Fatalf("before revoke: %v", err)
	}
	if err := e.srv.Identity().Revoke(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.Plugins.ListPlugins(context.Background(), connect.NewRequest(&pluginv1.ListPluginsRequest{}))
	if nexus.ErrorCode(err) != "UNAUTHENTICATED" {
		t.Fatalf("after revoke: %v", err)
	}
}
