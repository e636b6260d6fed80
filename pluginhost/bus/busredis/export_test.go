package busredis

// Exported for the black-box tests of the record formats.
var (
	AppendEnvelope = appendEnvelope
	DecodeEnvelope = decodeEnvelope
	AppendReply    = appendReply
	DecodeReply    = decodeReply
	AppendNotice   = appendNotice
	DecodeNotice   = decodeNotice
)
