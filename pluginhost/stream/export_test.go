package stream

// SessionSendBytes is sessionSendBytes, for the tests of the queue's bound.
const SessionSendBytes = sessionSendBytes
