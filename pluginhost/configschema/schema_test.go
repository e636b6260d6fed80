package configschema_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// analyticsSchema is the reference document's configuration schema example.
const analyticsSchema = `{
  "batch_size": {"type": "integer", "default": 50, "min": 10, "max": 1000,
                 "description": "Number of events to batch before processing"},
  "flush_interval": {"type": "integer", "default": 30,
                     "description": "Interval in seconds to flush batched events"},
  "storage_backend": {"type": "string", "enum": ["database", "file", "redis"], "default": "database",
                      "description": "Backend storage for analytics data", "restart_required": true},
  "api_key": {"type": "string", "secret": true,
              "description": "API key for external analytics service"}
}`

func mustParse(t testing.TB, raw string) configschema.Schema {
	t.Helper()
	s, problems := configschema.Parse([]byte(raw))
	if len(problems) > 0 {
		t.Fatalf("Parse: %v", problems)
	}
	return s
}

func TestParseReferenceSchema(t *testing.T) {
	t.Parallel()
	s := mustParse(t, analyticsSchema)
	var names []string
	for _, f := range s.Fields() {
		names = append(names, f.Name)
	}
	if want := []string{"api_key", "batch_size", "flush_interval", "storage_backend"}; !slices.Equal(names, want) {
		t.Fatalf("Fields() names = %v, want %v", names, want)
	}
	if got, want := s.SecretFields(), []string{"api_key"}; !slices.Equal(got, want) {
		t.Fatalf("SecretFields() = %v, want %v", got, want)
	}
	if s.Len() != 4 || s.IsZero() {
		t.Fatalf("Len() = %d, IsZero() = %v", s.Len(), s.IsZero())
	}
	f, ok := s.Field("batch_size")
	if !ok {
		t.Fatal("Field(batch_size) not found")
	}
	if f.Type != configschema.TypeInteger || f.Default != 50.0 || *f.Min != 10 || *f.Max != 1000 ||
		f.Description != "Number of events to batch before processing" || !f.HasDefault() {
		t.Fatalf("batch_size = %+v", f)
	}
	f, _ = s.Field("storage_backend")
	if !reflect.DeepEqual(f.Enum, []any{"database", "file", "redis"}) || !f.RestartRequired {
		t.Fatalf("storage_backend = %+v", f)
	}
	if f, _ := s.Field("api_key"); !f.Secret || f.HasDefault() || f.Required {
		t.Fatalf("api_key = %+v", f)
	}
	if _, ok := s.Field("nope"); ok {
		t.Fatal("Field(nope) found")
	}
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"", "  ", "null", "{}", " { } "} {
		t.Run(raw, func(t *testing.T) {
			s, problems := configschema.Parse([]byte(raw))
			if len(problems) > 0 {
				t.Fatalf("problems: %v", problems)
			}
			if !s.IsZero() || s.Fields() != nil || len(s.Raw()) != 0 || s.Raw() == nil {
				t.Fatalf("schema not empty: %+v", s)
			}
			if !reflect.DeepEqual(s, configschema.Schema{}) {
				t.Fatalf("schema = %#v, want the zero value", s)
			}
		})
	}
}

func TestRawIsExactlyTheKeywordsGiven(t *testing.T) {
	t.Parallel()
	raw := `{"a": {"type": "string", "required": false, "pattern": "^x", "description": ""},
	         "b": {"type": "array", "min": 1, "default": [1, "two", {"three": 3}]}}`
	s := mustParse(t, raw)
	var want map[string]any
	if err := json.Unmarshal([]byte(raw), &want); err != nil {
		t.Fatal(err)
	}
	if got := s.Raw(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Raw() = %#v, want %#v", got, want)
	}
	// Raw and Fields return copies: changing them does not change the schema.
	s.Raw()["b"].(map[string]any)["default"].([]any)[0] = "changed"
	s.Fields()[1].Default.([]any)[0] = "changed"
	if f, _ := s.Field("b"); f.Default.([]any)[0] != 1.0 {
		t.Fatalf("schema changed through a copy: %v", f.Default)
	}
	// JSON round trip gives an equal schema.
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var again configschema.Schema
	if err := json.Unmarshal(b, &again); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, s) {
		t.Fatalf("round trip: %#v != %#v", again, s)
	}
}

func TestUnmarshalJSONInvalid(t *testing.T) {
	t.Parallel()
	var s configschema.Schema
	err := json.Unmarshal([]byte(`{"a": {"type": "int"}}`), &s)
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.ValidationError || len(e.Fields) != 1 ||
		e.Fields[0].Field != "configuration.a.type" {
		t.Fatalf("err = %#v", err)
	}
}

func TestParseViolations(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, raw string
		want      []string // "path: description substring", in order
	}{
		{"not an object", `[1]`, []string{`configuration: must be a JSON object`}},
		{"trailing data", `{} {}`, []string{`configuration: must be a JSON object`}},
		{"spec not an object", `{"a": 1}`, []string{`configuration.a: must be an object of schema keywords`}},
		{"spec null", `{"a": null}`, []string{`configuration.a: must be an object of schema keywords`}},
		{"empty name", `{"": {"type": "string"}}`, []string{`configuration: field name "" is invalid`}},
		{"name with space", `{"a b": {"type": "string"}}`, []string{`configuration: field name "a b" is invalid`}},
		{"name starting with digit", `{"1a": {"type": "string"}}`, []string{`configuration: field name "1a" is invalid`}},
		{"name too long", `{"` + strings.Repeat("a", 129) + `": {"type": "string"}}`, []string{`configuration: field name`}},
		{"unknown keyword", `{"a": {"type": "string", "maxLength": 3}}`, []string{`configuration.a.maxLength: unknown keyword`}},
		{"missing type", `{"a": {"default": 1}}`, []string{`configuration.a.type: is required`}},
		{"unknown type", `{"a": {"type": "int"}}`, []string{`configuration.a.type: must be one of "string"`}},
		{"type not a string", `{"a": {"type": 1}}`, []string{`configuration.a.type: must be one of`}},
		{"required not a boolean", `{"a": {"type": "string", "required": "yes"}}`, []string{`configuration.a.required: must be a boolean`}},
		{"secret not a boolean", `{"a": {"type": "string", "secret": 1}}`, []string{`configuration.a.secret: must be a boolean`}},
		{"restart_required not a boolean", `{"a": {"type": "string", "restart_required": null}}`, []string{`configuration.a.restart_required: must be a boolean`}},
		{"description not a string", `{"a": {"type": "string", "description": 5}}`, []string{`configuration.a.description: must be a string`}},
		{"secret on non-string", `{"a": {"type": "integer", "secret": true}}`, []string{`configuration.a.secret: only string fields can be secret`}},
		{"min not a number", `{"a": {"type": "integer", "min": "1"}}`, []string{`configuration.a.min: must be a number`}},
		{"min greater than max", `{"batch_size": {"type": "integer", "min": 10, "max": 5}}`, []string{`configuration.batch_size.min: must not be greater than max (5)`}},
		{"fractional integer bound", `{"a": {"type": "integer", "max": 1.5}}`, []string{`configuration.a.max: must be a whole number`}},
		{"negative string length", `{"a": {"type": "string", "min": -1}}`, []string{`configuration.a.min: must be a non-negative whole number (a length)`}},
		{"fractional array count", `{"a": {"type": "array", "max": 2.5}}`, []string{`configuration.a.max: must be a non-negative whole number (a number of items)`}},
		{"min on boolean", `{"a": {"type": "boolean", "min": 1}}`, []string{`configuration.a.min: does not apply to boolean fields`}},
		{"max on object", `{"a": {"type": "object", "max": 1}}`, []string{`configuration.a.max: does not apply to object fields`}},
		{"bad regexp", `{"a": {"type": "string", "pattern": "a(b"}}`, []string{"configuration.a.pattern: is not a valid RE2 regular expression: missing closing )"}},
		{"non-RE2 regexp", `{"a": {"type": "string", "pattern": "(?=x)"}}`, []string{"configuration.a.pattern: is not a valid RE2 regular expression"}},
		{"pattern on integer", `{"a": {"type": "integer", "pattern": "^1"}}`, []string{`configuration.a.pattern: applies only to string fields`}},
		{"pattern not a string", `{"a": {"type": "string", "pattern": 1}}`, []string{`configuration.a.pattern: must be a string`}},
		{"enum not an array", `{"a": {"type": "string", "enum": "x"}}`, []string{`configuration.a.enum: must be an array`}},
		{"enum empty", `{"a": {"type": "string", "enum": []}}`, []string{`configuration.a.enum: must list at least one value`}},
		{"enum on array", `{"a": {"type": "array", "enum": [[1]]}}`, []string{`configuration.a.enum: applies only to`}},
		{"enum value of wrong type", `{"a": {"type": "string", "enum": ["x", 2]}}`, []string{`configuration.a.enum[1]: must be a string`}},
		{"enum value not integer", `{"a": {"type": "integer", "enum": [1, 1.5]}}`, []string{`configuration.a.enum[1]: must be an integer`}},
		{"enum value null", `{"a": {"type": "string", "enum": [null]}}`, []string{`configuration.a.enum[0]: must not be null`}},
		{"enum value out of bounds", `{"a": {"type": "integer", "max": 3, "enum": [1, 5]}}`, []string{`configuration.a.enum[1]: must be at most 3`}},
		{"enum value against pattern", `{"a": {"type": "string", "pattern": "^[a-z]+$", "enum": ["ok", "NO"]}}`, []string{`configuration.a.enum[1]: must match the pattern ^[a-z]+$`}},
		{"enum duplicate", `{"a": {"type": "number", "enum": [1, 1.0]}}`, []string{`configuration.a.enum[1]: duplicates an earlier value`}},
		{"default of wrong type", `{"batch_size": {"type": "integer", "default": "50"}}`, []string{`configuration.batch_size.default: must be an integer`}},
		{"default not whole", `{"a": {"type": "integer", "default": 1.5}}`, []string{`configuration.a.default: must be an integer`}},
		{"default below min", `{"batch_size": {"type": "integer", "min": 10, "default": 5}}`, []string{`configuration.batch_size.default: must be at least 10`}},
		{"default above max", `{"a": {"type": "number", "max": 0.5, "default": 0.75}}`, []string{`configuration.a.default: must be at most 0.5`}},
		{"default not in enum", `{"a": {"type": "string", "enum": ["x", "y"], "default": "z"}}`, []string{`configuration.a.default: must be one of ["x","y"]`}},
		{"default against pattern", `{"a": {"type": "string", "pattern": "^v", "default": "x"}}`, []string{`configuration.a.default: must match the pattern ^v`}},
		{"default too short", `{"a": {"type": "string", "min": 2, "default": "x"}}`, []string{`configuration.a.default: must be at least 2 characters long`}},
		{"default too many items", `{"a": {"type": "array", "max": 1, "default": [1, 2]}}`, []string{`configuration.a.default: must have at most 1 item`}},
		{"default null", `{"a": {"type": "string", "default": null}}`, []string{`configuration.a.default: must not be null`}},
		{"default object for array", `{"a": {"type": "array", "default": {}}}`, []string{`configuration.a.default: must be an array`}},
		{"default unsafe integer", `{"a": {"type": "integer", "default": 1e300}}`, []string{`configuration.a.default: must be an integer between`}},
		{"number out of float range", `{"a": {"type": "number", "default": 1e400}}`, []string{`configuration.a.default: must be a JSON value`}},
		{
			"every problem reported",
			`{"b": {"type": "string", "secret": "x", "bogus": 1}, "a": {"type": "nope"}}`,
			[]string{
				`configuration.a.type: must be one of`,
				`configuration.b.bogus: unknown keyword`,
				`configuration.b.secret: must be a boolean`,
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s, problems := configschema.Parse([]byte(c.raw))
			if !s.IsZero() {
				t.Errorf("schema not empty despite problems")
			}
			var got []string
			for _, p := range problems {
				got = append(got, p.String())
			}
			if len(got) != len(c.want) {
				t.Fatalf("problems = %q, want %q", got, c.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], c.want[i]) {
					t.Errorf("problem %d = %q, want prefix %q", i, got[i], c.want[i])
				}
			}
		})
	}
}

func TestParseValidEdgeCases(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, raw string }{
		{"all types", `{"s": {"type": "string"}, "i": {"type": "integer"}, "n": {"type": "number"},
			"b": {"type": "boolean"}, "a": {"type": "array"}, "o": {"type": "object"}}`},
		{"dotted and dashed names", `{"db.host-name": {"type": "string"}, "_x": {"type": "string"}}`},
		{"min equals max", `{"a": {"type": "integer", "min": 3, "max": 3, "default": 3}}`},
		{"number bounds fractional", `{"a": {"type": "number", "min": -0.5, "max": 0.5, "default": 0}}`},
		{"required with default", `{"a": {"type": "boolean", "required": true, "default": false}}`},
		{"object default", `{"a": {"type": "object", "default": {"k": [1, null]}}}`},
		{"boolean enum", `{"a": {"type": "boolean", "enum": [true]}}`},
		{"secret with pattern", `{"a": {"type": "string", "secret": true, "pattern": "^sk_"}}`},
		{"secret false on integer", `{"a": {"type": "integer", "secret": false}}`},
		{"unicode string length", `{"a": {"type": "string", "max": 2, "default": "éé"}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			mustParse(t, c.raw)
		})
	}
}
