// Package store defines how Nexus keeps its state: installed plugins (with their
// configuration and permissions), access tokens, the audit log, plugin logs, backups, the
// plugins' key-value entries and the replicas (the servers sharing the store).
//
// A Store runs every change in one transaction (Write) so that writes that belong together
// land together or not at all. Implementations: storesqlite (the default, one SQLite file
// for one server) and storepg (PostgreSQL, shared by several servers). Every implementation
// passes the conformance suite in storetest.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound is returned when a looked-up record does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned when a record with the same key already exists where a new one
// was expected (e.g. a token hash or a backup id used twice).
var ErrConflict = errors.New("store: conflict")

// Store is the persistent state of a Nexus server. It is safe for concurrent use.
type Store interface {
	// Read runs fn in a read-only transaction.
	Read(ctx context.Context, fn func(Tx) error) error
	// Write runs fn in one read-write transaction: it commits when fn returns nil and
	// rolls back every change when fn returns an error (which Write returns).
	Write(ctx context.Context, fn func(Tx) error) error
	// Close releases the store.
	Close() error
}

// Tx is a transaction. It must not be used after the function it was passed to returns.
type Tx interface {
	// Plugin returns the plugin with the id, or ErrNotFound.
	Plugin(id string) (Plugin, error)
	// Plugins returns every installed plugin ordered by id.
	Plugins() ([]Plugin, error)
	// PutPlugin inserts or replaces a plugin record.
	PutPlugin(p Plugin) error
	// DeletePlugin removes a plugin record (ErrNotFound when absent). It does not remove
	// the plugin's tokens, logs, backups or data: callers do that explicitly.
	DeletePlugin(id string) error

	// PutToken stores a new token (ErrConflict when its ID or Hash exists).
	PutToken(t Token) error
	// TokenByHash returns the token with the hash, revoked or not, or ErrNotFound.
	TokenByHash(hash []byte) (Token, error)
	// Tokens returns every token, newest first.
	Tokens() ([]Token, error)
	// RevokeToken marks a token revoked at the given time (ErrNotFound when absent).
	RevokeToken(id string, at time.Time) error
	// DeletePluginTokens removes every token bound to the plugin.
	DeletePluginTokens(pluginID string) error

	// AppendAudit appends an audit entry; ID and Time are set by the caller.
	AppendAudit(e AuditEntry) error
	// Audit returns audit entries matching the filter, newest first.
	Audit(f AuditFilter) ([]AuditEntry, error)

	// AppendLogs appends log records.
	AppendLogs(recs []LogRecord) error
	// Logs returns one page of the plugin's log records matching the filter, newest first,
	// and the number of records matching the filter across all pages.
	Logs(f LogFilter) ([]LogRecord, int, error)
	// TrimLogs keeps only the newest keep records of the plugin.
	TrimLogs(pluginID string, keep int) error
	// DeleteLogs removes every log record of the plugin.
	DeleteLogs(pluginID string) error

	// PutBackup stores a backup record (ErrConflict when the ID exists).
	PutBackup(b Backup) error
	// Backup returns the backup with the id, or ErrNotFound.
	Backup(id string) (Backup, error)
	// Backups returns the plugin's backups, newest first.
	Backups(pluginID string) ([]Backup, error)
	// DeleteBackup removes a backup record (ErrNotFound when absent).
	DeleteBackup(id string) error

	// PutVersionSwitch records an update in flight, replacing the plugin's earlier one.
	PutVersionSwitch(s VersionSwitch) error
	// VersionSwitches returns every update in flight, ordered by plugin id.
	VersionSwitches() ([]VersionSwitch, error)
	// DeleteVersionSwitch removes the plugin's update in flight (ErrNotFound when absent).
	DeleteVersionSwitch(pluginID string) error

	// Setting returns a server-level setting, or ErrNotFound.
	Setting(key string) ([]byte, error)
	// PutSetting stores a server-level setting.
	PutSetting(key string, value []byte) error

	// KV returns the plugin's entry with the key, expired or not, or ErrNotFound. Expiry is
	// the caller's business: the store keeps entries until they are deleted.
	KV(pluginID, key string) (KVEntry, error)
	// PutKV inserts or replaces the entry with e's PluginID and Key; both must be non-empty.
	PutKV(e KVEntry) error
	// DeleteKV removes the plugin's entry with the key (ErrNotFound when absent).
	DeleteKV(pluginID, key string) error
	// KVList returns up to limit (> 0) of the plugin's entries, expired or not, whose keys
	// start with prefix and sort after after, ordered by key. Keys compare and match
	// byte-wise: no character of prefix is a wildcard and case matters.
	KVList(pluginID, prefix, after string, limit int) ([]KVEntry, error)
	// KVCount returns how many entries the plugin has, expired or not.
	KVCount(pluginID string) (int, error)
	// DeleteKVExpired removes up to limit (> 0) entries, of any plugin, whose ExpiresAt is
	// set and before the non-zero time before, soonest expired first, and returns how many
	// it removed.
	DeleteKVExpired(before time.Time, limit int) (int, error)
	// DeletePluginKV removes every entry of the plugin, its reader list, and the plugin
	// from every other plugin's reader list.
	DeletePluginKV(pluginID string) error
	// KVReaders returns the plugins the plugin shares its entries with, ordered by id.
	KVReaders(pluginID string) ([]string, error)
	// PutKVReaders replaces the plugin's reader list (an empty list shares with no one).
	// Readers listed twice are kept once; empty ids are refused.
	PutKVReaders(pluginID string, readers []string) error

	// PutReplica inserts or replaces the replica with r's ID, which must be non-empty.
	PutReplica(r Replica) error
	// Replicas returns every recorded replica, ordered by id.
	Replicas() ([]Replica, error)
	// DeleteReplica removes the replica's record (ErrNotFound when absent).
	DeleteReplica(id string) error
}

// Plugin is an installed plugin.
type Plugin struct {
	ID      string
	Version string
	// Manifest is the plugin.json of the installed package, as installed.
	Manifest []byte
	// Dir is the absolute directory the package is unpacked in.
	Dir string
	// Source is where the package came from: "file", "repository" or "url".
	Source string
	// PackageSHA256 is the hex sha256 of the package file.
	PackageSHA256 string
	// Enabled says whether the plugin should run.
	Enabled bool
	// Status is "inactive", "loading", "active" or "error".
	Status string
	// StatusReason says why the status is what it is (the error, the disable reason).
	StatusReason string
	// Config is the configuration as a JSON object; secret values are sealed
	// (encrypted) by the caller before they reach the store.
	Config []byte
	// ConfigUpdatedAt is when the configuration last changed.
	ConfigUpdatedAt time.Time
	// Requested, Granted and Denied are the plugin's permissions.
	Requested []string
	Granted   []string
	Denied    []string
	// SecurityLevel is "low", "medium", "high" or "critical".
	SecurityLevel  string
	SandboxEnabled bool
	Limits         ResourceLimits
	InstalledAt    time.Time
	UpdatedAt      time.Time
}

// ResourceLimits bounds a host-launched plugin; 0 means unlimited.
type ResourceLimits struct {
	MemoryMB    int
	CPUPercent  int
	FileHandles int
}

// Role is an access role.
type Role string

// The roles.
const (
	RoleAdmin  Role = "admin"
	RoleUser   Role = "user"
	RolePlugin Role = "plugin"
)

// Token is an access token. Only its hash is stored.
type Token struct {
	ID   string
	Name string
	Role Role
	// PluginID binds a plugin token to its plugin; empty for other roles.
	PluginID  string
	Hash      []byte
	CreatedAt time.Time
	// RevokedAt is zero while the token is not revoked.
	RevokedAt time.Time
	// ExpiresAt is when the token stops being valid; zero means never.
	ExpiresAt time.Time
}

// Expired reports whether the token has an expiry and it is not after now.
func (t Token) Expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// AuditEntry records one state-changing call.
type AuditEntry struct {
	ID   string
	Time time.Time
	// Actor is the token id that made the call ("" when unauthenticated); ActorName its name.
	Actor     string
	ActorName string
	Role      Role
	// Action is the operation, e.g. "nexus.plugin.v1.PluginService/InstallPlugin".
	Action string
	// Target is what it acted on, e.g. a plugin id.
	Target string
	// Outcome is "ok" or the error code.
	Outcome   string
	RequestID string
	// Details is a JSON object with further facts (never secrets).
	Details []byte
}

// AuditFilter selects audit entries; zero fields do not filter.
type AuditFilter struct {
	Target string
	Since  time.Time
	Limit  int
}

// LogRecord is one log entry of a plugin.
type LogRecord struct {
	PluginID string
	Time     time.Time
	// Level is "DEBUG", "INFO", "WARNING" or "ERROR".
	Level   string
	Message string
	// Metadata is a JSON object, or nil.
	Metadata []byte
}

// LogFilter selects a page of log records.
type LogFilter struct {
	PluginID string
	// MinLevel keeps records at this level and above ("" keeps all).
	MinLevel string
	// Start and End bound the time (inclusive); zero does not bound.
	Start, End time.Time
	// Search keeps records whose message contains it, case-insensitively.
	Search string
	// Page is 1-based; PerPage > 0.
	Page, PerPage int
}

// Backup is a kept copy of a plugin's package and configuration.
type Backup struct {
	ID       string
	PluginID string
	Version  string
	// Reason is "update", "uninstall" or "manual".
	Reason    string
	CreatedAt time.Time
	// Dir is where the backed-up package files are kept.
	Dir       string
	SizeBytes int64
	// Plugin is the plugin record at the time of the backup.
	Plugin Plugin
}

// VersionSwitch is an update in flight: the plugin's record already names the new
// version, which has not proven itself yet (it is starting). While the switch is stored,
// the update is undone when the server starts (Old is put back, the backup the update made
// is dropped); deleting it commits the update.
type VersionSwitch struct {
	PluginID string
	// Old is the record the update replaced: the version to go back to, with its package
	// directory and configuration.
	Old Plugin
	// NewVersion and NewDir are the version switched to and its package directory.
	NewVersion, NewDir string
	// BackupID is the backup the update made ("" for none).
	BackupID  string
	StartedAt time.Time
}

// KVEntry is one key-value entry of a plugin.
type KVEntry struct {
	PluginID string
	Key      string
	// Value is opaque to the store.
	Value []byte
	// Version counts the writes of the key; the caller assigns it.
	Version int64
	// ExpiresAt is when the entry stops existing; zero means never.
	ExpiresAt time.Time
	// UpdatedAt is when the entry was last written.
	UpdatedAt time.Time
}

// Replica is a server sharing the store, as it last recorded itself (see package
// pluginhost/cluster, which writes and reads these records).
type Replica struct {
	// ID is the replica's id (a short slug, unique among the servers of the store).
	ID string
	// AdvertiseURL is where other replicas and users reach the replica.
	AdvertiseURL string
	// Version is the Nexus version the replica runs.
	Version string
	// StartedAt is when the replica started; HeartbeatAt when it last recorded itself.
	StartedAt   time.Time
	HeartbeatAt time.Time
	// HeartbeatInterval is how often the replica records itself.
	HeartbeatInterval time.Duration
	// Instances is how many plugin instances were connected to the replica at HeartbeatAt.
	Instances int
	// Sessions are the plugin instances connected to the replica at HeartbeatAt, ordered by
	// plugin and instance id (nil from a server that does not record them).
	Sessions []ReplicaSession
}

// ReplicaSession is a plugin instance connected to a replica.
type ReplicaSession struct {
	PluginID   string `json:"plugin_id"`
	InstanceID string `json:"instance_id"`
}

// EncodeReplicaSessions is the text a store keeps for a replica's sessions: JSON, and false
// for none (the column is NULL then).
func EncodeReplicaSessions(in []ReplicaSession) (string, bool, error) {
	if len(in) == 0 {
		return "", false, nil
	}
	b, err := json.Marshal(in)
	return string(b), err == nil, err
}

// DecodeReplicaSessions reads what EncodeReplicaSessions wrote.
func DecodeReplicaSessions(text string) ([]ReplicaSession, error) {
	var out []ReplicaSession
	err := json.Unmarshal([]byte(text), &out)
	return out, err
}

// LevelRank orders log levels: DEBUG < INFO < WARNING < ERROR. Unknown levels rank 0.
func LevelRank(level string) int {
	switch level {
	case "DEBUG":
		return 1
	case "INFO":
		return 2
	case "WARNING":
		return 3
	case "ERROR":
		return 4
	}
	return 0
}

// Change is a change committed to a store that several servers share, as its Feed tells it.
type Change struct {
	Kind ChangeKind
	// ID is the plugin of ChangePlugin, the token of ChangeTokenRevoked and the key of
	// ChangeSetting.
	ID string
}

// ChangeKind says what changed.
type ChangeKind uint8

const (
	// ChangeAny means that changes may have been missed (the feed started, or lost its
	// connection for a while): whatever a server keeps of the store should be read again.
	ChangeAny ChangeKind = iota
	// ChangePlugin is a plugin record written or deleted.
	ChangePlugin
	// ChangeTokenRevoked is a token revoked.
	ChangeTokenRevoked
	// ChangeSetting is a setting stored.
	ChangeSetting
)

// Feed is implemented by stores that several servers share (storepg): it tells each server
// of the changes committed by all of them, so that their in-memory views follow.
type Feed interface {
	// Follow calls fn with each change committed from now on, by any server sharing the
	// store (this one included), on one goroutine, in commit order, until ctx ends. It
	// first calls fn with ChangeAny once it listens, and again after every gap (a lost
	// connection), since changes committed meanwhile are not told. It returns when ctx
	// ends.
	Follow(ctx context.Context, fn func(Change))
}

// ClockTx is implemented by the transactions of stores that several servers share
// (storepg): Now reads the database server's clock, so that the times the servers compare
// (plugin leases) do not depend on each server's own clock.
type ClockTx interface {
	Now() (time.Time, error)
}

// PackageTx is implemented by the transactions of stores that several servers share
// (storepg): they keep the package files of the installed plugins, so that a server can
// unpack a plugin installed through another one.
type PackageTx interface {
	// PutPackage stores a package file (once: a file stored already is kept) and returns
	// its sha256 in hex.
	PutPackage(data []byte) (sha256 string, err error)
	// Package returns the package file with the sha256, or ErrNotFound.
	Package(sha256 string) ([]byte, error)
	// PrunePackages removes the package files stored before storedBefore that no plugin,
	// backup or update in flight refers to, and returns how many. (A file stored just now
	// for an install that is not committed yet is not referred to either.)
	PrunePackages(storedBefore time.Time) (int, error)
}
