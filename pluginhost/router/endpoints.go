package router

import (
	"context"
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
// cluster view, the gRPC, gRPC-Web and Connect service paths (/nexus.*, /grpc.*), the
// operational endpoints and the web console.
var ReservedPaths = []string{
	"/api/v1/plugins", "/api/v1/events", "/api/v1/services", "/api/v1/cluster", "/api/v1/whoami", "/v1",
	"/metrics", "/healthz", "/readyz", "/openapi.json", "/ui", "/nexus.", "/grpc.",
}

// EndpointConflict returns why plugin id may not serve endpoints: one claims a reserved
// path, or overlaps (matches some request in common with) an endpoint of another enabled
// plugin (enabled plugins hold their paths whether or not an instance is connected here). The error is PLUGIN_ROUTE_CONFLICT, naming the endpoint in the manifest's words
// and the plugin that holds the path; nil when there is none.
func (r *Router) EndpointConflict(id string, endpoints []manifest.APIEndpoint) error {
	for i, e := range endpoints {
		for _, p := range e.Patterns() {
			field := fmt.Sprintf("api_endpoints[%d].path", i)
			if reserved := ReservedBy(p); reserved != "" {
				return errs.WithFields(errs.PluginRouteConflict,
					fmt.Sprintf("plugin %s cannot serve %s: %s is a path of Nexus's own API", id, p, reserved),
					[]errs.FieldViolation{{Field: field, Description: "claims " + reserved + ", a path of Nexus's own API"}})
			}
			for _, other := range r.reg.Snapshot().All() {
				if other.ID() == id || !other.Enabled() {
					continue
				}
				for _, oe := range other.Manifest().APIEndpoints {
					for _, op := range oe.Patterns() {
						if overlap(p, op) {
							return errs.WithFields(errs.PluginRouteConflict,
								fmt.Sprintf("plugin %s cannot serve %s: enabled plugin %s serves %s", id, p, other.ID(), op),
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

// ReservedBy returns the reserved path that pattern ("GET /path") claims, or "": its literal part lies in
// one, or it matches a request for one (a wildcard or a catch-all).
func ReservedBy(pattern string) string {
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

// EndpointMatch is the plugin endpoint a request is for.
type EndpointMatch struct {
	PluginID string
	Endpoint manifest.APIEndpoint
	// Pattern is the method and path pattern that matched, and Params its wildcards'
	// values.
	Pattern string
	Params  map[string]string
	// Allow, when Endpoint finds no endpoint for the method but some for the path, lists
	// their methods ("GET, HEAD"): the caller answers 405 rather than 404.
	Allow string
}

// endpointTable serves the endpoints of the enabled plugins of one registry snapshot.
type endpointTable struct {
	snap *registry.Snapshot
	mux  *http.ServeMux
}

// endpointHandler marks a pattern of the table: serving it records the match.
type endpointHandler struct {
	match EndpointMatch
	names []string // the pattern's wildcards
}

type matchKey struct{}

func (h endpointHandler) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	m := h.match
	m.Params = make(map[string]string, len(h.names))
	for _, n := range h.names {
		m.Params[n] = r.PathValue(n)
	}
	*r.Context().Value(matchKey{}).(*EndpointMatch) = m
}

// Endpoint returns the endpoint of an enabled plugin that serves method and path (escaped,
// as in the request line), if any: the most specific pattern wins, as in http.ServeMux.
// When endpoints serve the path with other methods only, the match has just Allow.
func (r *Router) Endpoint(method, path string) (EndpointMatch, bool) {
	t := r.endpointTable()
	// One pass through the table's ServeMux: a pattern's handler records the match;
	// otherwise ServeMux answers 404, or 405 naming the methods that would match.
	var m EndpointMatch
	probe, err := http.NewRequestWithContext(context.WithValue(context.Background(), matchKey{}, &m), method, "http://nexus"+path, nil)
	if err != nil {
		return EndpointMatch{}, false
	}
	var rec allowRecorder
	t.mux.ServeHTTP(&rec, probe)
	switch {
	case m.PluginID != "":
		return m, true
	case rec.status == http.StatusMethodNotAllowed:
		return EndpointMatch{Allow: rec.header.Get("Allow")}, false
	}
	return EndpointMatch{}, false
}

// endpointTable returns the table of the current snapshot, building it on the first use
// after a change.
func (r *Router) endpointTable() *endpointTable {
	snap := r.reg.Snapshot()
	if t := r.endpoints.Load(); t != nil && t.snap == snap {
		return t
	}
	t := &endpointTable{snap: snap, mux: http.NewServeMux()}
	for _, p := range snap.All() {
		// Enabled, not only active here: with several servers, the instance may be
		// connected to another one (the call is relayed), and a plugin that is starting or
		// restarting answers 503 rather than 404.
		if !p.Enabled() {
			continue
		}
		for _, e := range p.Manifest().APIEndpoints {
			for _, pattern := range e.Patterns() {
				h := endpointHandler{match: EndpointMatch{PluginID: p.ID(), Endpoint: e, Pattern: pattern}, names: wildcardNames(pattern)}
				// Conflicts were refused at install, update and enable; one that slipped
				// through (two plugins enabled at once) keeps the first.
				_ = register(t.mux, pattern, h)
			}
		}
	}
	r.endpoints.Store(t)
	return t
}

// wildcardNames lists a pattern's wildcard names ("{id}", "{path...}").
func wildcardNames(pattern string) []string {
	var names []string
	for _, w := range wildcard.FindAllString(pattern, -1) {
		n := strings.TrimSuffix(strings.Trim(w, "{}"), "...")
		if n != "$" {
			names = append(names, n)
		}
	}
	return names
}

// register adds pattern to mux, turning ServeMux's panic on a conflict into an error.
func register(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// allowRecorder keeps the status and headers ServeMux's own handlers write (none when a
// pattern's handler ran).
type allowRecorder struct {
	header http.Header
	status int
}

func (a *allowRecorder) Header() http.Header {
	if a.header == nil {
		a.header = http.Header{}
	}
	return a.header
}
func (a *allowRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (a *allowRecorder) WriteHeader(status int)      { a.status = status }
