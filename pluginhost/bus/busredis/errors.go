package busredis

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

var (
	errNoTarget   = errors.New("busredis: envelope has no target")
	errUnexpected = errors.New("busredis: unexpected answer from redis")
)

// wrapErr turns an error of a Redis call into the bus's errors: context errors stay what
// they are, a closed client is bus.ErrClosed once the bus is closed, every failure to reach
// Redis (network errors, timeouts, a server loading its data or refusing writes) wraps
// bus.ErrUnavailable, and an error answer from Redis is returned wrapped as is.
func (b *Bus) wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("busredis: %s: %w", op, err)
	case b.closed.Load():
		return fmt.Errorf("busredis: %s: %w", op, bus.ErrClosed)
	case unavailable(err):
		return fmt.Errorf("busredis: %s: %w (%w)", op, bus.ErrUnavailable, err)
	}
	return fmt.Errorf("busredis: %s: %w", op, err)
}

// unavailable reports whether err means Redis cannot serve the call now, as opposed to an
// error answer to the call itself.
func unavailable(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true // network error, timeout, pool timeout, closed client
	}
	return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsMasterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsClusterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.HasErrorPrefix(err, "BUSY")
}

// isNoGroup reports whether err says the stream or its consumer group is missing (the inbox
// was purged, or Redis restarted without persistence).
func isNoGroup(err error) bool {
	return redis.HasErrorPrefix(err, "NOGROUP")
}

// isNoScript reports whether err says the script cache lacks a script.
func isNoScript(err error) bool {
	return redis.HasErrorPrefix(err, "NOSCRIPT")
}
