package metrics

import "time"

// Option configures a Store.
type Option interface {
	apply(*config)
}

// config holds the settings New applies; defaults are set before any Option runs.
type config struct {
	now func() time.Time
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithClock makes the store read the time from now instead of time.Now. Tests use it to move
// time forward deterministically. A nil now keeps the default.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(c *config) {
		if now != nil {
			c.now = now
		}
	})
}
