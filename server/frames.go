package server

import (
	"fmt"
	"unicode/utf8"

	"buf.build/go/protovalidate"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// The frames on the hot path of messaging (a plugin's send, its replies and acks) are
// checked by hand against the same rules as their buf.validate annotations: the generic
// validator cost a tenth of the host's CPU per routed message (nexus-bench profile). So are
// the hello and the health reports, for the stack of the goroutine that serves an idle
// session (see validateFrame). Every other frame goes through protovalidate.
// server/frames_test.go holds the two to the same verdicts.

// pluginIDPattern and messageTypePattern are the rules of plugin ids and message types
// (for the messages of validation errors); validPluginID and validMessageType check them
// without the regexp engine, which cost more than the rest of the frame's checks.
const (
	pluginIDPattern    = `^[a-z][a-z0-9-]{1,62}[a-z0-9]$`
	messageTypePattern = `^[A-Za-z][A-Za-z0-9_.:-]{0,127}$`
)

func validPluginID(s string) bool {
	if len(s) < 3 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

func validMessageType(s string) bool {
	if len(s) < 1 || len(s) > 128 || !isASCIILetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isASCIILetter(c) && (c < '0' || c > '9') && c != '_' && c != '.' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

func isASCIILetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// validateFrame checks one frame from a plugin; a bad request frame comes back as a
// pluginhost.InvalidFrame naming its request.
func validateFrame(v protovalidate.Validator, req *pluginhostv1.ConnectRequest) error {
	var problems []errs.FieldViolation
	bad := func(field, desc string, args ...any) {
		problems = append(problems, errs.FieldViolation{Field: field, Description: fmt.Sprintf(desc, args...)})
	}
	switch f := req.GetFrame().(type) {
	case *pluginhostv1.ConnectRequest_Reply:
		r := f.Reply
		if r.GetDeliveryId() == "" {
			bad("reply.delivery_id", "value length must be at least 1 characters")
		}
		if s := r.GetStatus(); s != "success" && s != "error" {
			bad("reply.status", "value must be in list [success, error]")
		}
		if n := len([]rune(r.GetErrorMessage())); n > 4096 {
			bad("reply.error_message", "value length must be at most 4096 characters")
		}
	case *pluginhostv1.ConnectRequest_Ack:
		a := f.Ack
		if a.GetDeliveryId() == "" {
			bad("ack.delivery_id", "value length must be at least 1 characters")
		}
		if _, ok := pluginhostv1.AckAction_name[int32(a.GetAction())]; !ok || a.GetAction() == pluginhostv1.AckAction_ACK_ACTION_UNSPECIFIED {
			bad("ack.action", "value must be a defined enum value other than ACK_ACTION_UNSPECIFIED")
		}
		if s := a.GetExtendSeconds(); s < 0 || s > 600 {
			bad("ack.extend_seconds", "value must be greater than or equal to 0 and less than or equal to 600")
		}
		if n := len([]rune(a.GetReason())); n > 4096 {
			bad("ack.reason", "value length must be at most 4096 characters")
		}
	case *pluginhostv1.ConnectRequest_Send:
		s := f.Send
		if n := len([]rune(s.GetRequestId())); n < 1 || n > 128 {
			bad("send.request_id", "value length must be between 1 and 128 characters, inclusive")
		}
		if !validPluginID(s.GetTargetPlugin()) {
			bad("send.target_plugin", "value does not match regex pattern `%s`", pluginIDPattern)
		}
		if !validMessageType(s.GetMessageType()) {
			bad("send.message_type", "value does not match regex pattern `%s`", messageTypePattern)
		}
		if t := s.GetTimeoutSeconds(); t < 0 || t > 300 {
			bad("send.timeout_seconds", "value must be greater than or equal to 0 and less than or equal to 300")
		}
	// The HTTP frames of an endpoint call: on the path of every call, so checked by hand
	// too (protovalidate's generic walk cost about a tenth of a small call's time).
	case *pluginhostv1.ConnectRequest_HttpResponse:
		r := f.HttpResponse
		if r.GetRequestId() == "" {
			bad("http_response.request_id", "value length must be at least 1 characters")
		}
		if st := r.GetStatus(); st < 100 || st > 999 {
			bad("http_response.status", "value must be greater than or equal to 100 and less than or equal to 999")
		}
		if n := len(r.GetBody()); n > 65536 {
			bad("http_response.body", "value length must be at most 65536 bytes")
		}
	case *pluginhostv1.ConnectRequest_HttpResponseBody:
		b := f.HttpResponseBody
		if b.GetRequestId() == "" {
			bad("http_response_body.request_id", "value length must be at least 1 characters")
		}
		if n := len(b.GetChunk()); n > 65536 {
			bad("http_response_body.chunk", "value length must be at most 65536 bytes")
		}
	case *pluginhostv1.ConnectRequest_HttpWindow:
		w := f.HttpWindow
		if w.GetRequestId() == "" {
			bad("http_window.request_id", "value length must be at least 1 characters")
		}
		if w.GetBytes() <= 0 {
			bad("http_window.bytes", "value must be greater than 0")
		}
	// A session's first frame and the health reports that an idle session still receives:
	// checked by hand for their depth rather than their cost. They are received on the
	// goroutine that serves the session, and protovalidate's walk took its stack from 8 to
	// 16 KiB, which it then kept for the whole session (it shrinks back only below a
	// quarter in use, and an idle session waiting in Receive uses more).
	case *pluginhostv1.ConnectRequest_Hello:
		checkHello(f.Hello, bad)
	case *pluginhostv1.ConnectRequest_HealthReport:
		checkHealthReport(f.HealthReport, bad)
	default:
		if err := v.Validate(req); err != nil {
			return &pluginhost.InvalidFrame{RequestID: requestIDOf(req), Err: toDomain(err)}
		}
		return nil
	}
	if len(problems) > 0 {
		return &pluginhost.InvalidFrame{RequestID: requestIDOf(req), Err: errs.WithFields(errs.ValidationError, "the request is invalid", problems)}
	}
	return nil
}

// subscriptionPattern is the rule of the event type patterns of a hello's subscriptions.
const subscriptionPattern = `^[A-Za-z0-9_*.:-]{1,128}$`

// checkHello checks a hello against its buf.validate rules, reporting each violation to bad.
func checkHello(h *pluginhostv1.Hello, bad func(field, desc string, args ...any)) {
	if !validPluginID(h.GetPluginId()) {
		bad("hello.plugin_id", "value does not match regex pattern `%s`", pluginIDPattern)
	}
	for _, f := range []struct {
		name, value string
	}{{"instance_id", h.GetInstanceId()}, {"version", h.GetVersion()}, {"sdk", h.GetSdk()}} {
		if utf8.RuneCountInString(f.value) > 128 {
			bad("hello."+f.name, "value length must be at most 128 characters")
		}
	}
	for _, l := range []struct {
		name     string
		items    []string
		maxItems int
		pattern  bool // each item matches subscriptionPattern; else it has at most 128 characters
	}{
		{"services", h.GetServices(), 64, false},
		{"message_types", h.GetMessageTypes(), 256, false},
		{"subscriptions", h.GetSubscriptions(), 256, true},
	} {
		if len(l.items) > l.maxItems {
			bad("hello."+l.name, "value must contain no more than %d item(s)", l.maxItems)
		}
		for i, item := range l.items {
			switch {
			case l.pattern && !validSubscription(item):
				bad(fmt.Sprintf("hello.%s[%d]", l.name, i), "value does not match regex pattern `%s`", subscriptionPattern)
			case !l.pattern && utf8.RuneCountInString(item) > 128:
				bad(fmt.Sprintf("hello.%s[%d]", l.name, i), "value length must be at most 128 characters")
			}
		}
	}
}

// validSubscription reports whether s matches subscriptionPattern.
func validSubscription(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isASCIILetter(c), c >= '0' && c <= '9', c == '_', c == '*', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// checkHealthReport checks a health report against its buf.validate rules, reporting each
// violation to bad.
func checkHealthReport(r *pluginhostv1.HealthReport, bad func(field, desc string, args ...any)) {
	checks := r.GetChecks()
	if len(checks) > 64 {
		bad("health_report.checks", "value must contain no more than 64 item(s)")
	}
	for i, c := range checks {
		field := func(name string) string { return fmt.Sprintf("health_report.checks[%d].%s", i, name) }
		switch n := utf8.RuneCountInString(c.GetName()); {
		case n < 1:
			bad(field("name"), "value length must be at least 1 characters")
		case n > 128:
			bad(field("name"), "value length must be at most 128 characters")
		}
		if st := c.GetStatus(); st != "pass" && st != "warning" && st != "fail" {
			bad(field("status"), "value must be in list [pass, warning, fail]")
		}
		if utf8.RuneCountInString(c.GetDetails()) > 4096 {
			bad(field("details"), "value length must be at most 4096 characters")
		}
		if utf8.RuneCountInString(c.GetUnit()) > 32 {
			bad(field("unit"), "value length must be at most 32 characters")
		}
	}
}
