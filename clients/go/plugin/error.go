package plugin

import (
	"errors"
	"fmt"

	nexus "github.com/nexus-platform/nexus/clients/go"
)

// Error is a failed request of the plugin's own (Session.Send, Session.Emit, KV.Put, ...):
// either the host's answer, or a check the SDK made before sending anything.
type Error struct {
	// Code is one of the API's error codes, e.g. "PLUGIN_NOT_FOUND", "PLUGIN_UNAVAILABLE",
	// "PLUGIN_PERMISSION_DENIED", "PLUGIN_COMMUNICATION_TIMEOUT" or "VALIDATION_ERROR".
	Code string
	// Message says what went wrong, for a person.
	Message string
}

// Error returns the code and the message.
func (e *Error) Error() string {
	switch {
	case e.Code == "":
		return e.Message
	case e.Message == "":
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// ErrorCode returns the API error code that err carries: the Code of an *Error in its
// chain, or else the code of an error the host ended the stream with (see nexus.ErrorCode,
// e.g. for the error Run returns when the host refuses the plugin). It returns "" when err
// carries no code.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return nexus.ErrorCode(err)
}

// The error codes the SDK itself produces.
const (
	codeUnavailable      = "PLUGIN_UNAVAILABLE"
	codePermissionDenied = "PLUGIN_PERMISSION_DENIED"
	codeValidation       = "VALIDATION_ERROR"
)

// errConnectionLost fails the requests that were waiting for a reply when the connection
// to the host broke; whether the host acted on them is unknown.
var errConnectionLost = &Error{Code: codeUnavailable, Message: "connection to the host lost"}

// errStopped fails the requests made once Run is over, or about to be.
var errStopped = &Error{Code: codeUnavailable, Message: "the plugin is not running"}

// invalid returns a VALIDATION_ERROR for a request the SDK refuses to send: the host would
// reject the frame and end the whole stream with it.
func invalid(format string, args ...any) *Error {
	return &Error{Code: codeValidation, Message: fmt.Sprintf(format, args...)}
}
