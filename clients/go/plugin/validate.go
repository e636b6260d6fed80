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
	pluginIDPattern    = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}[a-z0-9]$`)
	messageTypePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.:-]{0,127}$`)
	eventTypePattern   = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)
	subscriptionRegexp = regexp.MustCompile(`^[A-Za-z0-9_*.:-]{1,128}$`)
)

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
	if !pluginIDPattern.MatchString(id) {
		return invalid("%s %q is not a plugin id (lower-case letters, digits and dashes, 3 to 64 characters)", what, id)
	}
	return nil
}

func checkMessageType(t string) error {
	if !messageTypePattern.MatchString(t) {
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
