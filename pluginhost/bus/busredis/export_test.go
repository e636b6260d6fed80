package busredis

import "time"

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
