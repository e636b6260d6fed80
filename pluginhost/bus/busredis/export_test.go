package busredis

import (
	"context"
	"sync"
	"time"
)

// Exported for the black-box tests of the record formats.
var (
	AppendEnvelope = appendEnvelope
	DecodeEnvelope = decodeEnvelope
	AppendReply    = appendReply
	DecodeReply    = decodeReply
	AppendNotice   = appendNotice
	DecodeNotice   = decodeNotice
)

// SkewClock makes b's clock run d ahead of this machine's, as another machine's might.
func SkewClock(b *Bus, d time.Duration) { b.relay.skew.Store(int64(d)) }

// StallSettles holds b's settles pipeline until the returned function is called: the
// settles queued meanwhile wait, as behind a slow round trip.
func StallSettles(b *Bus) (release func()) {
	held, released := make(chan struct{}), make(chan struct{})
	b.settles.add(&batchCall{
		ctx: context.Background(),
		prepare: func() ([]string, []any, bool) {
			close(held)
			<-released
			return nil, nil, false
		},
	})
	<-held
	return sync.OnceFunc(func() { close(released) })
}
