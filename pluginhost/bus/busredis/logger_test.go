package busredis_test

import (
	"context"
	"log/slog"
	"testing"
)

// testLogger logs to t (warnings and above), so that what the bus logs shows with the test
// that caused it.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(&tbHandler{t: t})
}

type tbHandler struct {
	t     testing.TB
	attrs []slog.Attr
}

func (h *tbHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *tbHandler) Handle(_ context.Context, r slog.Record) error {
	msg := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		msg += " " + a.String()
		return true
	})
	defer func() { _ = recover() }() // logging after the test ended panics; drop it
	h.t.Log(msg)
	return nil
}

func (h *tbHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &tbHandler{t: h.t, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *tbHandler) WithGroup(string) slog.Handler { return h }
