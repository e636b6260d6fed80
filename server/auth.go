package server

import (
	"context"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// rule says who may call a procedure.
type rule struct {
	admin, user, plugin bool
	// ownField names the request field that a plugin token must match with its own plugin
	// id ("" when plugins may not call, or when the handler checks it).
	ownField protoreflect.Name
	// mutating marks state-changing calls, which are written to the audit log.
	mutating bool
}

// allows reports whether the role may call the procedure at all (plugin tokens may still be
// held to their own plugin by ownField).
func (r rule) allows(role store.Role) bool {
	return (role == store.RoleAdmin && r.admin) || (role == store.RoleUser && r.user) || (role == store.RolePlugin && r.plugin)
}

var (
	anyToken       = rule{admin: true, user: true, plugin: true}
	adminOnly      = rule{admin: true, mutating: true}
	readAll        = rule{admin: true, user: true}
	readOwnPlugin  = rule{admin: true, user: true, plugin: true, ownField: "plugin_id"}
	pluginSelfOnly = rule{plugin: true}
)

// accessRules is the authorization table: every procedure served, and who may call it.
// A procedure missing from the table is refused to everyone.
var accessRules = map[string]rule{
	pluginv1connect.PluginServiceListPluginsProcedure:             readAll,
	pluginv1connect.PluginServiceGetPluginProcedure:               readOwnPlugin,
	pluginv1connect.PluginServiceInstallPluginProcedure:           adminOnly,
	pluginv1connect.PluginServiceUpdatePluginProcedure:            adminOnly,
	pluginv1connect.PluginServiceUninstallPluginProcedure:         adminOnly,
	pluginv1connect.PluginServiceRollbackPluginProcedure:          adminOnly,
	pluginv1connect.PluginServiceListBackupsProcedure:             readOwnPlugin,
	pluginv1connect.PluginServiceGetPluginConfigProcedure:         readOwnPlugin,
	pluginv1connect.PluginServiceUpdatePluginConfigProcedure:      adminOnly,
	pluginv1connect.PluginServiceEnablePluginProcedure:            adminOnly,
	pluginv1connect.PluginServiceDisablePluginProcedure:           adminOnly,
	pluginv1connect.PluginServiceRestartPluginProcedure:           adminOnly,
	pluginv1connect.PluginServiceSetPluginInstancesProcedure:      adminOnly,
	pluginv1connect.PluginServiceGetPluginHealthProcedure:         readOwnPlugin,
	pluginv1connect.PluginServiceGetPluginMetricsProcedure:        readOwnPlugin,
	pluginv1connect.PluginServiceGetPluginLogsProcedure:           readOwnPlugin,
	pluginv1connect.PluginServiceTailPluginLogsProcedure:          readOwnPlugin,
	pluginv1connect.PluginServiceGetPluginPermissionsProcedure:    readOwnPlugin,
	pluginv1connect.PluginServiceUpdatePluginPermissionsProcedure: adminOnly,
	pluginv1connect.RepositoryServiceSearchPluginsProcedure:       readAll,
	pluginv1connect.RepositoryServiceListRepositoriesProcedure:    readAll,
	pluginv1connect.RepositoryServiceSyncRepositoriesProcedure:    adminOnly,
	// Messages are sent by an admin, or by the sending plugin itself (never by a user on a
	// plugin's behalf).
	pluginv1connect.MessagingServiceSendMessageProcedure: {admin: true, plugin: true, ownField: "plugin_id", mutating: true},
	pluginv1connect.MessagingServiceBroadcastProcedure:   {admin: true, user: true, plugin: true, ownField: "sender_plugin", mutating: true},
	pluginv1connect.MessagingServiceWatchEventsProcedure: readAll,
	// Events from the API come from an admin or a user; a plugin token emits as its plugin.
	pluginv1connect.MessagingServiceEmitEventProcedure:    {admin: true, user: true, plugin: true, mutating: true},
	pluginv1connect.MessagingServiceListServicesProcedure: {admin: true, user: true, plugin: true},
	// Dead letters hold payloads: the admin's and the plugin's own business only.
	pluginv1connect.MessagingServiceListDeadLettersProcedure: {admin: true, plugin: true, ownField: "plugin_id"},
	// Which servers run, where, and how many plugin instances each holds: for operators and
	// users, like the plugin list; not for plugins.
	pluginv1connect.ClusterServiceListReplicasProcedure: readAll,
	// Any valid token may ask who it is and what it may call.
	pluginv1connect.AccessServiceWhoAmIProcedure: anyToken,
	// The plugin stream: the handler checks that hello names the token's plugin.
	pluginhostv1connect.PluginHostServiceConnectProcedure: pluginSelfOnly,
}

// authenticator resolves bearer tokens.
type authenticator interface {
	Authenticate(ctx context.Context, token string) (identity.Principal, error)
}

// authInterceptor authenticates every call and applies accessRules.
type authInterceptor struct {
	ids authenticator
}

func (a *authInterceptor) authenticate(ctx context.Context, procedure string, header interface{ Get(string) string }) (identity.Principal, rule, error) {
	r, known := accessRules[procedure]
	ci := callInfoFrom(ctx)
	p, err, done := ci.authenticated()
	if !done {
		// Mounted without the HTTP middleware (tests): authenticate here.
		token, ok := identity.BearerToken(header.Get("Authorization"))
		if !ok {
			return identity.Principal{}, r, errs.New(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token>")
		}
		if p, err = a.ids.Authenticate(ctx, token); err == nil {
			ci.setPrincipal(p)
		}
	}
	if err != nil {
		return identity.Principal{}, r, err
	}
	if !known {
		return p, r, errs.New(errs.PluginPermissionDenied, "this operation is not available")
	}
	if !r.allows(p.Role) {
		return p, r, errs.New(errs.PluginPermissionDenied, "the %s role may not call %s", p.Role, shortProcedure(procedure))
	}
	return p, r, nil
}

// checkOwn makes sure a plugin token only acts as its own plugin, and that only plugins
// (as themselves) and admins name a sending plugin.
func checkOwn(p identity.Principal, r rule, msg any) error {
	if r.ownField == "" || p.Role == store.RoleAdmin {
		return nil
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return errs.New(errs.Internal, "internal error")
	}
	fd := m.ProtoReflect().Descriptor().Fields().ByName(r.ownField)
	if fd == nil {
		return errs.New(errs.Internal, "internal error")
	}
	got := m.ProtoReflect().Get(fd).String()
	if p.Role != store.RolePlugin {
		if got != "" && r.ownField == "sender_plugin" {
			return errs.New(errs.PluginPermissionDenied, "only the plugin itself or an admin may send on behalf of a plugin")
		}
		return nil
	}
	if got != p.PluginID && !(got == "" && r.ownField == "sender_plugin") {
		return errs.New(errs.PluginPermissionDenied, "a plugin token may only act as its own plugin (%s)", p.PluginID)
	}
	return nil
}

func (a *authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		p, r, err := a.authenticate(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		if err := checkOwn(p, r, req.Any()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a *authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		p, r, err := a.authenticate(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, &ownCheckConn{StreamingHandlerConn: conn, principal: p, rule: r})
	}
}

// ownCheckConn applies checkOwn to the first request message of a stream.
type ownCheckConn struct {
	connect.StreamingHandlerConn
	principal identity.Principal
	rule      rule
	checked   bool // only touched by the handler goroutine that receives
}

func (c *ownCheckConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	if !c.checked {
		c.checked = true
		return checkOwn(c.principal, c.rule, msg)
	}
	return nil
}

// principalFrom returns the authenticated caller of ctx.
func principalFrom(ctx context.Context) (identity.Principal, bool) {
	return callInfoFrom(ctx).getPrincipal()
}

func shortProcedure(procedure string) string {
	if i := strings.LastIndex(procedure, "/"); i >= 0 {
		return procedure[i+1:]
	}
	return procedure
}
