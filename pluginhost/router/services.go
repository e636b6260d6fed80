package router

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
)

// ServiceProvider is an active plugin and what it serves.
type ServiceProvider struct {
	PluginID, Name, Version, Category, Status string
	Services                                  []string
	MessageTypes                              []MessageTypeInfo
	Endpoints                                 []registry.Endpoint
	Instances                                 int
}

// MessageTypeInfo is a message type a plugin handles.
type MessageTypeInfo struct {
	Type, Description, RequiredPermission string
}

// ListServices returns the active plugins serving service and handling messageType (either
// empty matches all), ordered by plugin id. Services and message types come from the
// manifest and from the hello of the connected instances.
func (m *Router) ListServices(ctx context.Context, service, messageType string) ([]ServiceProvider, error) {
	routes := m.routes.all(m.reg)
	out := []ServiceProvider{}
	for _, r := range routes {
		if !r.enabled || r.status != registry.StatusActive {
			continue
		}
		p := ServiceProvider{PluginID: r.id, Name: r.name, Version: r.version, Category: r.category, Status: r.status,
			Services: slices.Clone(r.services), Endpoints: r.endpoints}
		for _, t := range r.typeOrder {
			mt := r.messageTypes[t]
			p.MessageTypes = append(p.MessageTypes, MessageTypeInfo{Type: t, Description: mt.description, RequiredPermission: mt.requiredPermission})
		}
		services, types, n := m.pres.Announced(r.id)
		p.Instances = n
		for _, s := range services {
			if !slices.Contains(p.Services, s) {
				p.Services = append(p.Services, s)
			}
		}
		for _, t := range types {
			if _, ok := r.messageTypes[t]; !ok {
				p.MessageTypes = append(p.MessageTypes, MessageTypeInfo{Type: t})
			}
		}
		if service != "" && !slices.Contains(p.Services, service) {
			continue
		}
		if messageType != "" && !slices.ContainsFunc(p.MessageTypes, func(m MessageTypeInfo) bool { return m.Type == messageType }) {
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PluginID < out[j].PluginID })
	return out, nil
}

// DeadLetter is a delivery the host gave up on.
type DeadLetter struct {
	ID, Kind, Source, Type string
	Data                   Payload
	Attempts               int
	Reason                 string
	SentAt, At             time.Time
}

// DeadLetters returns up to limit of an installed plugin's dead letters, newest first.
func (m *Router) DeadLetters(ctx context.Context, id string, limit int) ([]DeadLetter, error) {
	if _, err := m.reg.Get(id); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	dls, err := m.bus.DeadLetters(ctx, id, limit)
	if err != nil {
		return nil, busError(err, id)
	}
	out := make([]DeadLetter, 0, len(dls))
	for _, d := range dls {
		out = append(out, DeadLetter{ID: d.ID, Kind: d.Kind.String(), Source: d.Source, Type: d.Type, Data: d.Data,
			Attempts: d.Attempts, Reason: d.Reason, SentAt: d.SentAt, At: d.At})
	}
	return out, nil
}

// busError turns a bus failure into the API's error.
func busError(err error, target string) error {
	switch {
	case errors.Is(err, bus.ErrInboxFull):
		return errs.New(errs.PluginUnavailable, "plugin %s is not keeping up: its inbox is full", target)
	case errors.Is(err, bus.ErrUnavailable), errors.Is(err, bus.ErrClosed):
		return errs.New(errs.PluginUnavailable, "the message bus is unavailable; try again shortly")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.WrapIfContext(err)
	}
	return errs.Wrap(errs.Internal, err, "internal error")
}
