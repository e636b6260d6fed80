package manifest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustParse(t testing.TB, data []byte) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse(data)
	if err != nil {
		var e *errs.Error
		if errors.As(err, &e) {
			t.Fatalf("Parse: %v %v", err, e.Fields)
		}
		t.Fatalf("Parse: %v", err)
	}
	return m
}

func TestParseAnalyticsPlugin(t *testing.T) {
	t.Parallel()
	m := mustParse(t, readTestdata(t, "analytics-plugin.json"))
	if m.ID != "analytics-plugin" || m.Name != "Analytics Plugin" || m.Version != "1.2.0" ||
		m.EntryPoint != "bin/analytics-plugin" || m.External || m.NexusVersion != ">=1.0.0" {
		t.Fatalf("identity = %+v", m)
	}
	if want := []string{"database:read", "database:write", "events:emit", "http:external"}; !slices.Equal(m.Permissions, want) {
		t.Errorf("Permissions = %v", m.Permissions)
	}
	if got := m.APIEndpoints[1].Methods; !slices.Equal(got, []string{"POST"}) {
		t.Errorf("methods not upper-cased: %v", got)
	}
	wantEvents := manifest.Events{
		Emits: []manifest.Event{{Type: "analytics.batch_processed", Description: "Emitted when a batch of events has been processed"}},
		Subscribes: []manifest.Event{
			{Type: "user.*", Description: "Record every user event"},
			{Type: "system.shutdown"}, // a bare string, normalised to an object
		},
	}
	if !reflect.DeepEqual(m.Events, wantEvents) {
		t.Errorf("Events = %+v", m.Events)
	}
	if want := []manifest.MessageType{{Type: "data_request",
		Description:        "Query analytics data, e.g. a user's activity over a date range",
		RequiredPermission: "users:read"}}; !reflect.DeepEqual(m.MessageTypes, want) {
		t.Errorf("MessageTypes = %+v", m.MessageTypes)
	}
	if m.Dependencies.Packages != nil {
		t.Errorf("empty packages not normalised to nil: %#v", m.Dependencies.Packages)
	}
	if got := m.DependencyIDs(); !slices.Equal(got, []string{"auth-plugin"}) {
		t.Errorf("DependencyIDs() = %v", got)
	}
	if want := (manifest.ResourceLimits{MemoryMB: 256, CPUPercent: 10, FileHandles: 100}); m.ResourceLimits != want {
		t.Errorf("ResourceLimits = %+v", m.ResourceLimits)
	}
	s := m.Schema()
	f, ok := s.Field("batch_size")
	if !ok || f.Default != 50.0 || *f.Min != 10 || *f.Max != 1000 {
		t.Errorf("batch_size = %+v", f)
	}
	if f, _ := s.Field("storage_backend"); !reflect.DeepEqual(f.Enum, []any{"database", "file", "redis"}) || f.Default != "database" {
		t.Errorf("storage_backend = %+v", f)
	}
	if got := s.SecretFields(); !slices.Equal(got, []string{"api_key"}) {
		t.Errorf("SecretFields() = %v", got)
	}
	if got := s.Defaults(); !reflect.DeepEqual(got, map[string]any{"batch_size": 50.0, "flush_interval": 30.0, "storage_backend": "database"}) {
		t.Errorf("Defaults() = %v", got)
	}
}

func TestParseAuthPluginAndDefaults(t *testing.T) {
	t.Parallel()
	m := mustParse(t, readTestdata(t, "auth-plugin.json"))
	if m.EntryPoint != "auth_plugin:AuthPlugin" || m.PythonVersion != ">=3.8" || m.SecurityLevel != manifest.SecurityHigh {
		t.Fatalf("manifest = %+v", m)
	}
	if m.DependencyIDs() != nil || m.Dependencies.Plugins != nil {
		t.Errorf("empty plugins: %#v", m.Dependencies.Plugins)
	}
	// Absent fields take their defaults.
	if !m.Sandbox || m.StartTimeoutSeconds != 30 || m.ResourceLimits != (manifest.ResourceLimits{}) {
		t.Errorf("defaults = sandbox %v, timeout %d, limits %+v", m.Sandbox, m.StartTimeoutSeconds, m.ResourceLimits)
	}
}

func TestParseFillsDefaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		json string
		want manifest.Manifest
	}{
		{
			name: "absent",
			json: `{"id": "demo-plugin", "name": "Demo", "version": "1.0.0", "entry_point": "run"}`,
			want: manifest.Manifest{ID: "demo-plugin", Name: "Demo", Version: "1.0.0", EntryPoint: "run",
				NexusVersion: "*", SecurityLevel: manifest.SecurityMedium, Sandbox: true, StartTimeoutSeconds: 30, Instances: 1},
		},
		{
			name: "null is absent",
			json: `{"id": "demo-plugin", "name": "Demo", "version": "1.0.0", "entry_point": "run", "nexus_version": null,
				"sandbox": null, "security_level": null, "start_timeout_seconds": null, "tags": null, "events": null}`,
			want: manifest.Manifest{ID: "demo-plugin", Name: "Demo", Version: "1.0.0", EntryPoint: "run",
				NexusVersion: "*", SecurityLevel: manifest.SecurityMedium, Sandbox: true, StartTimeoutSeconds: 30, Instances: 1},
		},
		{
			name: "explicit",
			json: `{"id": "demo-plugin", "name": "Demo", "version": "1.0.0", "external": true, "nexus_version": "^1.2",
				"sandbox": false, "security_level": "critical", "start_timeout_seconds": 6e2, "instances": 3, "tags": [], "events": {"emits": []},
				"configuration": {}, "dependencies": {"plugins": {}}, "resource_limits": {}}`,
			want: manifest.Manifest{ID: "demo-plugin", Name: "Demo", Version: "1.0.0", External: true,
				NexusVersion: "^1.2", SecurityLevel: manifest.SecurityCritical, Sandbox: false, StartTimeoutSeconds: 600, Instances: 3},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := mustParse(t, []byte(c.json))
			if !reflect.DeepEqual(*m, c.want) {
				t.Fatalf("Parse = %+v\nwant    %+v", *m, c.want)
			}
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

// TestGolden checks the normalised JSON form of the example manifests, and that it parses
// back to an equal manifest. Run with -update to rewrite the golden files.
func TestGolden(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"analytics-plugin", "auth-plugin"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := mustParse(t, readTestdata(t, name+".json"))
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(m); err != nil {
				t.Fatal(err)
			}
			got := buf.Bytes()
			golden := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want := readTestdata(t, name+".golden.json")
			if !bytes.Equal(got, want) {
				t.Errorf("normalised form differs from %s (run with -update to accept):\n%s", golden, got)
			}
			if again := mustParse(t, got); !reflect.DeepEqual(again, m) {
				t.Errorf("round trip changed the manifest:\n%+v\n%+v", again, m)
			}
		})
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	t.Parallel()
	m := &manifest.Manifest{ID: "demo-plugin", Name: "Demo", Version: "1.0.0", EntryPoint: "run",
		NexusVersion: manifest.DefaultNexusVersion, SecurityLevel: manifest.DefaultSecurityLevel,
		Sandbox: manifest.DefaultSandbox, StartTimeoutSeconds: manifest.DefaultStartTimeoutSeconds}
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	m.StartTimeoutSeconds = 0
	m.SecurityLevel = ""
	err := m.Validate()
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.ValidationError || len(e.Fields) != 2 ||
		e.Fields[0].Field != "security_level" || e.Fields[1].Field != "start_timeout_seconds" {
		t.Fatalf("Validate = %v %+v", err, e)
	}
	var nilManifest *manifest.Manifest
	if err := nilManifest.Validate(); !errs.Is(err, errs.ValidationError) {
		t.Fatalf("nil Validate = %v", err)
	}
}
