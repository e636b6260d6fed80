package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/server"
)

func TestConfigPrecedenceFlagsEnvFileDefaults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nexus.yaml")
	yaml := "listen: 127.0.0.1:7001\nlog-level: debug\nshutdown-timeout: 5s\npermission-deny: [a:b, c:*]\nmax-request-bytes: 2048\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"NEXUS_CONFIG": file, "NEXUS_LOG_LEVEL": "warn", "NEXUS_LISTEN": "127.0.0.1:7002", "NEXUS_ADMIN_TOKEN": "tok"}
	cfg, err := server.ParseConfig([]string{"--listen", "127.0.0.1:7003", "--data-dir", dir}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7003" {
		t.Errorf("listen = %s: a flag must win over env and file", cfg.Listen)
	}
	if cfg.LogLevel != "warn" {
		t.Errorf("log-level = %s: env must win over the file", cfg.LogLevel)
	}
	if cfg.ShutdownTimeout != 5*time.Second || cfg.MaxRequestBytes != 2048 {
		t.Errorf("file values not applied: %+v", cfg)
	}
	if strings.Join(cfg.PermissionDeny, ",") != "a:b,c:*" {
		t.Errorf("permission-deny = %v", cfg.PermissionDeny)
	}
	if cfg.PermissionGrant[0] != "*:*" || cfg.MaxPackageBytes != 64<<20 {
		t.Errorf("defaults not kept: %+v", cfg)
	}
	if cfg.AdminToken != "tok" || cfg.DataDir != dir {
		t.Errorf("admin token %q, data dir %q", cfg.AdminToken, cfg.DataDir)
	}
}

func TestConfigRejectsBadValues(t *testing.T) {
	cases := map[string][]string{
		"bad listen":       {"--listen", "nowhere"},
		"bad level":        {"--log-level", "loud"},
		"bad duration":     {"--shutdown-timeout", "soon"},
		"tls half":         {"--tls-cert", "c.pem"},
		"extra argument":   {"stray"},
		"tiny body limit":  {"--max-request-bytes", "10"},
		"tiny inbox":       {"--max-inbox-bytes", "1048576"},
		"no inbox bytes":   {"--max-inbox-bytes", "0"},
		"uid range order":  {"--plugin-uid-range", "300000-200000"},
		"uid range root":   {"--plugin-uid-range", "0-100"},
		"uid range text":   {"--plugin-uid-range", "many"},
		"relative read":    {"--plugin-read-paths", "opt/python"},
		"negative procs":   {"--plugin-max-processes", "-1"},
		"bad no-sandbox":   {"--no-sandbox=perhaps"},
		"not postgres":     {"--database-url", "mysql://db.example/nexus"},
		"replica colon":    {"--replica-id", "a:b"},
		"replica at":       {"--replica-id", "a@b"},
		"replica long":     {"--replica-id", strings.Repeat("r", 65)},
		"advertise rel":    {"--advertise-url", "/nexus"},
		"advertise ftp":    {"--advertise-url", "ftp://a.example:21"},
		"advertise nohost": {"--advertise-url", "http://:8080"},
		"advertise user":   {"--advertise-url", "http://me:pw@a.example:8080"},
		"advertise query":  {"--advertise-url", "http://a.example:8080/?x=1"},
		"tiny heartbeat":   {"--heartbeat-interval", "10ms"},
		"negative floor":   {"--gc-heap-floor", "-1"},
		"floor with unit":  {"--gc-heap-floor", "64MiB"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := server.ParseConfig(args, func(string) string { return "" }, &bytes.Buffer{}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "nexus.yaml")
	_ = os.WriteFile(file, []byte("lissen: 1.2.3.4:5\n"), 0o600)
	if _, err := server.ParseConfig([]string{"--config", file}, func(string) string { return "" }, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "lissen") {
		t.Fatalf("unknown file key: %v", err)
	}
}

// The heap floor applies by default, and not when the operator sets the collector's own
// policy or turns it off.
func TestConfigGCHeapFloor(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	cfg, err := server.ParseConfig(nil, env(nil), &bytes.Buffer{})
	if err != nil || cfg.GCHeapFloor != 64<<20 || !cfg.GCHeapFloorApplies(env(nil)) {
		t.Fatalf("default: %d %v", cfg.GCHeapFloor, err)
	}
	for _, kv := range []map[string]string{{"GOGC": "200"}, {"GOMEMLIMIT": "1GiB"}} {
		if cfg.GCHeapFloorApplies(env(kv)) {
			t.Errorf("applies with %v", kv)
		}
	}
	cfg, err = server.ParseConfig(nil, env(map[string]string{"NEXUS_GC_HEAP_FLOOR": "0"}), &bytes.Buffer{})
	if err != nil || cfg.GCHeapFloor != 0 || cfg.GCHeapFloorApplies(env(nil)) {
		t.Fatalf("turned off: %d %v", cfg.GCHeapFloor, err)
	}
}

func TestConfigDatabaseURL(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nexus.yaml")
	if err := os.WriteFile(file, []byte("database-url: postgres://file@db/nexus\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, ""},
		{"file", []string{"--config", file}, nil, "postgres://file@db/nexus"},
		{"env over file", []string{"--config", file}, map[string]string{"NEXUS_DATABASE_URL": "postgresql://env@db/nexus"}, "postgresql://env@db/nexus"},
		{"flag over env", []string{"--database-url", "postgres://flag@db/nexus"}, map[string]string{"NEXUS_DATABASE_URL": "postgres://env@db/nexus"}, "postgres://flag@db/nexus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := server.ParseConfig(append([]string{"--data-dir", dir}, tc.args...), func(k string) string { return tc.env[k] }, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DatabaseURL != tc.want {
				t.Errorf("DatabaseURL = %q, want %q", cfg.DatabaseURL, tc.want)
			}
		})
	}
}

func TestConfigReplica(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"NEXUS_REPLICA_ID": "node_A-1", "NEXUS_ADVERTISE_URL": "https://nexus-a.example:8443/"}
	cfg, err := server.ParseConfig([]string{"--data-dir", dir, "--heartbeat-interval", "250ms", "--lease-ttl", "2s"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReplicaID != "node_A-1" || cfg.AdvertiseURL != "https://nexus-a.example:8443/" || cfg.HeartbeatInterval != 250*time.Millisecond ||
		cfg.LeaseTTL != 2*time.Second {
		t.Errorf("replica settings: %q %q %s %s", cfg.ReplicaID, cfg.AdvertiseURL, cfg.HeartbeatInterval, cfg.LeaseTTL)
	}
	cfg, err = server.ParseConfig([]string{"--data-dir", dir}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReplicaID != "" || cfg.AdvertiseURL != "" || cfg.HeartbeatInterval != 5*time.Second ||
		cfg.LeaseTTL != 10*time.Second {
		t.Errorf("replica defaults: %q %q %s %s", cfg.ReplicaID, cfg.AdvertiseURL, cfg.HeartbeatInterval, cfg.LeaseTTL)
	}
}

func TestServeHelpDocumentsEverySetting(t *testing.T) {
	var out bytes.Buffer
	_, err := server.ParseConfig([]string{"--help"}, func(string) string { return "" }, &out)
	if err == nil {
		t.Fatal("--help did not stop parsing")
	}
	for _, s := range []string{"listen", "data-dir", "log-level", "database-url", "tls-cert", "tls-key", "max-request-bytes", "max-package-bytes",
		"max-unpacked-bytes", "max-package-files", "log-retention", "health-interval", "health-misses", "crash-loop-count", "crash-loop-window", "shutdown-timeout", "permission-grant", "permission-deny", "cors-origins", "repository", "repository-sync-interval", "redis-url", "redis-prefix", "processing-timeout", "max-delivery-attempts", "max-inbox", "max-inbox-bytes", "replica-id", "advertise-url", "heartbeat-interval", "plugin-uid-range", "plugin-max-processes", "plugin-read-paths", "no-sandbox", "addr-file", "config"} {
		if !strings.Contains(out.String(), "-"+s) {
			t.Errorf("help lacks --%s", s)
		}
		if s != "config" && !strings.Contains(out.String(), "NEXUS_"+strings.ToUpper(strings.ReplaceAll(s, "-", "_"))) {
			t.Errorf("help lacks the env var of --%s", s)
		}
	}
	if !strings.Contains(out.String(), "NEXUS_ADMIN_TOKEN") {
		t.Error("help does not mention NEXUS_ADMIN_TOKEN")
	}
}
