// Package catalog keeps the plugin repositories: their configuration, the last good copy
// of each signed index (kept in the store, so a repository that is down still answers, also
// after a restart), the sync loop, search, and resolving a plugin name and version constraint
// into the package to fetch.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/repository"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Config configures one plugin repository.
type Config struct {
	Name        string
	URL         string // file://, http:// or https://; the index.json or its directory
	Description string
	Enabled     bool
	// TrustedKeys are the public keys (ed25519:...) whose package signatures are accepted.
	TrustedKeys []string
	// AllowUnsigned accepts packages without a signature from this repository.
	AllowUnsigned bool
}

// View is a repository's state for the API.
type View struct {
	Name, URL, Description string
	Enabled                bool
	PluginCount            int
	// LastSync is when the catalog was last synced successfully; LastError why the last
	// sync failed, when it did.
	LastSync  time.Time
	LastError string
}

// Entry is a plugin offered by a repository.
type Entry struct {
	repository.Plugin
	Repository string
}

// Query selects catalog entries.
type Query struct {
	Query, Category, Author string
	Tags                    []string
	MinRating               float64
	// Sort is name (default), rating, downloads or updated.
	Sort          string
	Page, PerPage int
}

// repoState is the synced state of one repository; guarded by Catalog.mu.
type repoState struct {
	cfg       Config
	keys      []repository.PublicKey
	index     *repository.Index
	lastSync  time.Time
	lastError string
}

// Catalog keeps the synced catalogs of the configured repositories. It is safe for
// concurrent use.
type Catalog struct {
	st store.Store
	// all is set by New and never changes; the fields of each repoState are guarded by mu.
	all []*repoState
	mu  sync.Mutex
	// hostVersion is the server's version, which resolved packages must accept.
	hostVersion string
}

// maxIndexBytes bounds a downloaded index.
const maxIndexBytes = repository.MaxIndexBytes

// New checks the repositories' configuration and returns their catalog, empty until Load.
// hostVersion is the server's version (packages declare which they accept).
func New(st store.Store, cfgs []Config, hostVersion string) (*Catalog, error) {
	m := &Catalog{st: st, hostVersion: hostVersion}
	seen := map[string]bool{}
	for _, c := range cfgs {
		if c.Name == "" || c.URL == "" {
			return nil, fmt.Errorf("repository: name and url are required (%q)", c.Name)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("repository %q is configured twice", c.Name)
		}
		seen[c.Name] = true
		r := &repoState{cfg: c}
		for _, k := range c.TrustedKeys {
			key, err := repository.ParsePublicKey(k)
			if err != nil {
				return nil, fmt.Errorf("repository %q: trusted key: %w", c.Name, err)
			}
			r.keys = append(r.keys, key)
		}
		if len(r.keys) == 0 && !c.AllowUnsigned {
			return nil, fmt.Errorf("repository %q has no trusted key: add one, or allow unsigned packages explicitly", c.Name)
		}
		m.all = append(m.all, r)
	}
	return m, nil
}

// Load reads the last good copy of each repository's index from the store.
func (m *Catalog) Load(ctx context.Context) error {
	for _, r := range m.all {
		var idx *repository.Index
		var synced time.Time
		err := m.st.Read(ctx, func(tx store.Tx) error {
			raw, err := tx.Setting("repository-index/" + r.cfg.Name)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if parsed, err := repository.ParseIndex(raw); err == nil {
				idx = parsed
			}
			if t, err := tx.Setting("repository-synced/" + r.cfg.Name); err == nil {
				synced, _ = time.Parse(time.RFC3339Nano, string(t))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("catalog: read the last copy of repository %q: %w", r.cfg.Name, err)
		}
		m.mu.Lock()
		r.index, r.lastSync = idx, synced
		m.mu.Unlock()
	}
	return nil
}

// syncAll syncs every enabled repository; failures are recorded on each.
func (m *Catalog) syncAll(ctx context.Context) {
	for _, r := range m.all {
		if r.cfg.Enabled {
			_ = m.sync(ctx, r)
		}
	}
}

func (m *Catalog) sync(ctx context.Context, r *repoState) error {
	raw, err := repository.Fetch(ctx, r.cfg.URL, repository.IndexFile, maxIndexBytes, time.Minute)
	var idx *repository.Index
	if err == nil {
		idx, err = repository.ParseIndex(raw)
	}
	now := time.Now().UTC()
	if err != nil {
		m.mu.Lock()
		r.lastError = errs.MessageOf(err)
		m.mu.Unlock()
		return err
	}
	if werr := m.st.Write(ctx, func(tx store.Tx) error {
		if err := tx.PutSetting("repository-index/"+r.cfg.Name, raw); err != nil {
			return err
		}
		return tx.PutSetting("repository-synced/"+r.cfg.Name, []byte(now.Format(time.RFC3339Nano)))
	}); werr != nil {
		m.mu.Lock()
		r.lastError = "could not keep the synced catalog"
		m.mu.Unlock()
		return werr
	}
	m.mu.Lock()
	r.index, r.lastSync, r.lastError = idx, now, ""
	m.mu.Unlock()
	return nil
}

// Repositories lists the configured repositories with their sync state.
func (m *Catalog) Repositories() []View {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]View, 0, len(m.all))
	for _, r := range m.all {
		v := View{Name: r.cfg.Name, URL: r.cfg.URL, Description: r.cfg.Description, Enabled: r.cfg.Enabled,
			LastSync: r.lastSync, LastError: r.lastError}
		if r.index != nil {
			v.PluginCount = len(r.index.Plugins)
			if v.Description == "" {
				v.Description = r.index.Description
			}
		}
		out = append(out, v)
	}
	return out
}

// Sync syncs every enabled repository now and returns their state.
func (m *Catalog) Sync(ctx context.Context) []View {
	m.syncAll(ctx)
	return m.Repositories()
}

// RunSync syncs at once and then on every interval until ctx ends.
func (m *Catalog) RunSync(ctx context.Context, interval time.Duration) {
	m.syncAll(ctx)
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.syncAll(ctx)
		}
	}
}

// Search searches the synced catalogs of the enabled repositories.
func (m *Catalog) Search(q Query) ([]Entry, int, error) {
	if q.Page <= 0 {
		q.Page = 1
	}
	if q.PerPage <= 0 {
		q.PerPage = 20
	}
	text := strings.ToLower(q.Query)
	var hits []Entry
	m.mu.Lock()
	for _, r := range m.all {
		if !r.cfg.Enabled || r.index == nil {
			continue
		}
		for _, p := range r.index.Plugins {
			if !matches(p, q, text) {
				continue
			}
			hits = append(hits, Entry{Plugin: p, Repository: r.cfg.Name})
		}
	}
	m.mu.Unlock()
	sort.SliceStable(hits, func(i, j int) bool {
		a, b := hits[i], hits[j]
		switch q.Sort {
		case "rating":
			if a.Rating != b.Rating {
				return a.Rating > b.Rating
			}
		case "downloads":
			if a.Downloads != b.Downloads {
				return a.Downloads > b.Downloads
			}
		case "updated":
			if !a.LastUpdated.Equal(b.LastUpdated) {
				return a.LastUpdated.After(b.LastUpdated)
			}
		}
		if a.Name != b.Name {
			return strings.ToLower(a.Name) < strings.ToLower(b.Name)
		}
		return a.Repository < b.Repository
	})
	total := len(hits)
	start := (q.Page - 1) * q.PerPage
	if start >= total {
		return []Entry{}, total, nil
	}
	return hits[start:min(total, start+q.PerPage)], total, nil
}

func matches(p repository.Plugin, q Query, text string) bool {
	if q.Category != "" && !strings.EqualFold(p.Category, q.Category) {
		return false
	}
	if q.Author != "" && !strings.Contains(strings.ToLower(p.Author), strings.ToLower(q.Author)) {
		return false
	}
	if p.Rating < q.MinRating {
		return false
	}
	for _, t := range q.Tags {
		if !slices.ContainsFunc(p.Tags, func(x string) bool { return strings.EqualFold(x, t) }) {
			return false
		}
	}
	if text == "" {
		return true
	}
	hay := strings.ToLower(p.ID + "\n" + p.Name + "\n" + p.Description + "\n" + strings.Join(p.Tags, "\n"))
	return strings.Contains(hay, text)
}

// Resolve finds the version of a plugin that an install from the repositories picks: from
// the first enabled repository, in configured order, that can satisfy constraint ("" or
// "latest" for the newest) on this server and platform.
func (m *Catalog) Resolve(name, constraint string) (repository.Version, error) {
	v, _, err := m.resolve(name, constraint)
	return v, err
}

func (m *Catalog) resolve(name, constraint string) (repository.Version, *repoState, error) {
	var firstErr error
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.all {
		if !r.cfg.Enabled || r.index == nil {
			continue
		}
		p := r.index.Plugin(name)
		if p == nil {
			continue
		}
		v, err := p.Resolve(constraint, m.hostVersion, runtime.GOOS, runtime.GOARCH)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		return v, r, nil
	}
	if firstErr != nil {
		return repository.Version{}, nil, firstErr
	}
	return repository.Version{}, nil, errs.New(errs.PluginNotFound, "no enabled repository offers plugin %q", name)
}

// Fetch resolves a plugin (see Resolve) and downloads its package, at most maxBytes,
// verified against the repository's checksum and trusted keys.
func (m *Catalog) Fetch(ctx context.Context, name, constraint string, maxBytes int64) ([]byte, error) {
	v, r, err := m.resolve(name, constraint)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	cfg, keys := r.cfg, r.keys
	m.mu.Unlock()
	data, err := repository.Fetch(ctx, cfg.URL, v.URL, maxBytes, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	if err := repository.VerifyPackage(v, name, data, keys, cfg.AllowUnsigned); err != nil {
		return nil, err
	}
	return data, nil
}
