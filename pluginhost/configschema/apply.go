package configschema

import (
	"maps"
	"slices"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// Defaults returns the default value of every field that has one. The map is new and never nil.
func (s Schema) Defaults() map[string]any {
	out := make(map[string]any, len(s.fields))
	for _, f := range s.fields {
		if f.HasDefault() {
			out[f.Name] = deepCopy(f.Default)
		}
	}
	return out
}

// Apply merges patch into the current configuration and validates the result.
//
// The result starts from the defaults overlaid with current (so fields the schema added since
// current was stored take their defaults), then each patch entry replaces its field. A null
// in the patch resets the field to its default, or removes it when it has none; [Hidden] for
// a secret field leaves the field unchanged. The merged configuration must pass
// [Schema.Validate]; when it does not, Apply returns only the problems.
//
// updated lists, sorted, the fields whose effective value changed (a field only defaulted
// before is compared by its default), and restartRequired is true only when one of them has
// restart_required. Apply never modifies current or patch, and the merged map shares nothing
// with them; numbers in it are float64.
func (s Schema) Apply(current, patch map[string]any) (merged map[string]any, updated []string, restartRequired bool, problems []errs.FieldViolation) {
	return s.apply(current, patch, false)
}

// ApplyPartial is [Schema.Apply] for a configuration built step by step: a required field
// without a value is not a problem (it is enforced when the plugin starts), while every other
// problem is, the values of required fields included.
func (s Schema) ApplyPartial(current, patch map[string]any) (merged map[string]any, updated []string, restartRequired bool, problems []errs.FieldViolation) {
	return s.apply(current, patch, true)
}

func (s Schema) apply(current, patch map[string]any, partial bool) (merged map[string]any, updated []string, restartRequired bool, problems []errs.FieldViolation) {
	before := s.Defaults()
	for k, v := range current {
		if !isNull(v) {
			before[k] = copyValue(v)
		}
	}
	merged = maps.Clone(before) // values are private copies and are replaced, never mutated
	for _, k := range sortedKeys(patch) {
		v := patch[k]
		f := s.field(k)
		if f != nil && f.Secret && v == Hidden {
			continue
		}
		if isNull(v) {
			if f != nil && f.HasDefault() {
				merged[k] = deepCopy(f.Default)
			} else {
				delete(merged, k)
			}
			continue
		}
		merged[k] = copyValue(v)
	}
	if problems := s.validate(merged, partial); len(problems) > 0 {
		return nil, nil, false, problems
	}
	keys := make(map[string]bool, len(merged)+len(before))
	for k := range merged {
		keys[k] = true
	}
	for k := range before {
		keys[k] = true
	}
	for _, k := range sortedKeys(keys) {
		old, hadOld := before[k]
		cur, hasCur := merged[k]
		if hadOld == hasCur && jsonEqual(old, cur) {
			continue
		}
		updated = append(updated, k)
		if f := s.field(k); f != nil && f.RestartRequired {
			restartRequired = true
		}
	}
	return merged, slices.Clip(updated), restartRequired, nil
}

// Mask returns a copy of values in which every secret field that is set holds [Hidden].
// The map is new and never nil.
func (s Schema) Mask(values map[string]any) map[string]any {
	out := make(map[string]any, len(values))
	for k, v := range values {
		if f := s.field(k); f != nil && f.Secret && !isNull(v) {
			out[k] = Hidden
			continue
		}
		out[k] = copyValue(v)
	}
	return out
}
