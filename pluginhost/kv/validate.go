package kv

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// pluginIDRE is the syntax of a plugin id, as plugin.json defines it (package manifest).
var pluginIDRE = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}[a-z0-9]$`)

// violations collects the problems with a call's input, in the order of its parameters.
type violations []errs.FieldViolation

func (v *violations) add(field, description string) {
	*v = append(*v, errs.FieldViolation{Field: field, Description: description})
}

// owner checks the plugin whose entries a call is about.
func (v *violations) owner(id string) { v.pluginID("plugin_id", id) }

// pluginID checks that id is a plugin id.
func (v *violations) pluginID(field, id string) {
	if !pluginIDRE.MatchString(id) {
		v.add(field, "must be a plugin id (lower-case letters, digits and dashes, 3 to 64 characters)")
	}
}

// key checks a key, or with required unset a key prefix or cursor, which may be empty.
func (v *violations) key(field, key string, maxBytes int, required bool) {
	switch {
	case key == "" && required:
		v.add(field, "must not be empty")
	case len(key) > maxBytes:
		v.add(field, "must be at most "+strconv.Itoa(maxBytes)+" bytes long")
	case !utf8.ValidString(key):
		v.add(field, "must be valid UTF-8")
	case strings.ContainsFunc(key, unicode.IsControl):
		v.add(field, "must not contain control characters")
	}
}

// value checks that value is a JSON value of at most maxBytes.
func (v *violations) value(value []byte, maxBytes int) {
	switch {
	case len(value) > maxBytes:
		v.add("value", "must be at most "+strconv.Itoa(maxBytes)+" bytes long")
	case !json.Valid(value):
		v.add("value", "must be a JSON value")
	}
}

// ttl checks a time to live: 0 (none) up to maxTTL.
func (v *violations) ttl(ttl, maxTTL time.Duration) {
	switch {
	case ttl < 0:
		v.add("ttl_seconds", "must not be negative")
	case ttl > maxTTL:
		v.add("ttl_seconds", "must be at most "+strconv.FormatInt(int64(maxTTL/time.Second), 10)+" seconds")
	}
}

// expectedVersion checks a version to compare with: 0 or a version.
func (v *violations) expectedVersion(version int64) {
	if version < 0 {
		v.add("expected_version", "must not be negative")
	}
}

// limit checks List's page size (0 taking the default).
func (v *violations) limit(limit int) {
	if limit < 0 || limit > MaxListLimit {
		v.add("limit", fmt.Sprintf("must be between 1 and %d (0 for %d)", MaxListLimit, DefaultListLimit))
	}
}

// readers checks the reader list of owner.
func (v *violations) readers(owner string, readers []string) {
	if len(readers) > MaxReaders {
		v.add("readers", fmt.Sprintf("must list at most %d plugins", MaxReaders))
		return
	}
	for i, r := range readers {
		field := fmt.Sprintf("readers[%d]", i)
		if r == owner {
			v.add(field, "must not be the owner itself")
			continue
		}
		v.pluginID(field, r)
	}
}

// err returns the VALIDATION_ERROR listing the violations, or nil when there are none.
func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	parts := make([]string, len(v))
	for i, f := range v {
		parts[i] = f.String()
	}
	return errs.WithFields(errs.ValidationError, "invalid input: "+strings.Join(parts, "; "), v)
}

// versionConflict is Delete's error when the entry is at another version than expected.
func versionConflict(current, expected int64) error {
	desc := fmt.Sprintf("the current version is %d", current)
	return errs.WithFields(errs.ValidationError,
		fmt.Sprintf("version conflict: expected version %d, but %s", expected, desc),
		[]errs.FieldViolation{{Field: "expected_version", Description: desc}}).
		WithDetail("current_version", current)
}

// quotaExceeded is the error of a write that would create a key beyond the quota.
func quotaExceeded(owner string, maxKeys int) error {
	return errs.New(errs.ValidationError,
		"plugin %s already holds the maximum of %d keys: delete keys or let them expire before adding new ones",
		owner, maxKeys).WithDetail("max_keys", maxKeys)
}
