package plugin

import (
	"regexp"
	"unicode/utf8"
)

// This file checks the plugin's requests against the protocol's rules before they are
// sent. The host validates every frame it receives and ends the whole stream on the first
// invalid one (failing every request in flight and every delivery being handled), so an
// invalid request is refused here instead, with a VALIDATION_ERROR for its caller alone.
// The rules mirror the buf.validate annotations of nexus/pluginhost/v1/pluginhost.proto.

var (
	eventTypePattern   = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)
	subscriptionRegexp = regexp.MustCompile(`^[A-Za-z0-9_*.:-]{1,128}$`)
)

// The rules of plugin ids and message types, checked on every Send, without the regexp
// engine (validate_test.go holds them to these patterns).
const (
	pluginIDPattern    = `^[a-z][a-z0-9-]{1,62}[a-z0-9]$`
	messageTypePattern = `^[A-Za-z][A-Za-z0-9_.:-]{0,127}$`
)

func validPluginID(s string) bool {
	if len(s) < 3 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

func validMessageType(s string) bool {
	if len(s) < 1 || len(s) > 128 || !isASCIILetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isASCIILetter(c) && (c < '0' || c > '9') && c != '_' && c != '.' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

func isASCIILetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// Limits of the protocol.
const (
	maxSubscriptions   = 256 // in hello, and in each list of a subscribe frame
	maxCategories      = 64
	maxExcluded        = 256
	maxReaders         = 64
	maxKeyChars        = 256
	maxQueryChars      = 128
	maxListLimit       = 1000
	maxTTLSeconds      = 30 * 24 * 60 * 60
	maxSendTimeout     = 300 // seconds
	defaultSendTimeout = 30  // seconds
	maxExtendSeconds   = 600
)

func checkPluginID(what, id string) error {
	if !validPluginID(id) {
		return invalid("%s %q is not a plugin id (lower-case letters, digits and dashes, 3 to 64 characters)", what, id)
	}
	return nil
}

func checkMessageType(t string) error {
	if !validMessageType(t) {
		return invalid("message type %q must start with a letter and hold at most 128 letters, digits and _.:-", t)
	}
	return nil
}

func checkEventType(t string) error {
	if !eventTypePattern.MatchString(t) {
		return invalid("event type %q must hold 1 to 128 letters, digits and _.:-", t)
	}
	return nil
}

func checkPatterns(patterns []string) error {
	if len(patterns) > maxSubscriptions {
		return invalid("at most %d subscription patterns at once, not %d", maxSubscriptions, len(patterns))
	}
	for _, p := range patterns {
		if !subscriptionRegexp.MatchString(p) {
			return invalid("subscription pattern %q must hold 1 to 128 letters, digits and _*.:-", p)
		}
	}
	return nil
}

// checkText checks a string the protocol bounds in characters (and which, as every protobuf
// string, must be valid UTF-8).
func checkText(what, s string, minChars, maxChars int) error {
	if !utf8.ValidString(s) {
		return invalid("%s is not valid UTF-8", what)
	}
	if n := utf8.RuneCountInString(s); n < minChars || n > maxChars {
		if minChars > 0 {
			return invalid("%s must hold %d to %d characters, not %d", what, minChars, maxChars, n)
		}
		return invalid("%s must hold at most %d characters, not %d", what, maxChars, n)
	}
	return nil
}
