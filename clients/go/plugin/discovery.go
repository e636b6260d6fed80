package plugin

import (
	"context"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// Query selects the providers Session.Discover returns. Both fields empty select every
// active plugin.
type Query struct {
	// Service selects the plugins that offer this service (see Plugin.Services).
	Service string
	// MessageType selects the plugins that handle this message type.
	MessageType string
}

// Provider is an active plugin and what it serves.
type Provider struct {
	// PluginID is the plugin's id, the target of Session.Send.
	PluginID string
	// Name is the plugin's display name.
	Name string
	// Version is the plugin's version.
	Version string
	// Category is the plugin's category.
	Category string
	// Status is the plugin's status (e.g. "active").
	Status string
	// Services are the services it offers, from its manifest and its instances' hello.
	Services []string
	// MessageTypes are the message types it handles.
	MessageTypes []MessageTypeInfo
	// Endpoints are the HTTP endpoints it serves, from its manifest.
	Endpoints []Endpoint
	// Instances is how many instances of it are connected.
	Instances int
}

// MessageTypeInfo is a message type a plugin handles.
type MessageTypeInfo struct {
	// Type is the message type.
	Type string
	// Description says what the message asks for.
	Description string
	// RequiredPermission is the permission a sender must hold to send it; "" when none.
	RequiredPermission string
}

// Endpoint is an HTTP endpoint a plugin serves.
type Endpoint struct {
	// Path is the endpoint's path.
	Path string
	// Methods are its HTTP methods, upper case.
	Methods []string
	// Description says what it does.
	Description string
}

// Discover returns the active plugins that serve q's service and message type, ordered by
// plugin id. Errors are *Error values with the host's code, or ctx.Err().
func (s *Session) Discover(ctx context.Context, q Query) ([]Provider, error) {
	if err := checkText("service", q.Service, 0, maxQueryChars); err != nil {
		return nil, err
	}
	if err := checkText("message type", q.MessageType, 0, maxQueryChars); err != nil {
		return nil, err
	}
	rep, err := s.call(ctx, func(id string) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Discover{Discover: &pluginhostv1.Discover{
			RequestId:   id,
			Service:     q.Service,
			MessageType: q.MessageType,
		}}}
	}, nil)
	if err != nil {
		return nil, err
	}
	providers := make([]Provider, 0, len(rep.GetProviders()))
	for _, p := range rep.GetProviders() {
		providers = append(providers, providerFromProto(p))
	}
	return providers, nil
}
