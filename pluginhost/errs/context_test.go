package errs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

func TestWrapIfContext(t *testing.T) {
	t.Parallel()
	plain := errors.New("disk on fire")
	domain := errs.Wrap(errs.PluginStartupFailed, context.Canceled, "plugin x failed to start")
	cases := []struct {
		name    string
		err     error
		code    errs.Code // "" when err must come back unchanged
		message string
	}{
		{"deadline", context.DeadlineExceeded, errs.PluginCommunicationTimeout, "the request timed out"},
		{"wrapped deadline", fmt.Errorf("busredis: publish: %w", context.DeadlineExceeded), errs.PluginCommunicationTimeout, "the request timed out"},
		{"canceled", context.Canceled, errs.PluginUnavailable, "the request was canceled"},
		{"wrapped canceled", fmt.Errorf("kv: put: %w", context.Canceled), errs.PluginUnavailable, "the request was canceled"},
		{"not a context error", plain, "", ""},
		{"a domain error wrapping a context error keeps its code", domain, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := errs.WrapIfContext(c.err)
			if c.code == "" {
				if got != c.err {
					t.Fatalf("WrapIfContext(%v) = %v, want it unchanged", c.err, got)
				}
				return
			}
			var e *errs.Error
			if !errors.As(got, &e) {
				t.Fatalf("WrapIfContext(%v) = %v, want an *errs.Error", c.err, got)
			}
			if e.Code != c.code || e.Message != c.message {
				t.Fatalf("WrapIfContext(%v) = %s %q, want %s %q", c.err, e.Code, e.Message, c.code, c.message)
			}
			if !errors.Is(got, c.err) {
				t.Fatalf("WrapIfContext(%v) = %v, which no longer wraps the cause", c.err, got)
			}
		})
	}
	if got := errs.WrapIfContext(nil); got != nil {
		t.Fatalf("WrapIfContext(nil) = %v", got)
	}
}
