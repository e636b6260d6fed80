package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/stream"
	"github.com/prometheus/client_golang/prometheus"
)

// endpointMetrics count and time the calls to plugins' HTTP endpoints, by plugin, route
// pattern (never the raw path) and status class.
type endpointMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// tallies are the same calls by plugin and route pattern, for the API (GetPlugin's
	// api_endpoints[].stats): *endpointTally by endpointKey.
	tallies sync.Map
}

// endpointTally counts one route's calls.
type endpointTally struct {
	requests, clientErrors, serverErrors, nanos atomic.Int64
}

func endpointKey(pluginID, pattern string) string { return pluginID + " " + pattern }

// observe counts a call answered with status after d.
func (m *endpointMetrics) observe(pluginID, pattern string, status int, d time.Duration) {
	class := strconv.Itoa(max(status, 0)/100) + "xx"
	m.requests.WithLabelValues(pluginID, pattern, class).Inc()
	m.duration.WithLabelValues(pluginID, pattern, class).Observe(d.Seconds())
	v, ok := m.tallies.Load(endpointKey(pluginID, pattern))
	if !ok {
		v, _ = m.tallies.LoadOrStore(endpointKey(pluginID, pattern), &endpointTally{})
	}
	t := v.(*endpointTally)
	t.requests.Add(1)
	t.nanos.Add(int64(d))
	switch status / 100 {
	case 4:
		t.clientErrors.Add(1)
	case 5:
		t.serverErrors.Add(1)
	}
}

// Stats sums the calls of a plugin's endpoint over its methods' route patterns
// ("GET /path"), as the API shows them.
func (m *endpointMetrics) Stats(pluginID, path string, methods []string) *pluginv1.EndpointStats {
	out := &pluginv1.EndpointStats{}
	var nanos int64
	for _, method := range methods {
		v, ok := m.tallies.Load(endpointKey(pluginID, method+" "+path))
		if !ok {
			continue
		}
		t := v.(*endpointTally)
		out.Requests += float64(t.requests.Load())
		out.ClientErrors += float64(t.clientErrors.Load())
		out.ServerErrors += float64(t.serverErrors.Load())
		nanos += t.nanos.Load()
	}
	if out.Requests > 0 {
		out.AverageResponseMs = float64(nanos) / 1e6 / out.Requests
	}
	return out
}

func newEndpointMetrics(reg prometheus.Registerer) *endpointMetrics {
	m := &endpointMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nexus_plugin_http_requests_total",
			Help: "Calls to plugins' HTTP endpoints by plugin, route pattern and status class (2xx, 4xx, 5xx, ...).",
		}, []string{"plugin_id", "route", "status_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nexus_plugin_http_request_duration_seconds",
			Help:    "Latency of calls to plugins' HTTP endpoints, until the answer ended, by plugin, route pattern and status class.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"plugin_id", "route", "status_class"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// endpointCaller carries calls to plugins' endpoints; the server's host implements it.
type endpointCaller interface {
	CallHTTP(ctx context.Context, pluginID string, call stream.HTTPCall, w http.ResponseWriter) error
}

// endpointRoutes finds the plugin endpoint of a request.
type endpointRoutes interface {
	Endpoint(method, path string) (router.EndpointMatch, bool)
}

// withPluginEndpoints serves the HTTP endpoints of the active plugins (api_endpoints):
// a request whose method and path one of them declares is checked against the endpoint's
// auth, carried to one connected instance of the plugin with its deadline, and answered
// with what the plugin writes, streamed. Every other request goes to next.
// Bodies are not bounded here: they stream through in chunks within the plugin's window,
// so the host holds a bounded part of each, and the plugin's handler decides how much it
// takes.
func withPluginEndpoints(routes endpointRoutes, calls endpointCaller, ids authenticator, grants func(pluginID string) []string, m *endpointMetrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		match, ok := routes.Endpoint(r.Method, r.URL.EscapedPath())
		if !ok && match.Allow != "" {
			// A plugin serves the path, with other methods.
			ci := callInfoFrom(r.Context())
			de := errs.New(codeMethodNotAllowed, "%s is served with %s, not %s", r.URL.Path, match.Allow, r.Method)
			ci.setError(de)
			w.Header().Set("Allow", match.Allow)
			writeEnvelope(w, http.StatusMethodNotAllowed, envelope{Error: errorBody(de), Timestamp: nowRFC3339(), RequestID: ci.requestID})
			return
		}
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		ci := callInfoFrom(r.Context())
		start := time.Now()
		sw := &statusRecorder{ResponseWriter: &pluginResponse{ResponseWriter: w}}
		defer func() { m.observe(match.PluginID, match.Pattern, sw.status, time.Since(start)) }()
		caller, err := endpointCallerOf(r, ids, match.Endpoint, grants)
		if err != nil {
			ci.setError(toDomain(err))
			writeEnvelopeError(sw, ci.requestID, toDomain(err))
			return
		}
		ctx, cancel := context.WithTimeoutCause(r.Context(), time.Duration(match.Endpoint.TimeoutSeconds)*time.Second,
			endpointTimeout(match.Endpoint.TimeoutSeconds))
		defer cancel()
		var body io.Reader = r.Body
		if r.ContentLength == 0 {
			body = http.NoBody
		}
		err = calls.CallHTTP(ctx, match.PluginID, stream.HTTPCall{
			Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Host: r.Host, RemoteAddr: r.RemoteAddr,
			Pattern: match.Pattern, PathParams: match.Params, Header: r.Header, Caller: caller, Body: body,
		}, sw)
		if err == nil || sw.status != 0 {
			return // answered, or cut short: the caller has what was written
		}
		de := toDomain(err)
		status := wireOf(de.Code).HTTP
		switch {
		case errs.Is(err, errs.PluginCommunicationTimeout):
			status = http.StatusGatewayTimeout
		case errors.Is(err, stream.ErrCallFailed):
			de = errs.New(errs.PluginUnavailable, "plugin %s failed while answering %s %s: %v", match.PluginID, r.Method, r.URL.Path, err)
			status = http.StatusBadGateway
		}
		ci.setError(de)
		writeEnvelope(sw, status, envelope{Error: errorBody(de), Timestamp: nowRFC3339(), RequestID: ci.requestID})
	})
}

// endpointTimeout is why a call ends when its endpoint's timeout, in seconds, passes. Its
// message is formatted only when it is read: formatting it for every call, as the cause
// given to the call's context, added two allocations and about 0.4 µs to each call.
type endpointTimeout int

func (t endpointTimeout) Error() string {
	return fmt.Sprintf("the endpoint's timeout of %ds passed", int(t))
}

// endpointCallerOf authenticates the caller of an endpoint as its auth asks: none for a
// public endpoint (a token, when sent, must be valid and identifies the caller), a valid
// token, or a token whose holder has the endpoint's permission: admins hold every
// permission, plugins their grants, users the read permissions (`*:read`).
func endpointCallerOf(r *http.Request, ids authenticator, e manifest.APIEndpoint, grants func(string) []string) (stream.HTTPCaller, error) {
	token, sent := identity.BearerToken(r.Header.Get("Authorization"))
	if !sent {
		if e.Auth == manifest.AuthPublic {
			return stream.HTTPCaller{}, nil
		}
		return stream.HTTPCaller{}, errs.New(errs.Unauthenticated, "missing bearer token: send Authorization: Bearer <token>")
	}
	p, err := ids.Authenticate(r.Context(), token)
	if err != nil {
		return stream.HTTPCaller{}, err
	}
	caller := stream.HTTPCaller{Authenticated: true, TokenID: p.TokenID, Name: p.Name, Role: string(p.Role), Plugin: p.PluginID}
	if e.Auth == manifest.AuthPublic || e.Auth == manifest.AuthToken {
		return caller, nil
	}
	var held []string
	switch p.Role {
	case store.RoleAdmin:
		held = []string{"*:*"}
	case store.RolePlugin:
		held = grants(p.PluginID)
	case store.RoleUser:
		held = []string{"*:read"}
	}
	if !permission.Allowed(held, e.Auth) {
		return stream.HTTPCaller{}, errs.New(errs.PluginPermissionDenied, "this endpoint needs the permission %s, which a %s token does not hold", e.Auth, p.Role)
	}
	return caller, nil
}

// pluginEndpointCSP is added to every answer of a plugin's endpoint. A page a plugin serves
// shares the host's origin with the web console; sandboxed without allow-same-origin it runs
// in an origin of its own, so that its scripts cannot read the console's session (the
// signed-in token) or act as the console. It may still run scripts, submit forms and open
// windows. A plugin's own Content-Security-Policy, if it sends one, applies as well.
const pluginEndpointCSP = "sandbox allow-scripts allow-forms allow-popups allow-downloads"

// pluginResponse writes a plugin endpoint's answer with the host's restrictions: the
// sandbox above, and no Service-Worker-Allowed (a plugin's service worker must not control
// the console's pages).
type pluginResponse struct {
	http.ResponseWriter
	sent bool
}

func (p *pluginResponse) restrict() {
	if p.sent {
		return
	}
	p.sent = true
	h := p.ResponseWriter.Header()
	h.Add("Content-Security-Policy", pluginEndpointCSP)
	h.Del("Service-Worker-Allowed")
}

func (p *pluginResponse) WriteHeader(code int) {
	p.restrict()
	p.ResponseWriter.WriteHeader(code)
}

func (p *pluginResponse) Write(b []byte) (int, error) {
	p.restrict()
	return p.ResponseWriter.Write(b)
}

// Flush lets streamed answers (Server-Sent Events) through.
func (p *pluginResponse) Flush() {
	p.restrict()
	if f, ok := p.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the connection's writer.
func (p *pluginResponse) Unwrap() http.ResponseWriter { return p.ResponseWriter }
