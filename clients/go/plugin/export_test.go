package plugin

import "time"

// WithInlineBudget sets how long a job run by the goroutine holding the receive side may
// hold it (defaultInlineBudget otherwise): tests set it long, so that only the immediate
// hand-offs (a handler waiting for the host's reply, an HTTP call) let the receive side go
// on.
func WithInlineBudget(d time.Duration) Option {
	return optionFunc(func(o *options) { o.inlineBudget = d })
}
