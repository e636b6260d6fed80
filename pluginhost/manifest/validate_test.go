package manifest_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

// base returns a minimal valid manifest as a JSON map for the cases to change.
func base() map[string]any {
	return map[string]any{"id": "demo-plugin", "name": "Demo", "version": "1.0.0", "entry_point": "bin/demo"}
}

// problemsOf parses data and returns the "field: description" of every problem.
func problemsOf(t *testing.T, data []byte) []string {
	t.Helper()
	m, err := manifest.Parse(data)
	if err == nil {
		if m == nil {
			t.Fatal("Parse returned neither a manifest nor an error")
		}
		return nil
	}
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("Parse error %T is not an *errs.Error", err)
	}
	if e.Code != errs.ValidationError || e.Message != "plugin manifest is invalid" || m != nil {
		t.Fatalf("Parse error = %v (code %s), manifest %v", e, e.Code, m)
	}
	var out []string
	for _, f := range e.Fields {
		out = append(out, f.String())
	}
	return out
}

func checkProblems(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("problems =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

func TestParseRules(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name   string
		change func(m map[string]any)
		want   []string // "field: description prefix"; nil means valid
	}{
		// id
		{"id missing", func(m map[string]any) { delete(m, "id") }, []string{"id: is required"}},
		{"id not a string", func(m map[string]any) { m["id"] = 5 }, []string{"id: must be a string"}},
		{"id upper case", func(m map[string]any) { m["id"] = "Demo-plugin" }, []string{"id: must be kebab-case"}},
		{"id too short", func(m map[string]any) { m["id"] = "ab" }, []string{"id: must be kebab-case"}},
		{"id too long", func(m map[string]any) { m["id"] = long(65) }, []string{"id: must be kebab-case"}},
		{"id longest", func(m map[string]any) { m["id"] = long(64) }, nil},
		{"id trailing hyphen", func(m map[string]any) { m["id"] = "demo-" }, []string{"id: must be kebab-case"}},
		{"id underscore", func(m map[string]any) { m["id"] = "demo_plugin" }, []string{"id: must be kebab-case"}},
		{"id reserved install", func(m map[string]any) { m["id"] = "install" }, []string{`id: "install" is a reserved word`}},
		{"id reserved broadcast", func(m map[string]any) { m["id"] = "broadcast" }, []string{`id: "broadcast" is a reserved word`}},
		{"id reserved search", func(m map[string]any) { m["id"] = "search" }, []string{`id: "search" is a reserved word`}},
		{"id reserved repositories", func(m map[string]any) { m["id"] = "repositories" }, []string{`id: "repositories" is a reserved word`}},
		// name, text fields
		{"name missing", func(m map[string]any) { delete(m, "name") }, []string{"name: is required"}},
		{"name blank", func(m map[string]any) { m["name"] = "  " }, []string{"name: is required"}},
		{"name too long", func(m map[string]any) { m["name"] = long(129) }, []string{"name: must be at most 128 characters long"}},
		{"name control character", func(m map[string]any) { m["name"] = "a\nb" }, []string{"name: must not contain control characters"}},
		{"description multiline", func(m map[string]any) { m["description"] = "line 1\nline 2\ttab" }, nil},
		{"description too long", func(m map[string]any) { m["description"] = long(4097) }, []string{"description: must be at most 4096 characters long"}},
		{"author blank", func(m map[string]any) { m["author"] = " " }, []string{"author: must not be blank"}},
		{"license too long", func(m map[string]any) { m["license"] = long(257) }, []string{"license: must be at most 256"}},
		{"python_version control", func(m map[string]any) { m["python_version"] = ">=3.8\x00" }, []string{"python_version: must not contain control characters"}},
		// version
		{"version missing", func(m map[string]any) { delete(m, "version") }, []string{"version: is required"}},
		{"version leading v", func(m map[string]any) { m["version"] = "v1.0.0" }, []string{"version: must be a semantic version"}},
		{"version two parts", func(m map[string]any) { m["version"] = "1.0" }, []string{"version: must be a semantic version"}},
		{"version leading zero", func(m map[string]any) { m["version"] = "01.0.0" }, []string{"version: must be a semantic version"}},
		{"version number", func(m map[string]any) { m["version"] = 1.0 }, []string{"version: must be a string"}},
		{"version prerelease and build", func(m map[string]any) { m["version"] = "1.0.0-rc.1+build.5" }, nil},
		// email, homepage, category, tags
		{"email invalid", func(m map[string]any) { m["email"] = "team at nexus" }, []string{"email: must be an email address"}},
		{"email with display name", func(m map[string]any) { m["email"] = "Team <team@nexus.dev>" }, []string{"email: must be an email address"}},
		{"homepage not http", func(m map[string]any) { m["homepage"] = "ftp://nexus.dev" }, []string{"homepage: must be an http or https URL"}},
		{"homepage relative", func(m map[string]any) { m["homepage"] = "nexus.dev/plugin" }, []string{"homepage: must be an http or https URL"}},
		{"category invalid", func(m map[string]any) { m["category"] = "Security Tools" }, []string{"category: must be 1 to 64 lowercase"}},
		{"tags duplicate", func(m map[string]any) { m["tags"] = []any{"a", "b", "a"} }, []string{"tags[2]: duplicates tags[0]"}},
		{"tags blank", func(m map[string]any) { m["tags"] = []any{""} }, []string{"tags[0]: must not be blank"}},
		{"tags not strings", func(m map[string]any) { m["tags"] = []any{"a", 1} }, []string{"tags[1]: must be a string"}},
		{"tags not an array", func(m map[string]any) { m["tags"] = "a" }, []string{"tags: must be an array"}},
		{"tags too many", func(m map[string]any) {
			var tags []any
			for i := range 33 {
				tags = append(tags, long(i+1))
			}
			m["tags"] = tags
		}, []string{"tags: must have at most 32 entries"}},
		// entry_point, args, external
		{"entry_point missing", func(m map[string]any) { delete(m, "entry_point") }, []string{"entry_point: is required unless external is true"}},
		{"entry_point absolute", func(m map[string]any) { m["entry_point"] = "/usr/bin/demo" }, []string{"entry_point: must be a path relative to the package root"}},
		{"entry_point drive", func(m map[string]any) { m["entry_point"] = "C:demo.exe" }, []string{"entry_point: must be a path relative to the package root"}},
		{"entry_point backslash", func(m map[string]any) { m["entry_point"] = `bin\demo.exe` }, []string{"entry_point: must use forward slashes"}},
		{"entry_point dotdot", func(m map[string]any) { m["entry_point"] = "bin/../../demo" }, []string{`entry_point: must not contain ".."`}},
		{"entry_point leading dotdot", func(m map[string]any) { m["entry_point"] = "../demo" }, []string{`entry_point: must not contain ".."`}},
		{"entry_point with arguments", func(m map[string]any) { m["entry_point"] = "python main.py" }, []string{"entry_point: must be a path without spaces"}},
		{"entry_point directory", func(m map[string]any) { m["entry_point"] = "bin/" }, []string{"entry_point: must name a file"}},
		{"entry_point dotted file name", func(m map[string]any) { m["entry_point"] = "./bin/demo..sh" }, nil},
		{"entry_point python style", func(m map[string]any) { m["entry_point"] = "auth_plugin:AuthPlugin" }, nil},
		{"args NUL", func(m map[string]any) { m["args"] = []any{"--ok", "a\x00b"} }, []string{"args[1]: must not contain NUL"}},
		{"args with spaces", func(m map[string]any) { m["args"] = []any{"--name", "two words"} }, nil},
		{"external without entry_point", func(m map[string]any) { m["external"] = true; delete(m, "entry_point") }, nil},
		{"external with entry_point", func(m map[string]any) { m["external"] = true }, []string{"entry_point: must be empty for an external plugin"}},
		{"external with args", func(m map[string]any) { m["external"] = true; delete(m, "entry_point"); m["args"] = []any{"x"} }, []string{"args: must be empty for an external plugin"}},
		{"external not boolean", func(m map[string]any) { m["external"] = "true" }, []string{"external: must be a boolean"}},
		// nexus_version
		{"nexus_version invalid", func(m map[string]any) { m["nexus_version"] = "newest" }, []string{"nexus_version: must be a semver constraint"}},
		{"nexus_version empty", func(m map[string]any) { m["nexus_version"] = "" }, []string{"nexus_version: must be a semver constraint"}},
		{"nexus_version range", func(m map[string]any) { m["nexus_version"] = ">=1.0.0, <2.0.0 || ^3" }, nil},
		// os, arch
		{"os unknown", func(m map[string]any) { m["os"] = []any{"linux", "linx"} }, []string{"os[1]: must be one of aix, android"}},
		{"os duplicate", func(m map[string]any) { m["os"] = []any{"linux", "linux"} }, []string{"os[1]: duplicates os[0]"}},
		{"arch unknown", func(m map[string]any) { m["arch"] = []any{"x86_64"} }, []string{"arch[0]: must be one of 386, amd64"}},
		// dependencies
		{"dependency bad id", func(m map[string]any) {
			m["dependencies"] = map[string]any{"plugins": map[string]any{"Auth_Plugin": ">=1.0.0"}}
		}, []string{"dependencies.plugins.Auth_Plugin: is not a valid plugin id"}},
		{"dependency bad constraint", func(m map[string]any) {
			m["dependencies"] = map[string]any{"plugins": map[string]any{"auth-plugin": "latest"}}
		}, []string{"dependencies.plugins.auth-plugin: must be a semver constraint"}},
		{"dependency on itself", func(m map[string]any) {
			m["dependencies"] = map[string]any{"plugins": map[string]any{"demo-plugin": "*"}}
		}, []string{"dependencies.plugins.demo-plugin: a plugin cannot depend on itself"}},
		{"dependency constraint not a string", func(m map[string]any) {
			m["dependencies"] = map[string]any{"plugins": map[string]any{"auth-plugin": 1}}
		}, []string{"dependencies.plugins.auth-plugin: must be a string"}},
		{"dependency plugins not an object", func(m map[string]any) {
			m["dependencies"] = map[string]any{"plugins": []any{"auth-plugin"}}
		}, []string{"dependencies.plugins: must be an object"}},
		{"dependency package name with space", func(m map[string]any) {
			m["dependencies"] = map[string]any{"packages": map[string]any{"py jwt": ">=2"}}
		}, []string{"dependencies.packages.py jwt: package name must be"}},
		{"dependencies unknown field", func(m map[string]any) {
			m["dependencies"] = map[string]any{"plugin": map[string]any{}}
		}, []string{"dependencies.plugin: unknown field"}},
		// permissions
		{"permission upper case", func(m map[string]any) { m["permissions"] = []any{"database:read", "Database:Write"} }, []string{"permissions[1]: must be a permission"}},
		{"permission without action", func(m map[string]any) { m["permissions"] = []any{"a:b", "c:d", "database"} }, []string{"permissions[2]: must be a permission"}},
		{"permission three parts", func(m map[string]any) { m["permissions"] = []any{"database:read:all"} }, []string{"permissions[0]: must be a permission"}},
		{"permission partial wildcard", func(m map[string]any) { m["permissions"] = []any{"events:user.*"} }, []string{"permissions[0]: must be a permission"}},
		{"permission wildcards", func(m map[string]any) { m["permissions"] = []any{"auth:*", "*:read", "*:*", "events:user.login"} }, nil},
		{"permission duplicate", func(m map[string]any) { m["permissions"] = []any{"auth:*", "auth:*"} }, []string{"permissions[1]: duplicates permissions[0]"}},
		// api_endpoints
		{"endpoint path missing", func(m map[string]any) { m["api_endpoints"] = []any{map[string]any{"methods": []any{"GET"}}} }, []string{"api_endpoints[0].path: is required"}},
		{"endpoint path relative", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "api/v1/x", "methods": []any{"GET"}}}
		}, []string{`api_endpoints[0].path: must start with "/"`}},
		{"endpoint path with query", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "/x?y=1", "methods": []any{"GET"}}}
		}, []string{"api_endpoints[0].path: must be a URL path"}},
		{"endpoint duplicate path", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "/x", "methods": []any{"GET"}}, map[string]any{"path": "/x", "methods": []any{"POST"}}}
		}, []string{"api_endpoints[1].path: duplicates api_endpoints[0].path"}},
		{"endpoint no methods", func(m map[string]any) { m["api_endpoints"] = []any{map[string]any{"path": "/x", "methods": []any{}}} }, []string{"api_endpoints[0].methods: must list at least one HTTP method"}},
		{"endpoint bad method", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "/x", "methods": []any{"GET", "FETCH"}}}
		}, []string{"api_endpoints[0].methods[1]: must be one of GET, HEAD"}},
		{"endpoint duplicate method after upper-casing", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "/x", "methods": []any{"get", "GET"}}}
		}, []string{"api_endpoints[0].methods[1]: duplicates api_endpoints[0].methods[0]"}},
		{"endpoint unknown field", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "/x", "method": "GET", "methods": []any{"GET"}}}
		}, []string{"api_endpoints[0].method: unknown field"}},
		{"endpoint not an object", func(m map[string]any) { m["api_endpoints"] = []any{"/x"} }, []string{"api_endpoints[0]: must be an object"}},
		{"endpoint bad auth", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "/x", "methods": []any{"GET"}, "auth": "everyone"}}
		}, []string{`api_endpoints[0].auth: must be "public", "token" or a permission`}},
		{"endpoint timeout too long", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "/x", "methods": []any{"GET"}, "timeout_seconds": 301}}
		}, []string{"api_endpoints[0].timeout_seconds: must be between 1 and 300"}},
		{"endpoint bad wildcard", func(m map[string]any) {
			m["api_endpoints"] = []any{map[string]any{"path": "/users/{id", "methods": []any{"GET"}}}
		}, []string{"api_endpoints[0].path: is not a valid pattern: parsing "}},
		{"endpoints in conflict", func(m map[string]any) {
			m["api_endpoints"] = []any{
				map[string]any{"path": "/users/{id}/x", "methods": []any{"GET"}},
				map[string]any{"path": "/users/a/{name}", "methods": []any{"GET"}},
			}
		}, []string{`api_endpoints[1].path: conflicts with api_endpoints[0] (GET /users/{id}/x): GET /users/a/{name} and GET /users/{id}/x both match some paths, like "/users/a/x".`}},
		// events
		{"emits wildcard", func(m map[string]any) { m["events"] = map[string]any{"emits": []any{"user.*"}} }, []string{"events.emits[0].type: must be an event type such as"}},
		{"emits object without type", func(m map[string]any) {
			m["events"] = map[string]any{"emits": []any{map[string]any{"description": "x"}}}
		}, []string{"events.emits[0].type: is required"}},
		{"emits bad type", func(m map[string]any) {
			m["events"] = map[string]any{"emits": []any{map[string]any{"type": "user..login"}}}
		}, []string{"events.emits[0].type: must be an event type such as"}},
		{"emits entry a number", func(m map[string]any) { m["events"] = map[string]any{"emits": []any{1}} }, []string{"events.emits[0]: must be an event type string or an object"}},
		{"emits duplicate", func(m map[string]any) {
			m["events"] = map[string]any{"emits": []any{"user.login", map[string]any{"type": "user.login"}}}
		}, []string{"events.emits[1].type: duplicates events.emits[0].type"}},
		{"subscribes wildcards", func(m map[string]any) {
			m["events"] = map[string]any{"subscribes": []any{"user.*", "*.error", "*", "a.*.b"}}
		}, nil},
		{"subscribes bad wildcard", func(m map[string]any) { m["events"] = map[string]any{"subscribes": []any{"user.log*"}} }, []string{"events.subscribes[0].type: must be an event type or pattern"}},
		{"events unknown field", func(m map[string]any) { m["events"] = map[string]any{"emit": []any{"a"}} }, []string{"events.emit: unknown field"}},
		{"event object unknown field", func(m map[string]any) {
			m["events"] = map[string]any{"emits": []any{map[string]any{"type": "a", "desc": "x"}}}
		}, []string{"events.emits[0].desc: unknown field"}},
		// message types, services
		{"message type missing", func(m map[string]any) { m["message_types"] = []any{map[string]any{"description": "x"}} }, []string{"message_types[0].type: is required"}},
		{"message type invalid", func(m map[string]any) { m["message_types"] = []any{map[string]any{"type": "data request"}} }, []string{"message_types[0].type: must be 1 to 128"}},
		{"message type duplicate", func(m map[string]any) {
			m["message_types"] = []any{map[string]any{"type": "data_request"}, map[string]any{"type": "data_request"}}
		}, []string{"message_types[1].type: duplicates message_types[0].type"}},
		{"message type wildcard permission", func(m map[string]any) {
			m["message_types"] = []any{map[string]any{"type": "data_request", "required_permission": "users:*"}}
		}, []string{"message_types[0].required_permission: must be a permission"}},
		{"message type invalid permission", func(m map[string]any) {
			m["message_types"] = []any{map[string]any{"type": "data_request", "required_permission": "users"}}
		}, []string{"message_types[0].required_permission: must be a permission"}},
		{"services invalid", func(m map[string]any) { m["services"] = []any{"ok", "1bad"} }, []string{"services[1]: must be 1 to 128"}},
		{"services duplicate", func(m map[string]any) { m["services"] = []any{"a", "a"} }, []string{"services[1]: duplicates services[0]"}},
		// configuration
		{"configuration bad default", func(m map[string]any) {
			m["configuration"] = map[string]any{"batch_size": map[string]any{"type": "integer", "default": "50", "min": 10}}
		}, []string{"configuration.batch_size.default: must be an integer"}},
		{"configuration min above max", func(m map[string]any) {
			m["configuration"] = map[string]any{"batch_size": map[string]any{"type": "integer", "min": 10, "max": 1}}
		}, []string{"configuration.batch_size.min: must not be greater than max (1)"}},
		{"configuration not an object", func(m map[string]any) { m["configuration"] = []any{} }, []string{"configuration: must be a JSON object"}},
		// resource limits, security, sandbox, timeout
		{"memory negative", func(m map[string]any) { m["resource_limits"] = map[string]any{"memory_mb": -1} }, []string{"resource_limits.memory_mb: must be between 0 and 65536"}},
		{"cpu too high", func(m map[string]any) { m["resource_limits"] = map[string]any{"cpu_percent": 6401} }, []string{"resource_limits.cpu_percent: must be between 0 and 6400"}},
		{"file handles fractional", func(m map[string]any) { m["resource_limits"] = map[string]any{"file_handles": 1.5} }, []string{"resource_limits.file_handles: must be an integer"}},
		{"file handles huge", func(m map[string]any) { m["resource_limits"] = map[string]any{"file_handles": 1e30} }, []string{"resource_limits.file_handles: is out of range"}},
		{"file handles string", func(m map[string]any) { m["resource_limits"] = map[string]any{"file_handles": "100"} }, []string{"resource_limits.file_handles: must be an integer"}},
		{"resource limits unknown", func(m map[string]any) { m["resource_limits"] = map[string]any{"memory": 1} }, []string{"resource_limits.memory: unknown field"}},
		{"security level unknown", func(m map[string]any) { m["security_level"] = "extreme" }, []string{"security_level: must be one of low, medium, high, critical"}},
		{"sandbox not boolean", func(m map[string]any) { m["sandbox"] = "yes" }, []string{"sandbox: must be a boolean"}},
		{"timeout zero", func(m map[string]any) { m["start_timeout_seconds"] = 0 }, []string{"start_timeout_seconds: must be between 1 and 600"}},
		{"timeout too long", func(m map[string]any) { m["start_timeout_seconds"] = 601 }, []string{"start_timeout_seconds: must be between 1 and 600"}},
		{"timeout bounds", func(m map[string]any) { m["start_timeout_seconds"] = 600 }, nil},
		{"instances zero", func(m map[string]any) { m["instances"] = 0 }, []string{"instances: must be between 1 and 64"}},
		{"instances too many", func(m map[string]any) { m["instances"] = 65 }, []string{"instances: must be between 1 and 64"}},
		{"instances not a number", func(m map[string]any) { m["instances"] = "two" }, []string{"instances: must be an integer"}},
		{"instances bounds", func(m map[string]any) { m["instances"] = 64 }, nil},
		// unknown fields
		{"unknown top-level field", func(m map[string]any) { m["entrypoint"] = "x" }, []string{"entrypoint: unknown field"}},
		{"every problem at once", func(m map[string]any) {
			m["id"] = "Bad"
			m["version"] = "1"
			m["permissions"] = []any{"ok:ok", "x", "y"}
			m["dependencies"] = map[string]any{"plugins": map[string]any{"auth-plugin": "nope"}}
			m["configuration"] = map[string]any{"batch_size": map[string]any{"type": "integer", "default": "50"}}
			m["events"] = map[string]any{"emits": []any{map[string]any{"type": "*"}}}
			m["homepage"] = 7
			m["zzz"] = true
		}, []string{
			"id: must be kebab-case",
			"version: must be a semantic version",
			"homepage: must be a string",
			"dependencies.plugins.auth-plugin: must be a semver constraint",
			"permissions[1]: must be a permission",
			"permissions[2]: must be a permission",
			"events.emits[0].type: must be an event type such as",
			"configuration.batch_size.default: must be an integer",
			"zzz: unknown field",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := base()
			c.change(m)
			data, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			checkProblems(t, problemsOf(t, data), c.want)
		})
	}
}

func TestParseDocumentProblems(t *testing.T) {
	t.Parallel()
	valid := `{"id": "demo-plugin", "name": "Demo", "version": "1.0.0", "entry_point": "run"}`
	cases := []struct {
		name string
		data string
		want []string
	}{
		{"empty", "", []string{"manifest: is not valid JSON: unexpected end of input"}},
		{"syntax error", "{\n  \"id\": \"x\",\n  oops\n}", []string{"manifest: is not valid JSON: invalid character 'o' looking for beginning of object key string (line 3, column"}},
		{"truncated", `{"id": "x"`, []string{"manifest: is not valid JSON: unexpected end of input"}},
		{"array", `[1, 2]`, []string{"manifest: must be a JSON object"}},
		{"null", `null`, []string{"manifest: must be a JSON object"}},
		{"string", `"plugin"`, []string{"manifest: must be a JSON object"}},
		{"trailing object", valid + `{}`, []string{"manifest: must hold one JSON object and nothing after it"}},
		{"trailing garbage", valid + ` x`, []string{"manifest: must hold one JSON object and nothing after it"}},
		{"trailing whitespace is fine", valid + " \n\t", nil},
		{"not UTF-8", `{"id": "demo-plugin", "name": "D` + "\xff" + `"}`, []string{"manifest: must be UTF-8 text"}},
		{"too large", `{"description": "` + strings.Repeat("a", manifest.MaxSize) + `"}`, []string{"manifest: must be at most 1048576 bytes"}},
		{"duplicate key", `{"id": "demo-plugin", "name": "Demo", "version": "1.0.0", "entry_point": "run", "id": "demo-plugin"}`,
			[]string{"id: duplicate key"}},
		{"nested duplicate key", `{"id": "demo-plugin", "name": "Demo", "version": "1.0.0", "entry_point": "run",
			"configuration": {"a": {"type": "string", "type": "integer"}}}`, []string{"configuration.a.type: duplicate key"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, problemsOf(t, []byte(c.data)), c.want)
		})
	}
}
