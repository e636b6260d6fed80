package plugintest

import "strings"

// This file holds the host's matching rules, which the SDK must not import from the host:
// permissions against grants, and event types against subscription patterns.

// allowed reports whether one of the granted patterns covers perm. Permissions are
// `resource:action`; either part of a pattern may be `*`, or end in `*` to match a prefix
// (`messages:*`, `*:read`, `database:*`).
func allowed(granted []string, perm string) bool {
	r, a, ok := strings.Cut(perm, ":")
	if !ok {
		return false
	}
	for _, g := range granted {
		gr, ga, ok := strings.Cut(g, ":")
		if ok && matchPart(gr, r) && matchPart(ga, a) {
			return true
		}
	}
	return false
}

func matchPart(pattern, s string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(s, prefix)
	}
	return pattern == s
}

// matchEvent reports whether an event type matches a subscription pattern: segments are
// separated by dots, a `*` segment matches one segment, a final `*` matches the rest
// (`user.*`, `*.error`, `*`).
func matchEvent(pattern, typ string) bool {
	if pattern == "*" {
		return true
	}
	for {
		pseg, prest, pmore := strings.Cut(pattern, ".")
		tseg, trest, tmore := strings.Cut(typ, ".")
		if pseg == "*" && !pmore {
			return tseg != ""
		}
		if pseg != "*" && pseg != tseg {
			return false
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		pattern, typ = prest, trest
	}
}
