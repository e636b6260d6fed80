package configschema

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"unicode/utf8"
)

// normalize returns a deep copy of v made of JSON-compatible values only (nil, bool, string,
// float64, []any, map[string]any), converting Go numeric types and json.Number to float64 and
// other slices and string-keyed maps to []any and map[string]any. ok is false when v holds
// anything JSON cannot carry: NaN or infinite numbers, strings that are not valid UTF-8, or
// other Go types. Nil slices and maps are JSON null.
func normalize(v any) (out any, ok bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case bool:
		return x, true
	case string:
		return x, utf8.ValidString(x)
	case float64:
		return x, finite(x)
	case []any:
		if x == nil {
			return nil, true
		}
		list := make([]any, len(x))
		for i, e := range x {
			if list[i], ok = normalize(e); !ok {
				return nil, false
			}
		}
		return list, true
	case map[string]any:
		if x == nil {
			return nil, true
		}
		m := make(map[string]any, len(x))
		for k, e := range x {
			if !utf8.ValidString(k) {
				return nil, false
			}
			if m[k], ok = normalize(e); !ok {
				return nil, false
			}
		}
		return m, true
	}
	if f, isNum := toFloat(v); isNum {
		return f, finite(f)
	}
	return normalizeReflect(reflect.ValueOf(v))
}

// normalizeReflect handles slices, arrays and string-keyed maps of other element types.
func normalizeReflect(rv reflect.Value) (any, bool) {
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return nil, false // []byte is not a JSON array; say what is meant
		}
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil, true
		}
		list := make([]any, rv.Len())
		for i := range list {
			var ok bool
			if list[i], ok = normalize(rv.Index(i).Interface()); !ok {
				return nil, false
			}
		}
		return list, true
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, false
		}
		if rv.IsNil() {
			return nil, true
		}
		m := make(map[string]any, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			k := iter.Key().String()
			if !utf8.ValidString(k) {
				return nil, false
			}
			e, ok := normalize(iter.Value().Interface())
			if !ok {
				return nil, false
			}
			m[k] = e
		}
		return m, true
	}
	return nil, false
}

// toFloat converts any Go number or json.Number to float64.
func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// isNull reports whether v is JSON null: nil, or a nil slice or map.
func isNull(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Slice, reflect.Map:
		return rv.IsNil()
	}
	return false
}

// copyValue returns a normalized deep copy of v, or v itself when it is not JSON-compatible
// (validation then rejects it).
func copyValue(v any) any {
	if n, ok := normalize(v); ok {
		return n
	}
	return v
}

// deepCopy copies the maps and slices of a JSON-compatible value.
func deepCopy(v any) any {
	switch x := v.(type) {
	case []any:
		if x == nil {
			return x
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	case map[string]any:
		if x == nil {
			return x
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	}
	return v
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(a, b any) bool {
	na, okA := normalize(a)
	nb, okB := normalize(b)
	if !okA || !okB {
		return reflect.DeepEqual(a, b)
	}
	return reflect.DeepEqual(na, nb)
}

// canonical returns a string that is equal for equal JSON values.
func canonical(v any) string {
	n, ok := normalize(v)
	if !ok {
		return fmt.Sprintf("%#v", v)
	}
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

// formatNumber formats a float the way encoding/json does.
func formatNumber(f float64) string {
	abs := math.Abs(f)
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// lengthNoun names what min and max count for a field type.
func lengthNoun(t Type) string {
	if t == TypeArray {
		return "number of items"
	}
	return "length"
}

// plural returns "n noun" with an s when n is not 1.
func plural(n float64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return formatNumber(n) + " " + noun + "s"
}

// kindOf returns the reflect kind of v as a string.
func kindOf(v any) string {
	if v == nil {
		return "nil"
	}
	return reflect.TypeOf(v).Kind().String()
}
