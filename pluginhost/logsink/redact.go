package logsink

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// hidden is what stands in for a secret value.
const hidden = "***hidden***"

// minSecretLen is the length below which a configured value is not treated as a secret in
// logs: hiding every "on" or "123" would garble them and protect nothing.
const minSecretLen = 4

// escapeDepth is how many JSON encodings deep a secret is found in text: 2 covers a JSON
// document carried in a string field of a JSON line (the plugin's or the host's).
const escapeDepth = 2

// redactor hides a plugin's secret values in every form they can take in its output: as
// they are, and as JSON encoders write them inside strings (see jsonStyles), up to
// escapeDepth encodings deep. It is immutable once made.
type redactor struct {
	forms []string // every form of every secret, longest first
	rep   *strings.Replacer
}

// newRedactor returns the redactor of values, or nil when none of them is long enough to be
// treated as a secret.
func newRedactor(values []string) *redactor {
	seen := map[string]bool{}
	var forms []string
	add := func(f string) bool {
		if f == "" || seen[f] {
			return false
		}
		seen[f] = true
		forms = append(forms, f)
		return true
	}
	for _, v := range values {
		if len(v) < minSecretLen {
			continue
		}
		level := []string{v}
		add(v)
		for range escapeDepth {
			var next []string
			for _, f := range level {
				for _, st := range jsonStyles {
					if e := st.escape(f); add(e) {
						next = append(next, e)
					}
				}
			}
			level = next
		}
	}
	if len(forms) == 0 {
		return nil
	}
	// Longest first: the Replacer takes, at each position, the first form that matches, so
	// a secret that contains another (or an escaped form that contains the raw one) is
	// replaced whole.
	sort.SliceStable(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, hidden)
	}
	return &redactor{forms: forms, rep: strings.NewReplacer(pairs...)}
}

// text hides every form of the secrets in s.
func (r *redactor) text(s string) string {
	if r == nil {
		return s
	}
	// Most lines hold no secret: strings.Contains is much faster than the Replacer's search
	// for them.
	for _, f := range r.forms {
		if strings.Contains(s, f) {
			return r.rep.Replace(s)
		}
	}
	return s
}

// json hides the secrets in a JSON document: every string in it, keys included, is redacted
// as text (so a secret is found however the document's author escaped it, and in JSON
// carried inside its strings), and a number whose digits hold a secret becomes the string
// "***hidden***". The document stays valid JSON; it is returned unchanged when nothing was hidden.
// What does not parse as one JSON value is redacted as text.
func (r *redactor) json(b []byte) []byte {
	if r == nil || len(b) == 0 {
		return b
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return []byte(r.text(string(b)))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return []byte(r.text(string(b)))
	}
	v, changed := r.value(v)
	if !changed {
		return b
	}
	out, err := json.Marshal(v)
	if err != nil {
		return []byte(r.text(string(b)))
	}
	return out
}

// value redacts a decoded JSON value and reports whether anything changed. Two keys of an
// object that differ only in the secrets they hold become one.
func (r *redactor) value(v any) (any, bool) {
	switch v := v.(type) {
	case string:
		s := r.text(v)
		return s, s != v
	case json.Number:
		if r.text(string(v)) != string(v) {
			return hidden, true
		}
		return v, false
	case []any:
		changed := false
		for i, x := range v {
			var c bool
			v[i], c = r.value(x)
			changed = changed || c
		}
		return v, changed
	case map[string]any:
		changed := false
		out := make(map[string]any, len(v))
		for k, x := range v {
			k2 := r.text(k)
			x2, c := r.value(x)
			changed = changed || c || k2 != k
			out[k2] = x2
		}
		return out, changed
	}
	return v, false
}

// jsonStyle is one way JSON encoders write the characters of a string. Every style escapes
// " and \ and the control characters (\b, \f, \n, \r and \t short, the others as \u00XX).
type jsonStyle struct {
	html     bool // <, > and & as \u003c, \u003e and \u0026
	lineSeps bool // U+2028 and U+2029 as \u2028 and \u2029
	slash    bool // / as \/
	ascii    bool // every character beyond ASCII as \uXXXX (UTF-16 surrogate pairs beyond the BMP)
	badUTF8  bool // invalid UTF-8 bytes as \ufffd (otherwise kept)
}

// jsonStyles are the encoders' styles a secret is looked for in.
var jsonStyles = []jsonStyle{
	{}, // JavaScript's JSON.stringify, Rust's serde_json and most others
	{html: true, lineSeps: true, badUTF8: true}, // Go's encoding/json, which the host re-encodes fields with
	{lineSeps: true, badUTF8: true},             // Go's json.Encoder with SetEscapeHTML(false)
	{ascii: true},                               // Python's json.dumps
	{ascii: true, slash: true},                  // PHP's json_encode
}

const hexDigits = "0123456789abcdef"

// escape returns s as st writes it inside a JSON string, without the quotes.
func (st jsonStyle) escape(s string) string {
	var b strings.Builder
	u := func(r rune) {
		b.WriteString(`\u`)
		for shift := 12; shift >= 0; shift -= 4 {
			b.WriteByte(hexDigits[(r>>shift)&0xf])
		}
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			if st.badUTF8 {
				b.WriteString(`\ufffd`)
			} else {
				b.WriteByte(s[i])
			}
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			u(r)
		case st.html && (r == '<' || r == '>' || r == '&'):
			u(r)
		case st.slash && r == '/':
			b.WriteString(`\/`)
		case st.ascii && r > 0xffff:
			r -= 0x10000
			u(0xd800 + (r>>10)&0x3ff)
			u(0xdc00 + r&0x3ff)
		case st.ascii && r > 0x7f, st.lineSeps && (r == '\u2028' || r == '\u2029'):
			u(r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
