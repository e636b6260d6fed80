package repository_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/repository"
)

// validIndex is a small valid index, edited by the malformed cases.
const validIndex = `{
  "format": 1,
  "name": "official",
  "generated_at": "2024-01-01T10:00:00Z",
  "plugins": [
    {
      "id": "social-auth-plugin",
      "name": "Social Authentication Plugin",
      "description": "OAuth integration",
      "author": "Community Dev",
      "category": "authentication",
      "tags": ["oauth", "social"],
      "rating": 4.8,
      "downloads": 15420,
      "last_updated": "2024-01-01T10:00:00Z",
      "compatibility": {"nexus_version": ">=1.0.0", "python_version": ">=3.8"},
      "repository_url": "https://plugins.nexus.dev/social-auth",
      "documentation_url": "https://docs.nexus.dev/plugins/social-auth",
      "versions": [
        {
          "version": "2.1.0",
          "url": "social-auth-plugin-2.1.0.tar.gz",
          "size": 1234,
          "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
          "nexus_version": ">=1.0.0",
          "os": ["linux"],
          "arch": ["amd64"],
          "dependencies": {"auth-plugin": "^1.0.0"},
          "signature": {"key_id": "0123456789abcdef", "signature": "` + sig64 + `"},
          "published": "2024-01-01T10:00:00Z"
        }
      ]
    }
  ]
}`

// sig64 is 64 zero bytes in base64.
const sig64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="

func TestParseIndexValid(t *testing.T) {
	idx, err := repository.ParseIndex([]byte(validIndex))
	if err != nil {
		t.Fatal(err)
	}
	p := idx.Plugin("social-auth-plugin")
	if p == nil || p.Rating != 4.8 || p.Downloads != 15420 || p.Versions[0].Signature == nil {
		t.Fatalf("parsed %+v", idx)
	}
	// Absolute http(s) and nested relative URLs are fine.
	for _, u := range []string{"https://cdn.example.com/p.tar.gz", "packages/p-2.1.0.tar.gz"} {
		data := strings.Replace(validIndex, `"social-auth-plugin-2.1.0.tar.gz"`, `"`+u+`"`, 1)
		if _, err := repository.ParseIndex([]byte(data)); err != nil {
			t.Errorf("url %q: %v", u, err)
		}
	}
}

func TestParseIndexMalformed(t *testing.T) {
	edit := func(old, new string) string {
		if !strings.Contains(validIndex, old) {
			t.Fatalf("test edit %q does not apply", old)
		}
		return strings.Replace(validIndex, old, new, 1)
	}
	const v0 = "plugins[0].versions[0]"
	tests := []struct {
		name  string
		data  string
		field string // expected violation path; "" when the JSON itself is refused
	}{
		{"not JSON", "{", ""},
		{"trailing data", validIndex + "{}", ""},
		{"unknown field", edit(`"format": 1,`, `"format": 1, "extra": true,`), ""},
		{"unknown nested field", edit(`"size": 1234,`, `"size": 1234, "md5": "x",`), ""},
		{"wrong type", edit(`"size": 1234`, `"size": "1234"`), ""},
		{"format", edit(`"format": 1`, `"format": 2`), "format"},
		{"plugin id", edit(`"id": "social-auth-plugin"`, `"id": "Social_Auth"`), "plugins[0].id"},
		{"reserved id", edit(`"id": "social-auth-plugin"`, `"id": "search"`), "plugins[0].id"},
		{"missing name", edit(`"name": "Social Authentication Plugin"`, `"name": ""`), "plugins[0].name"},
		{"rating", edit(`"rating": 4.8`, `"rating": 5.1`), "plugins[0].rating"},
		{"downloads", edit(`"downloads": 15420`, `"downloads": -1`), "plugins[0].downloads"},
		{"tag", edit(`"oauth"`, `""`), "plugins[0].tags[0]"},
		{"compatibility", edit(`"nexus_version": ">=1.0.0", "python`, `"nexus_version": "newest", "python`), "plugins[0].compatibility.nexus_version"},
		{"repository_url", edit(`"https://plugins.nexus.dev/social-auth"`, `"ftp://x"`), "plugins[0].repository_url"},
		{"version", edit(`"version": "2.1.0"`, `"version": "v2.1"`), v0 + ".version"},
		{"url dot-dot", edit(`"social-auth-plugin-2.1.0.tar.gz"`, `"../p.tar.gz"`), v0 + ".url"},
		{"url encoded dot-dot", edit(`"social-auth-plugin-2.1.0.tar.gz"`, `"a/%2e%2e/%2e%2e/p.tar.gz"`), v0 + ".url"},
		{"url absolute path", edit(`"social-auth-plugin-2.1.0.tar.gz"`, `"/etc/p.tar.gz"`), v0 + ".url"},
		{"url scheme", edit(`"social-auth-plugin-2.1.0.tar.gz"`, `"file:///etc/p.tar.gz"`), v0 + ".url"},
		{"url host", edit(`"social-auth-plugin-2.1.0.tar.gz"`, `"//evil.example/p.tar.gz"`), v0 + ".url"},
		{"url empty", edit(`"social-auth-plugin-2.1.0.tar.gz"`, `""`), v0 + ".url"},
		{"size", edit(`"size": 1234`, `"size": 0`), v0 + ".size"},
		{"sha256 short", edit(`"sha256": "0123456789abcdef`, `"sha256": "`), v0 + ".sha256"},
		{"sha256 upper", edit(`"sha256": "0123456789abcdef`, `"sha256": "0123456789ABCDEF`), v0 + ".sha256"},
		{"nexus_version", edit(`"nexus_version": ">=1.0.0",
          "os"`, `"nexus_version": "><",
          "os"`), v0 + ".nexus_version"},
		{"os", edit(`["linux"]`, `["Linux"]`), v0 + ".os[0]"},
		{"dependency id", edit(`{"auth-plugin": "^1.0.0"}`, `{"Auth": "^1.0.0"}`), v0 + ".dependencies.Auth"},
		{"dependency constraint", edit(`{"auth-plugin": "^1.0.0"}`, `{"auth-plugin": "any"}`), v0 + ".dependencies.auth-plugin"},
		{"key id", edit(`"key_id": "0123456789abcdef"`, `"key_id": "0123"`), v0 + ".signature.key_id"},
		{"signature", edit(sig64, "AAAA"), v0 + ".signature.signature"},
		{"time out of range", edit(`"published": "2024-01-01T10:00:00Z"`, `"published": "0000-01-01T00:00:00+01:00"`), v0 + ".published"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := repository.ParseIndex([]byte(tt.data))
			e := wantCode(t, err, errs.ValidationError)
			if tt.field == "" {
				return
			}
			for _, f := range e.Fields {
				if f.Field == tt.field {
					return
				}
			}
			t.Fatalf("violations %v do not name %s", e.Fields, tt.field)
		})
	}
}

func TestParseIndexLimits(t *testing.T) {
	big := make([]byte, repository.MaxIndexBytes+1)
	if _, err := repository.ParseIndex(big); !errs.Is(err, errs.ValidationError) {
		t.Errorf("oversized index: %v", err)
	}
	idx, err := repository.ParseIndex([]byte(validIndex))
	if err != nil {
		t.Fatal(err)
	}
	dupPlugins := *idx
	dupPlugins.Plugins = append(dupPlugins.Plugins, idx.Plugins[0])
	p := idx.Plugins[0]
	p.Versions = append(p.Versions, p.Versions[0])
	p.Versions[1].Version = "2.1.0+build.7" // the same version for resolution
	dupVersions := *idx
	dupVersions.Plugins = []repository.Plugin{p}
	many := idx.Plugins[0]
	for i := 0; i <= repository.MaxVersions; i++ {
		many.Versions = append(many.Versions, many.Versions[0])
	}
	tooMany := *idx
	tooMany.Plugins = []repository.Plugin{many}
	none := idx.Plugins[0]
	none.Versions = nil
	noVersions := *idx
	noVersions.Plugins = []repository.Plugin{none}
	for name, tt := range map[string]struct {
		idx   repository.Index
		field string
	}{
		"duplicate plugin":  {dupPlugins, "plugins[1].id"},
		"duplicate version": {dupVersions, "plugins[0].versions[1].version"},
		"too many versions": {tooMany, "plugins[0].versions"},
		"no versions":       {noVersions, "plugins[0].versions"},
	} {
		t.Run(name, func(t *testing.T) {
			data, err := json.Marshal(tt.idx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = repository.ParseIndex(data)
			e := wantCode(t, err, errs.ValidationError)
			if len(e.Fields) == 0 || e.Fields[0].Field != tt.field {
				t.Fatalf("violations = %v, want %s first", e.Fields, tt.field)
			}
		})
	}
}

func TestBuildIndexDeterministic(t *testing.T) {
	_, priv := newKey(t)
	dir, first := buildRepo(t, priv)
	firstJSON, err := first.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Rebuilding over the written index.json gives the same bytes.
	again, err := repository.BuildIndex(dir, priv, repository.BuildOptions{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	againJSON, _ := again.Marshal()
	if !bytes.Equal(firstJSON, againJSON) {
		t.Fatalf("rebuild differs:\n%s\n---\n%s", firstJSON, againJSON)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, repository.IndexFile))
	if err != nil || !bytes.Equal(onDisk, firstJSON) {
		t.Fatalf("index.json differs from Marshal: %v", err)
	}

	// Catalog data survives a rebuild; new versions get the new clock, old ones keep theirs.
	first.Plugins[0].Rating, first.Plugins[0].Downloads = 4.5, 99
	if err := repository.WriteIndex(dir, first); err != nil {
		t.Fatal(err)
	}
	writePackage(t, dir, "analytics-plugin", "1.3.0", nil)
	later := func() time.Time { return fixedClock().Add(time.Hour) }
	rebuilt, err := repository.BuildIndex(dir, priv, repository.BuildOptions{Now: later})
	if err != nil {
		t.Fatal(err)
	}
	p := rebuilt.Plugin("analytics-plugin")
	if p.Rating != 4.5 || p.Downloads != 99 || rebuilt.Name != "test" {
		t.Errorf("catalog data lost: rating %v downloads %v name %q", p.Rating, p.Downloads, rebuilt.Name)
	}
	for _, v := range p.Versions {
		want := fixedClock()
		if v.Version == "1.3.0" {
			want = later()
		}
		if !v.Published.Equal(want) {
			t.Errorf("%s published %s, want %s", v.Version, v.Published, want)
		}
	}

	// A duplicate version and an unsigned build without a key.
	if _, err := repository.BuildIndex(dir, repository.PrivateKey{}, repository.BuildOptions{}); !errs.Is(err, errs.ValidationError) {
		t.Errorf("BuildIndex without a key: %v", err)
	}
	unsigned, err := repository.BuildIndex(dir, repository.PrivateKey{}, repository.BuildOptions{Unsigned: true})
	if err != nil || unsigned.Plugins[0].Versions[0].Signature != nil {
		t.Errorf("unsigned build: %v", err)
	}
	src, _ := os.ReadFile(filepath.Join(dir, "analytics-plugin-1.3.0.tar.gz"))
	if err := os.WriteFile(filepath.Join(dir, "copy.tar.gz"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := repository.BuildIndex(dir, priv, repository.BuildOptions{}); !errs.Is(err, errs.ValidationError) {
		t.Errorf("BuildIndex with a duplicate version: %v", err)
	}
}

// The catalog side file sets rating, downloads, documentation URL and tags, over the
// existing index and the manifests; a bad one is refused with the field named.
func TestBuildIndexTakesTheCatalogFile(t *testing.T) {
	_, priv := newKey(t)
	dir, first := buildRepo(t, priv)
	first.Plugins[0].Rating, first.Plugins[0].Downloads = 1.5, 7 // in the existing index
	if err := repository.WriteIndex(dir, first); err != nil {
		t.Fatal(err)
	}
	id := first.Plugins[0].ID
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, repository.CatalogFile), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"plugins": {"` + id + `": {"rating": 4.6, "documentation_url": "https://docs.example.com/a", "tags": ["x", "y"]}}}`)
	idx, err := repository.BuildIndex(dir, priv, repository.BuildOptions{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	p := idx.Plugin(id)
	if p.Rating != 4.6 || p.Downloads != 7 || p.DocumentationURL != "https://docs.example.com/a" || !slices.Equal(p.Tags, []string{"x", "y"}) {
		t.Fatalf("plugin = rating %v downloads %v docs %q tags %v", p.Rating, p.Downloads, p.DocumentationURL, p.Tags)
	}
	for _, c := range []struct{ doc, want string }{
		{`{"plugins": {"` + id + `": {"rating": 7}}}`, "rating must be between 0 and 5"},
		{`{"plugins": {"` + id + `": {"downloads": -1}}}`, "downloads must not be negative"},
		{`{"plugins": {"` + id + `": {"stars": 5}}}`, `unknown field "stars"`},
		{`{"plugins": {"no-such-plugin": {"rating": 1}}}`, `names plugin "no-such-plugin"`},
		{`{"plugins": {"` + id + `": {"documentation_url": "ftp://x"}}}`, "documentation_url"},
		{`{"plugins": `, "catalog.json"},
	} {
		write(c.doc)
		_, err := repository.BuildIndex(dir, priv, repository.BuildOptions{Now: fixedClock})
		if e := wantCode(t, err, errs.ValidationError); !strings.Contains(e.Error(), c.want) {
			t.Errorf("%s: %v, want it to say %q", c.doc, err, c.want)
		}
	}
}
