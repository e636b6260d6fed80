package storepg

import (
	"context"
	"time"
)

// Migration is a schema step, for tests that open a database with other steps.
type Migration = migration

// NewMigration returns a schema step.
func NewMigration(version int, name string, compatibleFrom int, sql string) Migration {
	return migration{version: version, name: name, compatibleFrom: compatibleFrom, sql: sql}
}

// Migrations returns the package's schema steps.
func Migrations() []Migration { return migrations() }

// OpenWith is Open with the schema steps ms instead of the package's.
func OpenWith(ctx context.Context, url string, ms []Migration, opts ...Option) (*Store, error) {
	return open(ctx, url, ms, opts)
}

// PrefixEnd is prefixEnd.
func PrefixEnd(prefix string) (string, bool) { return prefixEnd(prefix) }

// CleanText is cleanText.
func CleanText(s string) string { return cleanText(s) }

// Version is the step's version.
func (m migration) Version() int { return m.version }

// CompatibleFrom is the step's compatibleFrom.
func (m migration) CompatibleFrom() int { return m.compatibleFrom }

// SetFollowPing sets how long Follow waits for a notification before it pings, until the
// test ends.
func SetFollowPing(t interface{ Cleanup(func()) }, d time.Duration) {
	old := followPing
	followPing = d
	t.Cleanup(func() { followPing = old })
}
