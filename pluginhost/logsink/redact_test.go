package logsink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// jsonString is s as Go's encoding/json writes it in a document (quotes stripped): <, > and
// & as \u003c, \u003e and \u0026.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// plainJSONString is s as most other encoders write it: only " \ and control characters
// escaped.
func plainJSONString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	b := bytes.TrimSpace(buf.Bytes())
	return string(b[1 : len(b)-1])
}

// forms are the ways a secret can be written in a log record: as it is, and JSON-escaped
// once or twice (a JSON document inside a JSON string), the Go way and the plain way.
func forms(secret string) []string {
	out := []string{secret}
	for _, once := range []string{jsonString(secret), plainJSONString(secret)} {
		out = append(out, once, jsonString(once), plainJSONString(once))
	}
	return out
}

// leaks returns the forms of secret found in a record: in its message, in its metadata as
// stored, and in every string (keys included) of its metadata once decoded.
func leaks(r store.LogRecord, secret string) []string {
	var found []string
	texts := []string{r.Message, string(r.Metadata)}
	if len(r.Metadata) > 0 {
		var v any
		if err := json.Unmarshal(r.Metadata, &v); err != nil {
			found = append(found, "metadata is not JSON: "+err.Error())
		}
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				texts = append(texts, v)
			case []any:
				for _, x := range v {
					walk(x)
				}
			case map[string]any:
				for k, x := range v {
					texts = append(texts, k)
					walk(x)
				}
			}
		}
		walk(v)
	}
	for _, f := range forms(secret) {
		for _, t := range texts {
			if strings.Contains(t, f) {
				found = append(found, fmt.Sprintf("%q in %q", f, t))
			}
		}
	}
	return found
}

// TestSecretsAreRedactedInEveryForm logs secrets holding each character that JSON escapes
// (" and \) or that Go's encoder escapes besides (<, > and &), every way a plugin can: as
// plain text, as a JSON field, as a nested JSON value, inside a JSON document carried in a
// field, as a key, as the message, and through log frames (Add, as the stream session
// calls it, with the frame's metadata encoded by encoding/json). No form of a secret may be
// stored, and each record must say that something was hidden.
func TestSecretsAreRedactedInEveryForm(t *testing.T) {
	secrets := map[string]string{
		"quote":     `pa"ss-word`,
		"backslash": `pa\ss-word`,
		"less":      `pa<ss-word`,
		"greater":   `pa>ss-word`,
		"ampersand": `pa&ss-word`,
		"all":       `p"a\s<s>w&rd`,
		"unicode":   "pä<ss\u2028word",
	}
	js := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	plainJS := func(v any) string {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(buf.String())
	}
	ways := []struct {
		name string
		log  func(s *logsink.Sink, id, secret string)
	}{
		{"plain text on stdout", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", "connecting with "+secret, false)
		}},
		{"plain text on stderr, cut", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stderr", "fatal: bad password "+secret, true)
		}},
		{"JSON line without a message, kept as text", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", js(map[string]any{"password": secret}), false)
		}},
		{"JSON line without a message, plain escaping", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", plainJS(map[string]any{"password": secret}), false)
		}},
		{"JSON field", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", js(map[string]any{"level": "info", "msg": "connecting", "password": secret}), false)
		}},
		{"JSON field, plain escaping", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", plainJS(map[string]any{"level": "info", "msg": "connecting", "password": secret}), false)
		}},
		{"nested JSON value", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", js(map[string]any{"level": "warn", "message": "connecting",
				"db": map[string]any{"auth": map[string]any{"password": "x" + secret + "y"}, "tried": []any{1, secret}}}), false)
		}},
		{"JSON document inside a JSON field", func(s *logsink.Sink, id, secret string) {
			body := plainJS(map[string]any{"password": secret})
			s.AddLine(id, "stdout", js(map[string]any{"level": "info", "msg": "request", "body": body}), false)
		}},
		{"JSON key", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", js(map[string]any{"level": "info", "msg": "seen", "users": map[string]any{secret: 1}}), false)
		}},
		{"JSON message", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", js(map[string]any{"level": "error", "msg": "login failed for " + secret}), false)
		}},
		{"JSON message holding JSON", func(s *logsink.Sink, id, secret string) {
			s.AddLine(id, "stdout", js(map[string]any{"level": "error", "msg": "sent " + js(map[string]any{"password": secret})}), false)
		}},
		{"log frame message", func(s *logsink.Sink, id, secret string) {
			s.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "token " + secret})
		}},
		{"log frame metadata", func(s *logsink.Sink, id, secret string) {
			meta, _ := json.Marshal(map[string]any{"password": secret, "nested": map[string]any{"list": []any{"a", secret}}})
			s.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "connecting", Metadata: meta})
		}},
		{"log frame metadata holding JSON", func(s *logsink.Sink, id, secret string) {
			meta, _ := json.Marshal(map[string]any{"body": js(map[string]any{"password": secret})})
			s.Add(store.LogRecord{PluginID: id, Level: "INFO", Message: "request", Metadata: meta})
		}},
	}
	s, st := newSink(t)
	for name, secret := range secrets {
		for i, way := range ways {
			id := fmt.Sprintf("p-%s-%d", name, i)
			s.SetSecrets(id, []string{secret, "unrelated-secret"})
			way.log(s, id, secret)
		}
	}
	if err := s.Purge(context.Background(), "barrier"); err != nil { // what was queued is stored
		t.Fatal(err)
	}
	for name, secret := range secrets {
		for i, way := range ways {
			t.Run(name+"/"+way.name, func(t *testing.T) {
				id := fmt.Sprintf("p-%s-%d", name, i)
				recs := stored(t, st, id)
				if len(recs) != 1 {
					t.Fatalf("%d records stored", len(recs))
				}
				r := recs[0]
				if l := leaks(r, secret); len(l) > 0 {
					t.Fatalf("the secret %q was stored: %s (message %q, metadata %s)", secret, strings.Join(l, "; "), r.Message, r.Metadata)
				}
				if !strings.Contains(r.Message+string(r.Metadata), "***hidden***") {
					t.Fatalf("nothing says the secret was hidden: message %q, metadata %s", r.Message, r.Metadata)
				}
				if recent := s.Recent(id); len(recent) != 1 || len(leaks(recent[0], secret)) > 0 {
					t.Fatalf("recent records %+v", recent)
				}
			})
		}
	}
}

// Redact hides a plugin's secrets in text in every form, as the log records do, and
// nothing of another plugin's.
func TestRedact(t *testing.T) {
	s, _ := newSink(t)
	secret := `a"b\c<d>e&f`
	s.SetSecrets("p-plugin", []string{secret, "abc"}) // too short to be a secret: kept
	for _, f := range forms(secret) {
		in := "before " + f + " after abc"
		if got, want := s.Redact("p-plugin", in), "before ***hidden*** after abc"; got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		if got := s.Redact("other-plugin", in); got != in {
			t.Errorf("another plugin's text changed: %q", got)
		}
	}
	// A number holding a secret's digits is hidden whole, and the metadata stays JSON.
	s.SetSecrets("n-plugin", []string{"12345678"})
	s.Add(store.LogRecord{PluginID: "n-plugin", Level: "INFO", Message: "pin", Metadata: []byte(`{"pin":9123456789,"count":3}`)})
	if err := s.Purge(context.Background(), "barrier"); err != nil {
		t.Fatal(err)
	}
	r := s.Recent("n-plugin")
	if len(r) != 1 || string(r[0].Metadata) != `{"count":3,"pin":"***hidden***"}` {
		t.Fatalf("metadata %s", r[0].Metadata)
	}
}

// FuzzRedaction checks that no form of a secret survives in a JSON log line, whatever the
// secret and the text around it.
func FuzzRedaction(f *testing.F) {
	for _, seed := range []string{`pa"ss-word`, `pa\ss`, `<tag>`, `a&b&c`, "pä\u2028ss", "plain-secret"} {
		f.Add(seed, "before ", " after")
	}
	f.Fuzz(func(t *testing.T, secret, before, after string) {
		if len(secret) < 4 || !utf8.ValidString(secret+before+after) || strings.Contains(secret, "*") ||
			strings.Contains("***hidden***", secret) || strings.ContainsAny(secret, "\n\r") {
			t.Skip()
		}
		s := logsink.New(nil, nil, 10)
		s.SetSecrets("p-plugin", []string{secret})
		text := before + secret + after
		doc, _ := json.Marshal(map[string]any{"k": text, "n": []any{map[string]any{text: text}}})
		for _, in := range []string{text, string(doc), jsonString(string(doc)), plainJSONString(string(doc))} {
			out := s.Redact("p-plugin", in)
			for _, form := range forms(secret) {
				if strings.Contains(out, form) {
					t.Fatalf("Redact(%q) = %q holds %q", in, out, form)
				}
			}
		}
	})
}

// The launch token is hidden like a secret, and a configuration change (SetSecrets) does
// not drop it; the next launch's token replaces it.
func TestLaunchTokenIsHidden(t *testing.T) {
	s, _ := newSink(t)
	s.SetLaunchToken("t-plugin", "nxt_launch-one")
	s.SetSecrets("t-plugin", []string{"config-secret"})
	if got := s.Redact("t-plugin", "token nxt_launch-one and config-secret"); got != "token ***hidden*** and ***hidden***" {
		t.Errorf("Redact = %q", got)
	}
	s.SetLaunchToken("t-plugin", "nxt_launch-two")
	if got := s.Redact("t-plugin", "nxt_launch-one nxt_launch-two"); got != "nxt_launch-one ***hidden***" {
		t.Errorf("after a new launch: %q", got)
	}
}
