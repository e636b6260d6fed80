package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/repository"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Install installs a plugin package: fetch, inspect, plan, stage, commit, and activate when
// asked (see pipeline.go). A reinstall (ForceReinstall) keeps the configuration
// (revalidated against the new schema) and the administrator's permission decisions, and
// backs up what it replaces.
func (h *Installer) Install(ctx context.Context, req InstallRequest) (InstallResult, error) {
	start := time.Now()
	if req.Source == "repository" {
		// Missing dependencies are installed first, resolved from the repositories.
		if err := h.installDependencies(ctx, req.PluginName, req.Version, nil); err != nil {
			return InstallResult{}, err
		}
	}
	data, err := h.fetchPackage(ctx, req.Source, req.PluginName, req)
	if err != nil {
		return InstallResult{}, err
	}
	h.step("install", "fetched")
	p, err := h.inspect(data)
	if err != nil {
		return InstallResult{}, err
	}
	h.step("install", "inspected")
	m := p.man
	unlock := sync.OnceFunc(h.rt.Lock(append(m.DependencyIDs(), m.ID)...))
	defer unlock()
	rec, existing, err := h.planInstall(ctx, p, req)
	if err != nil {
		return InstallResult{}, err
	}
	h.step("install", "planned")
	dir, err := h.stage(ctx, p)
	if err != nil {
		return InstallResult{}, err
	}
	h.step("install", "staged")
	rec.Dir = h.rel(dir)
	var backup *store.Backup
	verb := "installed"
	if existing != nil {
		verb = "reinstalled"
		b, err := h.copyToBackup(existing.rec, "reinstall", rec.UpdatedAt)
		if err != nil {
			h.discard(dir, nil)
			return InstallResult{}, err
		}
		backup = &b
		h.step("install", "backed-up")
	}
	line := store.LogRecord{Level: "INFO", Message: fmt.Sprintf("Plugin %s (version %s)", verb, m.Version),
		Metadata: mustJSON(map[string]any{"source": req.Source, "sha256": p.sha, "granted": rec.Granted, "denied": rec.Denied})}
	if err := h.commit(ctx, rec, backup, nil, line, "installation"); err != nil {
		return InstallResult{}, err
	}
	h.step("install", "committed")
	if existing != nil {
		h.removeReplaced(existing.rec.Dir, rec.Dir)
		h.step("install", "cleaned")
	}
	h.log.Info("plugin installed", "plugin_id", m.ID, "version", m.Version, "source", req.Source, "granted", rec.Granted, "denied", rec.Denied)
	h.router.System(ctx, "plugin.installed", map[string]any{"plugin_id": m.ID, "version": m.Version, "source": req.Source})
	res := InstallResult{PluginID: m.ID, Name: m.Name, Version: m.Version, Status: registry.StatusInactive, InstalledAt: rec.InstalledAt}
	if req.AutoEnable {
		// Installed either way; the answer says whether it started.
		unlock()
		status, err := h.rt.Enable(ctx, m.ID, runtime.EnableOptions{})
		if err != nil {
			return InstallResult{}, err
		}
		res.Status, res.Enabled = status, true
	}
	res.Duration = time.Since(start)
	return res, nil
}

// planInstall checks an install against the installed plugins (the caller holds the locks)
// and returns the record to store (without its directory) and the installed plugin it
// replaces, if any.
func (h *Installer) planInstall(ctx context.Context, p *pkg, req InstallRequest) (store.Plugin, *loaded, error) {
	m := p.man
	all, _, err := h.loadAll(ctx)
	if err != nil {
		return store.Plugin{}, nil, err
	}
	var existing *loaded
	for i := range all {
		if all[i].rec.ID == m.ID {
			existing = &all[i]
		}
	}
	if existing != nil && !req.ForceReinstall {
		return store.Plugin{}, nil, errs.New(errs.PluginAlreadyInstalled,
			"plugin %q is already installed (version %s); pass force_reinstall to replace it", m.ID, existing.rec.Version).
			WithDetail("installed_version", existing.rec.Version)
	}
	if err := checkDependencies(m, all); err != nil {
		return store.Plugin{}, nil, err
	}
	if err := h.router.EndpointConflict(m.ID, m.APIEndpoints); err != nil {
		return store.Plugin{}, nil, err
	}
	schema := m.Schema()
	var cfg map[string]any
	if existing == nil {
		cfg, _, _, err = registry.ApplyConfig(schema, schema.Defaults(), orEmptyMap(req.Config))
	} else {
		if existing.rec.Enabled {
			return store.Plugin{}, nil, errs.New(errs.PluginDependencyError, "plugin %s is enabled; disable it before reinstalling", m.ID)
		}
		if err := checkDependents(m, all); err != nil {
			return store.Plugin{}, nil, err
		}
		cfg, err = h.carryConfig(*existing, schema, orEmptyMap(req.Config))
	}
	if err != nil {
		return store.Plugin{}, nil, err
	}
	sealed, err := h.sealConfig(schema, cfg)
	if err != nil {
		return store.Plugin{}, nil, err
	}
	granted, denied := h.policy.Decide(m.Permissions)
	now := h.now()
	if existing != nil {
		granted, denied = keepDecisions(granted, denied, existing.rec, m.Permissions)
	}
	rec := store.Plugin{
		ID: m.ID, Version: m.Version, Manifest: p.raw, Source: req.Source,
		PackageSHA256: p.sha, Enabled: false, Status: registry.StatusInactive,
		Config: sealed, ConfigUpdatedAt: now,
		SecurityLevel: string(m.SecurityLevel), SandboxEnabled: m.Sandbox,
		Limits: store.ResourceLimits{
			MemoryMB: m.ResourceLimits.MemoryMB, CPUPercent: m.ResourceLimits.CPUPercent, FileHandles: m.ResourceLimits.FileHandles,
		},
		InstalledAt: now, UpdatedAt: now,
	}
	if existing != nil {
		rec.SecurityLevel, rec.SandboxEnabled, rec.Limits = existing.rec.SecurityLevel, existing.rec.SandboxEnabled, existing.rec.Limits
		rec.InstalledAt = existing.rec.InstalledAt
	}
	rec.Requested, rec.Granted, rec.Denied = sortedCopy(m.Permissions), granted, denied
	return rec, existing, nil
}

// checkDependents makes sure the installed plugins that depend on m accept its version.
func checkDependents(m *manifest.Manifest, all []loaded) error {
	v, err := semver.NewVersion(m.Version)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "internal error")
	}
	var problems []errs.FieldViolation
	for _, p := range all {
		constraint, ok := p.man.Dependencies.Plugins[m.ID]
		if !ok {
			continue
		}
		if c, err := semver.NewConstraint(constraint); err != nil || !c.Check(v) {
			problems = append(problems, errs.FieldViolation{Field: "dependents." + p.rec.ID, Description: fmt.Sprintf("needs %s %s, not %s", m.ID, constraint, m.Version)})
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errs.WithFields(errs.PluginDependencyError, fmt.Sprintf("installed plugins do not accept %s %s", m.ID, m.Version), problems)
}

// keepDecisions applies an administrator's earlier grants and revocations to the policy's
// decisions for a new version's requests.
func keepDecisions(granted, denied []string, old store.Plugin, requested []string) ([]string, []string) {
	for _, g := range old.Granted {
		granted = append(granted, g)
		denied = slices.DeleteFunc(denied, func(d string) bool { return d == g })
	}
	for _, d := range old.Denied {
		if slices.Contains(requested, d) && !slices.Contains(old.Granted, d) {
			denied = append(denied, d)
			granted = slices.DeleteFunc(granted, func(g string) bool { return g == d })
		}
	}
	return sortedCopy(granted), sortedCopy(denied)
}

// fetchPackage returns the bytes of a package from its source: "file" (FilePath or
// PackageData), "repository" (name at Version) or "url" (DownloadURL, optional SHA256).
func (h *Installer) fetchPackage(ctx context.Context, source, name string, req InstallRequest) ([]byte, error) {
	switch source {
	case "file":
		return h.readPackage(req)
	case "repository":
		return h.repos.Fetch(ctx, name, req.Version, h.limits.MaxPackageBytes)
	case "url":
		return h.fetchURL(ctx, req.DownloadURL, req.SHA256)
	}
	return nil, errs.New(errs.ValidationError, "source must be repository, file or url")
}

// installDependencies installs, from the repositories and depth first, the dependencies of
// name (at the version constraint would pick) that are not installed yet. chain is the path
// of plugins that led here, for cycles and for errors. Installed dependencies must satisfy
// their constraints.
func (h *Installer) installDependencies(ctx context.Context, name, constraint string, chain []string) error {
	chain = append(slices.Clone(chain), name)
	v, err := h.repos.Resolve(name, constraint)
	if err != nil {
		if len(chain) > 1 {
			return errs.New(errs.PluginDependencyError, "dependency %s (%s) cannot be resolved: %s", strings.Join(chain, " -> "), orDefault(constraint, "latest"), errs.MessageOf(err)).
				WithDetail("chain", chain)
		}
		return err
	}
	deps := make([]string, 0, len(v.Dependencies))
	for id := range v.Dependencies {
		deps = append(deps, id)
	}
	sort.Strings(deps)
	for _, dep := range deps {
		want := v.Dependencies[dep]
		if slices.Contains(chain, dep) {
			cycle := append(slices.Clone(chain), dep)
			return errs.New(errs.PluginDependencyError, "dependency cycle: %s", strings.Join(cycle, " -> ")).WithDetail("chain", cycle)
		}
		if p, err := h.load(ctx, dep); err == nil {
			c, cerr := semver.NewConstraint(want)
			have, verr := semver.NewVersion(p.rec.Version)
			if cerr != nil || verr != nil || !c.Check(have) {
				path := append(slices.Clone(chain), dep)
				return errs.New(errs.PluginDependencyError, "%s needs %s %s, but %s is installed", strings.Join(path, " -> "), dep, want, p.rec.Version).
					WithDetail("chain", path)
			}
			continue
		}
		if err := h.installDependencies(ctx, dep, want, chain); err != nil {
			return err
		}
		if _, err := h.Install(ctx, InstallRequest{Source: "repository", PluginName: dep, Version: want}); err != nil && !errs.Is(err, errs.PluginAlreadyInstalled) {
			return errs.New(errs.PluginDependencyError, "installing dependency %s failed: %s", strings.Join(append(slices.Clone(chain), dep), " -> "), errs.MessageOf(err)).
				WithDetail("chain", append(slices.Clone(chain), dep))
		}
	}
	return nil
}

// fetchURL downloads a package from an http(s) URL, checking its sha256 when given.
func (h *Installer) fetchURL(ctx context.Context, url, sha string) ([]byte, error) {
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		return nil, errs.WithFields(errs.ValidationError, "download_url must be an http or https URL",
			[]errs.FieldViolation{{Field: "download_url", Description: "must be an http or https URL"}})
	}
	data, err := repository.Fetch(ctx, url, url, h.limits.MaxPackageBytes, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	if sha != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != sha {
			return nil, errs.New(errs.PluginInstallationFailed, "checksum mismatch: the download's sha256 is %s, not %s", got, sha)
		}
	}
	return data, nil
}

// readPackage returns the package bytes of a file install, bounded by the package limit.
func (h *Installer) readPackage(req InstallRequest) ([]byte, error) {
	max := h.limits.MaxPackageBytes
	if len(req.PackageData) > 0 {
		if req.FilePath != "" {
			return nil, errs.New(errs.ValidationError, "give either file_path or package_data, not both")
		}
		if int64(len(req.PackageData)) > max {
			return nil, errs.New(errs.PluginInstallationFailed, "the package is larger than %d bytes", max)
		}
		return req.PackageData, nil
	}
	if req.FilePath == "" {
		return nil, errs.New(errs.ValidationError, "source file needs file_path or package_data")
	}
	if !filepath.IsAbs(req.FilePath) {
		return nil, errs.WithFields(errs.ValidationError, "file_path must be an absolute path on the server",
			[]errs.FieldViolation{{Field: "file_path", Description: "must be an absolute path"}})
	}
	// Non-blocking, so that a FIFO or device cannot hang the request; only regular files
	// are read.
	f, err := os.OpenFile(req.FilePath, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, errs.New(errs.PluginInstallationFailed, "cannot open the package file %s: %s", req.FilePath, osReason(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, errs.New(errs.PluginInstallationFailed, "the package file %s is not a regular file", req.FilePath)
	}
	if st.Size() > max {
		return nil, errs.New(errs.PluginInstallationFailed, "the package is larger than %d bytes", max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, errs.New(errs.PluginInstallationFailed, "cannot read the package file %s: %s", req.FilePath, osReason(err))
	}
	if int64(len(data)) > max {
		return nil, errs.New(errs.PluginInstallationFailed, "the package is larger than %d bytes", max)
	}
	return data, nil
}

func osReason(err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "no such file"
	case errors.Is(err, os.ErrPermission):
		return "permission denied"
	}
	return "I/O error"
}

// packageError reports an unusable package (unsafe, corrupt, too large, no manifest).
func packageError(err error) error {
	var de *errs.Error
	if errors.As(err, &de) {
		return de
	}
	return errs.Wrap(errs.PluginInstallationFailed, err, "the package was refused: %v", err)
}

// checkEntryPoint makes sure a host-launched plugin's entry point is an executable file of
// the package.
func checkEntryPoint(dir string, m *manifest.Manifest) error {
	if m.External {
		return nil
	}
	st, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(m.EntryPoint)))
	problem := ""
	switch {
	case err != nil:
		problem = "is not in the package"
	case !st.Mode().IsRegular():
		problem = "is not a regular file"
	case st.Mode().Perm()&0o111 == 0:
		problem = "is not executable"
	default:
		return nil
	}
	return errs.WithFields(errs.PluginInstallationFailed, fmt.Sprintf("the entry point %s %s", m.EntryPoint, problem),
		[]errs.FieldViolation{{Field: "entry_point", Description: problem}})
}

func checkPlatform(m *manifest.Manifest) error {
	if len(m.OS) > 0 && !slices.Contains(m.OS, goruntime.GOOS) {
		return errs.New(errs.PluginIncompatible, "plugin %s is built for %s, not %s", m.ID, strings.Join(m.OS, ", "), goruntime.GOOS)
	}
	if len(m.Arch) > 0 && !slices.Contains(m.Arch, goruntime.GOARCH) {
		return errs.New(errs.PluginIncompatible, "plugin %s is built for %s, not %s", m.ID, strings.Join(m.Arch, ", "), goruntime.GOARCH)
	}
	return nil
}

// checkDependencies makes sure every plugin m depends on is installed in a version that
// satisfies its constraint.
func checkDependencies(m *manifest.Manifest, all []loaded) error {
	installed := map[string]string{}
	for _, p := range all {
		installed[p.rec.ID] = p.rec.Version
	}
	var problems []errs.FieldViolation
	var missing []string
	for _, dep := range m.DependencyIDs() {
		constraint := m.Dependencies.Plugins[dep]
		have, ok := installed[dep]
		if !ok {
			missing = append(missing, dep)
			problems = append(problems, errs.FieldViolation{Field: "dependencies.plugins." + dep, Description: "is not installed (needs " + constraint + ")"})
			continue
		}
		c, err := semver.NewConstraint(constraint)
		v, verr := semver.NewVersion(have)
		if err != nil || verr != nil || !c.Check(v) {
			problems = append(problems, errs.FieldViolation{Field: "dependencies.plugins." + dep, Description: fmt.Sprintf("version %s is installed, needs %s", have, constraint)})
		}
	}
	if len(problems) == 0 {
		return nil
	}
	e := errs.WithFields(errs.PluginDependencyError, fmt.Sprintf("plugin %s has unmet dependencies: %s", m.ID, registry.ProblemsMessage(problems)[len("invalid configuration: "):]), problems)
	if len(missing) > 0 {
		e.WithDetail("missing", missing)
	}
	return e
}
