package busredis

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// The values stored in Redis are one compact binary record each (the field fieldEnvelope of
// an inbox or dead-letter entry, fieldReply of a reply, fieldNotice of a notice): a format
// byte, then the fields in a fixed order, strings and bytes as uvarint length and content,
// times as varint Unix nanoseconds (0 for the zero time). Decoding never trusts a length.

const (
	// formatV1 is the first byte of every record; another value is refused.
	formatV1 = 1
	// noticeHandback is an internal notice kind: entries of Target were handed back by a
	// closing consumer; consumers of Target look for them at once. Never shown to watchers.
	noticeHandback bus.NoticeKind = 100
)

var errCorrupt = errors.New("busredis: corrupt record")

// appendEnvelope appends the record of env to dst.
func appendEnvelope(dst []byte, env *bus.Envelope) []byte {
	dst = append(dst, formatV1, byte(env.Kind))
	dst = appendString(dst, env.ID)
	dst = appendString(dst, env.Source)
	dst = appendString(dst, env.Target)
	dst = appendString(dst, env.Type)
	dst = appendString(dst, env.ReplyTo)
	dst = appendTime(dst, env.Deadline)
	dst = appendTime(dst, env.SentAt)
	return appendBytes(dst, env.Data)
}

// decodeEnvelope decodes a record made by appendEnvelope.
func decodeEnvelope(b []byte) (bus.Envelope, error) {
	var env bus.Envelope
	r := reader{b: b}
	if r.byte() != formatV1 {
		return env, errCorrupt
	}
	env.Kind = bus.Kind(r.byte())
	env.ID = r.string()
	env.Source = r.string()
	env.Target = r.string()
	env.Type = r.string()
	env.ReplyTo = r.string()
	env.Deadline = r.time()
	env.SentAt = r.time()
	env.Data = r.bytes()
	if r.bad || len(r.b) != 0 {
		return bus.Envelope{}, errCorrupt
	}
	return env, nil
}

// appendReply appends the record of rep to dst.
func appendReply(dst []byte, rep *bus.Reply) []byte {
	dst = append(dst, formatV1)
	dst = appendString(dst, rep.MessageID)
	dst = appendString(dst, rep.Status)
	dst = appendString(dst, rep.ErrorCode)
	dst = appendString(dst, rep.ErrorMessage)
	return appendBytes(dst, rep.Data)
}

// decodeReply decodes a record made by appendReply.
func decodeReply(b []byte) (bus.Reply, error) {
	var rep bus.Reply
	r := reader{b: b}
	if r.byte() != formatV1 {
		return rep, errCorrupt
	}
	rep.MessageID = r.string()
	rep.Status = r.string()
	rep.ErrorCode = r.string()
	rep.ErrorMessage = r.string()
	rep.Data = r.bytes()
	if r.bad || len(r.b) != 0 {
		return bus.Reply{}, errCorrupt
	}
	return rep, nil
}

// appendNotice appends the record of a notice: its kind, then its envelope.
func appendNotice(dst []byte, kind bus.NoticeKind, env *bus.Envelope) []byte {
	dst = append(dst, byte(kind))
	return appendEnvelope(dst, env)
}

// decodeNotice decodes a record made by appendNotice.
func decodeNotice(b []byte) (bus.Notice, error) {
	if len(b) == 0 {
		return bus.Notice{}, errCorrupt
	}
	env, err := decodeEnvelope(b[1:])
	if err != nil {
		return bus.Notice{}, err
	}
	return bus.Notice{Kind: bus.NoticeKind(b[0]), Envelope: env}, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, 0)
	}
	return binary.AppendVarint(dst, t.UnixNano())
}

// reader consumes a record; the first malformed field sets bad and every later read
// returns zero values.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) byte() byte {
	if r.bad || len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// field returns the next length-prefixed field, aliasing r.b.
func (r *reader) field() []byte {
	if r.bad {
		return nil
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(len(r.b)-k) {
		r.bad = true
		return nil
	}
	f := r.b[k : k+int(n)]
	r.b = r.b[k+int(n):]
	return f
}

func (r *reader) string() string { return string(r.field()) }

// bytes returns a copy of the next field, nil when it is empty.
func (r *reader) bytes() []byte {
	f := r.field()
	if len(f) == 0 {
		return nil
	}
	return append([]byte(nil), f...)
}

func (r *reader) time() time.Time {
	if r.bad {
		return time.Time{}
	}
	n, k := binary.Varint(r.b)
	if k <= 0 {
		r.bad = true
		return time.Time{}
	}
	r.b = r.b[k:]
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// unixMilli is t in Unix milliseconds, or 0 for the zero time, for the fields Lua compares.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixMilli(), 1)
}
