package configschema_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
)

func TestDefaults(t *testing.T) {
	t.Parallel()
	s := mustParse(t, analyticsSchema)
	want := map[string]any{"batch_size": 50.0, "flush_interval": 30.0, "storage_backend": "database"}
	if got := s.Defaults(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Defaults() = %v, want %v", got, want)
	}
	if got := (configschema.Schema{}).Defaults(); got == nil || len(got) != 0 {
		t.Fatalf("empty Defaults() = %#v", got)
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	s := mustParse(t, analyticsSchema)
	stored := map[string]any{"batch_size": 100.0, "flush_interval": 60.0, "storage_backend": "database", "api_key": "old"}
	cases := []struct {
		name         string
		current      map[string]any
		patch        map[string]any
		wantMerged   map[string]any
		wantUpdated  []string
		wantRestart  bool
		wantProblems []string
	}{
		{
			name:        "reference update",
			current:     stored,
			patch:       map[string]any{"batch_size": 200.0, "flush_interval": 30.0, "api_key": "new_secret_key"},
			wantMerged:  map[string]any{"batch_size": 200.0, "flush_interval": 30.0, "storage_backend": "database", "api_key": "new_secret_key"},
			wantUpdated: []string{"api_key", "batch_size", "flush_interval"},
		},
		{
			name:        "unchanged values are not updated",
			current:     stored,
			patch:       map[string]any{"batch_size": 100, "storage_backend": "database"},
			wantMerged:  stored,
			wantUpdated: nil,
		},
		{
			name:        "install from nothing takes defaults",
			current:     nil,
			patch:       map[string]any{"batch_size": 100.0},
			wantMerged:  map[string]any{"batch_size": 100.0, "flush_interval": 30.0, "storage_backend": "database"},
			wantUpdated: []string{"batch_size"},
		},
		{
			name:        "null resets to the default",
			current:     stored,
			patch:       map[string]any{"batch_size": nil},
			wantMerged:  map[string]any{"batch_size": 50.0, "flush_interval": 60.0, "storage_backend": "database", "api_key": "old"},
			wantUpdated: []string{"batch_size"},
		},
		{
			name:        "null removes a field without default",
			current:     stored,
			patch:       map[string]any{"api_key": nil},
			wantMerged:  map[string]any{"batch_size": 100.0, "flush_interval": 60.0, "storage_backend": "database"},
			wantUpdated: []string{"api_key"},
		},
		{
			name:        "hidden secret means unchanged",
			current:     stored,
			patch:       map[string]any{"api_key": configschema.Hidden, "flush_interval": 10.0},
			wantMerged:  map[string]any{"batch_size": 100.0, "flush_interval": 10.0, "storage_backend": "database", "api_key": "old"},
			wantUpdated: []string{"flush_interval"},
		},
		{
			name:        "a masked GET round-trips into a PUT",
			current:     stored,
			patch:       s.Mask(stored),
			wantMerged:  stored,
			wantUpdated: nil,
		},
		{
			name:        "restart required only when a restart field changes",
			current:     stored,
			patch:       map[string]any{"storage_backend": "redis"},
			wantMerged:  map[string]any{"batch_size": 100.0, "flush_interval": 60.0, "storage_backend": "redis", "api_key": "old"},
			wantUpdated: []string{"storage_backend"},
			wantRestart: true,
		},
		{
			name:        "unknown field in current can be removed with null",
			current:     map[string]any{"legacy": true},
			patch:       map[string]any{"legacy": nil},
			wantMerged:  map[string]any{"batch_size": 50.0, "flush_interval": 30.0, "storage_backend": "database"},
			wantUpdated: []string{"legacy"},
		},
		{
			name:         "invalid patch",
			current:      stored,
			patch:        map[string]any{"batch_size": 5000.0, "storage_backend": "s3", "typo": 1.0},
			wantProblems: []string{"batch_size: must be at most 1000", `storage_backend: must be one of ["database","file","redis"]`, "typo: unknown field"},
		},
		{
			name:         "invalid current is reported",
			current:      map[string]any{"batch_size": "x"},
			patch:        nil,
			wantProblems: []string{"batch_size: must be an integer"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			before, patchBefore := cloneDeep(c.current), cloneDeep(c.patch)
			merged, updated, restart, problems := s.Apply(c.current, c.patch)
			if !reflect.DeepEqual(c.current, before) || !reflect.DeepEqual(c.patch, patchBefore) {
				t.Fatal("Apply modified its inputs")
			}
			var got []string
			for _, p := range problems {
				got = append(got, p.String())
			}
			if !slices.Equal(got, c.wantProblems) {
				t.Fatalf("problems = %q, want %q", got, c.wantProblems)
			}
			if c.wantProblems != nil {
				if merged != nil || updated != nil || restart {
					t.Fatalf("results despite problems: %v %v %v", merged, updated, restart)
				}
				return
			}
			if !reflect.DeepEqual(merged, c.wantMerged) {
				t.Errorf("merged = %v, want %v", merged, c.wantMerged)
			}
			if !slices.Equal(updated, c.wantUpdated) {
				t.Errorf("updated = %v, want %v", updated, c.wantUpdated)
			}
			if restart != c.wantRestart {
				t.Errorf("restartRequired = %v, want %v", restart, c.wantRestart)
			}
		})
	}
}

func TestApplyMergedSharesNothing(t *testing.T) {
	t.Parallel()
	s := mustParse(t, `{"o": {"type": "object", "default": {"k": "v"}}, "a": {"type": "array"}}`)
	patch := map[string]any{"a": []any{map[string]any{"x": 1.0}}}
	merged, _, _, problems := s.Apply(nil, patch)
	if problems != nil {
		t.Fatal(problems)
	}
	merged["a"].([]any)[0].(map[string]any)["x"] = 2.0
	merged["o"].(map[string]any)["k"] = "changed"
	if patch["a"].([]any)[0].(map[string]any)["x"] != 1.0 {
		t.Fatal("merged shares values with the patch")
	}
	if d := s.Defaults(); d["o"].(map[string]any)["k"] != "v" {
		t.Fatal("merged shares values with the schema")
	}
}

func TestMask(t *testing.T) {
	t.Parallel()
	s := mustParse(t, analyticsSchema)
	cases := []struct {
		name         string
		values, want map[string]any
	}{
		{"secret set", map[string]any{"api_key": "k", "batch_size": 1.0}, map[string]any{"api_key": configschema.Hidden, "batch_size": 1.0}},
		{"secret unset", map[string]any{"batch_size": 1.0}, map[string]any{"batch_size": 1.0}},
		{"secret null", map[string]any{"api_key": nil}, map[string]any{"api_key": nil}},
		{"nil map", nil, map[string]any{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			orig := cloneDeep(c.values)
			if got := s.Mask(c.values); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Mask = %v, want %v", got, c.want)
			}
			if !reflect.DeepEqual(orig, c.values) {
				t.Fatal("Mask modified its input")
			}
		})
	}
}

func TestHiddenIsLiteralForNonSecretFields(t *testing.T) {
	t.Parallel()
	s := mustParse(t, `{"label": {"type": "string"}}`)
	merged, updated, _, problems := s.Apply(map[string]any{"label": "x"}, map[string]any{"label": configschema.Hidden})
	if problems != nil || merged["label"] != configschema.Hidden || !slices.Equal(updated, []string{"label"}) {
		t.Fatalf("Apply = %v %v %v", merged, updated, problems)
	}
	if !strings.Contains(configschema.Hidden, "hidden") {
		t.Fatal("Hidden constant changed")
	}
}

// cloneDeep copies the maps and slices of m, keeping every other value as it is.
func cloneDeep(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneDeep(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}
