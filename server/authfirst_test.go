package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/server"
)

// rawAnswer is what a raw REST or Connect call got: the status, and the error's code (the
// REST envelope's error.code, or the Connect error's code and ErrorInfo reason).
type rawAnswer struct {
	status              int
	code, reason, msg   string
	raw                 string
	restEnvelopeSuccess *bool
}

// rawCall sends body to path with token ("" sends none) over REST or Connect (JSON),
// chunked when asked (no Content-Length), and decodes the error it gets.
func rawCall(t *testing.T, e *env, method, path, token, body string, connectProtocol, chunked bool) rawAnswer {
	t.Helper()
	var rd io.Reader = strings.NewReader(body)
	if chunked {
		rd = unsized{rd}
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if connectProtocol {
		req.Header.Set("Connect-Protocol-Version", "1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		Success *bool  `json:"success"`
		Code    string `json:"code"` // Connect
		Message string `json:"message"`
		Details []struct {
			Debug map[string]any `json:"debug"`
		} `json:"details"`
		Error struct { // REST
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("%s %s: %d %.300s: %v", method, path, resp.StatusCode, raw, err)
	}
	a := rawAnswer{status: resp.StatusCode, raw: fmt.Sprintf("%.300s", raw), restEnvelopeSuccess: got.Success}
	if connectProtocol {
		a.code, a.msg = got.Code, got.Message
		if len(got.Details) > 0 {
			a.reason, _ = got.Details[0].Debug["reason"].(string)
		}
	} else {
		a.code, a.msg = got.Error.Code, got.Error.Message
	}
	return a
}

// A caller without a valid token is refused from its headers, before anything reads its
// body: whatever the body's size (over the 64 KiB a caller without a token used to be
// allowed, or over every limit), known or chunked, it gets UNAUTHENTICATED (401), never a
// body error. A caller with a valid token still gets the body-size error for the same body.
func TestUnauthenticatedBodiesAreRefusedBeforeReading(t *testing.T) {
	e := startServerWith(t, testLogSink(), 0, func(c *server.Config) { c.MaxMessageBytes = 1 << 20 })
	mustInstall(e, analyticsManifest("1.2.0"))
	expired := putToken(t, e, store.Token{Name: "expired", Role: store.RoleAdmin, ExpiresAt: time.Now().Add(-time.Minute)})
	config := func(n int) string { return `{"batch_size": 100, "padding": "` + strings.Repeat("A", n) + `"}` }
	type target struct {
		name, method, path string
		body               func(n int) string
		connect            bool
	}
	targets := []target{
		{"REST config", "PUT", "/api/v1/plugins/analytics-plugin/config", config, false},
		{"REST alias install", "POST", "/v1/plugins/install", func(n int) string {
			return `{"source":"file","package_data":"` + strings.Repeat("A", n) + `"}`
		}, false},
		{"Connect config", "POST", "/nexus.plugin.v1.PluginService/UpdatePluginConfig", func(n int) string {
			return `{"plugin_id":"analytics-plugin","config":` + config(n) + `}`
		}, true},
	}
	callers := []struct{ name, token string }{{"no token", ""}, {"unknown token", "nxt_no-such-token"}, {"expired token", expired}}
	for _, tg := range targets {
		for _, size := range []int{100 << 10, 2 << 20} {
			for _, chunked := range []bool{false, true} {
				for _, c := range callers {
					name := fmt.Sprintf("%s/%dKiB/chunked=%v/%s", tg.name, size>>10, chunked, c.name)
					t.Run(name, func(t *testing.T) {
						a := rawCall(t, e, tg.method, tg.path, c.token, tg.body(size), tg.connect, chunked)
						if tg.connect {
							if a.status != http.StatusUnauthorized || a.code != "unauthenticated" || a.reason != "UNAUTHENTICATED" {
								t.Fatalf("got %d %s; want 401 unauthenticated with reason UNAUTHENTICATED", a.status, a.raw)
							}
						} else if a.status != http.StatusUnauthorized || a.code != "UNAUTHENTICATED" || a.restEnvelopeSuccess == nil || *a.restEnvelopeSuccess {
							t.Fatalf("got %d %s; want the 401 UNAUTHENTICATED envelope", a.status, a.raw)
						}
						if c.name == "expired token" && !strings.Contains(a.msg, "expired") {
							t.Fatalf("the message %q does not say the token expired", a.msg)
						}
					})
				}
			}
		}
	}
	// With a valid token the same 2 MiB body is read, and is over the 1 MiB message limit.
	for _, chunked := range []bool{false, true} {
		a := rawCall(t, e, "PUT", "/api/v1/plugins/analytics-plugin/config", e.Admin, config(2<<20), false, chunked)
		if a.status != http.StatusRequestEntityTooLarge || a.code != "REQUEST_TOO_LARGE" {
			t.Errorf("REST, admin, chunked=%v: got %d %s; want 413 REQUEST_TOO_LARGE", chunked, a.status, a.raw)
		}
		a = rawCall(t, e, "POST", "/nexus.plugin.v1.PluginService/UpdatePluginConfig", e.Admin,
			`{"plugin_id":"analytics-plugin","config":`+config(2<<20)+`}`, true, chunked)
		if a.code != "resource_exhausted" || a.reason != "REQUEST_TOO_LARGE" {
			t.Errorf("Connect, admin, chunked=%v: got %d %s; want resource_exhausted with reason REQUEST_TOO_LARGE", chunked, a.status, a.raw)
		}
	}

	// The generated clients, on every protocol (gRPC and gRPC-Web included): a 2 MiB request
	// without a valid token is refused as unauthenticated.
	padding, err := structpb.NewStruct(map[string]any{"padding": strings.Repeat("A", 2<<20)})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range protocols {
		for _, c := range callers {
			client := nexus.New(e.URL, nexus.WithToken(c.token), nexus.WithProtocol(p.p))
			_, err := client.Plugins.UpdatePluginConfig(context.Background(), connect.NewRequest(&pluginv1.UpdatePluginConfigRequest{
				PluginId: "analytics-plugin", Config: padding}))
			if nexus.ErrorCode(err) != "UNAUTHENTICATED" || connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("%s, %s: %v; want UNAUTHENTICATED", p.name, c.name, err)
			}
		}
	}
}

// putToken stores tok (with a fresh id and secret) as another process on the same database
// would, and returns the secret.
func putToken(t *testing.T, e *env, tok store.Token) string {
	t.Helper()
	secret, err := identity.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	tok.ID = "tok_" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(secret[4:20]))
	tok.Hash = identity.Hash(secret)
	if tok.CreatedAt.IsZero() {
		tok.CreatedAt = time.Now().UTC().Add(-time.Hour)
	}
	st := openStore(t, e)
	defer st.Close()
	if err := st.Write(context.Background(), func(tx store.Tx) error { return tx.PutToken(tok) }); err != nil {
		t.Fatal(err)
	}
	return secret
}

// openStore opens the server's database as another process (the admin CLI) does while the
// server runs.
func openStore(t *testing.T, e *env) store.Store {
	t.Helper()
	st, err := storesqlite.Open(context.Background(), filepath.Join(e.DataDir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}
