// Package configschema parses and enforces the configuration schema that a plugin declares in
// its manifest, and merges, validates and masks configuration values against it.
//
// A schema is a JSON object mapping a field name to a field spec:
//
//	{
//	  "batch_size":      {"type": "integer", "default": 50, "min": 10, "max": 1000},
//	  "storage_backend": {"type": "string", "enum": ["database", "file", "redis"], "default": "database"},
//	  "api_key":         {"type": "string", "secret": true}
//	}
//
// The keywords are:
//
//   - type (required): one of string, integer, number, boolean, array, object.
//   - default: the value a field takes when it is not set. It must satisfy every other rule of
//     the field.
//   - required: the field must be set (a default satisfies it).
//   - secret: the value is write-only through the API (see [Schema.Mask]) and sealed at rest.
//     Only string fields can be secret.
//   - min, max: inclusive bounds. For integer and number fields they bound the value; for
//     string fields they bound the length in Unicode code points; for array fields they bound
//     the number of items. For strings and arrays they must be non-negative whole numbers, and
//     for integers whole numbers. They do not apply to boolean and object fields.
//   - enum: the allowed values (string, integer, number and boolean fields only).
//   - pattern: a Go RE2 regular expression that string values must match. Like JSON Schema's
//     pattern it is not anchored: write ^...$ to match the whole value.
//   - description: text for people.
//   - restart_required: changing the field restarts the plugin.
//
// Integers are carried as JSON numbers (float64), so integer fields accept whole numbers
// within ±(2^53-1), the range in which every integer is exact in JSON.
package configschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// Hidden replaces the value of a set secret field in what the API shows. A patch that sends
// Hidden for a secret field leaves the field unchanged, so a client can send back what it read.
const Hidden = "***hidden***"

// Type is the type of a configuration field.
type Type string

// The field types.
const (
	TypeString  Type = "string"
	TypeInteger Type = "integer"
	TypeNumber  Type = "number"
	TypeBoolean Type = "boolean"
	TypeArray   Type = "array"
	TypeObject  Type = "object"
)

// MaxSafeInteger is the largest integer magnitude an integer field accepts: 2^53-1, beyond
// which JSON numbers (IEEE 754 doubles) no longer represent every integer exactly.
const MaxSafeInteger = 1<<53 - 1

// Keyword names of a field spec.
const (
	keyType            = "type"
	keyDefault         = "default"
	keyRequired        = "required"
	keySecret          = "secret"
	keyMin             = "min"
	keyMax             = "max"
	keyEnum            = "enum"
	keyPattern         = "pattern"
	keyDescription     = "description"
	keyRestartRequired = "restart_required"
)

// fieldNameRE is the syntax of a field name.
var fieldNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)

// Field is one field of a schema. Values (Default, Enum) are JSON-compatible: float64 for
// numbers, string, bool, []any and map[string]any.
type Field struct {
	// Name is the field's key in the configuration.
	Name string
	// Type is the JSON type of the value.
	Type Type
	// Default is the value the field takes when it is not set; nil when there is none.
	Default any
	// Required says the field must be set.
	Required bool
	// Secret says the value is write-only and sealed at rest.
	Secret bool
	// Min and Max are inclusive bounds (value, length or item count, by Type); nil when absent.
	Min, Max *float64
	// Enum lists the allowed values; nil when any value of the type is allowed.
	Enum []any
	// Pattern is an unanchored RE2 regular expression that string values match; "" for none.
	Pattern string
	// Description is text for people.
	Description string
	// RestartRequired says a change of the field restarts the plugin.
	RestartRequired bool
}

// HasDefault reports whether the field has a default value.
func (f Field) HasDefault() bool { return f.Default != nil }

// Schema is a parsed, valid configuration schema. The zero value is the empty schema (no
// fields). A Schema is immutable, so it is safe for concurrent use; every accessor returns
// copies.
type Schema struct {
	// fields are sorted by name.
	fields []Field
	// raw is the schema as given: field name -> keyword -> JSON value. nil when empty.
	raw map[string]any
}

// Parse parses and validates a schema. Empty input and JSON null are the empty schema. Every
// problem is reported, with paths such as "configuration.batch_size.min"; when there is any,
// the returned Schema is the empty schema.
func Parse(raw []byte) (Schema, []errs.FieldViolation) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return Schema{}, nil
	}
	var specs map[string]json.RawMessage
	if err := decodeOne(trimmed, &specs); err != nil {
		return Schema{}, []errs.FieldViolation{{
			Field:       "configuration",
			Description: "must be a JSON object mapping field names to field specs",
		}}
	}
	if specs == nil { // the literal null was handled above; a nil map here is impossible
		return Schema{}, nil
	}
	names := sortedKeys(specs)
	var (
		problems []errs.FieldViolation
		fields   = make([]Field, 0, len(names))
		rawOut   = make(map[string]any, len(names))
	)
	for _, name := range names {
		f, spec, ps := parseField(name, specs[name])
		problems = append(problems, ps...)
		if len(ps) == 0 {
			fields = append(fields, f)
			rawOut[name] = spec
		}
	}
	if len(problems) > 0 {
		return Schema{}, problems
	}
	if len(fields) == 0 {
		return Schema{}, nil
	}
	return Schema{fields: fields, raw: rawOut}, nil
}

// Fields returns the fields, sorted by name.
func (s Schema) Fields() []Field {
	if len(s.fields) == 0 {
		return nil
	}
	out := make([]Field, len(s.fields))
	for i, f := range s.fields {
		out[i] = f.clone()
	}
	return out
}

// Field returns the field called name.
func (s Schema) Field(name string) (Field, bool) {
	f := s.field(name)
	if f == nil {
		return Field{}, false
	}
	return f.clone(), true
}

// Len returns the number of fields.
func (s Schema) Len() int { return len(s.fields) }

// IsZero reports whether the schema has no fields.
func (s Schema) IsZero() bool { return len(s.fields) == 0 }

// SecretFields returns the names of the secret fields, sorted.
func (s Schema) SecretFields() []string {
	var out []string
	for _, f := range s.fields {
		if f.Secret {
			out = append(out, f.Name)
		}
	}
	return out
}

// Raw returns the schema as a JSON-compatible map holding exactly the keywords given, for
// the API. It is never nil: the empty schema is an empty map.
func (s Schema) Raw() map[string]any {
	out := make(map[string]any, len(s.raw))
	for k, v := range s.raw {
		out[k] = deepCopy(v)
	}
	return out
}

// MarshalJSON encodes the schema as it was given (see [Schema.Raw]), with object keys sorted.
// It does not escape HTML characters itself; an encoder that does escapes them.
func (s Schema) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s.Raw()); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON parses a schema with [Parse]; an invalid schema is an *errs.Error with code
// errs.ValidationError listing every problem.
func (s *Schema) UnmarshalJSON(data []byte) error {
	parsed, problems := Parse(data)
	if len(problems) > 0 {
		return errs.WithFields(errs.ValidationError, "configuration schema is invalid", problems)
	}
	*s = parsed
	return nil
}

// ConfigurationError returns nil when problems is empty, and otherwise an *errs.Error with code
// errs.PluginConfigurationError listing them, for callers of [Schema.Validate] and
// [Schema.Apply].
func ConfigurationError(problems []errs.FieldViolation) error {
	if len(problems) == 0 {
		return nil
	}
	return errs.WithFields(errs.PluginConfigurationError, "plugin configuration is invalid",
		slices.Clone(problems))
}

// field returns the field called name, or nil.
func (s Schema) field(name string) *Field {
	i, ok := slices.BinarySearchFunc(s.fields, name, func(f Field, n string) int {
		return strings.Compare(f.Name, n)
	})
	if !ok {
		return nil
	}
	return &s.fields[i]
}

func (f Field) clone() Field {
	f.Default = deepCopy(f.Default)
	if f.Enum != nil {
		f.Enum = deepCopy(f.Enum).([]any)
	}
	if f.Min != nil {
		v := *f.Min
		f.Min = &v
	}
	if f.Max != nil {
		v := *f.Max
		f.Max = &v
	}
	return f
}

// parseField parses one field spec. It returns the field, the spec as a JSON-compatible map,
// and the problems found.
func parseField(name string, raw json.RawMessage) (Field, map[string]any, []errs.FieldViolation) {
	base := "configuration." + name
	if !fieldNameRE.MatchString(name) {
		return Field{}, nil, []errs.FieldViolation{{
			Field:       "configuration",
			Description: fmt.Sprintf("field name %q is invalid: must match %s", name, fieldNameRE),
		}}
	}
	var keywords map[string]json.RawMessage
	if err := decodeOne(raw, &keywords); err != nil || keywords == nil {
		return Field{}, nil, []errs.FieldViolation{{
			Field: base, Description: "must be an object of schema keywords",
		}}
	}
	p := fieldParser{field: Field{Name: name}, base: base, spec: make(map[string]any, len(keywords))}
	values := make(map[string]any, len(keywords))
	for _, kw := range sortedKeys(keywords) {
		if !isKeyword(kw) {
			p.fail(kw, "unknown keyword; allowed keywords are type, default, required, secret, "+
				"min, max, enum, pattern, description, restart_required")
			continue
		}
		var v any
		if err := decodeOne(keywords[kw], &v); err != nil {
			p.fail(kw, "must be a JSON value (numbers within the range of a 64-bit float)")
			continue
		}
		values[kw] = v
		p.spec[kw] = v
	}
	p.parse(values)
	if len(p.problems) > 0 {
		return Field{}, nil, p.problems
	}
	return p.field, p.spec, nil
}

// fieldParser collects the problems of one field spec.
type fieldParser struct {
	field    Field
	base     string
	spec     map[string]any
	problems []errs.FieldViolation
}

func (p *fieldParser) fail(keyword, description string) {
	p.problems = append(p.problems, errs.FieldViolation{Field: p.base + "." + keyword, Description: description})
}

// parse checks the keywords in dependency order: type first, then the keywords whose meaning
// depends on it, then enum and default, which must satisfy the rest.
func (p *fieldParser) parse(values map[string]any) {
	f := &p.field
	typeOK := p.parseType(values)
	for _, kw := range []string{keyRequired, keySecret, keyRestartRequired} {
		v, ok := values[kw]
		if !ok {
			continue
		}
		b, isBool := v.(bool)
		if !isBool {
			p.fail(kw, "must be a boolean")
			continue
		}
		switch kw {
		case keyRequired:
			f.Required = b
		case keySecret:
			f.Secret = b
		case keyRestartRequired:
			f.RestartRequired = b
		}
	}
	if v, ok := values[keyDescription]; ok {
		if s, isString := v.(string); isString {
			f.Description = s
		} else {
			p.fail(keyDescription, "must be a string")
		}
	}
	if !typeOK {
		return // the remaining keywords cannot be judged without a type
	}
	if f.Secret && f.Type != TypeString {
		p.fail(keySecret, "only string fields can be secret")
	}
	f.Min = p.parseBound(values, keyMin)
	f.Max = p.parseBound(values, keyMax)
	if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
		p.fail(keyMin, "must not be greater than max ("+formatNumber(*f.Max)+")")
		f.Min, f.Max = nil, nil
	}
	p.parsePattern(values)
	p.parseEnum(values)
	if v, ok := values[keyDefault]; ok {
		if v == nil {
			p.fail(keyDefault, "must not be null; leave default out instead")
		} else if problems := f.check(v, p.compiled()); len(problems) > 0 {
			for _, d := range problems {
				p.fail(keyDefault, d)
			}
		} else {
			f.Default = v
		}
	}
}

func (p *fieldParser) parseType(values map[string]any) bool {
	v, ok := values[keyType]
	if !ok {
		p.fail(keyType, "is required")
		return false
	}
	s, _ := v.(string)
	switch t := Type(s); t {
	case TypeString, TypeInteger, TypeNumber, TypeBoolean, TypeArray, TypeObject:
		p.field.Type = t
		return true
	}
	p.fail(keyType, `must be one of "string", "integer", "number", "boolean", "array", "object"`)
	return false
}

func (p *fieldParser) parseBound(values map[string]any, kw string) *float64 {
	v, ok := values[kw]
	if !ok {
		return nil
	}
	x, isNum := v.(float64)
	if !isNum {
		p.fail(kw, "must be a number")
		return nil
	}
	switch p.field.Type {
	case TypeInteger:
		if x != math.Trunc(x) {
			p.fail(kw, "must be a whole number for an integer field")
			return nil
		}
	case TypeNumber:
	case TypeString, TypeArray:
		if x < 0 || x != math.Trunc(x) {
			p.fail(kw, "must be a non-negative whole number (a "+lengthNoun(p.field.Type)+") for a "+
				string(p.field.Type)+" field")
			return nil
		}
	default:
		p.fail(kw, "does not apply to "+string(p.field.Type)+" fields")
		return nil
	}
	return &x
}

func (p *fieldParser) parsePattern(values map[string]any) {
	v, ok := values[keyPattern]
	if !ok {
		return
	}
	s, isString := v.(string)
	switch {
	case !isString:
		p.fail(keyPattern, "must be a string")
	case p.field.Type != TypeString:
		p.fail(keyPattern, "applies only to string fields")
	default:
		if _, err := regexp.Compile(s); err != nil {
			p.fail(keyPattern, "is not a valid RE2 regular expression: "+errorDetail(err))
			return
		}
		p.field.Pattern = s
	}
}

func (p *fieldParser) parseEnum(values map[string]any) {
	v, ok := values[keyEnum]
	if !ok {
		return
	}
	list, isList := v.([]any)
	switch {
	case !isList:
		p.fail(keyEnum, "must be an array of values")
		return
	case p.field.Type == TypeArray || p.field.Type == TypeObject:
		p.fail(keyEnum, "applies only to string, integer, number and boolean fields")
		return
	case len(list) == 0:
		p.fail(keyEnum, "must list at least one value")
		return
	}
	// Each value must be a valid value of the field without the enum itself.
	re := p.compiled()
	seen := make(map[string]bool, len(list))
	valid := true
	for i, e := range list {
		path := fmt.Sprintf("%s[%d]", keyEnum, i)
		if e == nil {
			p.fail(path, "must not be null")
			valid = false
			continue
		}
		if problems := p.field.check(e, re); len(problems) > 0 {
			for _, d := range problems {
				p.fail(path, d)
			}
			valid = false
			continue
		}
		key := canonical(e)
		if seen[key] {
			p.fail(path, "duplicates an earlier value")
			valid = false
		}
		seen[key] = true
	}
	if valid {
		p.field.Enum = list
	}
}

// compiled returns the field's compiled pattern, or nil when it has none.
func (p *fieldParser) compiled() *regexp.Regexp {
	if p.field.Pattern == "" {
		return nil
	}
	re, err := regexp.Compile(p.field.Pattern)
	if err != nil { // checked by parsePattern
		return nil
	}
	return re
}

func isKeyword(kw string) bool {
	switch kw {
	case keyType, keyDefault, keyRequired, keySecret, keyMin, keyMax, keyEnum, keyPattern,
		keyDescription, keyRestartRequired:
		return true
	}
	return false
}

// decodeOne decodes exactly one JSON value from data into v; trailing data is an error.
func decodeOne(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// errorDetail returns the text of a regexp compile error without the package prefix.
func errorDetail(err error) string {
	var se *syntax.Error
	if errors.As(err, &se) {
		return fmt.Sprintf("%s: `%s`", se.Code, se.Expr)
	}
	return err.Error()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
