package manifest_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

func FuzzParse(f *testing.F) {
	f.Add(readTestdata(f, "analytics-plugin.json"))
	f.Add(readTestdata(f, "auth-plugin.json"))
	f.Add([]byte(`{"id": "demo-plugin", "name": "Demo", "version": "1.0.0", "external": true}`))
	f.Add([]byte(`{"id": "demo-plugin", "name": "Demo", "version": "1.0.0-rc.1+b", "entry_point": "run", "start_timeout_seconds": 3e1,
		"events": {"emits": ["a.b", {"type": "c"}], "subscribes": ["*", "*.error"]}, "api_endpoints": [{"path": "/x", "methods": ["get"]}]}`))
	f.Add([]byte(`{"id": "x", "id": "y", "version": 1, "permissions": ["a:b", 2], "configuration": {"a": {"type": "integer", "default": 1.5}}}`))
	f.Add([]byte(`{"configuration": {"s": {"type": "string", "pattern": "^[a-z]+$", "enum": ["ab", "cd"], "default": "ab", "max": 2}}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := manifest.Parse(data)
		if err != nil {
			if m != nil {
				t.Fatal("Parse returned a manifest with an error")
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed manifest does not validate: %v", err)
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := manifest.Parse(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed the manifest:\n%#v\n%#v", again, m)
		}
		out2, err := json.Marshal(again)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("marshal is not stable:\n%s\n%s", out, out2)
		}
	})
}
