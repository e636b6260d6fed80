package registry

import (
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// ApplyConfig merges patch into current and validates the result against schema. Required
// fields that have no value yet are allowed here (a plugin can be installed and configured
// step by step); they are enforced when the plugin is started. It returns the merged
// configuration, the fields whose value changed and whether one of them requires a restart.
func ApplyConfig(schema configschema.Schema, current, patch map[string]any) (map[string]any, []string, bool, error) {
	merged, updated, restart, problems := schema.ApplyPartial(current, patch)
	if len(problems) > 0 {
		return nil, nil, false, errs.WithFields(errs.PluginConfigurationError, ProblemsMessage(problems), problems)
	}
	return merged, updated, restart, nil
}

// CarryConfig moves a configuration to a new schema: values of fields the new schema still
// declares, and that still pass it, are kept; patch goes on top.
func CarryConfig(current map[string]any, schema configschema.Schema, patch map[string]any) (map[string]any, error) {
	kept := map[string]any{}
	for k, v := range current {
		if _, ok := schema.Field(k); !ok {
			continue
		}
		if _, _, _, problems := schema.Apply(schema.Defaults(), map[string]any{k: v}); hasFieldProblem(problems, k) {
			continue
		}
		kept[k] = v
	}
	base, _, _, err := ApplyConfig(schema, schema.Defaults(), kept)
	if err != nil {
		return nil, err
	}
	merged, _, _, err := ApplyConfig(schema, base, patch)
	return merged, err
}

// ProblemsMessage is the message of a configuration error listing problems.
func ProblemsMessage(problems []errs.FieldViolation) string {
	parts := make([]string, 0, len(problems))
	for _, p := range problems {
		parts = append(parts, p.String())
	}
	return "invalid configuration: " + strings.Join(parts, "; ")
}

// SecretValues returns the values of the secret fields that are set, for redaction.
func SecretValues(values map[string]any, fields []string) []string {
	var out []string
	for _, f := range fields {
		if s, ok := values[f].(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

func hasFieldProblem(problems []errs.FieldViolation, field string) bool {
	for _, p := range problems {
		if p.Field == field {
			return true
		}
	}
	return false
}
