package repository

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

// BuildOptions configures BuildIndex. The zero value is valid.
type BuildOptions struct {
	// Name and Description describe the repository; when empty, those of the existing
	// index.json are kept.
	Name        string
	Description string
	// Now is the clock, for GeneratedAt and the Published time of new versions; nil means
	// time.Now. Times are truncated to the second and stored in UTC.
	Now func() time.Time
	// Limits bound the reading of each package; zero fields mean archive.DefaultLimits.
	Limits archive.Limits
	// Unsigned builds an index without signatures, for repositories whose clients allow
	// unsigned packages. BuildIndex then ignores its key; otherwise the key is required.
	Unsigned bool
}

// BuildIndex builds the index of the repository in dir from every *.tar.gz file directly in
// it, signing each package with key.
//
// For each package it reads plugin.json (archive.ReadManifest, then manifest.Parse), computes
// the size and SHA-256 digest and signs SignedMessage. Versions are grouped by plugin id,
// newest first; the plugin's fields (name, description, author, category, tags,
// compatibility, repository_url from the manifest's homepage) come from its newest version,
// and last_updated is the newest Published time of its versions. URLs are the file names,
// relative to the index. Plugins are sorted by id.
//
// Catalog data no package holds comes from dir's CatalogFile when present (it wins), or
// else from the existing index. When dir already holds a valid index.json, BuildIndex keeps
// its catalog data: each plugin's rating, downloads and documentation_url (and repository_url
// when the manifest has no homepage), the repository's name and description when opts
// leaves them empty, and the Published time of versions whose digest is unchanged. An
// invalid existing index is an error, so that a rebuild does not silently drop that data.
//
// The result depends only on the packages, the existing index and opts.Now: given a fixed
// clock, two builds are identical. Errors name the offending file; a package whose plugin id
// and version appear twice is an error.
func BuildIndex(dir string, key PrivateKey, opts BuildOptions) (*Index, error) {
	if !opts.Unsigned && key.IsZero() {
		return nil, errs.New(errs.ValidationError, "a signing key is required to build a signed index")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	generated := now().UTC().Truncate(time.Second)

	old, err := readExistingIndex(dir)
	if err != nil {
		return nil, err
	}
	catalog, err := readCatalogFile(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading repository directory: %w", err)
	}

	type pkg struct {
		m   *manifest.Manifest
		v   *semver.Version
		ver Version
	}
	byID := map[string][]pkg{}
	seen := map[string]string{} // "id version" -> file name
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".tar.gz") || strings.HasPrefix(name, ".") {
			continue
		}
		if !validPackageFileName(name) {
			return nil, errs.New(errs.ValidationError,
				"package file name %q may only hold letters, digits, '.', '_', '+' and '-'", name)
		}
		if !e.Type().IsRegular() {
			return nil, errs.New(errs.ValidationError, "package %s is not a regular file", name)
		}
		m, size, sum, err := readPackage(filepath.Join(dir, name), opts.Limits)
		if err != nil {
			return nil, fmt.Errorf("package %s: %w", name, err)
		}
		sv, err := semver.StrictNewVersion(m.Version)
		if err != nil {
			return nil, errs.New(errs.ValidationError, "package %s: version %q is not strict semver", name, m.Version)
		}
		key := m.ID + " " + m.Version
		if other, dup := seen[key]; dup {
			return nil, errs.New(errs.ValidationError, "packages %s and %s are both %s %s", other, name, m.ID, m.Version)
		}
		seen[key] = name
		ver := Version{
			Version:      m.Version,
			URL:          name,
			Size:         size,
			SHA256:       sum,
			NexusVersion: m.NexusVersion,
			OS:           nilIfEmpty(slices.Clone(m.OS)),
			Arch:         nilIfEmpty(slices.Clone(m.Arch)),
			Published:    generated,
		}
		if len(m.Dependencies.Plugins) > 0 {
			ver.Dependencies = make(map[string]string, len(m.Dependencies.Plugins))
			for id, c := range m.Dependencies.Plugins {
				ver.Dependencies[id] = c
			}
		}
		if prev := old.version(m.ID, m.Version); prev != nil && prev.SHA256 == sum && !prev.Published.IsZero() {
			ver.Published = prev.Published
		}
		byID[m.ID] = append(byID[m.ID], pkg{m: m, v: sv, ver: ver})
	}

	idx := &Index{Format: FormatVersion, Name: opts.Name, Description: opts.Description, GeneratedAt: generated}
	if old != nil {
		if idx.Name == "" {
			idx.Name = old.Name
		}
		if idx.Description == "" {
			idx.Description = old.Description
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		pkgs := byID[id]
		slices.SortFunc(pkgs, func(a, b pkg) int { return b.v.Compare(a.v) })
		newest := pkgs[0].m
		p := Plugin{
			ID:          id,
			Name:        newest.Name,
			Description: newest.Description,
			Author:      newest.Author,
			Category:    newest.Category,
			Tags:        nilIfEmpty(slices.Clone(newest.Tags)),
			Compatibility: Compatibility{
				NexusVersion:  newest.NexusVersion,
				PythonVersion: newest.PythonVersion,
			},
			RepositoryURL: newest.Homepage,
		}
		if p.Name == "" {
			p.Name = id
		}
		if prev := old.plugin(id); prev != nil {
			p.Rating, p.Downloads, p.DocumentationURL = prev.Rating, prev.Downloads, prev.DocumentationURL
			if p.RepositoryURL == "" {
				p.RepositoryURL = prev.RepositoryURL
			}
		}
		if e, ok := catalog[id]; ok {
			e.apply(&p)
		}
		for _, pk := range pkgs {
			ver := pk.ver
			if !opts.Unsigned {
				if ver.Signature, err = Sign(key, id, ver); err != nil {
					return nil, err
				}
			}
			if ver.Published.After(p.LastUpdated) {
				p.LastUpdated = ver.Published
			}
			p.Versions = append(p.Versions, ver)
		}
		idx.Plugins = append(idx.Plugins, p)
	}
	for id := range catalog {
		if _, ok := byID[id]; !ok {
			return nil, errs.New(errs.ValidationError, "%s names plugin %q, which no package in the directory holds", CatalogFile, id)
		}
	}
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	return idx, nil
}

// WriteIndex validates idx and writes it to dir/index.json (mode 0644), atomically: readers
// see the old index or the new one, never a part.
func WriteIndex(dir string, idx *Index) error {
	if err := idx.Validate(); err != nil {
		return err
	}
	data, err := idx.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".index-*.json")
	if err != nil {
		return fmt.Errorf("writing the repository index: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the repository index: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the repository index: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the repository index: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing the repository index: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, IndexFile)); err != nil {
		return fmt.Errorf("writing the repository index: %w", err)
	}
	return nil
}

// readExistingIndex returns dir's index.json, or nil when there is none.
func readExistingIndex(dir string) (*Index, error) {
	f, err := os.Open(filepath.Join(dir, IndexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the existing index: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxIndexBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the existing index: %w", err)
	}
	idx, err := ParseIndex(data)
	if err != nil {
		return nil, fmt.Errorf("the existing %s is invalid (fix or remove it): %w", IndexFile, err)
	}
	return idx, nil
}

// plugin returns the plugin with id of a possibly nil index.
func (idx *Index) plugin(id string) *Plugin {
	if idx == nil {
		return nil
	}
	return idx.Plugin(id)
}

// version returns version v of plugin id of a possibly nil index.
func (idx *Index) version(id, v string) *Version {
	p := idx.plugin(id)
	if p == nil {
		return nil
	}
	for i := range p.Versions {
		if p.Versions[i].Version == v {
			return &p.Versions[i]
		}
	}
	return nil
}

// readPackage reads the manifest, size and digest of the package at path.
func readPackage(path string, lim archive.Limits) (*manifest.Manifest, int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(f, h)}
	raw, _, err := archive.ReadManifest(cr, lim)
	if err != nil {
		return nil, 0, "", err
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, 0, "", err
	}
	return m, cr.n, hex.EncodeToString(h.Sum(nil)), nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
