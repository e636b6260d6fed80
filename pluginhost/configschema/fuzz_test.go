package configschema_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
)

// cloneJSON deep-copies a JSON-compatible map through encoding/json; nil stays nil.
func cloneJSON(t testing.TB, m map[string]any) map[string]any {
	t.Helper()
	if m == nil {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func FuzzParseAndValidate(f *testing.F) {
	f.Add([]byte(analyticsSchema), []byte(`{"batch_size": 200, "api_key": "k"}`))
	f.Add([]byte(analyticsSchema), []byte(`{"batch_size": null, "api_key": "***hidden***", "x": 1}`))
	f.Add([]byte(validationSchema), []byte(`{"api_key": "sk_1", "hosts": ["a"], "labels": {"a": [1, {}]}}`))
	f.Add([]byte(`{"a": {"type": "string", "pattern": "^[a-z]{2,3}$", "min": 1, "max": 5}}`), []byte(`{"a": "abc"}`))
	f.Add([]byte(`{"n": {"type": "number", "enum": [0.1, -2, 1e20]}}`), []byte(`{"n": 1e20}`))
	f.Add([]byte(`{"b": {"type": "boolean", "required": true, "default": true}}`), []byte(`{}`))
	f.Add([]byte(`null`), []byte(`null`))
	f.Add([]byte(`{"a": {"type": "integer", "min": 3, "max": 2}}`), []byte(`{"a": 2.5}`))
	f.Fuzz(func(t *testing.T, schemaJSON, valuesJSON []byte) {
		s, problems := configschema.Parse(schemaJSON)
		if len(problems) > 0 {
			if !s.IsZero() {
				t.Fatal("invalid schema returned fields")
			}
			return
		}
		// The schema re-parses from its own Raw form to an equal schema.
		raw, err := json.Marshal(s.Raw())
		if err != nil {
			t.Fatalf("marshal Raw: %v", err)
		}
		again, problems := configschema.Parse(raw)
		if len(problems) > 0 || !reflect.DeepEqual(again, s) {
			t.Fatalf("schema does not round-trip: %v", problems)
		}
		// Defaults always form a valid configuration unless a required field lacks one.
		defaults := s.Defaults()
		var values map[string]any
		if err := json.Unmarshal(valuesJSON, &values); err != nil {
			return
		}
		valuesCopy, defaultsCopy := cloneJSON(t, values), cloneJSON(t, defaults)

		if problems := s.Validate(values); len(problems) == 0 {
			if p := s.Validate(cloneJSON(t, values)); len(p) > 0 {
				t.Fatalf("valid config fails after a JSON round trip: %v", p)
			}
		}
		merged, updated, _, problems := s.Apply(defaults, values)
		if !reflect.DeepEqual(values, valuesCopy) || !reflect.DeepEqual(defaults, defaultsCopy) {
			t.Fatal("Apply mutated its inputs")
		}
		if len(problems) == 0 {
			if p := s.Validate(merged); len(p) > 0 {
				t.Fatalf("Apply result does not validate: %v", p)
			}
			if p := s.Validate(cloneJSON(t, merged)); len(p) > 0 {
				t.Fatalf("Apply result fails after a JSON round trip: %v", p)
			}
			// Applying the same patch again changes nothing.
			again, updated2, restart2, p := s.Apply(merged, values)
			if len(p) > 0 || len(updated2) > 0 || restart2 || !reflect.DeepEqual(again, merged) {
				t.Fatalf("Apply is not idempotent: %v %v %v", p, updated2, restart2)
			}
			// The masked form round-trips into an unchanged configuration.
			masked := s.Mask(merged)
			back, updated3, _, p := s.Apply(merged, masked)
			if len(p) > 0 || len(updated3) > 0 || !reflect.DeepEqual(back, merged) {
				t.Fatalf("masked round trip changed the configuration: %v %v", p, updated3)
			}
		} else if merged != nil || updated != nil {
			t.Fatal("Apply returned results with problems")
		}
	})
}
