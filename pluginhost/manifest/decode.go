package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// decoder turns the JSON of a manifest into a Manifest, strictly: unknown fields and values
// of the wrong type are problems, and decoding goes on after each so that every problem is
// reported. It is used by one goroutine for one Parse call.
type decoder struct {
	problems []errs.FieldViolation
	// failed holds the paths whose value could not be decoded; validation problems at or
	// under them would only repeat the decoding problem.
	failed map[string]bool
}

// member is one known key of a JSON object and what to do with its (non-null) value.
type member struct {
	key    string
	decode func(raw json.RawMessage, path string)
}

func (d *decoder) fail(path, description string) {
	d.problems = append(d.problems, errs.FieldViolation{Field: path, Description: description})
	d.failed[path] = true
}

// covers reports whether path is at or under a path that failed to decode.
func (d *decoder) covers(path string) bool {
	for p := path; ; {
		if d.failed[p] {
			return true
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			return false
		}
		p = p[:i]
	}
}

// manifest decodes the top-level object and fills in the defaults.
func (d *decoder) manifest(top map[string]json.RawMessage) *Manifest {
	m := &Manifest{}
	var nexusSet, levelSet, sandboxSet, timeoutSet, instancesSet bool
	d.members(top, "", []member{
		{"id", func(r json.RawMessage, p string) { m.ID = d.str(r, p) }},
		{"name", func(r json.RawMessage, p string) { m.Name = d.str(r, p) }},
		{"version", func(r json.RawMessage, p string) { m.Version = d.str(r, p) }},
		{"description", func(r json.RawMessage, p string) { m.Description = d.str(r, p) }},
		{"author", func(r json.RawMessage, p string) { m.Author = d.str(r, p) }},
		{"email", func(r json.RawMessage, p string) { m.Email = d.str(r, p) }},
		{"homepage", func(r json.RawMessage, p string) { m.Homepage = d.str(r, p) }},
		{"license", func(r json.RawMessage, p string) { m.License = d.str(r, p) }},
		{"category", func(r json.RawMessage, p string) { m.Category = d.str(r, p) }},
		{"tags", func(r json.RawMessage, p string) { m.Tags = d.strs(r, p) }},
		{"entry_point", func(r json.RawMessage, p string) { m.EntryPoint = d.str(r, p) }},
		{"args", func(r json.RawMessage, p string) { m.Args = d.strs(r, p) }},
		{"external", func(r json.RawMessage, p string) { m.External = d.boolean(r, p) }},
		{"nexus_version", func(r json.RawMessage, p string) { m.NexusVersion, nexusSet = d.str(r, p), true }},
		{"python_version", func(r json.RawMessage, p string) { m.PythonVersion = d.str(r, p) }},
		{"os", func(r json.RawMessage, p string) { m.OS = d.strs(r, p) }},
		{"arch", func(r json.RawMessage, p string) { m.Arch = d.strs(r, p) }},
		{"dependencies", func(r json.RawMessage, p string) { m.Dependencies = d.dependencies(r, p) }},
		{"permissions", func(r json.RawMessage, p string) { m.Permissions = d.strs(r, p) }},
		{"api_endpoints", func(r json.RawMessage, p string) { m.APIEndpoints = d.endpoints(r, p) }},
		{"events", func(r json.RawMessage, p string) { m.Events = d.events(r, p) }},
		{"message_types", func(r json.RawMessage, p string) { m.MessageTypes = d.messageTypes(r, p) }},
		{"services", func(r json.RawMessage, p string) { m.Services = d.strs(r, p) }},
		{"configuration", func(r json.RawMessage, p string) {
			schema, problems := configschema.Parse(r)
			for _, v := range problems {
				d.fail(v.Field, v.Description)
			}
			m.Configuration = schema
		}},
		{"resource_limits", func(r json.RawMessage, p string) { m.ResourceLimits = d.limits(r, p) }},
		{"security_level", func(r json.RawMessage, p string) {
			m.SecurityLevel, levelSet = SecurityLevel(d.str(r, p)), true
		}},
		{"sandbox", func(r json.RawMessage, p string) { m.Sandbox, sandboxSet = d.boolean(r, p), true }},
		{"start_timeout_seconds", func(r json.RawMessage, p string) {
			m.StartTimeoutSeconds, timeoutSet = d.integer(r, p), true
		}},
		{"instances", func(r json.RawMessage, p string) {
			if m.Instances, instancesSet = d.integer(r, p), true; m.Instances == 0 && !d.failed[p] {
				d.fail(p, fmt.Sprintf("must be between 1 and %d", MaxInstances))
			}
		}},
	})
	if !nexusSet {
		m.NexusVersion = DefaultNexusVersion
	}
	if !levelSet {
		m.SecurityLevel = DefaultSecurityLevel
	}
	if !sandboxSet {
		m.Sandbox = DefaultSandbox
	}
	if !timeoutSet {
		m.StartTimeoutSeconds = DefaultStartTimeoutSeconds
	}
	if !instancesSet {
		m.Instances = DefaultInstances
	}
	for i := range m.APIEndpoints {
		for j, method := range m.APIEndpoints[i].Methods {
			m.APIEndpoints[i].Methods[j] = strings.ToUpper(method)
		}
	}
	return m
}

func (d *decoder) dependencies(raw json.RawMessage, path string) Dependencies {
	var deps Dependencies
	d.object(raw, path, []member{
		{"packages", func(r json.RawMessage, p string) { deps.Packages = d.strMap(r, p) }},
		{"plugins", func(r json.RawMessage, p string) { deps.Plugins = d.strMap(r, p) }},
	})
	return deps
}

func (d *decoder) endpoints(raw json.RawMessage, path string) []APIEndpoint {
	items := d.array(raw, path)
	if len(items) == 0 {
		return nil
	}
	out := make([]APIEndpoint, len(items))
	for i, item := range items {
		e := &out[i]
		d.object(item, index(path, i), []member{
			{"path", func(r json.RawMessage, p string) { e.Path = d.str(r, p) }},
			{"methods", func(r json.RawMessage, p string) { e.Methods = d.strs(r, p) }},
			{"description", func(r json.RawMessage, p string) { e.Description = d.str(r, p) }},
			{"auth", func(r json.RawMessage, p string) { e.Auth = d.str(r, p) }},
			{"timeout_seconds", func(r json.RawMessage, p string) { e.TimeoutSeconds = d.integer(r, p) }},
		})
		if e.Auth == "" {
			e.Auth = AuthToken
		}
		if e.TimeoutSeconds == 0 {
			e.TimeoutSeconds = DefaultEndpointTimeoutSeconds
		}
	}
	return out
}

func (d *decoder) events(raw json.RawMessage, path string) Events {
	var ev Events
	d.object(raw, path, []member{
		{"emits", func(r json.RawMessage, p string) { ev.Emits = d.eventList(r, p) }},
		{"subscribes", func(r json.RawMessage, p string) { ev.Subscribes = d.eventList(r, p) }},
	})
	return ev
}

// eventList decodes event entries, each a type string or a {type, description} object.
func (d *decoder) eventList(raw json.RawMessage, path string) []Event {
	items := d.array(raw, path)
	if len(items) == 0 {
		return nil
	}
	out := make([]Event, len(items))
	for i, item := range items {
		p := index(path, i)
		switch firstByte(item) {
		case '"':
			out[i].Type = d.str(item, p)
		case '{':
			e := &out[i]
			d.object(item, p, []member{
				{"type", func(r json.RawMessage, p string) { e.Type = d.str(r, p) }},
				{"description", func(r json.RawMessage, p string) { e.Description = d.str(r, p) }},
			})
		default:
			d.fail(p, "must be an event type string or an object with type and description")
		}
	}
	return out
}

func (d *decoder) messageTypes(raw json.RawMessage, path string) []MessageType {
	items := d.array(raw, path)
	if len(items) == 0 {
		return nil
	}
	out := make([]MessageType, len(items))
	for i, item := range items {
		mt := &out[i]
		d.object(item, index(path, i), []member{
			{"type", func(r json.RawMessage, p string) { mt.Type = d.str(r, p) }},
			{"description", func(r json.RawMessage, p string) { mt.Description = d.str(r, p) }},
			{"required_permission", func(r json.RawMessage, p string) { mt.RequiredPermission = d.str(r, p) }},
		})
	}
	return out
}

func (d *decoder) limits(raw json.RawMessage, path string) ResourceLimits {
	var l ResourceLimits
	d.object(raw, path, []member{
		{"memory_mb", func(r json.RawMessage, p string) { l.MemoryMB = d.integer(r, p) }},
		{"cpu_percent", func(r json.RawMessage, p string) { l.CPUPercent = d.integer(r, p) }},
		{"file_handles", func(r json.RawMessage, p string) { l.FileHandles = d.integer(r, p) }},
	})
	return l
}

// object decodes raw as a JSON object and dispatches its members.
func (d *decoder) object(raw json.RawMessage, path string, known []member) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		d.fail(path, "must be an object")
		return
	}
	d.members(obj, path, known)
}

// members reports the unknown keys of obj, sorted, then decodes each known key whose value
// is not null (null is the same as absent), in the order of known.
func (d *decoder) members(obj map[string]json.RawMessage, path string, known []member) {
	isKnown := make(map[string]bool, len(known))
	for _, k := range known {
		isKnown[k.key] = true
	}
	for _, key := range sortedKeys(obj) {
		if !isKnown[key] {
			d.fail(join(path, key), "unknown field")
		}
	}
	for _, k := range known {
		raw, ok := obj[k.key]
		if !ok || isNull(raw) {
			continue
		}
		k.decode(raw, join(path, k.key))
	}
}

func (d *decoder) str(raw json.RawMessage, path string) string {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		d.fail(path, "must be a string")
		return ""
	}
	return s
}

func (d *decoder) boolean(raw json.RawMessage, path string) bool {
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		d.fail(path, "must be a boolean")
		return false
	}
	return b
}

// integer decodes a whole number; 30, 30.0 and 3e1 are all 30.
func (d *decoder) integer(raw json.RawMessage, path string) int {
	var n json.Number
	if c := firstByte(raw); c != '-' && (c < '0' || c > '9') || json.Unmarshal(raw, &n) != nil {
		d.fail(path, "must be an integer")
		return 0
	}
	if i, err := strconv.ParseInt(n.String(), 10, 32); err == nil {
		return int(i)
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || f != math.Trunc(f) {
		d.fail(path, "must be an integer")
		return 0
	}
	if f < math.MinInt32 || f > math.MaxInt32 {
		d.fail(path, "is out of range")
		return 0
	}
	return int(f)
}

// array decodes raw as a JSON array; an empty array is nil.
func (d *decoder) array(raw json.RawMessage, path string) []json.RawMessage {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		d.fail(path, "must be an array")
		return nil
	}
	if len(items) == 0 {
		return nil
	}
	return items
}

// strs decodes an array of strings; an empty array is nil.
func (d *decoder) strs(raw json.RawMessage, path string) []string {
	items := d.array(raw, path)
	if len(items) == 0 {
		return nil
	}
	out := make([]string, len(items))
	for i, item := range items {
		out[i] = d.str(item, index(path, i))
	}
	return out
}

// strMap decodes an object of strings; an empty object is nil.
func (d *decoder) strMap(raw json.RawMessage, path string) map[string]string {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		d.fail(path, "must be an object")
		return nil
	}
	if len(obj) == 0 {
		return nil
	}
	out := make(map[string]string, len(obj))
	for _, key := range sortedKeys(obj) {
		out[key] = d.str(obj[key], join(path, key))
	}
	return out
}

// duplicateKeys reports every key that appears twice in one object of a document that is
// known to be valid JSON (encoding/json keeps the last one silently).
func duplicateKeys(data []byte) []errs.FieldViolation {
	dec := json.NewDecoder(bytes.NewReader(data))
	var out []errs.FieldViolation
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := kt.(string)
				p := join(path, key)
				if seen[key] {
					out = append(out, errs.FieldViolation{Field: p, Description: "duplicate key"})
				}
				seen[key] = true
				if err := walk(p); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(index(path, i)); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		}
		return nil
	}
	_ = walk("") // the document was decoded before, so this cannot fail
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func firstByte(raw json.RawMessage) byte {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return 0
	}
	return trimmed[0]
}
