// Package nexus is the Go client of the Nexus Plugin API: a small constructor over the
// generated Connect clients, with the base URL, a bearer token and a choice of protocol.
//
//	c := nexus.New("http://127.0.0.1:8080", nexus.WithToken(token))
//	res, err := c.Plugins.ListPlugins(ctx, connect.NewRequest(&pluginv1.ListPluginsRequest{}))
package nexus

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
)

// Protocol is the wire protocol a Client speaks.
type Protocol int

// The protocols.
const (
	// ProtocolConnect is the Connect protocol (binary protobuf), the default.
	ProtocolConnect Protocol = iota
	// ProtocolConnectJSON is the Connect protocol with JSON messages.
	ProtocolConnectJSON
	// ProtocolGRPC is gRPC over HTTP/2.
	ProtocolGRPC
	// ProtocolGRPCWeb is gRPC-Web.
	ProtocolGRPCWeb
)

// Client holds one generated client per service of the API.
type Client struct {
	Plugins      pluginv1connect.PluginServiceClient
	Repositories pluginv1connect.RepositoryServiceClient
	Messaging    pluginv1connect.MessagingServiceClient
	// Cluster lists the replicas (the servers sharing one database).
	Cluster pluginv1connect.ClusterServiceClient
	// Access says who the token is and what it may call.
	Access pluginv1connect.AccessServiceClient
	// PluginHost is the plugin stream endpoint (used by the plugin SDK).
	PluginHost pluginhostv1connect.PluginHostServiceClient
}

// Option configures New.
type Option interface{ apply(*options) }

type options struct {
	token      string
	protocol   Protocol
	httpClient connect.HTTPClient
	extra      []connect.ClientOption
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithToken sends `Authorization: Bearer token` with every call.
func WithToken(token string) Option { return optionFunc(func(o *options) { o.token = token }) }

// WithProtocol chooses the wire protocol.
func WithProtocol(p Protocol) Option { return optionFunc(func(o *options) { o.protocol = p }) }

// WithHTTPClient replaces the HTTP client. The default speaks HTTP/2 without TLS (h2c) to
// http:// URLs, which gRPC and bidirectional streams need, and HTTP/2 over TLS to https://.
func WithHTTPClient(c connect.HTTPClient) Option {
	return optionFunc(func(o *options) { o.httpClient = c })
}

// WithClientOptions adds connect-go client options (interceptors, compression, ...).
func WithClientOptions(opts ...connect.ClientOption) Option {
	return optionFunc(func(o *options) { o.extra = append(o.extra, opts...) })
}

// New returns a Client for the server at baseURL (e.g. "http://127.0.0.1:8080").
func New(baseURL string, opts ...Option) *Client {
	o := options{}
	for _, opt := range opts {
		opt.apply(&o)
	}
	baseURL = strings.TrimRight(baseURL, "/")
	if o.httpClient == nil {
		o.httpClient = DefaultHTTPClient()
	}
	var copts []connect.ClientOption
	switch o.protocol {
	case ProtocolConnectJSON:
		copts = append(copts, connect.WithProtoJSON())
	case ProtocolGRPC:
		copts = append(copts, connect.WithGRPC())
	case ProtocolGRPCWeb:
		copts = append(copts, connect.WithGRPCWeb())
	}
	if o.token != "" {
		copts = append(copts, connect.WithInterceptors(bearer(o.token)))
	}
	copts = append(copts, o.extra...)
	return &Client{
		Plugins:      pluginv1connect.NewPluginServiceClient(o.httpClient, baseURL, copts...),
		Repositories: pluginv1connect.NewRepositoryServiceClient(o.httpClient, baseURL, copts...),
		Messaging:    pluginv1connect.NewMessagingServiceClient(o.httpClient, baseURL, copts...),
		Cluster:      pluginv1connect.NewClusterServiceClient(o.httpClient, baseURL, copts...),
		Access:       pluginv1connect.NewAccessServiceClient(o.httpClient, baseURL, copts...),
		PluginHost:   pluginhostv1connect.NewPluginHostServiceClient(o.httpClient, baseURL, copts...),
	}
}

// DefaultHTTPClient returns an HTTP client that speaks HTTP/2 to both http:// (h2c) and
// https:// URLs.
func DefaultHTTPClient() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:         &protocols,
		Proxy:             http.ProxyFromEnvironment,
		DialContext:       (&net.Dialer{}).DialContext,
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}}
}

// ErrorCode returns the API error code of err (e.g. "PLUGIN_NOT_FOUND"), carried as the
// reason of its google.rpc.ErrorInfo detail; "" when err carries none.
func ErrorCode(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// FieldViolations returns the per-field problems of a VALIDATION_ERROR or
// PLUGIN_CONFIGURATION_ERROR, as field -> description.
func FieldViolations(err error) map[string]string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	out := map[string]string{}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			for _, f := range br.GetFieldViolations() {
				out[f.GetField()] = f.GetDescription()
			}
		}
	}
	return out
}

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
