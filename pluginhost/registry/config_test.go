package registry_test

import (
	"errors"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/registry"
)

// A configuration may be built step by step: a required field without a value waits for the
// start, but a bad value of a required field is refused, and other fields are stored.
func TestApplyConfigWithRequiredFieldsUnset(t *testing.T) {
	schema, problems := configschema.Parse([]byte(`{
		"jwt_secret": {"type": "string", "secret": true, "required": true, "min": 16},
		"session_timeout": {"type": "integer", "default": 60, "min": 1}}`))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	merged, updated, _, err := registry.ApplyConfig(schema, schema.Defaults(), map[string]any{"session_timeout": 120.0})
	if err != nil || merged["session_timeout"] != 120.0 || len(updated) != 1 || updated[0] != "session_timeout" {
		t.Fatalf("with the required field unset: %v, %v, %v", merged, updated, err)
	}
	for _, bad := range []map[string]any{{"jwt_secret": "short"}, {"jwt_secret": "short", "session_timeout": 120.0}} {
		merged, _, _, err := registry.ApplyConfig(schema, schema.Defaults(), bad)
		var de *errs.Error
		if !errors.As(err, &de) || de.Code != errs.PluginConfigurationError || len(de.Fields) != 1 || de.Fields[0].Field != "jwt_secret" {
			t.Fatalf("%v: %v, %v; want PLUGIN_CONFIGURATION_ERROR on jwt_secret", bad, merged, err)
		}
	}
	// Removing a required value is allowed too (it is checked at the start).
	merged, _, _, err = registry.ApplyConfig(schema, map[string]any{"jwt_secret": "0123456789abcdef"}, map[string]any{"jwt_secret": nil})
	if _, set := merged["jwt_secret"]; err != nil || set {
		t.Fatalf("unset: %v, %v", merged, err)
	}
}
