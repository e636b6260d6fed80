package repository

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// CatalogFile is the optional side file of a repository directory with the catalog data
// no package holds, which BuildIndex writes into the index:
//
//	{"plugins": {"analytics-plugin": {"rating": 4.6, "downloads": 1520,
//	  "documentation_url": "https://example.com/docs", "tags": ["analytics", "events"]}}}
//
// Every field is optional; a field it sets wins over the existing index (rating,
// downloads, documentation_url) and over the newest manifest (tags). It names only plugins
// the directory holds packages of.
const CatalogFile = "catalog.json"

// maxCatalogFileBytes bounds the side file.
const maxCatalogFileBytes = 4 << 20

// catalogEntry is one plugin's catalog data in CatalogFile; nil fields are not set.
type catalogEntry struct {
	Rating           *float64 `json:"rating"`
	Downloads        *int64   `json:"downloads"`
	DocumentationURL *string  `json:"documentation_url"`
	Tags             []string `json:"tags"`
}

// readCatalogFile reads dir's CatalogFile; no file is no data.
func readCatalogFile(dir string) (map[string]catalogEntry, error) {
	f, err := os.Open(filepath.Join(dir, CatalogFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", CatalogFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCatalogFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", CatalogFile, err)
	}
	if len(data) > maxCatalogFileBytes {
		return nil, errs.New(errs.ValidationError, "%s is larger than %d bytes", CatalogFile, maxCatalogFileBytes)
	}
	var doc struct {
		Plugins map[string]catalogEntry `json:"plugins"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, errs.New(errs.ValidationError, "%s: %v", CatalogFile, err)
	}
	var v validator
	ids := make([]string, 0, len(doc.Plugins))
	for id := range doc.Plugins {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		e, path := doc.Plugins[id], "plugins."+id
		if e.Rating != nil && !(*e.Rating >= 0 && *e.Rating <= 5) {
			v.add(path+".rating", "must be between 0 and 5, not %v", *e.Rating)
		}
		if e.Downloads != nil && *e.Downloads < 0 {
			v.add(path+".downloads", "must not be negative")
		}
		if e.DocumentationURL != nil {
			v.webURL(path+".documentation_url", *e.DocumentationURL)
		}
		if len(e.Tags) > MaxTags {
			v.add(path+".tags", "more than %d tags", MaxTags)
		}
	}
	if len(v.fields) > 0 {
		f := v.fields[0]
		return nil, errs.WithFields(errs.ValidationError, fmt.Sprintf("%s is invalid: %s %s", CatalogFile, f.Field, f.Description), v.fields)
	}
	return doc.Plugins, nil
}

// apply writes e's fields that are set into p.
func (e catalogEntry) apply(p *Plugin) {
	if e.Rating != nil {
		p.Rating = *e.Rating
	}
	if e.Downloads != nil {
		p.Downloads = *e.Downloads
	}
	if e.DocumentationURL != nil {
		p.DocumentationURL = *e.DocumentationURL
	}
	if e.Tags != nil {
		p.Tags = nilIfEmpty(slices.Clone(e.Tags))
	}
}
