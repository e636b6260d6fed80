package busredis_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
)

func TestEnvelopeRecord(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		env  bus.Envelope
	}{
		{"empty", bus.Envelope{}},
		{"message", bus.Envelope{
			ID: "m-1", Kind: bus.KindMessage, Source: "a", Target: "b", Type: "user.get",
			Data: []byte(`{"ü":"☃"}`), Deadline: now.Add(time.Minute), ReplyTo: "r1", SentAt: now,
		}},
		{"event without deadline", bus.Envelope{ID: "e", Kind: bus.KindEvent, Type: "x", SentAt: time.Unix(1, 5)}},
		{"before the epoch", bus.Envelope{ID: "old", SentAt: time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"large data", bus.Envelope{ID: "big", Data: bytes.Repeat([]byte("x"), 1<<20)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := busredis.AppendEnvelope(nil, &tc.env)
			got, err := busredis.DecodeEnvelope(rec)
			if err != nil {
				t.Fatalf("DecodeEnvelope: %v", err)
			}
			want := tc.env
			if got.ID != want.ID || got.Kind != want.Kind || got.Source != want.Source || got.Target != want.Target ||
				got.Type != want.Type || got.ReplyTo != want.ReplyTo || !bytes.Equal(got.Data, want.Data) ||
				!got.Deadline.Equal(want.Deadline) || !got.SentAt.Equal(want.SentAt) {
				t.Fatalf("decoded %+v; want %+v", got, want)
			}
			for i := range rec {
				if _, err := busredis.DecodeEnvelope(rec[:i]); err == nil {
					t.Fatalf("DecodeEnvelope of the first %d of %d bytes succeeded", i, len(rec))
				}
			}
		})
	}
}

func TestReplyAndNoticeRecords(t *testing.T) {
	r := bus.Reply{MessageID: "m", Status: "error", ErrorCode: "E", ErrorMessage: "msg", Data: []byte(`{}`)}
	got, err := busredis.DecodeReply(busredis.AppendReply(nil, &r))
	if err != nil || got.MessageID != r.MessageID || got.Status != r.Status || got.ErrorCode != r.ErrorCode ||
		got.ErrorMessage != r.ErrorMessage || !bytes.Equal(got.Data, r.Data) {
		t.Fatalf("DecodeReply = %+v, %v; want %+v", got, err, r)
	}
	env := bus.Envelope{ID: "c", Target: "p", Deadline: time.Unix(100, 0)}
	n, err := busredis.DecodeNotice(busredis.AppendNotice(nil, bus.NoticeCancel, &env))
	if err != nil || n.Kind != bus.NoticeCancel || n.ID != "c" || n.Target != "p" || !n.Deadline.Equal(env.Deadline) {
		t.Fatalf("DecodeNotice = %+v, %v", n, err)
	}
	if _, err := busredis.DecodeNotice(nil); err == nil {
		t.Fatal("DecodeNotice of nothing succeeded")
	}
}

// FuzzDecodeEnvelope feeds arbitrary bytes (what another process may have written to an
// inbox) to the decoder: it must never panic, and what it accepts must encode back to the
// same bytes.
func FuzzDecodeEnvelope(f *testing.F) {
	now := time.Unix(1_700_000_000, 123)
	f.Add(busredis.AppendEnvelope(nil, &bus.Envelope{ID: "m", Kind: bus.KindMessage, Data: []byte(`{}`), SentAt: now}))
	f.Add(busredis.AppendEnvelope(nil, &bus.Envelope{}))
	f.Add([]byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := busredis.DecodeEnvelope(b)
		if err != nil {
			return
		}
		again := busredis.AppendEnvelope(nil, &env)
		env2, err := busredis.DecodeEnvelope(again)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if env2.ID != env.ID || !bytes.Equal(env2.Data, env.Data) || !env2.SentAt.Equal(env.SentAt) || !env2.Deadline.Equal(env.Deadline) {
			t.Fatalf("round trip changed %+v into %+v", env, env2)
		}
	})
}
