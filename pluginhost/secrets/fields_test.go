package secrets_test

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/secrets"
)

func TestSealFieldsRoundTripEveryJSONType(t *testing.T) {
	t.Parallel()
	b := newBox(t, 1)
	values := map[string]any{
		"string":  "new_secret_key",
		"empty":   "",
		"number":  3.25,
		"integer": 42.0,
		"true":    true,
		"false":   false,
		"array":   []any{"a", 1.0, nil, []any{}, map[string]any{"k": "v"}},
		"object":  map[string]any{"nested": map[string]any{"n": -1.5e-7}, "list": []any{true}},
		"null":    nil,
		"plain":   "not sealed",
	}
	fields := []string{"string", "empty", "number", "integer", "true", "false", "array", "object", "null", "absent"}
	sealed, err := b.SealFields(values, fields)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range fields {
		v, ok := sealed[name]
		switch name {
		case "null":
			if !ok || v != nil {
				t.Errorf("null field = %v, %v; want it kept as null", v, ok)
			}
		case "absent":
			if ok {
				t.Errorf("absent field was added: %v", v)
			}
		default:
			if s, isString := v.(string); !isString || !secrets.IsSealed(s) {
				t.Errorf("field %s = %#v, not sealed", name, v)
			}
		}
	}
	if sealed["plain"] != "not sealed" {
		t.Errorf("unlisted field changed: %v", sealed["plain"])
	}
	if values["string"] != "new_secret_key" {
		t.Fatal("SealFields modified its input")
	}
	opened, err := b.OpenFields(sealed, fields)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(opened, values) {
		t.Fatalf("OpenFields = %#v, want %#v", opened, values)
	}
	if !secrets.IsSealed(sealed["string"].(string)) {
		t.Fatal("OpenFields modified its input")
	}
}

func TestSealFieldsNil(t *testing.T) {
	t.Parallel()
	b := newBox(t, 1)
	out, err := b.SealFields(nil, []string{"a"})
	if err != nil || out != nil {
		t.Fatalf("SealFields(nil) = %v, %v", out, err)
	}
	out, err = b.OpenFields(nil, []string{"a"})
	if err != nil || out != nil {
		t.Fatalf("OpenFields(nil) = %v, %v", out, err)
	}
}

func TestSealFieldsErrors(t *testing.T) {
	t.Parallel()
	b := newBox(t, 1)
	if _, err := b.SealFields(map[string]any{"x": math.NaN()}, []string{"x"}); err == nil {
		t.Fatal("SealFields sealed NaN")
	}
	good, err := b.SealFields(map[string]any{"api_key": "s3cret"}, []string{"api_key"})
	if err != nil {
		t.Fatal(err)
	}
	notJSON := b.Seal([]byte("{not json"))
	cases := []struct {
		name   string
		box    *secrets.Box
		values map[string]any
		want   error
	}{
		{"not a string", b, map[string]any{"api_key": 5.0}, secrets.ErrMalformed},
		{"not sealed", b, map[string]any{"api_key": "s3cret"}, secrets.ErrMalformed},
		{"sealed content not JSON", b, map[string]any{"api_key": notJSON}, secrets.ErrMalformed},
		{"wrong key", newBox(t, 9), good, secrets.ErrDecrypt},
		{"tampered", b, map[string]any{"api_key": tamper(good["api_key"].(string))}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.box.OpenFields(c.values, []string{"api_key"})
			if err == nil {
				t.Fatal("OpenFields succeeded")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("error = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), `"api_key"`) || strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q must name the field and not the value", err)
			}
		})
	}
}

// tamper changes one base64 character in the middle of a sealed string.
func tamper(s string) string {
	i := len(s) / 2
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}
