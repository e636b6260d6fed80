package configschema_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
)

const validationSchema = `{
  "batch_size": {"type": "integer", "default": 50, "min": 10, "max": 1000},
  "ratio": {"type": "number", "min": 0, "max": 1},
  "storage_backend": {"type": "string", "enum": ["database", "file", "redis"], "default": "database"},
  "api_key": {"type": "string", "secret": true, "required": true, "pattern": "^sk_"},
  "name": {"type": "string", "min": 2, "max": 4},
  "enabled": {"type": "boolean"},
  "hosts": {"type": "array", "min": 1, "max": 2},
  "labels": {"type": "object"},
  "level": {"type": "integer", "enum": [1, 2, 3]}
}`

func TestValidate(t *testing.T) {
	t.Parallel()
	s := mustParse(t, validationSchema)
	cases := []struct {
		name   string
		values map[string]any
		want   []string // exact "field: description", sorted by field
	}{
		{"minimal valid", map[string]any{"api_key": "sk_1"}, nil},
		{"full valid", map[string]any{
			"api_key": "sk_1", "batch_size": 1000.0, "ratio": 0.5, "storage_backend": "redis",
			"name": "ab", "enabled": true, "hosts": []any{"a"}, "labels": map[string]any{"x": 1.0}, "level": 2.0,
		}, nil},
		{"go integer types accepted", map[string]any{"api_key": "sk_1", "batch_size": 10, "level": int64(3)}, nil},
		{"json.Number accepted", map[string]any{"api_key": "sk_1", "batch_size": json.Number("20")}, nil},
		{"go slices and maps accepted", map[string]any{"api_key": "sk_1", "hosts": []string{"a"}, "labels": map[string]string{"k": "v"}}, nil},
		{"null optional is unset", map[string]any{"api_key": "sk_1", "ratio": nil}, nil},
		{"required missing", map[string]any{}, []string{"api_key: is required"}},
		{"required null", map[string]any{"api_key": nil}, []string{"api_key: is required"}},
		{"unknown field", map[string]any{"api_key": "sk_1", "batch_sise": 20.0}, []string{"batch_sise: unknown field"}},
		{"not an integer type", map[string]any{"api_key": "sk_1", "batch_size": "20"}, []string{"batch_size: must be an integer"}},
		{"fractional integer", map[string]any{"api_key": "sk_1", "batch_size": 20.5}, []string{"batch_size: must be an integer"}},
		{"integer NaN", map[string]any{"api_key": "sk_1", "batch_size": math.NaN()}, []string{"batch_size: must be a finite number"}},
		{"number Inf", map[string]any{"api_key": "sk_1", "ratio": math.Inf(1)}, []string{"ratio: must be a finite number"}},
		{"unsafe integer", map[string]any{"api_key": "sk_1", "level": 1e16}, []string{"level: must be an integer between -9007199254740991 and 9007199254740991"}},
		{"integer above max", map[string]any{"api_key": "sk_1", "batch_size": 1001.0}, []string{"batch_size: must be at most 1000"}},
		{"integer below min", map[string]any{"api_key": "sk_1", "batch_size": 9.0}, []string{"batch_size: must be at least 10"}},
		{"number not a number", map[string]any{"api_key": "sk_1", "ratio": true}, []string{"ratio: must be a number"}},
		{"number above max", map[string]any{"api_key": "sk_1", "ratio": 1.5}, []string{"ratio: must be at most 1"}},
		{"enum", map[string]any{"api_key": "sk_1", "storage_backend": "s3"}, []string{`storage_backend: must be one of ["database","file","redis"]`}},
		{"integer enum", map[string]any{"api_key": "sk_1", "level": 4.0}, []string{`level: must be one of [1,2,3]`}},
		{"pattern", map[string]any{"api_key": "pk_1"}, []string{"api_key: must match the pattern ^sk_"}},
		{"string not a string", map[string]any{"api_key": 5.0}, []string{"api_key: must be a string"}},
		{"string invalid UTF-8", map[string]any{"api_key": "sk_\xff"}, []string{"api_key: must be valid UTF-8"}},
		{"string too short", map[string]any{"api_key": "sk_1", "name": "a"}, []string{"name: must be at least 2 characters long"}},
		{"string too long in runes", map[string]any{"api_key": "sk_1", "name": "ééééé"}, []string{"name: must be at most 4 characters long"}},
		{"string length counts runes", map[string]any{"api_key": "sk_1", "name": "éééé"}, nil},
		{"boolean", map[string]any{"api_key": "sk_1", "enabled": "true"}, []string{"enabled: must be a boolean"}},
		{"array type", map[string]any{"api_key": "sk_1", "hosts": "a"}, []string{"hosts: must be an array"}},
		{"bytes are not an array", map[string]any{"api_key": "sk_1", "hosts": []byte("a")}, []string{"hosts: must be an array"}},
		{"array too short", map[string]any{"api_key": "sk_1", "hosts": []any{}}, []string{"hosts: must have at least 1 item"}},
		{"array too long", map[string]any{"api_key": "sk_1", "hosts": []any{1.0, 2.0, 3.0}}, []string{"hosts: must have at most 2 items"}},
		{"array holding NaN", map[string]any{"api_key": "sk_1", "hosts": []any{math.NaN()}}, []string{"hosts: must hold only JSON values"}},
		{"object type", map[string]any{"api_key": "sk_1", "labels": []any{}}, []string{"labels: must be an object"}},
		{"object with non-string keys", map[string]any{"api_key": "sk_1", "labels": map[int]any{1: 1}}, []string{"labels: must hold only JSON values"}},
		{"every problem, sorted", map[string]any{"zzz": 1.0, "batch_size": 1.0, "api_key": nil, "ratio": "x"}, []string{
			"api_key: is required", "batch_size: must be at least 10", "ratio: must be a number", "zzz: unknown field",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			problems := s.Validate(c.values)
			var got []string
			for _, p := range problems {
				got = append(got, p.String())
			}
			if len(got) != len(c.want) {
				t.Fatalf("Validate = %q, want %q", got, c.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], c.want[i]) {
					t.Errorf("problem %d = %q, want %q", i, got[i], c.want[i])
				}
			}
		})
	}
}

func TestValidateEmptySchemaRejectsEverything(t *testing.T) {
	t.Parallel()
	var s configschema.Schema
	if p := s.Validate(nil); p != nil {
		t.Fatalf("Validate(nil) = %v", p)
	}
	if p := s.Validate(map[string]any{"x": 1.0}); len(p) != 1 || p[0].Description != "unknown field" {
		t.Fatalf("Validate = %v", p)
	}
}

func TestConfigurationError(t *testing.T) {
	t.Parallel()
	if err := configschema.ConfigurationError(nil); err != nil {
		t.Fatalf("ConfigurationError(nil) = %v", err)
	}
	s := mustParse(t, validationSchema)
	err := configschema.ConfigurationError(s.Validate(map[string]any{}))
	if err == nil || !strings.Contains(err.Error(), "PLUGIN_CONFIGURATION_ERROR") {
		t.Fatalf("ConfigurationError = %v", err)
	}
}
