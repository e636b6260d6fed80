package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/catalog"
	"github.com/nexus-platform/nexus/pluginhost/cluster"
)

// Config is the configuration of `nexus serve`. Every setting has a flag, an environment
// variable (NEXUS_*) and a key of the optional YAML file; flags win over the environment,
// which wins over the file, which wins over the defaults.
type Config struct {
	// Listen is the address of the one listener (HTTP/1.1 and h2c, or TLS).
	Listen string
	// DataDir holds the database (unless DatabaseURL is set), installed plugins, backups and
	// keys.
	DataDir string
	// DatabaseURL, when set, keeps the server's state (plugins, configuration, tokens,
	// audit, logs, key-value entries) in PostgreSQL (postgres://user:password@host:5432/db),
	// which several servers can share; otherwise a SQLite file in DataDir does (one server).
	DatabaseURL string
	// ReplicaID names this server among the servers sharing a database (letters, digits,
	// '-' and '_', at most 64); empty: generated on the first start and kept in
	// DataDir/replica-id, so that the server keeps it across restarts.
	ReplicaID string
	// AdvertiseURL is where other replicas and users reach this server (an absolute
	// http(s) URL); empty: derived from the address listened on (see advertiseURL).
	AdvertiseURL string
	// HeartbeatInterval is how often this server records itself in the replicas table; a
	// replica silent for three of its intervals counts as down.
	HeartbeatInterval time.Duration
	// LeaseTTL is how long a replica's lease on a host-launched plugin lasts unless renewed
	// (every third of it), with a shared database: a plugin whose replica died starts on
	// another within LeaseTTL plus its start time.
	LeaseTTL time.Duration
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// TLSCert and TLSKey enable TLS when both are set.
	TLSCert, TLSKey string
	// MaxRequestBytes bounds a request that uploads a plugin package (install, update; admins
	// only); MaxMessageBytes every other request body and every plugin stream message.
	MaxRequestBytes int64
	MaxMessageBytes int64
	// MaxPackageBytes bounds a plugin package (compressed); MaxUnpackedBytes the sum of its
	// unpacked files; MaxPackageFiles their number.
	MaxPackageBytes, MaxUnpackedBytes int64
	MaxPackageFiles                   int64
	// LogRetention is how many log entries are kept per plugin.
	LogRetention int64
	// HealthInterval is how often running plugins are asked for their health;
	// HealthMisses how many checks in a row they may miss before a restart.
	HealthInterval time.Duration
	HealthMisses   int64
	// CrashLoopCount crashes within CrashLoopWindow quarantine a plugin in error.
	CrashLoopCount  int64
	CrashLoopWindow time.Duration
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration
	// PermissionGrant and PermissionDeny are the install-time permission policy patterns.
	PermissionGrant, PermissionDeny []string
	// CORSOrigins are the browser origins allowed to call the API (gRPC-Web, Connect and
	// REST from a web page); none by default. "*" allows any origin.
	CORSOrigins []string
	// AddrFile, when set, receives the listen address once the server listens (useful
	// with port 0).
	AddrFile string
	// AdminToken comes only from NEXUS_ADMIN_TOKEN (never a flag, which would show in ps).
	AdminToken string
	// Repositories are the plugin repositories to sync and search.
	Repositories []catalog.Config
	// RepositorySyncInterval is how often repositories are synced (0: only at start and on
	// demand).
	RepositorySyncInterval time.Duration
	// RedisURL, when set, carries messages, broadcasts and events over Redis Streams
	// (redis://host:port/db); otherwise an in-memory bus does (one server).
	RedisURL string
	// RedisPrefix prefixes every Redis key of this deployment.
	RedisPrefix string
	// ProcessingTimeout is how long a delivery may stay unacknowledged before it is
	// delivered again; MaxDeliveryAttempts bounds deliveries before dead-lettering;
	// MaxInbox bounds the unacknowledged entries of one plugin's inbox, and MaxInboxBytes
	// their size (payloads and headers) in bytes.
	ProcessingTimeout   time.Duration
	MaxDeliveryAttempts int64
	MaxInbox            int64
	MaxInboxBytes       int64
	// PluginUIDRange is the uids (and gids) given to host-launched plugins, one each, when
	// the server runs as root: "FIRST-LAST".
	PluginUIDRange string
	// PluginMaxProcesses bounds the processes and threads of each host-launched plugin.
	PluginMaxProcesses int64
	// NoSandbox runs plugins unconfined, with the server's privileges (reported as such).
	NoSandbox bool
	// PluginReadPaths are more directories confined plugins may read and execute below.
	PluginReadPaths []string
	// GCHeapFloor is the heap below which `nexus serve` does not collect garbage, in bytes
	// (server/gcfloor); 0 leaves Go's default. It is not applied when GOGC or GOMEMLIMIT is
	// set in the environment (see GCHeapFloorApplies).
	GCHeapFloor int64
}

// GCHeapFloorApplies reports whether `nexus serve` applies GCHeapFloor: it is set, and
// the operator set neither GOGC nor GOMEMLIMIT (getenv reads the environment), whose
// policy then rules.
func (c Config) GCHeapFloorApplies(getenv func(string) string) bool {
	return c.GCHeapFloor > 0 && getenv("GOGC") == "" && getenv("GOMEMLIMIT") == ""
}

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	return Config{
		Listen:                 "127.0.0.1:8080",
		DataDir:                ".nexus-data",
		HeartbeatInterval:      cluster.DefaultInterval,
		LeaseTTL:               10 * time.Second,
		LogLevel:               "info",
		MaxRequestBytes:        96 << 20,
		MaxMessageBytes:        4 << 20,
		MaxPackageBytes:        64 << 20,
		MaxUnpackedBytes:       512 << 20,
		MaxPackageFiles:        10000,
		LogRetention:           10000,
		RepositorySyncInterval: 15 * time.Minute,
		RedisPrefix:            "nexus:",
		ProcessingTimeout:      30 * time.Second,
		MaxDeliveryAttempts:    5,
		MaxInbox:               10000,
		MaxInboxBytes:          bus.DefaultMaxInboxBytes,
		PluginUIDRange:         "200000-265535",
		PluginMaxProcesses:     512,
		HealthInterval:         10 * time.Second,
		HealthMisses:           3,
		CrashLoopCount:         5,
		CrashLoopWindow:        2 * time.Minute,
		ShutdownTimeout:        30 * time.Second,
		PermissionGrant:        []string{"*:*"},
		PermissionDeny:         []string{"http:external", "system:*", "admin:*", "tokens:*"},
		GCHeapFloor:            64 << 20,
	}
}

// setting is one configurable value.
type setting struct {
	name, help string
	value      flag.Value
}

func (c *Config) settings() []setting {
	return []setting{
		{"listen", "address to listen on for every protocol (gRPC, gRPC-Web, Connect, REST)", (*stringValue)(&c.Listen)},
		{"data-dir", "directory for the database, installed plugins, backups and keys", (*stringValue)(&c.DataDir)},
		{"database-url", "PostgreSQL for the state, which several servers can share (postgres://user:password@host:5432/nexus; put a password in the env var or the config file, not the flag, which ps shows); empty: a SQLite file in the data directory, one server", (*stringValue)(&c.DatabaseURL)},
		{"replica-id", "this server's id among the servers sharing a database: letters, digits, - and _, at most 64; empty: generated on the first start and kept in DATA_DIR/replica-id", (*stringValue)(&c.ReplicaID)},
		{"advertise-url", "the URL other replicas and users reach this server at (http://host:port or https://...); empty: the listen address (the machine's hostname when it listens on every interface; https with tls-cert)", (*stringValue)(&c.AdvertiseURL)},
		{"heartbeat-interval", "how often this server records itself in the replicas table (e.g. 5s); a replica silent for three of its intervals is listed as down", (*durationValue)(&c.HeartbeatInterval)},
		{"lease-ttl", "with a shared database, how long this server's lease on a host-launched plugin lasts unless renewed (e.g. 10s): a plugin whose server died starts on another within it plus its start time", (*durationValue)(&c.LeaseTTL)},
		{"log-level", "log level: debug, info, warn or error", (*stringValue)(&c.LogLevel)},
		{"tls-cert", "TLS certificate file (PEM); with tls-key, serves TLS instead of h2c", (*stringValue)(&c.TLSCert)},
		{"tls-key", "TLS private key file (PEM)", (*stringValue)(&c.TLSKey)},
		{"max-request-bytes", "largest accepted package upload (install and update requests, admins only), in bytes", (*int64Value)(&c.MaxRequestBytes)},
		{"max-message-bytes", "largest accepted body of any other request, and of a plugin stream message, in bytes", (*int64Value)(&c.MaxMessageBytes)},
		{"max-package-bytes", "largest accepted plugin package (compressed), in bytes", (*int64Value)(&c.MaxPackageBytes)},
		{"max-unpacked-bytes", "largest total size of a package's unpacked files, in bytes", (*int64Value)(&c.MaxUnpackedBytes)},
		{"max-package-files", "most files a plugin package may hold", (*int64Value)(&c.MaxPackageFiles)},
		{"log-retention", "log entries kept per plugin (older ones are dropped)", (*int64Value)(&c.LogRetention)},
		{"health-interval", "how often running plugins are asked for their health (e.g. 10s)", (*durationValue)(&c.HealthInterval)},
		{"health-misses", "health checks in a row a plugin may miss before it is restarted", (*int64Value)(&c.HealthMisses)},
		{"crash-loop-count", "crashes within crash-loop-window that quarantine a plugin in error", (*int64Value)(&c.CrashLoopCount)},
		{"crash-loop-window", "the window of crash-loop-count (e.g. 2m)", (*durationValue)(&c.CrashLoopWindow)},
		{"shutdown-timeout", "how long a graceful shutdown may take (e.g. 30s)", (*durationValue)(&c.ShutdownTimeout)},
		{"permission-grant", "install-time policy: permission patterns granted when requested (comma-separated)", (*listValue)(&c.PermissionGrant)},
		{"permission-deny", "install-time policy: permission patterns always denied (comma-separated)", (*listValue)(&c.PermissionDeny)},
		{"cors-origins", "browser origins allowed to call the API, comma-separated (e.g. https://console.example.com); * for any", (*listValue)(&c.CORSOrigins)},
		{"repository", "a plugin repository, repeatable: NAME=URL[;key=ed25519:...][;allow-unsigned][;description=TEXT][;disabled] (several in the env var: separated by spaces)", (*repoListValue)(&c.Repositories)},
		{"repository-sync-interval", "how often repositories are synced (e.g. 15m; 0: at start and on demand only)", (*durationValue)(&c.RepositorySyncInterval)},
		{"redis-url", "Redis for messages, broadcasts and events over Redis Streams (redis://127.0.0.1:6379/0); empty: in memory, one server", (*stringValue)(&c.RedisURL)},
		{"redis-prefix", "prefix of every Redis key of this deployment", (*stringValue)(&c.RedisPrefix)},
		{"processing-timeout", "how long a delivered event or broadcast may stay unacknowledged before it is delivered again (e.g. 30s)", (*durationValue)(&c.ProcessingTimeout)},
		{"max-delivery-attempts", "deliveries of one event, broadcast or message before it is dead-lettered", (*int64Value)(&c.MaxDeliveryAttempts)},
		{"max-inbox", "unacknowledged entries one plugin's inbox may hold; more are refused (PLUGIN_UNAVAILABLE)", (*int64Value)(&c.MaxInbox)},
		{"max-inbox-bytes", "bytes of unacknowledged entries (payloads and headers) one plugin's inbox may hold; more are refused (PLUGIN_UNAVAILABLE)", (*int64Value)(&c.MaxInboxBytes)},
		{"plugin-uid-range", "uids and gids given to host-launched plugins, one each, when the server runs as root (FIRST-LAST)", (*stringValue)(&c.PluginUIDRange)},
		{"plugin-max-processes", "processes and threads one host-launched plugin may run at once (0: unlimited)", (*int64Value)(&c.PluginMaxProcesses)},
		{"plugin-read-paths", "more directories confined plugins may read and execute below, besides their package and the system's (comma-separated absolute paths)", (*listValue)(&c.PluginReadPaths)},
		{"no-sandbox", "run host-launched plugins unconfined, with the server's privileges (true or false; the API reports every mechanism off)", (*boolValue)(&c.NoSandbox)},
		{"gc-heap-floor", "heap size below which the server does not collect garbage, in bytes: memory traded for CPU under load (a small heap allocated fast is otherwise collected several times a second); 0: Go's default; not applied when GOGC or GOMEMLIMIT is set", (*int64Value)(&c.GCHeapFloor)},
		{"addr-file", "write the listen address to this file once listening (for port 0)", (*stringValue)(&c.AddrFile)},
	}
}

func envName(flagName string) string {
	return "NEXUS_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseConfig reads the configuration of `nexus serve` from args, the environment (getenv)
// and the YAML file named by --config or NEXUS_CONFIG. Help goes to out.
func ParseConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("nexus serve", flag.ContinueOnError)
	fs.SetOutput(out)
	var configFile string
	fs.StringVar(&configFile, "config", "", "YAML configuration file (keys are the flag names) [env NEXUS_CONFIG]")
	settings := cfg.settings()
	for _, s := range settings {
		fs.Var(s.value, s.name, fmt.Sprintf("%s [env %s]", s.help, envName(s.name)))
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: nexus serve [flags]\n\nStarts the Nexus server. Every flag can also be set with its environment variable or\nin the YAML file given by --config; flags win over the environment, which wins over the file.\nNEXUS_ADMIN_TOKEN sets a bootstrap admin token (otherwise one is generated on first start\nand written to DATA_DIR/admin-token).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if configFile == "" {
		configFile = getenv("NEXUS_CONFIG")
	}
	var fileValues map[string]any
	if configFile != "" {
		data, err := os.ReadFile(configFile)
		if err != nil {
			return cfg, fmt.Errorf("read config file: %w", err)
		}
		if err := yaml.Unmarshal(data, &fileValues); err != nil {
			return cfg, fmt.Errorf("parse config file %s: %w", configFile, err)
		}
	}
	known := map[string]bool{}
	for _, s := range settings {
		known[s.name] = true
		if set[s.name] {
			continue
		}
		if v := getenv(envName(s.name)); v != "" {
			parts := []string{v}
			if _, ok := s.value.(*repoListValue); ok {
				parts = strings.Fields(v)
			}
			for _, part := range parts {
				if err := s.value.Set(part); err != nil {
					return cfg, fmt.Errorf("%s: %w", envName(s.name), err)
				}
			}
			continue
		}
		if v, ok := fileValues[s.name]; ok {
			if err := s.value.Set(yamlScalar(v)); err != nil {
				return cfg, fmt.Errorf("config file key %s: %w", s.name, err)
			}
		}
	}
	if v, ok := fileValues["repositories"]; ok && !set["repository"] && getenv(envName("repository")) == "" {
		repos, err := yamlRepositories(v)
		if err != nil {
			return cfg, fmt.Errorf("config file key repositories: %w", err)
		}
		cfg.Repositories = repos
	}
	for k := range fileValues {
		if !known[k] && k != "repositories" {
			return cfg, fmt.Errorf("config file: unknown key %q", k)
		}
	}
	cfg.AdminToken = getenv("NEXUS_ADMIN_TOKEN")
	return cfg, cfg.Validate()
}

// minInboxBytes is the least max-inbox-bytes: twice the largest payload, so that an inbox
// takes the largest payload (with its headers) even while it holds another.
const minInboxBytes = 2 * pluginhost.MaxPayloadBytes

// Validate checks the configuration once.
func (c *Config) Validate() error {
	var problems []string
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		problems = append(problems, fmt.Sprintf("listen: %v", err))
	}
	if c.DataDir == "" {
		problems = append(problems, "data-dir: must not be empty")
	}
	if c.ReplicaID != "" && !validReplicaID(c.ReplicaID) {
		problems = append(problems, fmt.Sprintf("replica-id: %q is not 1 to 64 letters, digits, - or _", c.ReplicaID))
	}
	if c.AdvertiseURL != "" {
		if err := checkAdvertiseURL(c.AdvertiseURL); err != nil {
			problems = append(problems, "advertise-url: "+err.Error())
		}
	}
	if c.HeartbeatInterval < 100*time.Millisecond {
		problems = append(problems, "heartbeat-interval: must be at least 100ms")
	}
	if c.LeaseTTL < 300*time.Millisecond {
		problems = append(problems, "lease-ttl: must be at least 300ms")
	}
	if _, err := c.slogLevel(); err != nil {
		problems = append(problems, err.Error())
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		problems = append(problems, "tls-cert and tls-key must be set together")
	}
	if c.MaxRequestBytes < 1<<10 || c.MaxMessageBytes < 1<<10 {
		problems = append(problems, "max-request-bytes and max-message-bytes: must be at least 1024")
	}
	if c.MaxPackageBytes < 1<<10 || c.MaxUnpackedBytes < 1<<10 || c.MaxPackageFiles < 1 {
		problems = append(problems, "max-package-bytes, max-unpacked-bytes and max-package-files must be positive (bytes at least 1024)")
	}
	if c.LogRetention < 1 {
		problems = append(problems, "log-retention: must be at least 1")
	}
	if c.HealthInterval < 100*time.Millisecond || c.HealthMisses < 1 || c.CrashLoopCount < 1 || c.CrashLoopWindow <= 0 {
		problems = append(problems, "health-interval (at least 100ms), health-misses, crash-loop-count and crash-loop-window must be positive")
	}
	if c.ShutdownTimeout <= 0 {
		problems = append(problems, "shutdown-timeout: must be positive")
	}
	if c.GCHeapFloor < 0 {
		problems = append(problems, "gc-heap-floor: must be 0 (Go's default) or a size in bytes")
	}
	if c.ProcessingTimeout < 100*time.Millisecond || c.MaxDeliveryAttempts < 1 || c.MaxInbox < 1 {
		problems = append(problems, "processing-timeout (at least 100ms), max-delivery-attempts and max-inbox must be positive")
	}
	if c.MaxInboxBytes < minInboxBytes {
		problems = append(problems, fmt.Sprintf("max-inbox-bytes: must be at least %d (twice the largest payload)", minInboxBytes))
	}
	if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		problems = append(problems, "database-url: must be a postgres:// or postgresql:// URL")
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") && !strings.HasPrefix(c.RedisURL, "unix://") {
		problems = append(problems, "redis-url: must be a redis://, rediss:// or unix:// URL")
	}
	if _, _, err := c.pluginUIDs(); err != nil {
		problems = append(problems, err.Error())
	}
	for _, p := range c.PluginReadPaths {
		if !filepath.IsAbs(p) {
			problems = append(problems, fmt.Sprintf("plugin-read-paths: %q is not an absolute path", p))
		}
	}
	if c.PluginMaxProcesses < 0 {
		problems = append(problems, "plugin-max-processes: must not be negative")
	}
	if len(problems) > 0 {
		return errors.New("invalid configuration: " + strings.Join(problems, "; "))
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("data-dir: %w", err)
	}
	c.DataDir = abs
	return nil
}

func (c *Config) slogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return l, fmt.Errorf("log-level: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	return l, nil
}

func yamlScalar(v any) string {
	switch t := v.(type) {
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(v)
	}
}

type stringValue string

func (s *stringValue) String() string     { return string(*s) }
func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }

type int64Value int64

func (i *int64Value) String() string { return strconv.FormatInt(int64(*i), 10) }
func (i *int64Value) Set(v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", v)
	}
	*i = int64Value(n)
	return nil
}

type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }
func (d *durationValue) Set(v string) error {
	x, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 30s)", v)
	}
	*d = durationValue(x)
	return nil
}

type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }
func (l *listValue) Set(v string) error {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	*l = out
	return nil
}

// LogLevelValue returns the configured log level.
func (c *Config) LogLevelValue() (slog.Level, error) { return c.slogLevel() }

// repoListValue is the repeatable --repository flag:
// NAME=URL[;key=ed25519:...][;allow-unsigned][;description=TEXT][;disabled].
type repoListValue []catalog.Config

func (l *repoListValue) String() string {
	names := make([]string, len(*l))
	for i, r := range *l {
		names[i] = r.Name + "=" + r.URL
	}
	return strings.Join(names, " ")
}

func (l *repoListValue) Set(v string) error {
	parts := strings.Split(v, ";")
	name, url, ok := strings.Cut(parts[0], "=")
	if !ok || name == "" || url == "" {
		return fmt.Errorf("%q: want NAME=URL[;key=...][;allow-unsigned][;description=...][;disabled]", v)
	}
	r := catalog.Config{Name: name, URL: url, Enabled: true}
	for _, opt := range parts[1:] {
		k, val, _ := strings.Cut(opt, "=")
		switch k {
		case "key":
			r.TrustedKeys = append(r.TrustedKeys, val)
		case "allow-unsigned":
			r.AllowUnsigned = true
		case "description":
			r.Description = val
		case "disabled":
			r.Enabled = false
		default:
			return fmt.Errorf("%q: unknown repository option %q", v, k)
		}
	}
	*l = append(*l, r)
	return nil
}

// yamlRepositories reads the `repositories` list of the configuration file.
func yamlRepositories(v any) ([]catalog.Config, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("must be a list")
	}
	var out []catalog.Config
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("[%d]: must be a mapping", i)
		}
		r := catalog.Config{Enabled: true}
		for k, val := range m {
			switch k {
			case "name":
				r.Name = fmt.Sprint(val)
			case "url":
				r.URL = fmt.Sprint(val)
			case "description":
				r.Description = fmt.Sprint(val)
			case "enabled":
				b, ok := val.(bool)
				if !ok {
					return nil, fmt.Errorf("[%d].enabled: must be true or false", i)
				}
				r.Enabled = b
			case "allow_unsigned":
				b, ok := val.(bool)
				if !ok {
					return nil, fmt.Errorf("[%d].allow_unsigned: must be true or false", i)
				}
				r.AllowUnsigned = b
			case "trusted_keys":
				keys, ok := val.([]any)
				if !ok {
					return nil, fmt.Errorf("[%d].trusted_keys: must be a list", i)
				}
				for _, key := range keys {
					r.TrustedKeys = append(r.TrustedKeys, fmt.Sprint(key))
				}
			default:
				return nil, fmt.Errorf("[%d]: unknown key %q", i, k)
			}
		}
		if r.Name == "" || r.URL == "" {
			return nil, fmt.Errorf("[%d]: name and url are required", i)
		}
		out = append(out, r)
	}
	return out, nil
}

// pluginUIDs parses PluginUIDRange into its first uid and count.
func (c *Config) pluginUIDs() (first, count int, err error) {
	lo, hi, ok := strings.Cut(c.PluginUIDRange, "-")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil || a < 1000 || b < a || b > 1<<31-2 {
		return 0, 0, fmt.Errorf("plugin-uid-range: %q is not FIRST-LAST with 1000 <= FIRST <= LAST", c.PluginUIDRange)
	}
	return a, b - a + 1, nil
}

type boolValue bool

func (b *boolValue) String() string   { return strconv.FormatBool(bool(*b)) }
func (b *boolValue) IsBoolFlag() bool { return true }
func (b *boolValue) Set(v string) error {
	x, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q is not true or false", v)
	}
	*b = boolValue(x)
	return nil
}
