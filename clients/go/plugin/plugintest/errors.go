package plugintest

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// ErrNotSubscribed is what Host.Emit returns for an event the plugin would not receive: it
// is not subscribed to the event's type, or lacks the permission events:subscribe.
var ErrNotSubscribed = errors.New("plugintest: the plugin is not subscribed to this event type")

// The API's error codes the test host answers with, as the real host does.
const (
	codeNotFound         = "PLUGIN_NOT_FOUND"
	codePermissionDenied = "PLUGIN_PERMISSION_DENIED"
	codeTimeout          = "PLUGIN_COMMUNICATION_TIMEOUT"
	codeUnavailable      = "PLUGIN_UNAVAILABLE"
	codeValidation       = "VALIDATION_ERROR"
	codeUnauthenticated  = "UNAUTHENTICATED"
)

// errorDomain is the ErrorInfo domain of Nexus errors.
const errorDomain = "nexus.dev"

// hostError returns the error the host answers a request with: an *plugin.Error, as the
// SDK hands it to the plugin, so that plugin.ErrorCode works on it in tests too.
func hostError(code, format string, args ...any) *plugin.Error {
	return &plugin.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// refusal returns the error a Connect call ends with, carried as the real host carries it:
// a Connect code and an ErrorInfo whose reason is the API's error code.
func refusal(code, format string, args ...any) *connect.Error {
	cc := connect.CodeInternal
	switch code {
	case codeUnauthenticated:
		cc = connect.CodeUnauthenticated
	case codePermissionDenied:
		cc = connect.CodePermissionDenied
	case codeValidation:
		cc = connect.CodeInvalidArgument
	case codeUnavailable:
		cc = connect.CodeUnavailable
	}
	ce := connect.NewError(cc, fmt.Errorf(format, args...))
	if d, err := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: code, Domain: errorDomain}); err == nil {
		ce.AddDetail(d)
	}
	return ce
}

// errorReply is the answer to one of the plugin's requests that failed.
func errorReply(requestID string, err *plugin.Error) *pluginhostv1.ConnectResponse {
	return replyFrame(&pluginhostv1.RequestReply{RequestId: requestID, ErrorCode: err.Code, ErrorMessage: err.Message})
}

func replyFrame(r *pluginhostv1.RequestReply) *pluginhostv1.ConnectResponse {
	return &pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Reply{Reply: r}}
}
