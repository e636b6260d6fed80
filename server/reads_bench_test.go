package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/encoding/protojson"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
)

// benchPluginManifest is an external plugin with the content of a real one: endpoints,
// events, message types, permissions and a configuration schema with a secret.
func benchPluginManifest(i int) map[string]any {
	return map[string]any{
		"id": fmt.Sprintf("bench-plugin-%03d", i), "name": fmt.Sprintf("Bench plugin %03d", i), "version": "1.0.0",
		"description": "a plugin of the read benchmark", "author": "bench", "license": "MIT",
		"category": "testing", "tags": []string{"bench"}, "external": true, "nexus_version": ">=1.0.0",
		"permissions": []string{"database:read", "database:write", "events:emit", "messages:send"},
		"api_endpoints": []map[string]any{
			{"path": "/items", "methods": []string{"GET", "POST"}, "description": "List or create items"},
			{"path": "/items/{id}", "methods": []string{"GET", "PUT", "DELETE"}, "description": "One item"},
		},
		"events": map[string]any{
			"emits":      []map[string]any{{"type": "bench.item_created", "description": "An item was created"}},
			"subscribes": []map[string]any{{"type": "user.*", "description": "Every user event"}},
		},
		"message_types": []map[string]any{{"type": "item_request", "description": "Ask for an item"}},
		"configuration": map[string]any{
			"batch_size": map[string]any{"type": "integer", "default": 50, "min": 1, "max": 1000},
			"mode":       map[string]any{"type": "string", "enum": []string{"fast", "safe"}, "default": "safe"},
			"api_key":    map[string]any{"type": "string", "secret": true},
		},
	}
}

// BenchmarkListPlugins measures GET /api/v1/plugins with 100 installed plugins, one request
// at a time, in process (for profiles; nexus-bench compares it with the repositories endpoint
// under load).
func BenchmarkListPlugins(b *testing.B) {
	e := startServerWithLog(b, io.Discard, 0)
	for i := 1; i <= 100; i++ {
		m := benchPluginManifest(i)
		if res := installFromBytes(e, pkg(b, m, nil), map[string]any{"config": map[string]any{"api_key": "secret"}}); res.Status != http.StatusOK {
			b.Fatalf("install: %s", res.Raw)
		}
	}
	for _, path := range []string{"/api/v1/plugins", "/api/v1/plugins/bench-plugin-050", "/api/v1/plugins/repositories"} {
		b.Run(path, func(b *testing.B) {
			req, _ := http.NewRequest("GET", e.URL+path, nil)
			req.Header.Set("Authorization", "Bearer "+e.Admin)
			for b.Loop() {
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// bareListService serves one fixed list response, the way a handler that does no work
// would: the transport's own cost of the list.
type bareListService struct {
	pluginv1connect.UnimplementedPluginServiceHandler
	res    *pluginv1.ListPluginsResponse
	detail *pluginv1.GetPluginResponse
}

func (s *bareListService) ListPlugins(context.Context, *connect.Request[pluginv1.ListPluginsRequest]) (*connect.Response[pluginv1.ListPluginsResponse], error) {
	return connect.NewResponse(s.res), nil
}

func (s *bareListService) GetPlugin(context.Context, *connect.Request[pluginv1.GetPluginRequest]) (*connect.Response[pluginv1.GetPluginResponse], error) {
	return connect.NewResponse(s.detail), nil
}

// BenchmarkListPluginsBare serves the same 100-plugin list response (and the same detail) as
// BenchmarkListPlugins from a bare connect-go handler behind vanguard, configured as the server configures them,
// with no authentication, middleware or domain: what is left is the transport's cost of the
// response (protobuf, transcoding to JSON).
func BenchmarkListPluginsBare(b *testing.B) {
	e := startServerWithLog(b, io.Discard, 0)
	for i := 1; i <= 100; i++ {
		if res := installFromBytes(e, pkg(b, benchPluginManifest(i), nil), map[string]any{"config": map[string]any{"api_key": "secret"}}); res.Status != http.StatusOK {
			b.Fatalf("install: %s", res.Raw)
		}
	}
	client := pluginv1connect.NewPluginServiceClient(http.DefaultClient, e.URL)
	req := connect.NewRequest(&pluginv1.ListPluginsRequest{})
	req.Header().Set("Authorization", "Bearer "+e.Admin)
	list, err := client.ListPlugins(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	dreq := connect.NewRequest(&pluginv1.GetPluginRequest{PluginId: "bench-plugin-050"})
	dreq.Header().Set("Authorization", "Bearer "+e.Admin)
	detail, err := client.GetPlugin(context.Background(), dreq)
	if err != nil {
		b.Fatal(err)
	}
	path, handler := pluginv1connect.NewPluginServiceHandler(&bareListService{res: list.Msg, detail: detail.Msg})
	transcoder, err := vanguard.NewTranscoder([]*vanguard.Service{vanguard.NewService(path, handler, vanguard.WithTargetCodecs(vanguard.CodecProto))},
		vanguard.WithCodec(func(res vanguard.TypeResolver) vanguard.Codec {
			return &vanguard.JSONCodec{
				MarshalOptions:   protojson.MarshalOptions{Resolver: res, UseProtoNames: true, EmitUnpopulated: true},
				UnmarshalOptions: protojson.UnmarshalOptions{Resolver: res},
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(transcoder)
	defer srv.Close()
	for _, path := range []string{"/api/v1/plugins", "/api/v1/plugins/bench-plugin-050"} {
		b.Run(path, func(b *testing.B) {
			for b.Loop() {
				resp, err := http.Get(srv.URL + path)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// BenchmarkAuditedCall measures POST /api/v1/events with no subscriber, one request at a
// time: a state-changing call whose own work is small, so that its audit entry's cost shows.
func BenchmarkAuditedCall(b *testing.B) {
	e := startServerWithLog(b, io.Discard, 0)
	body := []byte(`{"type": "bench.happened", "data": {"n": 1}}`)
	for b.Loop() {
		req, _ := http.NewRequest("POST", e.URL+"/api/v1/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.Admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
