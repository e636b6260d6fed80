package server

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

// messagingService implements nexus.plugin.v1.MessagingService.
type messagingService struct {
	pluginv1connect.UnimplementedMessagingServiceHandler
	messages messageRouter
}

// messageRouter is what messagingService needs of the host (a *pluginhost.Host): messages,
// broadcasts and events between plugins, service discovery and dead letters.
type messageRouter interface {
	SendMessage(ctx context.Context, req pluginhost.MessageRequest) (pluginhost.MessageResult, error)
	Broadcast(ctx context.Context, req pluginhost.BroadcastRequest) (pluginhost.BroadcastResult, error)
	EmitEvent(ctx context.Context, req pluginhost.EventRequest) (pluginhost.EventResult, error)
	WatchEvents(ctx context.Context, patterns []string) (<-chan pluginhost.Event, func() error)
	ListServices(ctx context.Context, service, messageType string) ([]pluginhost.ServiceProvider, error)
	DeadLetters(ctx context.Context, id string, limit int) ([]pluginhost.DeadLetter, error)
}

func (s *messagingService) SendMessage(ctx context.Context, req *connect.Request[pluginv1.SendMessageRequest]) (*connect.Response[pluginv1.SendMessageResponse], error) {
	m := req.Msg
	data, err := payload(m.GetData())
	if err != nil {
		return nil, err
	}
	timeout := pluginhost.DefaultMessageTimeout
	if m.TimeoutSeconds != nil {
		timeout = time.Duration(m.GetTimeoutSeconds()) * time.Second
	}
	res, err := s.messages.SendMessage(ctx, pluginhost.MessageRequest{From: m.GetPluginId(), Target: m.GetTargetPlugin(),
		Type: m.GetMessageType(), Data: data, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	out, err := decodePayload(res.Data)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "the reply could not be decoded")
	}
	if res.Status != "success" && res.ErrorMessage != "" {
		if _, ok := out.GetFields()["error"]; !ok {
			out.Fields["error"] = structpb.NewStringValue(res.ErrorMessage)
		}
	}
	return connect.NewResponse(&pluginv1.SendMessageResponse{
		MessageId:      res.MessageID,
		Response:       &pluginv1.MessageReply{Status: res.Status, Data: out},
		ResponseTimeMs: float64(res.ResponseTime.Microseconds()) / 1000,
	}), nil
}

func (s *messagingService) Broadcast(ctx context.Context, req *connect.Request[pluginv1.BroadcastRequest]) (*connect.Response[pluginv1.BroadcastResponse], error) {
	m := req.Msg
	data, err := payload(m.GetData())
	if err != nil {
		return nil, err
	}
	res, err := s.messages.Broadcast(ctx, pluginhost.BroadcastRequest{From: origin(ctx, m.GetSenderPlugin()), Type: m.GetMessageType(),
		Data: data, Categories: m.GetTargetCategories(), Exclude: m.GetExcludePlugins()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.BroadcastResponse{BroadcastId: res.ID, MessageType: res.Type,
		Recipients: res.Recipients, SentAt: timestamppb.New(res.SentAt)}), nil
}

func (s *messagingService) EmitEvent(ctx context.Context, req *connect.Request[pluginv1.EmitEventRequest]) (*connect.Response[pluginv1.EmitEventResponse], error) {
	m := req.Msg
	data, err := payload(m.GetData())
	if err != nil {
		return nil, err
	}
	res, err := s.messages.EmitEvent(ctx, pluginhost.EventRequest{From: origin(ctx, ""), Type: m.GetType(), Data: data})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pluginv1.EmitEventResponse{EventId: res.ID, Type: res.Type, Recipients: res.Recipients,
		EmittedAt: timestamppb.New(res.At)}), nil
}

func (s *messagingService) WatchEvents(ctx context.Context, req *connect.Request[pluginv1.WatchEventsRequest], stream *connect.ServerStream[pluginv1.WatchEventsResponse]) error {
	events, lagged := s.messages.WatchEvents(ctx, req.Msg.GetPatterns())
	// Headers go out at once, so that a watcher knows it is subscribed before any event.
	if err := stream.Send(nil); err != nil {
		return err
	}
	for e := range events {
		ev, err := eventToProto(e)
		if err != nil {
			return err
		}
		if err := stream.Send(&pluginv1.WatchEventsResponse{Event: ev}); err != nil {
			return err
		}
	}
	if err := lagged(); err != nil {
		return err
	}
	return nil
}

func (s *messagingService) ListServices(ctx context.Context, req *connect.Request[pluginv1.ListServicesRequest]) (*connect.Response[pluginv1.ListServicesResponse], error) {
	providers, err := s.messages.ListServices(ctx, req.Msg.GetService(), req.Msg.GetMessageType())
	if err != nil {
		return nil, err
	}
	out := &pluginv1.ListServicesResponse{Services: []*pluginv1.ServiceProvider{}}
	for _, p := range providers {
		out.Services = append(out.Services, stream.ProviderToProto(p))
	}
	return connect.NewResponse(out), nil
}

func (s *messagingService) ListDeadLetters(ctx context.Context, req *connect.Request[pluginv1.ListDeadLettersRequest]) (*connect.Response[pluginv1.ListDeadLettersResponse], error) {
	limit := 100
	if req.Msg.Limit != nil {
		limit = int(req.Msg.GetLimit())
	}
	dls, err := s.messages.DeadLetters(ctx, req.Msg.GetPluginId(), limit)
	if err != nil {
		return nil, err
	}
	out := &pluginv1.ListDeadLettersResponse{DeadLetters: []*pluginv1.DeadLetter{}}
	for _, d := range dls {
		data, err := decodePayload(d.Data)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "a dead letter's payload is unreadable")
		}
		out.DeadLetters = append(out.DeadLetters, &pluginv1.DeadLetter{Id: d.ID, Kind: d.Kind, Source: d.Source, Type: d.Type,
			Data: data, Attempts: int32(d.Attempts), Reason: d.Reason, SentAt: timestamppb.New(d.SentAt), DeadLetteredAt: timestamppb.New(d.At)})
	}
	return connect.NewResponse(out), nil
}

// maxPayloadBytes bounds the data of one message, broadcast or event: the limit the plugin
// stream applies too.
const maxPayloadBytes = pluginhost.MaxPayloadBytes

// checkPayload refuses payloads larger than maxPayloadBytes (encoded).
func checkPayload(data *structpb.Struct) error {
	if n := proto.Size(data); n > maxPayloadBytes {
		return errs.WithFields(errs.ValidationError, "the payload is too large",
			[]errs.FieldViolation{{Field: "data", Description: fmt.Sprintf("is %d bytes encoded, at most %d", n, maxPayloadBytes)}})
	}
	return nil
}

// payload checks the size of an API payload and encodes it for the domain.
func payload(data *structpb.Struct) (pluginhost.Payload, error) {
	if err := checkPayload(data); err != nil {
		return nil, err
	}
	p, err := encodePayload(data)
	if err != nil {
		return nil, errs.New(errs.ValidationError, "data: %v", err)
	}
	return p, nil
}

// origin says who sends a broadcast or an event: the named plugin, the caller's own plugin
// (plugin tokens), or the caller's role.
func origin(ctx context.Context, plugin string) pluginhost.Origin {
	p, _ := principalFrom(ctx)
	if plugin == "" {
		plugin = p.PluginID
	}
	if plugin != "" {
		return pluginhost.Origin{Plugin: plugin}
	}
	return pluginhost.Origin{Role: string(p.Role)}
}
