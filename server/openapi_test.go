package server_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/server"
	"github.com/nexus-platform/nexus/server/openapi"
)

// The served OpenAPI document is valid OpenAPI 3 (kin-openapi's validator), current (what
// make generate builds from the generated one), describes every REST route of the protos
// and the Server-Sent Events paths with the envelope and error codes, and is served to
// anyone at /openapi.json.
func TestOpenAPIDocument(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapi.Document)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("invalid OpenAPI document: %v", err)
	}

	generated, err := os.ReadFile("../gen/openapi/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var codes []openapi.ErrorCode
	for _, c := range server.ErrorCodes() {
		codes = append(codes, openapi.ErrorCode{Code: c.Code, HTTPStatus: c.HTTPStatus})
	}
	built, err := openapi.Build(generated, codes)
	if err != nil {
		t.Fatal(err)
	}
	if string(built) != string(openapi.Document) {
		t.Fatal("server/openapi/openapi.json is stale: run make generate")
	}

	routes := 0
	for _, name := range []string{pluginv1connect.PluginServiceName, pluginv1connect.RepositoryServiceName,
		pluginv1connect.MessagingServiceName, pluginv1connect.ClusterServiceName, pluginv1connect.AccessServiceName} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatal(err)
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := 0; i < methods.Len(); i++ {
			rule, _ := proto.GetExtension(methods.Get(i).Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			method, path := httpRule(rule)
			// No plugin endpoint may take a path of the API.
			if router.ReservedBy(method+" "+path) == "" {
				t.Errorf("%s %s (%s) is not a reserved path (router.ReservedPaths): a plugin could serve it", method, path, methods.Get(i).FullName())
			}
			op := doc.Paths.Find(path).GetOperation(method)
			if op == nil {
				t.Errorf("%s %s (%s) is not in the document", method, path, methods.Get(i).FullName())
				continue
			}
			routes++
			if op.Responses.Default() == nil || op.Responses.Default().Ref != "#/components/responses/Error" {
				t.Errorf("%s %s: no error response", method, path)
			}
			ok := op.Responses.Status(200)
			if ok == nil || ok.Value.Content.Get("application/json").Schema.Value.Properties["data"] == nil {
				t.Errorf("%s %s: the success answer is not in the envelope", method, path)
			}
		}
	}
	if routes < 25 {
		t.Fatalf("only %d REST routes found in the protos", routes)
	}
	for _, p := range []string{"/api/v1/events/stream", "/api/v1/plugins/{plugin_id}/logs/stream"} {
		if op := doc.Paths.Find(p).GetOperation(http.MethodGet); op == nil || op.Responses.Status(200).Value.Content.Get("text/event-stream") == nil {
			t.Errorf("%s is not in the document as Server-Sent Events", p)
		}
	}
	enum := doc.Components.Schemas["ErrorCode"].Value.Enum
	for _, c := range []string{"VALIDATION_ERROR", "PLUGIN_NOT_FOUND", "UNAUTHENTICATED", "REQUEST_TOO_LARGE"} {
		found := false
		for _, v := range enum {
			found = found || v == c
		}
		if !found {
			t.Errorf("ErrorCode lacks %s: %v", c, enum)
		}
	}

	e := startServer(t)
	resp, err := http.Get(e.URL + "/openapi.json") // no token
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || string(body) != string(openapi.Document) {
		t.Fatalf("GET /openapi.json: %d %s (%d bytes)", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
}

func httpRule(r *annotations.HttpRule) (string, string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet, p.Get
	case *annotations.HttpRule_Put:
		return http.MethodPut, p.Put
	case *annotations.HttpRule_Post:
		return http.MethodPost, p.Post
	case *annotations.HttpRule_Delete:
		return http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		return http.MethodPatch, p.Patch
	}
	return "", ""
}
