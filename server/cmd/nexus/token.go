package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/runtime"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

const tokenUsage = `Usage:
  nexus token create --role admin|user|plugin [--name NAME] [--plugin ID] [--ttl DURATION] [--data-dir DIR | --database-url URL]
  nexus token list [--data-dir DIR | --database-url URL] [-o table|json|yaml]
  nexus token revoke [--data-dir DIR | --database-url URL] TOKEN_ID

Tokens are kept (hashed) in the server's database: the SQLite file in its data directory
(default .nexus-data, or NEXUS_DATA_DIR), or the PostgreSQL database of --database-url (or
NEXUS_DATABASE_URL) when the server runs with one; these commands work while the server
runs. A new token is printed once.
--ttl makes a token expire after that long (a Go duration: 30m, 24h, 2160h); without it a
token never expires. An expired token is refused like a revoked one, on every call. token
list shows each token's STATUS (valid, expired or revoked) and EXPIRES (RFC 3339, UTC, or
never). Names starting with "runtime:" are reserved for the tokens of launched plugins.
`

// reservedTokenPrefix starts the names of the tokens servers issue to the plugin processes
// they launch ("runtime:<replica id>:<plugin id>"); a server revokes its own when it starts,
// so the CLI does not hand the prefix out.
const reservedTokenPrefix = runtime.LaunchTokenRoot

// parseTTL reads --ttl: empty means no expiry; otherwise a positive Go duration.
func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--ttl %q is not a duration: use a number with a unit, e.g. 30m, 24h or 2160h", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("--ttl must be positive, not %s (leave --ttl out for a token that never expires)", s)
	}
	if d > identity.MaxTTL {
		return 0, fmt.Errorf("--ttl must be at most %s, not %s (leave --ttl out for a token that never expires)", identity.MaxTTL, s)
	}
	return d, nil
}

// tokenStatus is how token list describes a token at now.
func tokenStatus(t store.Token, now time.Time) string {
	switch {
	case !t.RevokedAt.IsZero():
		return "revoked"
	case t.Expired(now):
		return "expired"
	}
	return "valid"
}

func tokenCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, tokenUsage)
		return nil
	}
	fs := flag.NewFlagSet("nexus token "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr("NEXUS_DATA_DIR", ".nexus-data"), "the server's data directory [env NEXUS_DATA_DIR]")
	databaseURL := fs.String("database-url", os.Getenv("NEXUS_DATABASE_URL"), databaseURLHelp)
	role := fs.String("role", "", "admin, user or plugin (create)")
	name := fs.String("name", "", "a name to recognise the token by (create)")
	plugin := fs.String("plugin", "", "the plugin a plugin token is bound to (create)")
	ttlFlag := fs.String("ttl", "", "how long the token stays valid, e.g. 24h or 30m; never expires when left out (create)")
	output := outputFlag(fs, "list")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ttl, err := parseTTL(*ttlFlag)
	if err != nil {
		return err
	}
	if strings.HasPrefix(*name, reservedTokenPrefix) {
		return fmt.Errorf("--name %q: names starting with %q are reserved for the tokens of launched plugins", *name, reservedTokenPrefix)
	}
	ctx := context.Background()
	st, err := openDataStore(ctx, *dataDir, *databaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	ids := identity.New(st)
	switch args[0] {
	case "create":
		if *role == "" {
			return fmt.Errorf("--role is required (admin, user or plugin)")
		}
		plain, tok, err := ids.CreateWithTTL(ctx, *name, store.Role(*role), *plugin, ttl)
		if err != nil {
			return err
		}
		details := map[string]any{"name": tok.Name, "role": tok.Role, "plugin_id": tok.PluginID, "expires_at": expiresText(tok)}
		if err := auditCLI(ctx, st, "token create", tok.ID, details); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "created token %s (%s, role %s, expires %s); it is shown only now:\n", tok.ID, tok.Name, tok.Role, expiresText(tok))
		fmt.Fprintln(stdout, plain)
	case "list":
		tokens, err := ids.List(ctx)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		recs := records{header: []string{"ID", "NAME", "ROLE", "PLUGIN", "STATUS", "CREATED", "EXPIRES", "REVOKED"}}
		for _, t := range tokens {
			revoked := "-"
			if !t.RevokedAt.IsZero() {
				revoked = t.RevokedAt.UTC().Format(time.RFC3339)
			}
			recs.add([]string{t.ID, t.Name, string(t.Role), dash(t.PluginID), tokenStatus(t, now),
				t.CreatedAt.UTC().Format(time.RFC3339), expiresText(t), revoked},
				map[string]any{"id": t.ID, "name": t.Name, "role": t.Role, "plugin_id": t.PluginID, "status": tokenStatus(t, now),
					"created_at": t.CreatedAt.UTC().Format(time.RFC3339), "expires_at": expiresText(t), "revoked_at": strings.TrimPrefix(revoked, "-")})
		}
		return recs.print(stdout, *output)
	case "revoke":
		if fs.NArg() != 1 {
			return fmt.Errorf("usage: nexus token revoke TOKEN_ID")
		}
		if err := ids.Revoke(ctx, fs.Arg(0)); err != nil {
			return err
		}
		if err := auditCLI(ctx, st, "token revoke", fs.Arg(0), nil); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "revoked", fs.Arg(0))
	default:
		return fmt.Errorf("unknown token command %q\n\n%s", args[0], tokenUsage)
	}
	return nil
}

// expiresText is when a token expires, in RFC 3339 UTC, or "never".
func expiresText(t store.Token) string {
	if t.ExpiresAt.IsZero() {
		return "never"
	}
	return t.ExpiresAt.UTC().Format(time.RFC3339)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// auditCLI writes an administrative action taken from the command line to the audit log.
func auditCLI(ctx context.Context, st store.Store, action, target string, details map[string]any) error {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	actor := "cli"
	if u, err := user.Current(); err == nil {
		actor = "cli:" + u.Username
	}
	var raw []byte
	if details != nil {
		raw, _ = json.Marshal(details)
	}
	return st.Write(ctx, func(tx store.Tx) error {
		return tx.AppendAudit(store.AuditEntry{
			ID: "aud_" + hex.EncodeToString(b), Time: time.Now().UTC(), Actor: actor, ActorName: actor,
			Role: store.RoleAdmin, Action: "nexus " + action, Target: target, Outcome: "OK", Details: raw,
		})
	})
}

const auditUsage = `Usage: nexus audit [--data-dir DIR | --database-url URL] [--plugin ID] [--limit N] [-o table|json|yaml]

Prints the audit log (newest first): every state-changing call and CLI action, with who,
what, the target, the outcome and the request id.
`

func auditCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nexus audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, auditUsage); fs.PrintDefaults() }
	dataDir := fs.String("data-dir", envOr("NEXUS_DATA_DIR", ".nexus-data"), "the server's data directory [env NEXUS_DATA_DIR]")
	databaseURL := fs.String("database-url", os.Getenv("NEXUS_DATABASE_URL"), databaseURLHelp)
	plugin := fs.String("plugin", "", "only entries about this plugin")
	limit := fs.Int("limit", 50, "at most this many entries")
	output := outputFlag(fs, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	st, err := openDataStore(ctx, *dataDir, *databaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	var entries []store.AuditEntry
	if err := st.Read(ctx, func(tx store.Tx) error {
		var err error
		entries, err = tx.Audit(store.AuditFilter{Target: *plugin, Limit: *limit})
		return err
	}); err != nil {
		return err
	}
	recs := records{header: []string{"TIME", "ACTOR", "ROLE", "ACTION", "TARGET", "OUTCOME", "REQUEST"}}
	for _, e := range entries {
		recs.add([]string{e.Time.Format(time.RFC3339), dash(e.ActorName), dash(string(e.Role)), e.Action, dash(e.Target), e.Outcome, dash(e.RequestID)},
			map[string]any{"time": e.Time.Format(time.RFC3339), "actor": e.ActorName, "role": e.Role, "action": e.Action,
				"target": e.Target, "outcome": e.Outcome, "request_id": e.RequestID})
	}
	return recs.print(stdout, *output)
}

// databaseURLHelp documents --database-url of the commands that open the server's store.
const databaseURLHelp = "the server's PostgreSQL database (postgres://...), when it runs with one; otherwise the data directory's SQLite file is used [env NEXUS_DATABASE_URL]"

// openDataStore opens the server's store (also while the server runs): the PostgreSQL
// database at databaseURL when it is set, otherwise the SQLite file of an existing data
// directory.
func openDataStore(ctx context.Context, dataDir, databaseURL string) (store.Store, error) {
	if databaseURL != "" {
		return storepg.Open(ctx, databaseURL)
	}
	dbPath := filepath.Join(dataDir, storesqlite.FileName)
	if _, err := os.Stat(dbPath); err != nil {
		return nil, fmt.Errorf("no Nexus database at %s (start the server once, or pass --data-dir)", dbPath)
	}
	return storesqlite.Open(ctx, dbPath)
}
