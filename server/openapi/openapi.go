// Package openapi holds the OpenAPI 3 document of the REST API that the server serves at
// /openapi.json, and Build, which makes it from what gnostic's protoc-gen-openapi generates
// from the protos' google.api.http rules (gen/openapi/openapi.yaml). `make generate` runs
// both; `make test` checks the committed document is current and valid.
package openapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Document is the OpenAPI document, as JSON.
//
//go:embed openapi.json
var Document []byte

// ErrorCode is an error code of the API with the HTTP status REST answers it with.
type ErrorCode struct {
	Code       string
	HTTPStatus int
}

// Build turns the generated document (YAML) into the served one (JSON): what the protos
// cannot say is added here.
//   - Every JSON answer is described inside the reference envelope
//     `{success, data, timestamp, request_id}`, and every operation's failures by the error
//     envelope `{success: false, error: {code, message, details}, ...}` with the codes and
//     their HTTP statuses.
//   - Bearer authentication, required everywhere.
//   - The Server-Sent Events paths, which are not RPCs: the event feed and a plugin's log
//     tail.
//
// The result depends only on its inputs: keys are sorted, as encoding/json writes maps.
func Build(generated []byte, codes []ErrorCode) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(generated, &doc); err != nil {
		return nil, fmt.Errorf("the generated document: %w", err)
	}
	paths, _ := doc["paths"].(map[string]any)
	components, _ := doc["components"].(map[string]any)
	if paths == nil || components == nil {
		return nil, fmt.Errorf("the generated document has no paths or components")
	}
	schemas, _ := components["schemas"].(map[string]any)
	if schemas == nil {
		return nil, fmt.Errorf("the generated document has no schemas")
	}

	info, _ := doc["info"].(map[string]any)
	if info == nil {
		info = map[string]any{}
		doc["info"] = info
	}
	info["description"] = description
	doc["servers"] = []any{map[string]any{"url": "/", "description": "The server that serves this document; every path also answers under /v1/ in place of /api/v1/."}}
	doc["security"] = []any{map[string]any{"bearer": []any{}}}
	components["securitySchemes"] = map[string]any{"bearer": map[string]any{
		"type": "http", "scheme": "bearer",
		"description": "A Nexus token (admin, user or plugin): `Authorization: Bearer <token>`. What each role may call is in the operation's description.",
	}}

	statuses := map[int][]string{}
	enum := make([]any, 0, len(codes))
	for _, c := range codes {
		enum = append(enum, c.Code)
		statuses[c.HTTPStatus] = append(statuses[c.HTTPStatus], c.Code)
	}
	schemas["ErrorCode"] = map[string]any{"type": "string", "enum": enum, "description": "The error code; the HTTP status follows from it (see the Error response)."}
	schemas["ErrorEnvelope"] = errorEnvelope()
	components["responses"] = map[string]any{"Error": map[string]any{
		"description": "The call failed: " + statusList(statuses),
		"content":     map[string]any{"application/json": map[string]any{"schema": ref("ErrorEnvelope")}},
	}}

	for _, item := range paths {
		ops, _ := item.(map[string]any)
		for method, op := range ops {
			o, ok := op.(map[string]any)
			if !ok || !isMethod(method) {
				continue
			}
			responses, _ := o["responses"].(map[string]any)
			if responses == nil {
				responses = map[string]any{}
				o["responses"] = responses
			}
			for status, r := range responses {
				resp, _ := r.(map[string]any)
				if !strings.HasPrefix(status, "2") || resp == nil {
					continue
				}
				content, _ := resp["content"].(map[string]any)
				if js, ok := content["application/json"].(map[string]any); ok {
					js["schema"] = envelope(js["schema"])
				}
			}
			responses["default"] = ref("Error")
		}
	}
	paths["/api/v1/events/stream"] = sseOperation("MessagingService_EventsStream", "MessagingService",
		"The event feed as Server-Sent Events (WatchEvents for browsers and curl): each event is `id: <event id>`, `event: <type>` and `data: <the event as JSON>`; a comment every 15 s keeps the connection open; an `error` event ends a feed that fell too far behind.",
		[]any{map[string]any{"name": "patterns", "in": "query", "description": "Event type patterns (`user.*`); repeated or comma-separated; none for every event.",
			"schema": map[string]any{"type": "array", "items": map[string]any{"type": "string"}}, "style": "form", "explode": true}})
	paths["/api/v1/plugins/{plugin_id}/logs/stream"] = sseOperation("PluginService_LogsStream", "PluginService",
		"A plugin's live log tail as Server-Sent Events (TailPluginLogs for browsers and curl): each entry is `event: log` with `data: <the entry as JSON, as GET .../logs gives it>`, the backlog first.",
		[]any{
			map[string]any{"name": "plugin_id", "in": "path", "required": true, "schema": map[string]any{"type": "string"}},
			map[string]any{"name": "level", "in": "query", "description": "The lowest level sent.", "schema": map[string]any{"type": "string", "enum": []any{"DEBUG", "INFO", "WARNING", "ERROR"}}},
			map[string]any{"name": "search", "in": "query", "description": "Only entries whose message contains it, ignoring case.", "schema": map[string]any{"type": "string"}},
			map[string]any{"name": "backlog", "in": "query", "description": "The newest stored entries sent first (0 to 1000).", "schema": map[string]any{"type": "integer", "minimum": 0, "maximum": 1000}},
		})

	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

const description = "The REST form of the Nexus API (the same handlers also serve gRPC, gRPC-Web and Connect on the same port).\n\n" +
	"Every answer is a JSON envelope: `{\"success\": true, \"data\": ..., \"timestamp\": ..., \"request_id\": ...}` on success and " +
	"`{\"success\": false, \"error\": {\"code\", \"message\", \"details\"}, ...}` on failure, with the HTTP status of the code. " +
	"A bad field or query parameter is named in `error.details.fields`.\n\n" +
	"Query parameters: booleans take true, false, 1, 0 or nothing (`?force`); lists take repeated keys or commas; times take RFC 3339 or a date; " +
	"names are the proto names or their JSON names. Calls with a body take no query parameters."

func isMethod(m string) bool {
	switch strings.ToUpper(m) {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch:
		return true
	}
	return false
}

func ref(name string) map[string]any {
	if name == "Error" {
		return map[string]any{"$ref": "#/components/responses/Error"}
	}
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// envelope is the success envelope around data.
func envelope(data any) map[string]any {
	if data == nil {
		data = map[string]any{"type": "object"}
	}
	return map[string]any{
		"type":     "object",
		"required": []any{"success", "data", "timestamp", "request_id"},
		"properties": map[string]any{
			"success":    map[string]any{"type": "boolean", "enum": []any{true}},
			"data":       data,
			"timestamp":  map[string]any{"type": "string", "format": "date-time"},
			"request_id": map[string]any{"type": "string", "description": "The request's id (X-Request-Id), also in the server's log."},
		},
	}
}

func errorEnvelope() map[string]any {
	return map[string]any{
		"type":     "object",
		"required": []any{"success", "error", "timestamp", "request_id"},
		"properties": map[string]any{
			"success": map[string]any{"type": "boolean", "enum": []any{false}},
			"error": map[string]any{
				"type":     "object",
				"required": []any{"code", "message", "details"},
				"properties": map[string]any{
					"code":    ref("ErrorCode"),
					"message": map[string]any{"type": "string"},
					"details": map[string]any{
						"type":                 "object",
						"additionalProperties": true,
						"properties": map[string]any{
							"fields": map[string]any{
								"type":        "array",
								"description": "The bad fields or parameters, named as the caller wrote them.",
								"items": map[string]any{"type": "object", "properties": map[string]any{
									"field":       map[string]any{"type": "string"},
									"description": map[string]any{"type": "string"},
								}},
							},
						},
					},
				},
			},
			"timestamp":  map[string]any{"type": "string", "format": "date-time"},
			"request_id": map[string]any{"type": "string"},
		},
	}
}

// statusList says which codes each HTTP status carries.
func statusList(statuses map[int][]string) string {
	keys := make([]int, 0, len(statuses))
	for s := range statuses {
		keys = append(keys, s)
	}
	sort.Ints(keys)
	parts := make([]string, 0, len(keys))
	for _, s := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", s, strings.Join(statuses[s], ", ")))
	}
	return strings.Join(parts, "; ") + "."
}

// sseOperation is a GET path answering a stream of Server-Sent Events.
func sseOperation(id, tag, desc string, params []any) map[string]any {
	return map[string]any{"get": map[string]any{
		"operationId": id,
		"tags":        []any{tag},
		"description": desc,
		"parameters":  params,
		"responses": map[string]any{
			"200": map[string]any{
				"description": "The stream, until the client goes away.",
				"content":     map[string]any{"text/event-stream": map[string]any{"schema": map[string]any{"type": "string"}}},
			},
			"default": ref("Error"),
		},
	}}
}
