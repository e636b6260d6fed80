package configschema

import (
	"encoding/json"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// Validate checks a complete configuration against the schema: every value has its field's
// type and satisfies its bounds, enum and pattern; every required field is set and not null;
// and there is no field the schema does not declare. A null value is an unset field.
// Violations name the field (e.g. "batch_size") and are sorted by it.
//
// Values are JSON-compatible (as encoding/json and structpb produce them: float64 numbers,
// []any, map[string]any); Go integer types and json.Number are accepted as numbers too.
func (s Schema) Validate(values map[string]any) []errs.FieldViolation {
	return s.validate(values, false)
}

// validate is Validate; with partial, required fields may lack a value.
func (s Schema) validate(values map[string]any, partial bool) []errs.FieldViolation {
	var problems []errs.FieldViolation
	for _, name := range sortedKeys(values) {
		if s.field(name) == nil {
			problems = append(problems, errs.FieldViolation{Field: name, Description: "unknown field"})
		}
	}
	for i := range s.fields {
		f := &s.fields[i]
		v, ok := values[f.Name]
		if !ok || isNull(v) {
			if f.Required && !partial {
				problems = append(problems, errs.FieldViolation{Field: f.Name, Description: "is required"})
			}
			continue
		}
		for _, d := range f.check(v, f.compile()) {
			problems = append(problems, errs.FieldViolation{Field: f.Name, Description: d})
		}
	}
	slices.SortStableFunc(problems, func(a, b errs.FieldViolation) int {
		return strings.Compare(a.Field, b.Field)
	})
	return problems
}

// compile returns the field's compiled pattern, or nil when it has none. Parse has checked
// the pattern, so compiling cannot fail.
func (f *Field) compile() *regexp.Regexp {
	if f.Pattern == "" {
		return nil
	}
	re, err := regexp.Compile(f.Pattern)
	if err != nil {
		return nil
	}
	return re
}

// check returns what is wrong with a non-null value v for the field; re is the compiled
// pattern, if any.
func (f *Field) check(v any, re *regexp.Regexp) []string {
	var out []string
	switch f.Type {
	case TypeString:
		s, ok := v.(string)
		if !ok {
			return []string{"must be a string"}
		}
		if !utf8.ValidString(s) {
			return []string{"must be valid UTF-8"}
		}
		n := float64(utf8.RuneCountInString(s))
		if f.Min != nil && n < *f.Min {
			out = append(out, "must be at least "+plural(*f.Min, "character")+" long")
		}
		if f.Max != nil && n > *f.Max {
			out = append(out, "must be at most "+plural(*f.Max, "character")+" long")
		}
		if re != nil && !re.MatchString(s) {
			out = append(out, "must match the pattern "+f.Pattern)
		}
	case TypeInteger, TypeNumber:
		x, ok := toFloat(v)
		if !ok {
			if f.Type == TypeInteger {
				return []string{"must be an integer"}
			}
			return []string{"must be a number"}
		}
		if !finite(x) {
			return []string{"must be a finite number"}
		}
		if f.Type == TypeInteger {
			if x != math.Trunc(x) {
				return []string{"must be an integer"}
			}
			if math.Abs(x) > MaxSafeInteger {
				return []string{"must be an integer between -" + strconv.Itoa(MaxSafeInteger) +
					" and " + strconv.Itoa(MaxSafeInteger)}
			}
		}
		if f.Min != nil && x < *f.Min {
			out = append(out, "must be at least "+formatNumber(*f.Min))
		}
		if f.Max != nil && x > *f.Max {
			out = append(out, "must be at most "+formatNumber(*f.Max))
		}
	case TypeBoolean:
		if _, ok := v.(bool); !ok {
			return []string{"must be a boolean"}
		}
	case TypeArray:
		if !isArray(v) {
			return []string{"must be an array"}
		}
		n, ok := normalize(v)
		if !ok {
			return []string{"must hold only JSON values (finite numbers, valid UTF-8 strings, booleans, null, arrays, objects)"}
		}
		count := float64(len(n.([]any)))
		if f.Min != nil && count < *f.Min {
			out = append(out, "must have at least "+plural(*f.Min, "item"))
		}
		if f.Max != nil && count > *f.Max {
			out = append(out, "must have at most "+plural(*f.Max, "item"))
		}
	case TypeObject:
		if !isObject(v) {
			return []string{"must be an object"}
		}
		if _, ok := normalize(v); !ok {
			return []string{"must hold only JSON values (finite numbers, valid UTF-8 strings, booleans, null, arrays, objects)"}
		}
	}
	if len(out) == 0 && f.Enum != nil && !f.inEnum(v) {
		out = append(out, "must be one of "+enumText(f.Enum))
	}
	return out
}

func (f *Field) inEnum(v any) bool {
	for _, e := range f.Enum {
		if jsonEqual(e, v) {
			return true
		}
	}
	return false
}

// enumText renders enum values as a JSON array, e.g. ["database","file","redis"].
func enumText(enum []any) string {
	b, err := json.Marshal(enum)
	if err != nil {
		return "the allowed values"
	}
	return string(b)
}

func isArray(v any) bool {
	if _, ok := v.([]any); ok {
		return true
	}
	n, ok := normalize(v)
	if ok {
		_, isList := n.([]any)
		return isList
	}
	// Not JSON-compatible; still an array if it is a slice other than []byte.
	switch v.(type) {
	case []byte, string:
		return false
	}
	k := kindOf(v)
	return k == "slice" || k == "array"
}

func isObject(v any) bool {
	if _, ok := v.(map[string]any); ok {
		return true
	}
	n, ok := normalize(v)
	if ok {
		_, isMap := n.(map[string]any)
		return isMap
	}
	return kindOf(v) == "map"
}
