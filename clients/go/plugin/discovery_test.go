package plugin_test

import (
	"context"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

func TestDiscover(t *testing.T) {
	t.Parallel()
	queries := make(chan []*pluginhostv1.Discover, 1)
	h := startHost(t, func(ctx context.Context, s *hostStream) error {
		s.welcome(nil)
		var seen []*pluginhostv1.Discover
		s.serveRequests(func(f *pluginhostv1.ConnectRequest) *pluginhostv1.RequestReply {
			d := f.GetDiscover()
			seen = append(seen, d)
			if d.GetService() == "nothing" {
				return &pluginhostv1.RequestReply{}
			}
			return &pluginhostv1.RequestReply{Providers: []*pluginv1.ServiceProvider{{
				PluginId: "auth-plugin", Name: "Auth", Version: "1.4.0", Category: "security", Status: "active",
				Services: []string{"auth", "tokens"},
				MessageTypes: []*pluginv1.MessageTypeInfo{
					{Type: "verify_token", Description: "Checks a token"},
					{Type: "list_users", Description: "Lists users", RequiredPermission: "users:read"},
				},
				Endpoints: []*pluginv1.ApiEndpoint{{Path: "/login", Methods: []string{"POST"}, Description: "Logs in"}},
				Instances: 2,
			}, {
				PluginId: "sso-plugin", Status: "active", Instances: 1,
			}}}
		})
		queries <- seen
		return nil
	})
	s, run := startSession(t, h, plugin.Plugin{})
	got, err := s.Discover(testContext(t), plugin.Query{Service: "auth", MessageType: "verify_token"})
	if err != nil {
		t.Fatal(err)
	}
	want := []plugin.Provider{{
		PluginID: "auth-plugin", Name: "Auth", Version: "1.4.0", Category: "security", Status: "active",
		Services: []string{"auth", "tokens"},
		MessageTypes: []plugin.MessageTypeInfo{
			{Type: "verify_token", Description: "Checks a token"},
			{Type: "list_users", Description: "Lists users", RequiredPermission: "users:read"},
		},
		Endpoints: []plugin.Endpoint{{Path: "/login", Methods: []string{"POST"}, Description: "Logs in"}},
		Instances: 2,
	}, {
		PluginID: "sso-plugin", Status: "active", Instances: 1,
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Discover = %+v\nwant %+v", got, want)
	}
	if none, err := s.Discover(testContext(t), plugin.Query{Service: "nothing"}); err != nil || none == nil || len(none) != 0 {
		t.Errorf("Discover with no provider = %#v, %v; want an empty slice", none, err)
	}
	run.cancel()
	if err := run.wait(t); err != nil {
		t.Fatal(err)
	}
	seen := receive(t, queries, "discover frames")
	if len(seen) != 2 || !proto.Equal(seen[0], &pluginhostv1.Discover{RequestId: seen[0].GetRequestId(), Service: "auth", MessageType: "verify_token"}) {
		t.Errorf("discover frames = %v", seen)
	}
}
