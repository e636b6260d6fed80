package server_test

import (
	"context"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/server"
)

// rawSession is a plugin stream driven frame by frame, over gRPC (grpc-go) or Connect.
type rawSession interface {
	send(*pluginhostv1.ConnectRequest) error
	recv() (*pluginhostv1.ConnectResponse, error)
	// code is the Connect code of the error that ended the stream.
	code(error) connect.Code
}

type grpcRaw struct{ cs grpc.ClientStream }

func (g grpcRaw) send(f *pluginhostv1.ConnectRequest) error { return g.cs.SendMsg(f) }
func (g grpcRaw) recv() (*pluginhostv1.ConnectResponse, error) {
	var f pluginhostv1.ConnectResponse
	return &f, g.cs.RecvMsg(&f)
}
func (g grpcRaw) code(err error) connect.Code {
	switch grpcstatus.Code(err) {
	case codes.Unavailable:
		return connect.CodeUnavailable
	case codes.Unauthenticated:
		return connect.CodeUnauthenticated
	}
	return connect.CodeUnknown
}

type connectRaw struct {
	s *connect.BidiStreamForClient[pluginhostv1.ConnectRequest, pluginhostv1.ConnectResponse]
}

func (c connectRaw) send(f *pluginhostv1.ConnectRequest) error    { return c.s.Send(f) }
func (c connectRaw) recv() (*pluginhostv1.ConnectResponse, error) { return c.s.Receive() }
func (c connectRaw) code(err error) connect.Code                  { return connect.CodeOf(err) }

// openRawSession opens a plugin stream with token over transport ("grpc" or "connect"), says
// hello and waits for the welcome. A refused stream returns the error instead.
func openRawSession(t *testing.T, ctx context.Context, e *env, transport, id, token string) (rawSession, error) {
	t.Helper()
	var s rawSession
	switch transport {
	case "grpc":
		u, err := url.Parse(e.URL)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		callCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		cs, err := conn.NewStream(callCtx, &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true},
			pluginhostv1connect.PluginHostServiceConnectProcedure)
		if err != nil {
			t.Fatal(err)
		}
		s = grpcRaw{cs}
	case "connect":
		client := pluginhostv1connect.NewPluginHostServiceClient(nexus.DefaultHTTPClient(), e.URL)
		stream := client.Connect(ctx)
		stream.RequestHeader().Set("Authorization", "Bearer "+token)
		t.Cleanup(func() { _ = stream.CloseRequest(); _ = stream.CloseResponse() })
		s = connectRaw{stream}
	}
	// A refused stream may fail the hello's send (the host answered and closed first): the
	// reason is then what the next receive returns.
	_ = s.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
		PluginId: id, InstanceId: "i1", Version: "1.0.0", Sdk: "raw-" + transport}}})
	first, err := s.recv()
	if err != nil {
		return s, err
	}
	if first.GetWelcome() == nil {
		t.Fatalf("first frame %v, want welcome", first)
	}
	return s, nil
}

// endOf reads frames (ignoring them, shutdown requests included) until the stream ends, and
// returns why it ended.
func endOf(t *testing.T, s rawSession) error {
	t.Helper()
	for n := 0; ; n++ {
		if _, err := s.recv(); err != nil {
			return err
		}
		if n > 10000 {
			t.Fatal("the stream did not end")
		}
	}
}

// Disabling or uninstalling a plugin, or revoking the token its instance connected with,
// ends the instance's session at once on both transports, also when the instance ignores
// the shutdown frame; the plugin cannot connect again until it is enabled (or with another
// token).
func TestHostEndsSessionsOfDisabledUninstalledOrRevokedPlugins(t *testing.T) {
	e := startMessagingServer(t, func(*server.Config) {})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, transport := range []string{"grpc", "connect"} {
		for _, trigger := range []string{"disable", "uninstall", "revoke", "revoke-elsewhere"} {
			t.Run(transport+"/"+trigger, func(t *testing.T) {
				id := "end-" + trigger + "-" + transport
				externalPlugin(e, id, map[string]any{"permissions": []string{"messages:send", "database:read", "database:write"}})
				token, tok, err := e.srv.Identity().Create(ctx, "test-plugin", store.RolePlugin, id)
				if err != nil {
					t.Fatal(err)
				}
				s, err := openRawSession(t, ctx, e, transport, id, token)
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				waitFor(t, "the instance to be connected", 10*time.Second, func() bool {
					_, p := status(e, id)
					return p["runtime"].(map[string]any)["instances"] == 1.0
				})
				start := time.Now()
				wantCode, wantText, grace := connect.CodeUnavailable, "disabled", time.Second
				switch trigger {
				case "disable":
					// Graceful: the instance gets a shutdown frame, ignores it, and is cut
					// off when the grace period (1 s) is over.
					e.mustREST("POST", "/api/v1/plugins/"+id+"/disable", e.Admin, map[string]any{"timeout_seconds": 1})
				case "uninstall":
					// Graceful: cut off when the uninstall's grace period (10 s) is over.
					e.mustREST("DELETE", "/api/v1/plugins/"+id+"?force=true", e.Admin, nil)
					wantText, grace = "uninstalled", 10*time.Second
				case "revoke":
					if err := e.srv.Identity().Revoke(ctx, tok.ID); err != nil {
						t.Fatal(err)
					}
					wantCode, wantText = connect.CodeUnauthenticated, "revoked"
				case "revoke-elsewhere":
					// As `nexus token revoke` does: another process on the same database.
					st, err := storesqlite.Open(ctx, filepath.Join(e.DataDir, "nexus.db"))
					if err != nil {
						t.Fatal(err)
					}
					err = identity.New(st).Revoke(ctx, tok.ID)
					st.Close()
					if err != nil {
						t.Fatal(err)
					}
					wantCode, wantText = connect.CodeUnauthenticated, "revoked"
				}
				ended := endOf(t, s)
				if s.code(ended) != wantCode || !strings.Contains(ended.Error(), wantText) {
					t.Fatalf("the session ended with %v (code %v); want %v mentioning %q", ended, s.code(ended), wantCode, wantText)
				}
				if took := time.Since(start); took > grace+5*time.Second {
					t.Fatalf("the session ended %s after the change", took)
				}
				if trigger == "uninstall" {
					return
				}
				waitFor(t, "the instance to be gone", 10*time.Second, func() bool {
					_, p := status(e, id)
					return p["runtime"].(map[string]any)["instances"] == 0.0
				})
				// Connecting again is refused.
				if _, again := openRawSession(t, ctx, e, transport, id, token); again == nil || s.code(again) != wantCode {
					t.Fatalf("a new session after %s: %v; want code %v", trigger, again, wantCode)
				}
			})
		}
	}
}
