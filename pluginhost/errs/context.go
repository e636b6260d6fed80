package errs

import (
	"context"
	"errors"
)

// WrapIfContext turns an error that a context ended into the API's error, and returns
// every other error unchanged. It is the one place that maps context errors, as connect-go's
// wrapIfContextError does for Connect codes; the host (replies on the plugin stream, bus
// failures) and the server (REST and Connect answers) both use it, so a context error
// reads the same on every protocol:
//
//   - context.DeadlineExceeded: PLUGIN_COMMUNICATION_TIMEOUT, "the request timed out"
//     (HTTP 408, Connect deadline_exceeded);
//   - context.Canceled: PLUGIN_UNAVAILABLE, "the request was canceled" (HTTP 503, Connect
//     unavailable). The API has no code of its own for a canceled call: the caller that
//     canceled reads no answer, and a call the host cancels because it or the plugin's
//     session is stopping is one to retry once the plugin is available again.
//
// An error that already carries an API code (an *Error anywhere in its chain) keeps it,
// even when it wraps a context error. The result wraps err, so errors.Is(result,
// context.Canceled) still holds.
func WrapIfContext(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return Wrap(PluginCommunicationTimeout, err, "the request timed out")
	case errors.Is(err, context.Canceled):
		return Wrap(PluginUnavailable, err, "the request was canceled")
	}
	return err
}
