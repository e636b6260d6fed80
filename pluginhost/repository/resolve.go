package repository

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

// MaxConstraintLen bounds the length of a semver constraint that ParseConstraint accepts.
const MaxConstraintLen = 256

// ParseConstraint parses a semver constraint (Masterminds syntax: ">=1.2.0 <2.0.0",
// "^1.2", "~1.2.3", "1.x || 2.x", "*") of at most MaxConstraintLen bytes. Errors are
// *errs.Error values with code errs.ValidationError.
func ParseConstraint(s string) (*semver.Constraints, error) {
	if len(s) > MaxConstraintLen {
		return nil, errs.New(errs.ValidationError, "version constraint is longer than %d bytes", MaxConstraintLen)
	}
	if strings.TrimSpace(s) == "" {
		return nil, errs.New(errs.ValidationError, "version constraint is empty")
	}
	c, err := semver.NewConstraint(s)
	if err != nil {
		return nil, errs.Wrap(errs.ValidationError, err,
			"%q is not a version constraint such as \">=1.2.0\", \"^1.2\" or \"*\"", s)
	}
	return c, nil
}

// Resolve picks the version of p to install: the highest version that satisfies constraint,
// whose nexus_version accepts hostVersion (the server's version; a pre-release server also
// accepts what its release accepts, as manifest.CheckCompatible does) and whose os and arch
// lists, when not empty, hold goos and goarch.
//
// constraint is "latest" or "" for the highest release (pre-releases excluded, as "*"
// excludes them) or a semver constraint (ParseConstraint); a pre-release is picked only when
// the constraint names one (">=2.0.0-0").
//
// Errors are *errs.Error values:
//   - errs.ValidationError: constraint is not a constraint;
//   - errs.PluginNotFound: no version satisfies constraint (the details list the versions
//     available), since what was asked for does not exist in the repository;
//   - errs.PluginIncompatible: versions satisfy constraint but none runs on this server; the
//     message names the reason for the highest of them, the details the reason for each.
func (p *Plugin) Resolve(constraint, hostVersion, goos, goarch string) (Version, error) {
	constraint = strings.TrimSpace(constraint)
	if constraint == "" || constraint == "latest" {
		constraint = "*"
	}
	c, err := ParseConstraint(constraint)
	if err != nil {
		return Version{}, err
	}
	type candidate struct {
		v   *semver.Version
		ver Version
	}
	var matching []candidate
	var all []candidate
	for _, ver := range p.Versions {
		sv, err := semver.StrictNewVersion(ver.Version)
		if err != nil {
			continue // ParseIndex refuses these; an Index built in code may hold them
		}
		all = append(all, candidate{sv, ver})
	}
	slices.SortStableFunc(all, func(a, b candidate) int { return b.v.Compare(a.v) })
	available := make([]string, 0, len(all))
	for _, cand := range all {
		available = append(available, cand.ver.Version)
		if c.Check(cand.v) {
			matching = append(matching, cand)
		}
	}
	if len(matching) == 0 {
		return Version{}, errs.New(errs.PluginNotFound, "no version of plugin %s matches %q", p.ID, constraint).
			WithDetail("constraint", constraint).WithDetail("available_versions", available)
	}
	if _, err := semver.NewVersion(hostVersion); err != nil {
		return Version{}, errs.Wrap(errs.Internal, err, "the server version is not a semantic version")
	}
	var reasons []string
	for _, m := range matching {
		reason := incompatibility(p.ID, m.ver, hostVersion, goos, goarch)
		if reason == "" {
			return m.ver, nil
		}
		reasons = append(reasons, m.ver.Version+": "+reason)
	}
	return Version{}, errs.New(errs.PluginIncompatible,
		"no version of plugin %s matching %q is compatible with this server; %s %s",
		p.ID, constraint, matching[0].ver.Version, incompatibility(p.ID, matching[0].ver, hostVersion, goos, goarch)).
		WithDetail("constraint", constraint).WithDetail("server_version", hostVersion).
		WithDetail("platform", goos+"/"+goarch).WithDetail("reasons", reasons)
}

// incompatibility says why ver does not run on the server, or returns "".
func incompatibility(id string, ver Version, hostVersion, goos, goarch string) string {
	m := manifest.Manifest{ID: id, NexusVersion: ver.NexusVersion, OS: ver.OS, Arch: ver.Arch}
	if m.NexusVersion == "" {
		m.NexusVersion = manifest.DefaultNexusVersion
	}
	if len(m.NexusVersion) > MaxConstraintLen {
		return "declares an invalid nexus_version"
	}
	if err := m.CheckCompatible(hostVersion); err != nil {
		return fmt.Sprintf("requires Nexus %s, but this server is version %s", m.NexusVersion, hostVersion)
	}
	if !m.SupportsPlatform(goos, goarch) {
		return fmt.Sprintf("runs on os %s, arch %s only, but this server is %s/%s",
			listOrAny(ver.OS), listOrAny(ver.Arch), goos, goarch)
	}
	return ""
}

func listOrAny(l []string) string {
	if len(l) == 0 {
		return "any"
	}
	return strings.Join(l, ",")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
