package manifest

import (
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// Compiled patterns of the manifest's identifiers.
var (
	idRE         = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}[a-z0-9]$`)
	permissionRE = regexp.MustCompile(`^([a-z][a-z0-9_-]*|\*):([a-z][a-z0-9_.-]*|\*)$`)
	categoryRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	// An event type is dot-separated segments of letters, digits, _ and -, starting with a letter.
	eventTypeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$`)
	// An event pattern may also use * as a whole segment.
	eventPatternRE = regexp.MustCompile(`^(\*|[A-Za-z][A-Za-z0-9_-]*)(\.(\*|[A-Za-z0-9_-]+))*$`)
	// Message types and service names.
	nameRE      = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,127}$`)
	driveLetter = regexp.MustCompile(`^[A-Za-z]:`)
)

// Space-separated lists of accepted values, in the order error messages show them.
const (
	knownOS      = "aix android darwin dragonfly freebsd illumos ios js linux netbsd openbsd plan9 solaris wasip1 windows"
	knownArch    = "386 amd64 arm arm64 loong64 mips mips64 mips64le mipsle ppc64 ppc64le riscv64 s390x wasm"
	knownMethods = "GET HEAD POST PUT PATCH DELETE OPTIONS"
)

// Length limits, in characters.
const (
	maxNameLen        = 128
	maxShortTextLen   = 256
	maxDescriptionLen = 4096
	maxTagLen         = 64
	maxTags           = 32
	maxPathLen        = 1024
	maxArgLen         = 4096
	maxArgs           = 256
	maxIdentLen       = 128
	maxPackageNameLen = 214
)

// checker collects the problems of a manifest.
type checker struct {
	problems []errs.FieldViolation
}

func (c *checker) add(path, format string, args ...any) {
	c.problems = append(c.problems, errs.FieldViolation{Field: path, Description: fmt.Sprintf(format, args...)})
}

// problems returns every rule the manifest breaks, in the order of its fields.
func (m *Manifest) problems() []errs.FieldViolation {
	c := &checker{}
	switch {
	case m.ID == "":
		c.add("id", "is required")
	case IsReservedID(m.ID):
		c.add("id", "%q is a reserved word and cannot be a plugin id", m.ID)
	case !idRE.MatchString(m.ID):
		c.add("id", "must be kebab-case: 3 to 64 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen")
	}
	c.text("name", m.Name, maxNameLen, true, false)
	if m.Version == "" {
		c.add("version", "is required")
	} else if _, err := semver.StrictNewVersion(m.Version); err != nil {
		c.add("version", "must be a semantic version such as 1.2.0 (MAJOR.MINOR.PATCH, no leading v)")
	}
	c.text("description", m.Description, maxDescriptionLen, false, true)
	c.text("author", m.Author, maxShortTextLen, false, false)
	if m.Email != "" {
		if a, err := mail.ParseAddress(m.Email); err != nil || a.Address != m.Email {
			c.add("email", "must be an email address such as team@nexus.dev")
		}
	}
	if m.Homepage != "" {
		if u, err := url.Parse(m.Homepage); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.add("homepage", "must be an http or https URL")
		}
	}
	c.text("license", m.License, maxShortTextLen, false, false)
	if m.Category != "" && !categoryRE.MatchString(m.Category) {
		c.add("category", "must be 1 to 64 lowercase letters, digits, _ and -, starting with a letter")
	}
	c.tags(m.Tags)
	c.launch(m)
	if _, err := semver.NewConstraint(m.NexusVersion); err != nil {
		c.add("nexus_version", `must be a semver constraint such as ">=1.0.0" or "*"`)
	}
	c.text("python_version", m.PythonVersion, maxShortTextLen, false, false)
	c.list("os", m.OS, func(p, v string) {
		if !slices.Contains(strings.Fields(knownOS), v) {
			c.add(p, "must be one of %s", strings.ReplaceAll(knownOS, " ", ", "))
		}
	})
	c.list("arch", m.Arch, func(p, v string) {
		if !slices.Contains(strings.Fields(knownArch), v) {
			c.add(p, "must be one of %s", strings.ReplaceAll(knownArch, " ", ", "))
		}
	})
	c.dependencies(m)
	c.list("permissions", m.Permissions, func(p, v string) {
		if len(v) > maxIdentLen || !permissionRE.MatchString(v) {
			c.add(p, `must be a permission "resource:action" in lowercase, either part may be "*" (e.g. "database:read", "auth:*")`)
		}
	})
	c.endpoints(m.APIEndpoints)
	c.events("events.emits", m.Events.Emits, eventTypeRE,
		"must be an event type such as user.login: dot-separated letters, digits, _ and -, starting with a letter, no wildcards")
	c.events("events.subscribes", m.Events.Subscribes, eventPatternRE,
		`must be an event type or pattern such as user.login, user.*, *.error or *: dot-separated letters, digits, _ and -, or "*" as a whole segment`)
	c.messageTypes(m.MessageTypes)
	c.list("services", m.Services, func(p, v string) {
		if !nameRE.MatchString(v) {
			c.add(p, "must be 1 to 128 letters, digits, _, . and -, starting with a letter")
		}
	})
	c.bound("resource_limits.memory_mb", m.ResourceLimits.MemoryMB, 0, MaxMemoryMB)
	c.bound("resource_limits.cpu_percent", m.ResourceLimits.CPUPercent, 0, MaxCPUPercent)
	c.bound("resource_limits.file_handles", m.ResourceLimits.FileHandles, 0, MaxFileHandles)
	if !m.SecurityLevel.Valid() {
		c.add("security_level", "must be one of low, medium, high, critical")
	}
	c.bound("start_timeout_seconds", m.StartTimeoutSeconds, MinStartTimeoutSeconds, MaxStartTimeoutSeconds)
	// 0 is the default in a Manifest built in code (Parse fills in 1, and refuses 0).
	if m.Instances < 0 || m.Instances > MaxInstances {
		c.add("instances", "must be between 1 and %d", MaxInstances)
	}
	return c.problems
}

// text checks a free-text field: present if required, at most maxLen characters, no control
// characters (but newlines and tabs when multiline).
func (c *checker) text(path, s string, maxLen int, required, multiline bool) {
	switch {
	case strings.TrimSpace(s) == "":
		if required {
			c.add(path, "is required")
		} else if s != "" {
			c.add(path, "must not be blank")
		}
	case utf8.RuneCountInString(s) > maxLen:
		c.add(path, "must be at most %d characters long", maxLen)
	case strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t' || r == '\r'))
	}):
		c.add(path, "must not contain control characters")
	}
}

// list checks each entry of a list of strings with check and reports duplicates.
func (c *checker) list(path string, values []string, check func(path, value string)) {
	first := make(map[string]int, len(values))
	for i, v := range values {
		p := index(path, i)
		if j, dup := first[v]; dup {
			c.add(p, "duplicates %s", index(path, j))
			continue
		}
		first[v] = i
		check(p, v)
	}
}

func (c *checker) tags(tags []string) {
	if len(tags) > maxTags {
		c.add("tags", "must have at most %d entries", maxTags)
	}
	c.list("tags", tags, func(p, v string) {
		switch {
		case strings.TrimSpace(v) == "":
			c.add(p, "must not be blank")
		case utf8.RuneCountInString(v) > maxTagLen:
			c.add(p, "must be at most %d characters long", maxTagLen)
		case strings.ContainsFunc(v, unicode.IsControl):
			c.add(p, "must not contain control characters")
		}
	})
}

// launch checks entry_point, args and external.
func (c *checker) launch(m *Manifest) {
	if m.External {
		if m.EntryPoint != "" {
			c.add("entry_point", "must be empty for an external plugin (the host does not launch it)")
		}
		if len(m.Args) > 0 {
			c.add("args", "must be empty for an external plugin (the host does not launch it)")
		}
		return
	}
	if m.EntryPoint == "" {
		c.add("entry_point", "is required unless external is true")
	} else if problem := entryPointProblem(m.EntryPoint); problem != "" {
		c.add("entry_point", "%s", problem)
	}
	if len(m.Args) > maxArgs {
		c.add("args", "must have at most %d entries", maxArgs)
	}
	for i, a := range m.Args {
		switch {
		case len(a) > maxArgLen:
			c.add(index("args", i), "must be at most %d bytes long", maxArgLen)
		case strings.ContainsRune(a, 0):
			c.add(index("args", i), "must not contain NUL characters")
		}
	}
}

// entryPointProblem returns what is wrong with an entry point, or "".
func entryPointProblem(ep string) string {
	switch {
	case len(ep) > maxPathLen:
		return fmt.Sprintf("must be at most %d bytes long", maxPathLen)
	case strings.HasPrefix(ep, "/") || driveLetter.MatchString(ep):
		return "must be a path relative to the package root, not an absolute path"
	case strings.ContainsRune(ep, '\\'):
		return "must use forward slashes"
	case strings.ContainsFunc(ep, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return "must be a path without spaces or control characters; put arguments in args"
	case slices.Contains(strings.Split(ep, "/"), ".."):
		return `must not contain ".." (it must stay inside the package)`
	case strings.HasSuffix(ep, "/") || ep == ".":
		return "must name a file, not a directory"
	}
	return ""
}

func (c *checker) dependencies(m *Manifest) {
	for _, name := range sortedKeys(m.Dependencies.Packages) {
		p := join("dependencies.packages", name)
		switch {
		case name == "" || len(name) > maxPackageNameLen ||
			strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			c.add(p, "package name must be 1 to %d characters without spaces", maxPackageNameLen)
		case utf8.RuneCountInString(m.Dependencies.Packages[name]) > maxShortTextLen ||
			strings.ContainsFunc(m.Dependencies.Packages[name], unicode.IsControl):
			c.add(p, "must be a version specifier of at most %d characters", maxShortTextLen)
		}
	}
	for _, id := range sortedKeys(m.Dependencies.Plugins) {
		p := join("dependencies.plugins", id)
		switch {
		case !ValidID(id):
			c.add(p, "is not a valid plugin id (kebab-case, 3 to 64 characters, not a reserved word)")
		case id == m.ID:
			c.add(p, "a plugin cannot depend on itself")
		}
		if _, err := semver.NewConstraint(m.Dependencies.Plugins[id]); err != nil {
			c.add(p, `must be a semver constraint such as ">=1.2.0" or "*"`)
		}
	}
}

func (c *checker) endpoints(endpoints []APIEndpoint) {
	before := len(c.problems)
	firstPath := make(map[string]int, len(endpoints))
	for i, e := range endpoints {
		base := index("api_endpoints", i)
		switch {
		case e.Path == "":
			c.add(base+".path", "is required")
		case !strings.HasPrefix(e.Path, "/"):
			c.add(base+".path", `must start with "/"`)
		case len(e.Path) > maxPathLen:
			c.add(base+".path", "must be at most %d bytes long", maxPathLen)
		case strings.ContainsAny(e.Path, "?#") ||
			strings.ContainsFunc(e.Path, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			c.add(base+".path", "must be a URL path without spaces, query or fragment")
		default:
			if j, dup := firstPath[e.Path]; dup {
				c.add(base+".path", "duplicates %s.path", index("api_endpoints", j))
			} else {
				firstPath[e.Path] = i
			}
		}
		if len(e.Methods) == 0 {
			c.add(base+".methods", "must list at least one HTTP method")
		}
		c.list(base+".methods", e.Methods, func(p, v string) {
			if !slices.Contains(strings.Fields(knownMethods), v) {
				c.add(p, "must be one of %s", strings.ReplaceAll(knownMethods, " ", ", "))
			}
		})
		c.text(base+".description", e.Description, maxDescriptionLen, false, true)
		if e.Auth != AuthPublic && e.Auth != AuthToken && !permissionRE.MatchString(e.Auth) {
			c.add(base+".auth", `must be "public", "token" or a permission such as "users:read"`)
		}
		if e.TimeoutSeconds < 1 || e.TimeoutSeconds > MaxEndpointTimeoutSeconds {
			c.add(base+".timeout_seconds", "must be between 1 and %d", MaxEndpointTimeoutSeconds)
		}
	}
	if before == len(c.problems) {
		// Only once paths, methods and duplicates are well formed, each on its own.
		c.patterns(endpoints)
	}
}

// patterns checks that the endpoints' method and path pairs are http.ServeMux patterns that
// do not conflict with one another (ServeMux refuses two patterns that match the same
// requests with neither more specific).
func (c *checker) patterns(endpoints []APIEndpoint) {
	type seen struct {
		pattern string
		at      int
	}
	var done []seen
	for i, e := range endpoints {
		for _, p := range e.Patterns() {
			if err := register(http.NewServeMux(), p); err != nil {
				c.add(index("api_endpoints", i)+".path", "is not a valid pattern: %s", firstLine(err.Error()))
				return
			}
			for _, d := range done {
				mux := http.NewServeMux()
				_ = register(mux, d.pattern)
				if err := register(mux, p); err != nil {
					c.add(index("api_endpoints", i)+".path", "conflicts with %s (%s): %s", index("api_endpoints", d.at), d.pattern, example(err.Error()))
					return
				}
			}
			done = append(done, seen{p, i})
		}
	}
}

// firstLine is the first line of ServeMux's message, without where it was called from.
func firstLine(msg string) string {
	msg, _, _ = strings.Cut(msg, "\n")
	return strings.TrimSpace(registeredAt.ReplaceAllString(msg, ""))
}

// example is the line of ServeMux's conflict message that names a path both patterns match.
func example(msg string) string {
	for line := range strings.Lines(msg) {
		if strings.Contains(line, "both match") {
			return strings.TrimSpace(line)
		}
	}
	return firstLine(msg)
}

var registeredAt = regexp.MustCompile(` \(registered at [^)]*\)`)

// register adds pattern to mux, turning ServeMux's panic on a bad or conflicting pattern
// into an error.
func register(mux *http.ServeMux, pattern string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	mux.Handle(pattern, http.NotFoundHandler())
	return nil
}

func (c *checker) events(path string, events []Event, re *regexp.Regexp, syntax string) {
	first := make(map[string]int, len(events))
	for i, e := range events {
		base := index(path, i)
		switch {
		case e.Type == "":
			c.add(base+".type", "is required")
		case len(e.Type) > maxIdentLen || !re.MatchString(e.Type):
			c.add(base+".type", "%s", syntax)
		default:
			if j, dup := first[e.Type]; dup {
				c.add(base+".type", "duplicates %s.type", index(path, j))
			} else {
				first[e.Type] = i
			}
		}
		c.text(base+".description", e.Description, maxDescriptionLen, false, true)
	}
}

func (c *checker) messageTypes(types []MessageType) {
	first := make(map[string]int, len(types))
	for i, mt := range types {
		base := index("message_types", i)
		switch {
		case mt.Type == "":
			c.add(base+".type", "is required")
		case !nameRE.MatchString(mt.Type):
			c.add(base+".type", "must be 1 to 128 letters, digits, _, . and -, starting with a letter")
		default:
			if j, dup := first[mt.Type]; dup {
				c.add(base+".type", "duplicates %s.type", index("message_types", j))
			} else {
				first[mt.Type] = i
			}
		}
		c.text(base+".description", mt.Description, maxDescriptionLen, false, true)
		if rp := mt.RequiredPermission; rp != "" &&
			(len(rp) > maxIdentLen || !permissionRE.MatchString(rp) || strings.Contains(rp, "*")) {
			c.add(base+".required_permission", `must be a permission "resource:action" without wildcards (e.g. "users:read")`)
		}
	}
}

func (c *checker) bound(path string, v, lo, hi int) {
	if v < lo || v > hi {
		c.add(path, "must be between %d and %d", lo, hi)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
