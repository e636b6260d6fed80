package repository

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

// FormatVersion is the index format this package reads and writes.
const FormatVersion = 1

// IndexFile is the name of the index in a repository directory.
const IndexFile = "index.json"

// Limits of an index that ParseIndex enforces.
const (
	MaxIndexBytes      = 16 << 20 // 16 MiB
	MaxPlugins         = 10000
	MaxVersions        = 1000 // per plugin
	MaxTextLen         = 4096 // names, descriptions, authors, URLs
	MaxTags            = 64
	MaxTagLen          = 64
	MaxPlatforms       = 32 // entries of os and arch
	MaxDependencies    = 256
	maxFieldViolations = 100
)

// Index is a repository's index.json.
type Index struct {
	// Format is FormatVersion.
	Format      int       `json:"format"`
	Name        string    `json:"name,omitempty"`
	Description string    `json:"description,omitempty"`
	GeneratedAt time.Time `json:"generated_at"`
	// Plugins are sorted by id; ids are unique.
	Plugins []Plugin `json:"plugins"`
}

// Plugin is one plugin of an index, with the seed's search fields.
type Plugin struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Author      string   `json:"author,omitempty"`
	Category    string   `json:"category,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	// Rating is between 0 and 5; Rating and Downloads are catalog data, kept across rebuilds.
	Rating        float64       `json:"rating"`
	Downloads     int64         `json:"downloads"`
	LastUpdated   time.Time     `json:"last_updated"`
	Compatibility Compatibility `json:"compatibility"`
	// RepositoryURL and DocumentationURL are absolute http(s) URLs, or empty.
	RepositoryURL    string `json:"repository_url,omitempty"`
	DocumentationURL string `json:"documentation_url,omitempty"`
	// Versions are unique; BuildIndex writes them newest first.
	Versions []Version `json:"versions"`
}

// Compatibility is what the newest version of a plugin requires.
type Compatibility struct {
	// NexusVersion is a semver constraint on the server's version.
	NexusVersion string `json:"nexus_version,omitempty"`
	// PythonVersion is informational.
	PythonVersion string `json:"python_version,omitempty"`
}

// Version is one published version of a plugin.
type Version struct {
	// Version is strict semver (1.2.0, 2.0.0-rc.1).
	Version string `json:"version"`
	// URL locates the package: relative to the index (a slash-separated path with no ".."
	// element and no leading slash) or an absolute http(s) URL.
	URL string `json:"url"`
	// Size is the package's size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lower-case hex SHA-256 digest of the package.
	SHA256 string `json:"sha256"`
	// NexusVersion is the manifest's constraint on the server's version; empty means any.
	NexusVersion string `json:"nexus_version,omitempty"`
	// OS and Arch list the GOOS and GOARCH values the package runs on; empty means any.
	OS   []string `json:"os,omitempty"`
	Arch []string `json:"arch,omitempty"`
	// Dependencies maps plugin ids to semver constraints.
	Dependencies map[string]string `json:"dependencies,omitempty"`
	// Signature is nil for an unsigned package.
	Signature *Signature `json:"signature,omitempty"`
	Published time.Time  `json:"published,omitzero"`
}

// ParseIndex decodes and validates an index. Decoding is strict: unknown fields, trailing data
// and wrongly typed values are refused. On failure it returns an *errs.Error with code
// errs.ValidationError whose Fields list the problems found (at most 100), with paths such as
// "plugins[3].versions[1].sha256". Times are converted to UTC, and empty lists and maps to nil,
// so that a parsed Index marshals to JSON that parses back to an equal Index.
func ParseIndex(data []byte) (*Index, error) {
	if len(data) > MaxIndexBytes {
		return nil, errs.New(errs.ValidationError, "repository index is larger than %d bytes", MaxIndexBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var idx Index
	if err := dec.Decode(&idx); err != nil {
		return nil, errs.Wrap(errs.ValidationError, err, "repository index is not valid JSON: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errs.New(errs.ValidationError, "repository index is not valid JSON: unexpected data after the index")
	}
	idx.normalize()
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	return &idx, nil
}

// Validate checks every rule of an index and returns an *errs.Error with code
// errs.ValidationError listing the problems, or nil.
func (idx *Index) Validate() error {
	var v validator
	if idx.Format != FormatVersion {
		v.add("format", "unsupported index format %d (this server reads format %d)", idx.Format, FormatVersion)
	}
	v.text("name", idx.Name, false)
	v.text("description", idx.Description, false)
	v.time("generated_at", idx.GeneratedAt)
	if len(idx.Plugins) > MaxPlugins {
		v.add("plugins", "more than %d plugins", MaxPlugins)
		return v.err()
	}
	seen := make(map[string]int, len(idx.Plugins))
	for i := range idx.Plugins {
		p := &idx.Plugins[i]
		path := fmt.Sprintf("plugins[%d]", i)
		if j, dup := seen[p.ID]; dup {
			v.add(path+".id", "duplicate plugin id %q (also plugins[%d])", p.ID, j)
		} else {
			seen[p.ID] = i
		}
		v.plugin(path, p)
		if v.full() {
			break
		}
	}
	return v.err()
}

// Marshal returns the index as indented JSON with a final newline, as WriteIndex writes it.
func (idx *Index) Marshal() ([]byte, error) {
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the repository index: %w", err)
	}
	return append(data, '\n'), nil
}

// Plugin returns the plugin with id, or nil.
func (idx *Index) Plugin(id string) *Plugin {
	for i := range idx.Plugins {
		if idx.Plugins[i].ID == id {
			return &idx.Plugins[i]
		}
	}
	return nil
}

// normalize converts times to UTC and empty lists and maps to nil.
func (idx *Index) normalize() {
	idx.GeneratedAt = idx.GeneratedAt.UTC()
	if len(idx.Plugins) == 0 {
		idx.Plugins = nil
	}
	for i := range idx.Plugins {
		p := &idx.Plugins[i]
		p.LastUpdated = p.LastUpdated.UTC()
		p.Tags = nilIfEmpty(p.Tags)
		if len(p.Versions) == 0 {
			p.Versions = nil
		}
		for j := range p.Versions {
			ver := &p.Versions[j]
			ver.Published = ver.Published.UTC()
			ver.OS = nilIfEmpty(ver.OS)
			ver.Arch = nilIfEmpty(ver.Arch)
			if len(ver.Dependencies) == 0 {
				ver.Dependencies = nil
			}
		}
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// jsonProblem describes a decoding error for the caller, with its offset or field.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("%s (at byte %d)", syn.Error(), syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type, typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	default:
		return err.Error()
	}
}

// validator collects field violations.
type validator struct {
	fields []errs.FieldViolation
}

func (v *validator) add(field, format string, args ...any) {
	if v.full() {
		return
	}
	v.fields = append(v.fields, errs.FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (v *validator) full() bool { return len(v.fields) >= maxFieldViolations }

func (v *validator) err() error {
	if len(v.fields) == 0 {
		return nil
	}
	return errs.WithFields(errs.ValidationError, "repository index is invalid", v.fields)
}

func (v *validator) plugin(path string, p *Plugin) {
	if !manifest.ValidID(p.ID) {
		v.add(path+".id", "must be a plugin id: kebab-case, 3 to 64 characters, not a reserved word")
	}
	v.text(path+".name", p.Name, true)
	v.text(path+".description", p.Description, false)
	v.text(path+".author", p.Author, false)
	v.text(path+".category", p.Category, false)
	if len(p.Tags) > MaxTags {
		v.add(path+".tags", "more than %d tags", MaxTags)
	} else {
		for i, t := range p.Tags {
			if t == "" || len(t) > MaxTagLen || !printable(t) {
				v.add(fmt.Sprintf("%s.tags[%d]", path, i), "must be 1 to %d printable characters", MaxTagLen)
			}
		}
	}
	if !(p.Rating >= 0 && p.Rating <= 5) {
		v.add(path+".rating", "must be between 0 and 5")
	}
	if p.Downloads < 0 {
		v.add(path+".downloads", "must not be negative")
	}
	v.time(path+".last_updated", p.LastUpdated)
	v.constraint(path+".compatibility.nexus_version", p.Compatibility.NexusVersion)
	v.text(path+".compatibility.python_version", p.Compatibility.PythonVersion, false)
	v.webURL(path+".repository_url", p.RepositoryURL)
	v.webURL(path+".documentation_url", p.DocumentationURL)
	switch {
	case len(p.Versions) == 0:
		v.add(path+".versions", "must list at least one version")
	case len(p.Versions) > MaxVersions:
		v.add(path+".versions", "more than %d versions", MaxVersions)
	default:
		seen := make(map[string]int, len(p.Versions))
		for i := range p.Versions {
			vpath := fmt.Sprintf("%s.versions[%d]", path, i)
			ver := &p.Versions[i]
			if sv, err := semver.StrictNewVersion(ver.Version); err == nil {
				// 1.0.0 and 1.0.0+build are the same version for resolution.
				key := semver.New(sv.Major(), sv.Minor(), sv.Patch(), sv.Prerelease(), "").String()
				if j, dup := seen[key]; dup {
					v.add(vpath+".version", "duplicate version %s (also versions[%d])", ver.Version, j)
				} else {
					seen[key] = i
				}
			}
			v.version(vpath, ver)
			if v.full() {
				return
			}
		}
	}
}

func (v *validator) version(path string, ver *Version) {
	if _, err := semver.StrictNewVersion(ver.Version); err != nil || len(ver.Version) > 256 {
		v.add(path+".version", "must be a semantic version such as 1.2.0 (MAJOR.MINOR.PATCH, no leading v)")
	}
	if err := checkRef(ver.URL); err != nil {
		v.add(path+".url", "%s", err)
	}
	if ver.Size <= 0 {
		v.add(path+".size", "must be a positive number of bytes")
	}
	if !isSHA256Hex(ver.SHA256) {
		v.add(path+".sha256", "must be 64 lower-case hex digits")
	}
	v.constraint(path+".nexus_version", ver.NexusVersion)
	v.platforms(path+".os", ver.OS)
	v.platforms(path+".arch", ver.Arch)
	if len(ver.Dependencies) > MaxDependencies {
		v.add(path+".dependencies", "more than %d dependencies", MaxDependencies)
	} else {
		for _, id := range sortedKeys(ver.Dependencies) {
			if !manifest.ValidID(id) {
				v.add(path+".dependencies."+id, "must be keyed by a plugin id")
				continue
			}
			if _, err := ParseConstraint(ver.Dependencies[id]); err != nil {
				v.add(path+".dependencies."+id, "must be a semver constraint such as \">=1.2.0\" or \"*\"")
			}
		}
	}
	if s := ver.Signature; s != nil {
		if !isHex(s.KeyID, 16) {
			v.add(path+".signature.key_id", "must be 16 lower-case hex digits")
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(s.Signature)
		if err != nil || len(raw) != 64 {
			v.add(path+".signature.signature", "must be a 64-byte ed25519 signature in standard base64")
		}
	}
	v.time(path+".published", ver.Published)
}

// text checks a free-text field.
func (v *validator) text(path, s string, required bool) {
	switch {
	case required && strings.TrimSpace(s) == "":
		v.add(path, "is required")
	case len(s) > MaxTextLen:
		v.add(path, "longer than %d bytes", MaxTextLen)
	case !utf8.ValidString(s):
		v.add(path, "must be valid UTF-8")
	}
}

// time checks that t marshals back to JSON (year 0 to 9999 once in UTC).
func (v *validator) time(path string, t time.Time) {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		v.add(path, "year out of range")
	}
}

func (v *validator) constraint(path, s string) {
	if s == "" {
		return
	}
	if _, err := ParseConstraint(s); err != nil {
		v.add(path, "must be a semver constraint such as \">=1.2.0\" or \"*\"")
	}
}

func (v *validator) platforms(path string, list []string) {
	if len(list) > MaxPlatforms {
		v.add(path, "more than %d entries", MaxPlatforms)
		return
	}
	for i, s := range list {
		if !isPlatformName(s) {
			v.add(fmt.Sprintf("%s[%d]", path, i), "must be a GOOS or GOARCH name (lower-case letters and digits)")
		}
	}
}

func (v *validator) webURL(path, s string) {
	if s == "" {
		return
	}
	if len(s) > MaxTextLen {
		v.add(path, "longer than %d bytes", MaxTextLen)
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		v.add(path, "must be an absolute http or https URL")
	}
}

// checkRef checks a package URL: a relative reference that stays below the index (no ".."
// element, no leading slash, no host, query or fragment) or an absolute http(s) URL.
func checkRef(ref string) error {
	switch {
	case ref == "":
		return errors.New("is required")
	case len(ref) > MaxTextLen:
		return fmt.Errorf("longer than %d bytes", MaxTextLen)
	case strings.ContainsAny(ref, "\\\x00") || !printable(ref):
		return errors.New("must not hold backslashes or control characters")
	}
	u, err := url.Parse(ref)
	if err != nil {
		return errors.New("must be a URL")
	}
	if u.Scheme != "" {
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return errors.New("must be relative to the index or an absolute http or https URL")
		}
		return nil
	}
	if u.Host != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return errors.New("a relative URL must be a plain path")
	}
	if u.Path == "" || strings.HasPrefix(u.Path, "/") || strings.HasSuffix(u.Path, "/") {
		return errors.New("a relative URL must name a file below the index")
	}
	for _, elem := range strings.Split(u.Path, "/") {
		if elem == "" || elem == "." || elem == ".." || strings.ContainsAny(elem, "\\\x00") {
			return errors.New("a relative URL must not hold empty, \".\" or \"..\" elements")
		}
	}
	return nil
}

func isSHA256Hex(s string) bool { return isHex(s, 64) }

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isPlatformName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
