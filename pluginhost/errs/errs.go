// Package errs defines the domain errors of Nexus: every failure a caller can see carries one
// of the API's error codes, a message written for the caller, and optional per-field
// violations. The transport edge (server) maps codes to HTTP statuses and Connect codes in a
// single table; domain code only chooses the code.
package errs

import (
	"errors"
	"fmt"
)

// Code is one of the API's error codes, as the reference document spells them.
type Code string

// The error codes of the API.
const (
	PluginNotFound             Code = "PLUGIN_NOT_FOUND"
	PluginAlreadyInstalled     Code = "PLUGIN_ALREADY_INSTALLED"
	PluginDependencyError      Code = "PLUGIN_DEPENDENCY_ERROR"
	PluginPermissionDenied     Code = "PLUGIN_PERMISSION_DENIED"
	PluginInstallationFailed   Code = "PLUGIN_INSTALLATION_FAILED"
	PluginStartupFailed        Code = "PLUGIN_STARTUP_FAILED"
	PluginIncompatible         Code = "PLUGIN_INCOMPATIBLE"
	PluginConfigurationError   Code = "PLUGIN_CONFIGURATION_ERROR"
	PluginCommunicationTimeout Code = "PLUGIN_COMMUNICATION_TIMEOUT"
	PluginUnavailable          Code = "PLUGIN_UNAVAILABLE"
	ValidationError            Code = "VALIDATION_ERROR"
	Unauthenticated            Code = "UNAUTHENTICATED"
	// PluginRouteConflict refuses a plugin whose HTTP endpoint claims a path of Nexus's own
	// API or one another active plugin serves.
	PluginRouteConflict Code = "PLUGIN_ROUTE_CONFLICT"
	// Unimplemented marks an operation whose capability has not been built yet.
	Unimplemented Code = "UNIMPLEMENTED"
	// Internal marks a fault of the host itself; its message never carries internals.
	Internal Code = "INTERNAL_ERROR"
)

// Codes lists every code, in the order of the reference document's table.
var Codes = []Code{
	PluginNotFound, PluginAlreadyInstalled, PluginDependencyError, PluginPermissionDenied,
	PluginInstallationFailed, PluginStartupFailed, PluginIncompatible, PluginConfigurationError,
	PluginCommunicationTimeout, PluginUnavailable, ValidationError, Unauthenticated,
	PluginRouteConflict, Unimplemented, Internal,
}

// FieldViolation is one problem with one field of the input.
type FieldViolation struct {
	// Field is the path of the field, dotted (e.g. "configuration.batch_size", "tags[2]").
	Field string `json:"field"`
	// Description says what is wrong, for the caller.
	Description string `json:"description"`
}

func (v FieldViolation) String() string { return v.Field + ": " + v.Description }

// Error is a domain error with an API error code.
type Error struct {
	Code    Code
	Message string
	// Fields lists per-field problems, when the error is about the input.
	Fields []FieldViolation
	// Details carries further machine-readable facts (e.g. the dependents that block an
	// uninstall). Values must be JSON-compatible.
	Details map[string]any
	// Err is the cause, for logs; it is never shown to callers.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return string(e.Code) + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, errs.New(errs.PluginNotFound, "")) matches any not-found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// New returns an error with a code and a message for the caller.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error with a code, a message for the caller and a cause for the logs.
func Wrap(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: cause}
}

// WithFields returns an error listing per-field problems.
func WithFields(code Code, message string, fields []FieldViolation) *Error {
	return &Error{Code: code, Message: message, Fields: fields}
}

// WithDetail adds a detail and returns e.
func (e *Error) WithDetail(key string, value any) *Error {
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details[key] = value
	return e
}

// CodeOf returns the code of err, or Internal when err carries none.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Is reports whether err carries code.
func Is(err error, code Code) bool { return CodeOf(err) == code }

// MessageOf is the message of err for the caller: an *Error's Message (without its
// cause), or the text of any other error.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}
