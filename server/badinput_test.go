package server_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// snapshot captures everything an API caller can see of the registry, secrets included.
func snapshot(e *env) string {
	e.t.Helper()
	list := e.mustREST("GET", "/api/v1/plugins", e.Admin, nil)
	var parts []string
	for _, p := range list["plugins"].([]any) {
		id := p.(map[string]any)["id"].(string)
		cfg := e.mustREST("GET", "/api/v1/plugins/"+id+"/config?include_secrets=true", e.Admin, nil)
		perms := e.mustREST("GET", "/api/v1/plugins/"+id+"/permissions", e.Admin, nil)
		logs := e.mustREST("GET", "/api/v1/plugins/"+id+"/logs?per_page=1000", e.Admin, nil)
		b, _ := json.Marshal([]any{p, cfg, perms, logs["pagination"]})
		parts = append(parts, string(b))
	}
	b, _ := json.Marshal(list["summary"])
	return string(b) + "\n" + strings.Join(parts, "\n") + "\n" + fmt.Sprint(pluginDirs(e.t, e.DataDir))
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

// rawPackage builds a .tar.gz from raw headers (for hostile archives).
func rawPackage(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			if h.Size == 0 {
				h.Size = int64(len(e.body))
			}
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func manifestEntry(id string) tarEntry {
	m, _ := json.Marshal(map[string]any{"id": id, "name": "Hostile", "version": "1.0.0", "entry_point": "bin/x"})
	return tarEntry{hdr: tar.Header{Name: "plugin.json"}, body: string(m)}
}

func TestBadInputLeavesStoreUnchanged(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"api_key": "s3cret"})
	before := snapshot(e)

	bigZeros := strings.Repeat("\x00", 1<<20)
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
		field              string // a field the error must name, when set
	}{
		{"malformed JSON", "POST", "/api/v1/plugins/install", `{"source": "file",`, 400, "VALIDATION_ERROR", ""},
		{"malformed config JSON", "PUT", "/api/v1/plugins/analytics-plugin/config", `{"batch_size":`, 400, "VALIDATION_ERROR", ""},
		{"unknown body field", "POST", "/api/v1/plugins/install", `{"source": "file", "no_such_field": 1}`, 400, "VALIDATION_ERROR", ""},
		{"unknown query parameter", "GET", "/api/v1/plugins?bogus=1", nil, 400, "VALIDATION_ERROR", "bogus"},
		{"query parameter of the body", "POST", "/api/v1/plugins/analytics-plugin/enable?force=1", map[string]any{}, 400, "VALIDATION_ERROR", "force"},
		{"query boolean not a boolean", "DELETE", "/api/v1/plugins/analytics-plugin?force=yes", nil, 400, "VALIDATION_ERROR", "force"},
		{"query time not a time", "GET", "/api/v1/plugins/analytics-plugin/logs?start_time=yesterday", nil, 400, "VALIDATION_ERROR", "start_time"},
		{"query number not a number", "GET", "/api/v1/plugins/search?min_rating=high", nil, 400, "VALIDATION_ERROR", "min_rating"},
		{"query parameter given twice", "GET", "/api/v1/plugins?status=active&status=error", nil, 400, "VALIDATION_ERROR", "status"},
		{"wrong JSON type", "POST", "/api/v1/plugins/install", `{"source": 7}`, 400, "VALIDATION_ERROR", ""},
		{"unknown source enum", "POST", "/api/v1/plugins/install", map[string]any{"source": "ftp"}, 400, "VALIDATION_ERROR", "source"},
		{"file source without package", "POST", "/api/v1/plugins/install", map[string]any{"source": "file"}, 400, "VALIDATION_ERROR", ""},
		{"unknown status enum", "GET", "/api/v1/plugins?status=sleeping", nil, 400, "VALIDATION_ERROR", "status"},
		{"bad plugin id", "GET", "/api/v1/plugins/Not_An_Id/config", nil, 400, "VALIDATION_ERROR", "plugin_id"},
		{"reserved plugin id", "GET", "/api/v1/plugins/search/config", nil, 400, "VALIDATION_ERROR", "plugin_id"},
		{"per_page out of range", "GET", "/api/v1/plugins/analytics-plugin/logs?per_page=5000", nil, 400, "VALIDATION_ERROR", "per_page"},
		{"per_page not a number", "GET", "/api/v1/plugins/analytics-plugin/logs?per_page=many", nil, 400, "VALIDATION_ERROR", "per_page"},
		{"unknown log level", "GET", "/api/v1/plugins/analytics-plugin/logs?level=LOUD", nil, 400, "VALIDATION_ERROR", "level"},
		{"timeout out of range", "POST", "/api/v1/plugins/analytics-plugin/disable", map[string]any{"timeout_seconds": 0}, 400, "VALIDATION_ERROR", "timeout_seconds"},
		{"bad security level", "PUT", "/api/v1/plugins/analytics-plugin/permissions", map[string]any{"security_level": "extreme"}, 400, "VALIDATION_ERROR", "security_level"},
		{"bad permission string", "PUT", "/api/v1/plugins/analytics-plugin/permissions", map[string]any{"grant": []string{"no colon"}}, 400, "VALIDATION_ERROR", "grant[0]"},
		{"grant and revoke at once", "PUT", "/api/v1/plugins/analytics-plugin/permissions", map[string]any{"grant": []string{"a:b"}, "revoke": []string{"a:b"}}, 400, "VALIDATION_ERROR", "grant"},
		{"oversized message payload", "POST", "/api/v1/plugins/analytics-plugin/message", map[string]any{"target_plugin": "analytics-plugin",
			"message_type": "data_request", "data": map[string]any{"blob": strings.Repeat("x", 1<<20+10)}}, 400, "VALIDATION_ERROR", "data"},
		{"no such REST path", "GET", "/api/v1/nowhere/at/all", nil, 404, "NOT_FOUND", ""},
		{"oversized body", "POST", "/api/v1/plugins/install", `{"source":"file","package_data":"` + strings.Repeat("A", 9<<20) + `"}`, 413, "REQUEST_TOO_LARGE", ""},
		{"config wrong type", "PUT", "/api/v1/plugins/analytics-plugin/config", map[string]any{"batch_size": "lots"}, 400, "PLUGIN_CONFIGURATION_ERROR", "batch_size"},
		{"config below min", "PUT", "/api/v1/plugins/analytics-plugin/config", map[string]any{"batch_size": 5}, 400, "PLUGIN_CONFIGURATION_ERROR", "batch_size"},
		{"config not an integer", "PUT", "/api/v1/plugins/analytics-plugin/config", map[string]any{"batch_size": 10.5}, 400, "PLUGIN_CONFIGURATION_ERROR", "batch_size"},
		{"config enum", "PUT", "/api/v1/plugins/analytics-plugin/config", map[string]any{"storage_backend": "tape"}, 400, "PLUGIN_CONFIGURATION_ERROR", "storage_backend"},
		{"config unknown field", "PUT", "/api/v1/plugins/analytics-plugin/config", map[string]any{"batchsize": 100}, 400, "PLUGIN_CONFIGURATION_ERROR", "batchsize"},
		{"config one bad among good", "PUT", "/api/v1/plugins/analytics-plugin/config", map[string]any{"batch_size": 100, "flush_interval": "soon"}, 400, "PLUGIN_CONFIGURATION_ERROR", "flush_interval"},
		{"config body not an object", "PUT", "/api/v1/plugins/analytics-plugin/config", `[1,2]`, 400, "VALIDATION_ERROR", ""},
		{"install with bad initial config", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "force_reinstall": true,
			"package_data": pkg(t, analyticsManifest("1.3.0"), nil), "config": map[string]any{"batch_size": true}}, 400, "PLUGIN_CONFIGURATION_ERROR", "batch_size"},
		{"invalid manifest", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": pkg(t, map[string]any{
			"id": "Bad_Id", "name": "x", "version": "1.x", "entry_point": "/abs/path"}, nil)}, 400, "VALIDATION_ERROR", "version"},
		{"manifest unknown field", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": pkg(t, map[string]any{
			"id": "fine-id", "name": "x", "version": "1.0.0", "entry_point": "bin/x", "surprise": true}, nil)}, 400, "VALIDATION_ERROR", "surprise"},
		{"incompatible nexus version", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": pkg(t, map[string]any{
			"id": "future-plugin", "name": "x", "version": "1.0.0", "entry_point": "bin/x", "nexus_version": ">=9.0.0"}, nil)}, 400, "PLUGIN_INCOMPATIBLE", ""},
		{"wrong architecture", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": pkg(t, map[string]any{
			"id": "other-arch", "name": "x", "version": "1.0.0", "entry_point": "bin/x", "arch": []string{"s390x"}}, nil)}, 400, "PLUGIN_INCOMPATIBLE", ""},
		{"missing dependency", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": pkg(t, map[string]any{
			"id": "needs-things", "name": "x", "version": "1.0.0", "entry_point": "bin/x",
			"dependencies": map[string]any{"plugins": map[string]any{"auth-plugin": ">=1.0.0"}}}, nil)}, 409, "PLUGIN_DEPENDENCY_ERROR", "dependencies.plugins.auth-plugin"},
		{"dependency too old", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": pkg(t, map[string]any{
			"id": "needs-new", "name": "x", "version": "1.0.0", "entry_point": "bin/x",
			"dependencies": map[string]any{"plugins": map[string]any{"analytics-plugin": ">=2.0.0"}}}, nil)}, 409, "PLUGIN_DEPENDENCY_ERROR", "dependencies.plugins.analytics-plugin"},
		{"already installed", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": pkg(t, analyticsManifest("1.2.0"), nil)}, 409, "PLUGIN_ALREADY_INSTALLED", ""},
		{"relative file path", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "file_path": "plugin.tar.gz"}, 400, "VALIDATION_ERROR", "file_path"},
		{"missing file", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "file_path": "/nonexistent/plugin.tar.gz"}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"not a gzip", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": []byte("just text, not a package")}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"archive absolute path", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": rawPackage(t, []tarEntry{
			manifestEntry("hostile-abs"), {hdr: tar.Header{Name: "/etc/evil"}, body: "x"}})}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"archive dot-dot", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": rawPackage(t, []tarEntry{
			manifestEntry("hostile-dots"), {hdr: tar.Header{Name: "bin/../../evil"}, body: "x"}})}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"archive symlink escape", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": rawPackage(t, []tarEntry{
			manifestEntry("hostile-link"), {hdr: tar.Header{Name: "escape", Typeflag: tar.TypeSymlink, Linkname: "../../.."}}})}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"archive absolute symlink", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": rawPackage(t, []tarEntry{
			manifestEntry("hostile-alink"), {hdr: tar.Header{Name: "passwd", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}})}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"archive write through symlink", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": rawPackage(t, []tarEntry{
			manifestEntry("hostile-through"), {hdr: tar.Header{Name: "dir", Typeflag: tar.TypeSymlink, Linkname: "."}},
			{hdr: tar.Header{Name: "dir/../../x"}, body: "x"}})}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"archive device file", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": rawPackage(t, []tarEntry{
			manifestEntry("hostile-dev"), {hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}})}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"archive fifo", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": rawPackage(t, []tarEntry{
			manifestEntry("hostile-fifo"), {hdr: tar.Header{Name: "pipe", Typeflag: tar.TypeFifo}}})}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"archive without manifest", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": rawPackage(t, []tarEntry{
			{hdr: tar.Header{Name: "README"}, body: "hi"}})}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"decompression bomb", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": bombPackage(t, bigZeros)}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
		{"too many files", "POST", "/api/v1/plugins/install", map[string]any{"source": "file", "package_data": manyFilesPackage(t, 600)}, 500, "PLUGIN_INSTALLATION_FAILED", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := e.rest(c.method, c.path, e.Admin, c.body)
			if res.Status != c.status || res.errorCode() != c.code {
				t.Fatalf("got %d %s, want %d %s: %.400s", res.Status, res.errorCode(), c.status, c.code, res.Raw)
			}
			errObj := res.Body["error"].(map[string]any)
			msg, _ := errObj["message"].(string)
			if msg == "" || strings.Contains(msg, e.DataDir) {
				t.Errorf("message %q is empty or leaks server paths", msg)
			}
			// Errors of decoding must be about the input, not a handler that ran on an
			// empty message (which would complain about plugin_id or source).
			if strings.Contains(c.name, "JSON") || strings.Contains(c.name, "unknown") {
				if strings.Contains(string(res.Raw), `"plugin_id"`) || strings.Contains(msg, "must be in list") {
					t.Errorf("a handler ran on an undecoded request: %s", res.Raw)
				}
			}
			if c.field != "" {
				found := false
				details, _ := errObj["details"].(map[string]any)
				fields, _ := details["fields"].([]any)
				for _, f := range fields {
					if f.(map[string]any)["field"] == c.field {
						found = true
					}
				}
				if !found {
					t.Errorf("error does not name field %q: %s", c.field, res.Raw)
				}
			}
			if after := snapshot(e); after != before {
				t.Fatalf("store changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// bombPackage is a valid manifest followed by 24 MiB of zeros, which compress to about
// 24 KiB. The test server allows 8 MiB unpacked, so it must be refused.
func bombPackage(t *testing.T, chunk string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	m := manifestEntry("bomb-plugin")
	_ = tw.WriteHeader(&tar.Header{Name: "plugin.json", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(m.body))})
	_, _ = tw.Write([]byte(m.body))
	const size = 24 << 20
	_ = tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: size})
	for written := 0; written < size; written += len(chunk) {
		if _, err := tw.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

func manyFilesPackage(t *testing.T, n int) []byte {
	t.Helper()
	entries := []tarEntry{manifestEntry("many-files")}
	for i := 0; i < n; i++ {
		entries = append(entries, tarEntry{hdr: tar.Header{Name: fmt.Sprintf("f/%05d", i)}, body: "x"})
	}
	return rawPackage(t, entries)
}

func TestSecretsAreMaskedAndEncryptedAtRest(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	up := e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"api_key": "top-secret-value", "batch_size": 200})
	if got := up["configuration"].(map[string]any)["api_key"]; got != "***hidden***" {
		t.Errorf("update answer shows api_key = %v", got)
	}
	if got := up["updated_fields"]; !reflect.DeepEqual(got, []any{"api_key", "batch_size"}) {
		t.Errorf("updated_fields = %v", got)
	}
	if up["restart_required"] != false {
		t.Errorf("restart_required = %v, want false (no changed field needs it)", up["restart_required"])
	}
	again := e.mustREST("PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, map[string]any{"flush_interval": 90, "api_key": "***hidden***"})
	if again["restart_required"] != true || !reflect.DeepEqual(again["updated_fields"], []any{"flush_interval"}) {
		t.Errorf("flush_interval change: %v", again)
	}
	for _, tok := range []string{e.Admin, e.User} {
		cfg := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/config", tok, nil)
		if got := cfg["configuration"].(map[string]any)["api_key"]; got != "***hidden***" {
			t.Errorf("GET config shows api_key = %v", got)
		}
	}
	admin := e.mustREST("GET", "/api/v1/plugins/analytics-plugin/config?include_secrets=true", e.Admin, nil)
	if got := admin["configuration"].(map[string]any)["api_key"]; got != "top-secret-value" {
		t.Errorf("admin include_secrets shows api_key = %v", got)
	}
	res := e.rest("GET", "/api/v1/plugins/analytics-plugin/config?include_secrets=true", e.User, nil)
	if res.Status != http.StatusForbidden || res.errorCode() != "PLUGIN_PERMISSION_DENIED" {
		t.Errorf("user include_secrets: %d %s", res.Status, res.Raw)
	}
	detail := e.mustREST("GET", "/api/v1/plugins/analytics-plugin", e.Admin, nil)
	if got := detail["plugin"].(map[string]any)["configuration"].(map[string]any)["current"].(map[string]any)["api_key"]; got != "***hidden***" {
		t.Errorf("detail view shows api_key = %v", got)
	}
	// At rest: the database file must not contain the secret in clear.
	assertNotInDataDir(t, e.DataDir, "top-secret-value")
}

// assertNotInDataDir fails when any file of the data directory contains needle.
func assertNotInDataDir(t *testing.T, dir, needle string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(needle)) {
			t.Errorf("%s contains the secret in clear", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMalformedConnectJSONGetsTheAPIError(t *testing.T) {
	e := startServer(t)
	for _, body := range []string{`{"plugin_id": `, `{"bogus": 1}`, `{"plugin_id": 7}`} {
		req, _ := http.NewRequest("POST", e.URL+"/nexus.plugin.v1.PluginService/GetPlugin", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Connect-Protocol-Version", "1")
		req.Header.Set("Authorization", "Bearer "+e.Admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Details []struct {
				Type  string         `json:"type"`
				Debug map[string]any `json:"debug"`
			} `json:"details"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || got.Code != "invalid_argument" || len(got.Details) == 0 || got.Details[0].Debug["reason"] != "VALIDATION_ERROR" {
			t.Errorf("%s: %d %+v", body, resp.StatusCode, got)
		}
	}
}

// unsized hides the length of a body, so that it is sent chunked.
type unsized struct{ io.Reader }

// TestOversizedBodiesAreRefused sends bodies over their limit, of known length and
// chunked, over REST and Connect. The transcoder and connect-go report these with errors of
// their own (resource_exhausted, whose text names http.MaxBytesReader); the caller must get
// REQUEST_TOO_LARGE on every path, which also pins what vanguard answers for them.
func TestOversizedBodiesAreRefused(t *testing.T) {
	e := startServer(t)
	mustInstall(e, analyticsManifest("1.2.0"))
	// Over the 4 MiB message limit, under the 8 MiB upload limit of the test server.
	config := `{"batch_size": 100, "padding": "` + strings.Repeat("A", 5<<20) + `"}`
	upload := `{"source":"file","package_data":"` + strings.Repeat("A", 9<<20) + `"}`
	cases := []struct {
		name, method, path, body string
		connect, chunked         bool
	}{
		{"REST config", "PUT", "/api/v1/plugins/analytics-plugin/config", config, false, false},
		{"REST config chunked", "PUT", "/api/v1/plugins/analytics-plugin/config", config, false, true},
		{"REST upload chunked", "POST", "/api/v1/plugins/install", upload, false, true},
		{"Connect config", "POST", "/nexus.plugin.v1.PluginService/UpdatePluginConfig", `{"plugin_id":"analytics-plugin","config":` + config + `}`, true, false},
		{"Connect config chunked", "POST", "/nexus.plugin.v1.PluginService/UpdatePluginConfig", `{"plugin_id":"analytics-plugin","config":` + config + `}`, true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(c.body)
			if c.chunked {
				body = unsized{body}
			}
			req, _ := http.NewRequest(c.method, e.URL+c.path, body)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+e.Admin)
			if c.connect {
				req.Header.Set("Connect-Protocol-Version", "1")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var got struct {
				Code  json.RawMessage `json:"code"` // Connect
				Error struct {
					Code string `json:"code"`
				} `json:"error"` // REST
				Details []struct {
					Debug map[string]any `json:"debug"`
				} `json:"details"`
			}
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("%d %.300s: %v", resp.StatusCode, raw, err)
			}
			if c.connect {
				if string(got.Code) != `"resource_exhausted"` || len(got.Details) == 0 || got.Details[0].Debug["reason"] != "REQUEST_TOO_LARGE" {
					t.Fatalf("got %d %.300s, want resource_exhausted with reason REQUEST_TOO_LARGE", resp.StatusCode, raw)
				}
				return
			}
			if resp.StatusCode != http.StatusRequestEntityTooLarge || got.Error.Code != "REQUEST_TOO_LARGE" {
				t.Fatalf("got %d %.300s, want 413 REQUEST_TOO_LARGE", resp.StatusCode, raw)
			}
		})
	}
}
