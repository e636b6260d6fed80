package archive

import (
	"io/fs"
	"strings"
)

const (
	// maxNameBytes bounds an entry name or a link target (Linux's PATH_MAX).
	maxNameBytes = 4096
	// maxElemBytes bounds one element of a name (Linux's NAME_MAX).
	maxElemBytes = 255
)

// cleanName checks an entry name from an archive and returns it relative to the package
// root, slash-separated, without "./" prefixes, "." or empty elements or a trailing slash.
// It returns "" for the root itself ("." or "./").
func cleanName(name string) (string, error) {
	clean, reason := splitClean(name)
	if reason != "" {
		return "", newError(ErrUnsafePath, name, reason)
	}
	return clean, nil
}

// splitClean does the work of cleanName; it returns why name is refused, or "".
func splitClean(name string) (clean, reason string) {
	if reason := badName(name); reason != "" {
		return "", reason
	}
	elems := make([]string, 0, strings.Count(name, "/")+1)
	for elem := range strings.SplitSeq(name, "/") {
		switch {
		case elem == "" || elem == ".":
			continue
		case elem == "..":
			return "", `name contains ".."`
		case len(elem) > maxElemBytes:
			return "", "name element longer than 255 bytes"
		}
		elems = append(elems, elem)
	}
	return strings.Join(elems, "/"), ""
}

// checkSymlink checks the target of a symlink whose clean name is name (entry as the archive
// spells it), and returns the
// target without "." or empty elements. The target must be relative and canonical (its ".."
// elements, if any, come first) and must not climb above the package root. reachesRoot
// reports whether it climbs exactly to the root, which is forbidden when a wrapping
// top-level directory is stripped.
func checkSymlink(entry, name, target string) (clean string, reachesRoot bool, err error) {
	if target == "" {
		return "", false, newError(ErrLinkEscape, entry, "empty symlink target")
	}
	if reason := badName(target); reason != "" {
		return "", false, newError(ErrLinkEscape, entry, "symlink target: "+reason)
	}
	ups, down := 0, 0
	elems := make([]string, 0, strings.Count(target, "/")+1)
	for elem := range strings.SplitSeq(target, "/") {
		switch {
		case elem == "" || elem == ".":
			continue
		case elem == "..":
			if down > 0 {
				return "", false, newError(ErrLinkEscape, entry,
					`symlink target has ".." after a name`)
			}
			ups++
		case len(elem) > maxElemBytes:
			return "", false, newError(ErrLinkEscape, entry,
				"symlink target element longer than 255 bytes")
		default:
			down++
		}
		elems = append(elems, elem)
	}
	depth := strings.Count(name, "/")
	if ups > depth {
		return "", false, newError(ErrLinkEscape, entry, "symlink target leaves the package")
	}
	if len(elems) == 0 {
		return ".", ups == depth, nil
	}
	return strings.Join(elems, "/"), ups == depth, nil
}

// badName returns why name is not an acceptable relative path, or "" when it is.
func badName(name string) string {
	switch {
	case name == "":
		return "empty name"
	case len(name) > maxNameBytes:
		return "name longer than 4096 bytes"
	case strings.IndexByte(name, 0) >= 0:
		return "name contains a NUL byte"
	case strings.IndexByte(name, '\\') >= 0:
		return "name contains a backslash"
	case name[0] == '/':
		return "absolute path"
	case len(name) >= 2 && name[1] == ':' && isASCIILetter(name[0]):
		return "name starts with a drive letter"
	}
	return ""
}

func isASCIILetter(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

// fileMode returns the mode an extracted or packaged regular file gets: 0755 when any
// execute bit is set, 0644 otherwise.
func fileMode(mode int64) fs.FileMode {
	if mode&0o111 != 0 {
		return 0o755
	}
	return 0o644
}
