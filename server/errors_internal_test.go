package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// TestErrorTable checks every API error code against the contract of ARCHITECTURE.md §3,
// stated here independently of the table in errors.go.
func TestErrorTable(t *testing.T) {
	t.Parallel()
	want := map[errs.Code]wireCode{
		"PLUGIN_NOT_FOUND":             {404, connect.CodeNotFound},
		"PLUGIN_ALREADY_INSTALLED":     {409, connect.CodeAlreadyExists},
		"PLUGIN_DEPENDENCY_ERROR":      {409, connect.CodeFailedPrecondition},
		"PLUGIN_PERMISSION_DENIED":     {403, connect.CodePermissionDenied},
		"PLUGIN_INSTALLATION_FAILED":   {500, connect.CodeInternal},
		"PLUGIN_STARTUP_FAILED":        {500, connect.CodeInternal},
		"PLUGIN_INCOMPATIBLE":          {400, connect.CodeInvalidArgument},
		"PLUGIN_CONFIGURATION_ERROR":   {400, connect.CodeInvalidArgument},
		"PLUGIN_COMMUNICATION_TIMEOUT": {408, connect.CodeDeadlineExceeded},
		"PLUGIN_UNAVAILABLE":           {503, connect.CodeUnavailable},
		"VALIDATION_ERROR":             {400, connect.CodeInvalidArgument},
		"UNAUTHENTICATED":              {401, connect.CodeUnauthenticated},
		"PLUGIN_ROUTE_CONFLICT":        {409, connect.CodeAlreadyExists},
		"UNIMPLEMENTED":                {501, connect.CodeUnimplemented},
		"INTERNAL_ERROR":               {500, connect.CodeInternal},
	}
	if len(errs.Codes) != len(want) {
		t.Fatalf("errs.Codes has %d codes, the contract %d", len(errs.Codes), len(want))
	}
	for _, code := range errs.Codes {
		t.Run(string(code), func(t *testing.T) {
			w, ok := want[code]
			if !ok {
				t.Fatalf("code %s is not in the contract", code)
			}
			if got := wireOf(code); got != w {
				t.Fatalf("wire form %+v, want %+v", got, w)
			}
			de := errs.WithFields(code, "message for the caller", []errs.FieldViolation{{Field: "f", Description: "bad"}}).WithDetail("k", []string{"v"})
			ce := toConnect(de)
			if ce.Code() != w.Connect || ce.Message() != "message for the caller" {
				t.Fatalf("connect error %v", ce)
			}
			var reason string
			var fields int
			for _, d := range ce.Details() {
				v, err := d.Value()
				if err != nil {
					t.Fatal(err)
				}
				switch m := v.(type) {
				case *errdetails.ErrorInfo:
					reason = m.GetReason()
				case *errdetails.BadRequest:
					fields = len(m.GetFieldViolations())
				}
			}
			if reason != string(code) || fields != 1 {
				t.Fatalf("ErrorInfo reason %q, %d field violations", reason, fields)
			}
			// A Connect error carrying the reason maps back to the same code.
			if back := toDomain(ce); back.Code != code {
				t.Fatalf("round trip gives %s", back.Code)
			}
			body := errorBody(de)
			if body.Code != string(code) || body.Details["k"] == nil || body.Details["fields"] == nil {
				t.Fatalf("REST error body %+v", body)
			}
		})
	}
}

func TestToDomainClassifiesForeignErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want errs.Code
	}{
		{errors.New("disk on fire"), errs.Internal},
		{connect.NewError(connect.CodeInvalidArgument, errors.New("bad body")), errs.ValidationError},
		{connect.NewError(connect.CodeResourceExhausted, errors.New("too big")), codeRequestTooLarge},
		{connect.NewError(connect.CodeUnauthenticated, errors.New("who")), errs.Unauthenticated},
		{connect.NewError(connect.CodeInternal, errors.New("secret internals")), errs.Internal},
		// Context errors, bare or wrapped (connect-go wraps them as canceled and
		// deadline_exceeded), map through errs.WrapIfContext.
		{context.DeadlineExceeded, errs.PluginCommunicationTimeout},
		{fmt.Errorf("publish: %w", context.Canceled), errs.PluginUnavailable},
		{connect.NewError(connect.CodeCanceled, context.Canceled), errs.PluginUnavailable},
		{connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded), errs.PluginCommunicationTimeout},
	}
	for _, c := range cases {
		de := toDomain(c.err)
		if de.Code != c.want {
			t.Errorf("%v: got %s, want %s", c.err, de.Code, c.want)
		}
		if de.Code == errs.Internal && de.Message != "internal error" {
			t.Errorf("internal error leaks %q", de.Message)
		}
	}
	if got := wireOf(codeRequestTooLarge).HTTP; got != http.StatusRequestEntityTooLarge {
		t.Errorf("REQUEST_TOO_LARGE is HTTP %d", got)
	}
}
