package router

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/registry"
)

// ReservedPaths are the paths of Nexus's own API: no plugin endpoint may serve one of them
// or any path below them. They cover the REST API and its /v1 alias, the event feed, the
// gRPC, gRPC-Web and Connect service paths (/nexus.*, /grpc.*), the operational endpoints
// and the web console.
var ReservedPaths = []string{
	"/api/v1/plugins", "/api/v1/events", "/api/v1/services", "/v1",
	"/metrics", "/healthz", "/readyz", "/ui", "/nexus.", "/grpc.",
}

// EndpointConflict returns why plugin id may not serve endpoints: one claims a reserved
// path, or overlaps (matches some request in common with) an endpoint of another active
// plugin. The error is PLUGIN_ROUTE_CONFLICT, naming the endpoint in the manifest's words
// and the plugin that holds the path; nil when there is none.
func (r *Router) EndpointConflict(id string, endpoints []manifest.APIEndpoint) error {
	for i, e := range endpoints {
		for _, p := range e.Patterns() {
			field := fmt.Sprintf("api_endpoints[%d].path", i)
			if reserved := reservedBy(p); reserved != "" {
				return errs.WithFields(errs.PluginRouteConflict,
					fmt.Sprintf("plugin %s cannot serve %s: %s is a path of Nexus's own API", id, p, reserved),
					[]errs.FieldViolation{{Field: field, Description: "claims " + reserved + ", a path of Nexus's own API"}})
			}
			for _, other := range r.reg.Snapshot().All() {
				if other.ID() == id || other.Status() != registry.StatusActive {
					continue
				}
				for _, oe := range other.Manifest().APIEndpoints {
					for _, op := range oe.Patterns() {
						if overlap(p, op) {
							return errs.WithFields(errs.PluginRouteConflict,
								fmt.Sprintf("plugin %s cannot serve %s: active plugin %s serves %s", id, p, other.ID(), op),
								[]errs.FieldViolation{{Field: field, Description: fmt.Sprintf("overlaps %s of plugin %s", op, other.ID())}}).
								WithDetail("holder", other.ID())
						}
					}
				}
			}
		}
	}
	return nil
}

// reservedBy returns the reserved path that pattern claims, or "": its literal part lies in
// one, or it matches a request for one (a wildcard or a catch-all).
func reservedBy(pattern string) string {
	method, path, _ := strings.Cut(pattern, " ")
	literal, _, _ := strings.Cut(path, "{")
	mux := mustMux(pattern)
	for _, res := range ReservedPaths {
		if under(literal, res) {
			return res
		}
		for _, probe := range []string{res, res + "/x", res + "x/y"} {
			if matches(mux, method, probe) {
				return res
			}
		}
	}
	return ""
}

// under reports whether path is prefix or lies below it ("/v1" holds "/v1" and "/v1/x";
// "/nexus." holds "/nexus.plugin.v1.PluginService/x").
func under(path, prefix string) bool {
	if strings.HasSuffix(prefix, ".") {
		return strings.HasPrefix(path, prefix)
	}
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// overlap reports whether two patterns match some request in common: a request built from
// either (wildcards filled in) that the other matches too.
func overlap(a, b string) bool {
	ma, mb := mustMux(a), mustMux(b)
	for _, probe := range [][2]string{split(a), split(b)} {
		method, path := probe[0], fill(probe[1])
		if matches(ma, method, path) && matches(mb, method, path) {
			return true
		}
	}
	return false
}

func split(pattern string) [2]string {
	method, path, _ := strings.Cut(pattern, " ")
	return [2]string{method, path}
}

var wildcard = regexp.MustCompile(`\{[^}]*\}`)

// fill turns a pattern's path into a request path: each wildcard becomes a segment.
func fill(path string) string {
	return wildcard.ReplaceAllStringFunc(path, func(w string) string {
		if w == "{$}" {
			return ""
		}
		return "w"
	})
}

// mustMux is a ServeMux serving only pattern (valid: the manifest checked it).
func mustMux(pattern string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(pattern, http.NotFoundHandler())
	return mux
}

// matches reports whether mux has a handler for method and path.
func matches(mux *http.ServeMux, method, path string) bool {
	req, err := http.NewRequest(method, "http://nexus"+path, nil)
	if err != nil {
		return false
	}
	_, pattern := mux.Handler(req)
	return pattern != ""
}
