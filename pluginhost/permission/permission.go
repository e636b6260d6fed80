// Package permission matches `resource:action` permission strings with `*` wildcards and
// applies the install-time permission policy.
package permission

import (
	"slices"
	"strings"
)

// Match reports whether the permission pattern covers perm. Either part of the pattern may
// be `*`, or end in `*` to match a prefix (`users:*`, `*:read`, `auth:*`, `events:user.*`).
func Match(pattern, perm string) bool {
	pr, pa, ok1 := strings.Cut(pattern, ":")
	r, a, ok2 := strings.Cut(perm, ":")
	if !ok1 || !ok2 {
		return false
	}
	return matchPart(pr, r) && matchPart(pa, a)
}

func matchPart(pattern, s string) bool {
	if pattern == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(s, prefix)
	}
	return pattern == s
}

// Overlaps reports whether two permission patterns can match a common permission: a
// requested `http:*` overlaps a denied `http:external`, and so must be denied too.
func Overlaps(a, b string) bool {
	ar, aa, ok1 := strings.Cut(a, ":")
	br, ba, ok2 := strings.Cut(b, ":")
	if !ok1 || !ok2 {
		return false
	}
	return overlapPart(ar, br) && overlapPart(aa, ba)
}

// overlapPart reports whether two parts (literal, `*`, or `prefix*`) share a value.
func overlapPart(a, b string) bool {
	ap, aWild := strings.CutSuffix(a, "*")
	bp, bWild := strings.CutSuffix(b, "*")
	switch {
	case aWild && bWild:
		return strings.HasPrefix(ap, bp) || strings.HasPrefix(bp, ap)
	case aWild:
		return strings.HasPrefix(b, ap)
	case bWild:
		return strings.HasPrefix(a, bp)
	}
	return a == b
}

// Covering returns the granted patterns that cover perm.
func Covering(granted []string, perm string) []string {
	var out []string
	for _, g := range granted {
		if g != perm && Match(g, perm) {
			out = append(out, g)
		}
	}
	return out
}

// Allowed reports whether any of the granted patterns covers perm.
func Allowed(granted []string, perm string) bool {
	for _, g := range granted {
		if Match(g, perm) {
			return true
		}
	}
	return false
}

// Policy decides, at install time, which requested permissions a plugin is granted.
// A requested permission is denied when it overlaps a Deny pattern (a request for
// `http:*` overlaps the denied `http:external`), when its resource is a bare `*` (a plugin
// never gets every resource by default), or when it matches no Grant pattern; otherwise it
// is granted. Administrators change grants later.
type Policy struct {
	Grant []string
	Deny  []string
}

// DefaultPolicy grants what plugins commonly need and denies reaching outside the host
// (`http:external`) and administrative resources.
func DefaultPolicy() Policy {
	return Policy{
		Grant: []string{"*:*"},
		Deny:  []string{"http:external", "system:*", "admin:*", "tokens:*"},
	}
}

// Decide splits requested permissions into granted and denied, each sorted and without
// duplicates.
func (p Policy) Decide(requested []string) (granted, denied []string) {
	for _, perm := range requested {
		resource, _, _ := strings.Cut(perm, ":")
		switch {
		case resource == "*", overlapsAny(p.Deny, perm), !Allowed(p.Grant, perm):
			denied = append(denied, perm)
		default:
			granted = append(granted, perm)
		}
	}
	slices.Sort(granted)
	slices.Sort(denied)
	return slices.Compact(granted), slices.Compact(denied)
}

func overlapsAny(patterns []string, perm string) bool {
	for _, p := range patterns {
		if Overlaps(p, perm) {
			return true
		}
	}
	return false
}
