package secrets

import (
	"encoding/json"
	"fmt"
)

// SealFields returns a copy of values in which each of the named top-level fields that is set
// (present and not null) holds the sealed JSON encoding of its value, so that any JSON type
// round-trips through [Box.OpenFields]. Other fields are copied as they are (shallowly).
// values is not modified. Call it once, on plaintext values: a value that merely looks sealed
// is sealed again.
func (b *Box) SealFields(values map[string]any, fields []string) (map[string]any, error) {
	out := copyMap(values)
	for _, name := range fields {
		v, ok := values[name]
		if !ok || v == nil {
			continue
		}
		plaintext, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("secrets: field %q cannot be encoded as JSON: %w", name, err)
		}
		out[name] = b.Seal(plaintext)
	}
	return out, nil
}

// OpenFields returns a copy of values in which each of the named top-level fields that is set
// holds its opened value, decoded from JSON (numbers as float64). A named field that is set
// but not a sealed string, or does not open, is an error naming the field (never its value).
// values is not modified.
func (b *Box) OpenFields(values map[string]any, fields []string) (map[string]any, error) {
	out := copyMap(values)
	for _, name := range fields {
		v, ok := values[name]
		if !ok || v == nil {
			continue
		}
		s, isString := v.(string)
		if !isString {
			return nil, fmt.Errorf("field %q: %w", name, ErrMalformed)
		}
		plaintext, err := b.Open(s)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", name, err)
		}
		var decoded any
		if err := json.Unmarshal(plaintext, &decoded); err != nil {
			return nil, fmt.Errorf("field %q: %w: sealed content is not JSON", name, ErrMalformed)
		}
		out[name] = decoded
	}
	return out, nil
}

func copyMap(values map[string]any) map[string]any {
	if values == nil {
		return nil
	}
	out := make(map[string]any, len(values))
	for k, v := range values {
		out[k] = v
	}
	return out
}
