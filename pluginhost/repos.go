package pluginhost

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/repository"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// RepositoryConfig configures one plugin repository.
type RepositoryConfig struct {
	Name        string
	URL         string // file://, http:// or https://; the index.json or its directory
	Description string
	Enabled     bool
	// TrustedKeys are the public keys (ed25519:...) whose package signatures are accepted.
	TrustedKeys []string
	// AllowUnsigned accepts packages without a signature from this repository.
	AllowUnsigned bool
}

// RepositoryView is a repository's state for the API.
type RepositoryView struct {
	Name, URL, Description string
	Enabled                bool
	PluginCount            int
	// LastSync is when the catalog was last synced successfully; LastError why the last
	// sync failed, when it did.
	LastSync  time.Time
	LastError string
}

// CatalogEntry is a plugin offered by a repository.
type CatalogEntry struct {
	repository.Plugin
	Repository string
}

// SearchQuery selects catalog entries.
type SearchQuery struct {
	Query, Category, Author string
	Tags                    []string
	MinRating               float64
	// Sort is name (default), rating, downloads or updated.
	Sort          string
	Page, PerPage int
}

// repoState is the synced state of one repository; guarded by repoManager.mu.
type repoState struct {
	cfg       RepositoryConfig
	keys      []repository.PublicKey
	index     *repository.Index
	lastSync  time.Time
	lastError string
}

// repoManager keeps the synced catalogs. The last good copy of each index is kept in the
// store, so a repository that is down still answers searches, also after a restart.
type repoManager struct {
	st  store.Store
	mu  sync.Mutex // guards repos' fields
	all []*repoState
}

// maxIndexBytes bounds a downloaded index.
const maxIndexBytes = repository.MaxIndexBytes

func newRepoManager(ctx context.Context, st store.Store, cfgs []RepositoryConfig) (*repoManager, error) {
	m := &repoManager{st: st}
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
		// The last good copy, if any.
		_ = st.Read(ctx, func(tx store.Tx) error {
			raw, err := tx.Setting("repository-index/" + c.Name)
			if err != nil {
				return nil
			}
			if idx, err := repository.ParseIndex(raw); err == nil {
				r.index = idx
			}
			if t, err := tx.Setting("repository-synced/" + c.Name); err == nil {
				r.lastSync, _ = time.Parse(time.RFC3339Nano, string(t))
			}
			return nil
		})
		m.all = append(m.all, r)
	}
	return m, nil
}

// syncAll syncs every enabled repository; failures are recorded on each.
func (m *repoManager) syncAll(ctx context.Context) {
	for _, r := range m.all {
		if r.cfg.Enabled {
			_ = m.sync(ctx, r)
		}
	}
}

func (m *repoManager) sync(ctx context.Context, r *repoState) error {
	raw, err := repository.Fetch(ctx, r.cfg.URL, repository.IndexFile, maxIndexBytes, time.Minute)
	var idx *repository.Index
	if err == nil {
		idx, err = repository.ParseIndex(raw)
	}
	now := time.Now().UTC()
	if err != nil {
		m.mu.Lock()
		r.lastError = errorMessage(err)
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
func (h *Host) Repositories() []RepositoryView {
	m := h.repos
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]RepositoryView, 0, len(m.all))
	for _, r := range m.all {
		v := RepositoryView{Name: r.cfg.Name, URL: r.cfg.URL, Description: r.cfg.Description, Enabled: r.cfg.Enabled,
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

// SyncRepositories syncs every enabled repository now and returns their state.
func (h *Host) SyncRepositories(ctx context.Context) []RepositoryView {
	h.repos.syncAll(ctx)
	return h.Repositories()
}

// RunRepositorySync syncs at once and then on every interval until ctx ends.
func (h *Host) RunRepositorySync(ctx context.Context, interval time.Duration) {
	h.repos.syncAll(ctx)
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
			h.repos.syncAll(ctx)
		}
	}
}

// Search searches the synced catalogs of the enabled repositories.
func (h *Host) Search(q SearchQuery) ([]CatalogEntry, int, error) {
	if q.Page <= 0 {
		q.Page = 1
	}
	if q.PerPage <= 0 {
		q.PerPage = 20
	}
	text := strings.ToLower(q.Query)
	var hits []CatalogEntry
	m := h.repos
	m.mu.Lock()
	for _, r := range m.all {
		if !r.cfg.Enabled || r.index == nil {
			continue
		}
		for _, p := range r.index.Plugins {
			if !matches(p, q, text) {
				continue
			}
			hits = append(hits, CatalogEntry{Plugin: p, Repository: r.cfg.Name})
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
		return []CatalogEntry{}, total, nil
	}
	return hits[start:min(total, start+q.PerPage)], total, nil
}

func matches(p repository.Plugin, q SearchQuery, text string) bool {
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
