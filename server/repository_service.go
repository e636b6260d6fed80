package server

import (
	"context"

	"connectrpc.com/connect"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost/catalog"
)

// repositoryService implements nexus.plugin.v1.RepositoryService.
type repositoryService struct {
	pluginv1connect.UnimplementedRepositoryServiceHandler
	catalog repositoryCatalog
}

// repositoryCatalog is what repositoryService needs of the host (a *pluginhost.Host): the
// catalog of the configured plugin repositories.
type repositoryCatalog interface {
	Search(q catalog.Query) ([]catalog.Entry, int, error)
	Repositories() []catalog.View
	Sync(ctx context.Context) []catalog.View
}

func (r *repositoryService) SearchPlugins(_ context.Context, req *connect.Request[pluginv1.SearchPluginsRequest]) (*connect.Response[pluginv1.SearchPluginsResponse], error) {
	m := req.Msg
	q := catalog.Query{
		Query: m.GetQuery(), Category: m.GetCategory(), Author: m.GetAuthor(), Tags: m.GetTags(),
		MinRating: m.GetMinRating(), Sort: m.GetSort(), Page: int(m.GetPage()), PerPage: int(m.GetPerPage()),
	}
	if q.Page == 0 {
		q.Page = 1
	}
	if q.PerPage == 0 {
		q.PerPage = 20
	}
	hits, total, err := r.catalog.Search(q)
	if err != nil {
		return nil, err
	}
	out := &pluginv1.SearchPluginsResponse{
		Plugins:    make([]*pluginv1.CatalogPlugin, 0, len(hits)),
		Pagination: &pluginv1.Pagination{Page: int32(q.Page), PerPage: int32(q.PerPage), Total: int32(total), HasNext: q.Page*q.PerPage < total},
	}
	for _, h := range hits {
		version := ""
		if len(h.Versions) > 0 {
			version = h.Versions[0].Version
		}
		out.Plugins = append(out.Plugins, &pluginv1.CatalogPlugin{
			Id: h.ID, Name: h.Name, Version: version, Description: h.Description, Author: h.Author,
			Category: h.Category, Tags: orEmpty(h.Tags), Rating: h.Rating, Downloads: float64(h.Downloads),
			LastUpdated:      ts(h.LastUpdated),
			Compatibility:    &pluginv1.Compatibility{NexusVersion: h.Compatibility.NexusVersion, PythonVersion: h.Compatibility.PythonVersion},
			RepositoryUrl:    h.RepositoryURL,
			DocumentationUrl: h.DocumentationURL,
			Repository:       h.Repository,
		})
	}
	return connect.NewResponse(out), nil
}

func (r *repositoryService) ListRepositories(context.Context, *connect.Request[pluginv1.ListRepositoriesRequest]) (*connect.Response[pluginv1.ListRepositoriesResponse], error) {
	return connect.NewResponse(&pluginv1.ListRepositoriesResponse{Repositories: repositoryViews(r.catalog.Repositories())}), nil
}

func (r *repositoryService) SyncRepositories(ctx context.Context, _ *connect.Request[pluginv1.SyncRepositoriesRequest]) (*connect.Response[pluginv1.SyncRepositoriesResponse], error) {
	return connect.NewResponse(&pluginv1.SyncRepositoriesResponse{Repositories: repositoryViews(r.catalog.Sync(ctx))}), nil
}

func repositoryViews(views []catalog.View) []*pluginv1.Repository {
	out := make([]*pluginv1.Repository, 0, len(views))
	for _, v := range views {
		out = append(out, &pluginv1.Repository{
			Name: v.Name, Url: v.URL, Description: v.Description, Enabled: v.Enabled,
			PluginCount: int32(v.PluginCount), LastSync: ts(v.LastSync), LastError: v.LastError,
		})
	}
	return out
}
