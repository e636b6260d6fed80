package server

import (
	"context"
	"slices"
	"strings"

	"connectrpc.com/connect"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// accessService implements nexus.plugin.v1.AccessService.
type accessService struct {
	pluginv1connect.UnimplementedAccessServiceHandler
}

func (accessService) WhoAmI(ctx context.Context, _ *connect.Request[pluginv1.WhoAmIRequest]) (*connect.Response[pluginv1.WhoAmIResponse], error) {
	p, ok := principalFrom(ctx)
	if !ok {
		return nil, errs.New(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token>")
	}
	return connect.NewResponse(&pluginv1.WhoAmIResponse{
		TokenId:           p.TokenID,
		Name:              p.Name,
		Role:              string(p.Role),
		PluginId:          p.PluginID,
		AllowedProcedures: allowedProcedures(p.Role),
	}), nil
}

// allowedProcedures lists, from accessRules, what the role may call, as "service/method".
func allowedProcedures(role store.Role) []string {
	var out []string
	for procedure, r := range accessRules {
		if r.allows(role) {
			out = append(out, strings.TrimPrefix(procedure, "/"))
		}
	}
	slices.Sort(out)
	return out
}
