package server

import (
	"fmt"

	"buf.build/go/protovalidate"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// The frames on the hot path of messaging (a plugin's send, its replies and acks) are
// checked by hand against the same rules as their buf.validate annotations: the generic
// validator cost a tenth of the host's CPU per routed message (nexus-bench profile). Every
// other frame goes through protovalidate. server/frames_test.go holds the two to the same
// verdicts.

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
