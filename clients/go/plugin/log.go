package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// logHandler is the slog.Handler behind Session.Logger: records become log frames on the
// session's current connection, or JSON lines on stderr while there is none. Attributes
// become the frame's metadata, groups nested objects.
type logHandler struct {
	session  *Session
	level    slog.Leveler
	fallback slog.Handler
	// goas are the groups and attributes added by WithGroup and WithAttrs, in order.
	goas []groupOrAttrs
}

// groupOrAttrs is either a group name or attributes.
type groupOrAttrs struct {
	group string
	attrs []slog.Attr
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *logHandler) Handle(ctx context.Context, rec slog.Record) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if c := h.session.currentConn(); c != nil {
		if err := c.send(ctx, h.frame(rec)); err == nil {
			return nil
		}
	}
	return h.fallback.Handle(ctx, rec)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.with(groupOrAttrs{attrs: slices.Clone(attrs)}, h.fallback.WithAttrs(attrs))
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.with(groupOrAttrs{group: name}, h.fallback.WithGroup(name))
}

func (h *logHandler) with(goa groupOrAttrs, fallback slog.Handler) *logHandler {
	return &logHandler{
		session:  h.session,
		level:    h.level,
		fallback: fallback,
		goas:     append(slices.Clip(h.goas), goa),
	}
}

// frame converts a record to a log frame.
func (h *logHandler) frame(rec slog.Record) *pluginhostv1.ConnectRequest {
	t := rec.Time
	if t.IsZero() {
		t = time.Now()
	}
	meta := map[string]any{}
	var groups []string
	for _, goa := range h.goas {
		if goa.group != "" {
			groups = append(groups, goa.group)
			continue
		}
		for _, a := range goa.attrs {
			addAttr(meta, groups, a)
		}
	}
	rec.Attrs(func(a slog.Attr) bool {
		addAttr(meta, groups, a)
		return true
	})
	l := &pluginhostv1.Log{
		Timestamp: timestamppb.New(t),
		Level:     levelName(rec.Level),
		Message:   cleanString(rec.Message, 65536),
	}
	if len(meta) > 0 {
		s, err := mapToStruct(meta)
		if err != nil {
			s = &structpb.Struct{Fields: map[string]*structpb.Value{
				"metadata_error": structpb.NewStringValue(cleanString(err.Error(), 1024)),
			}}
		}
		l.Metadata = s
	}
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Log{Log: l}}
}

// addAttr adds a to the object that groups name inside meta, following slog's rules: empty
// attributes are dropped, and so are empty groups; a group without a key is inlined.
func addAttr(meta map[string]any, groups []string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		attrs := a.Value.Group()
		if len(attrs) == 0 {
			return
		}
		if a.Key != "" {
			groups = append(slices.Clip(groups), a.Key)
		}
		for _, x := range attrs {
			addAttr(meta, groups, x)
		}
		return
	}
	target := meta
	for _, g := range groups {
		sub, ok := target[g].(map[string]any)
		if !ok {
			sub = map[string]any{}
			target[g] = sub
		}
		target = sub
	}
	target[a.Key] = attrValue(a.Value)
}

// attrValue converts a resolved, non-group value to a JSON-like value.
func attrValue(v slog.Value) any {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return v.Int64()
	case slog.KindUint64:
		return v.Uint64()
	case slog.KindFloat64:
		return v.Float64()
	case slog.KindBool:
		return v.Bool()
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	}
	x := v.Any()
	if err, ok := x.(error); ok {
		return err.Error()
	}
	if _, err := structpb.NewValue(x); err == nil {
		return x
	}
	if s, ok := x.(fmt.Stringer); ok {
		return s.String()
	}
	b, err := json.Marshal(x)
	if err != nil {
		return fmt.Sprint(x)
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return fmt.Sprint(x)
	}
	return generic
}

// levelName maps a slog level to the protocol's four.
func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARNING"
	default:
		return "ERROR"
	}
}
