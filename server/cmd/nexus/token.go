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
	"text/tabwriter"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

const tokenUsage = `Usage:
  nexus token create --role admin|user|plugin [--name NAME] [--plugin ID] [--data-dir DIR]
  nexus token list [--data-dir DIR]
  nexus token revoke [--data-dir DIR] TOKEN_ID

Tokens are kept (hashed) in the server's data directory (default .nexus-data, or
NEXUS_DATA_DIR); these commands work while the server runs. A new token is printed once.
`

func tokenCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, tokenUsage)
		return nil
	}
	fs := flag.NewFlagSet("nexus token "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr("NEXUS_DATA_DIR", ".nexus-data"), "the server's data directory [env NEXUS_DATA_DIR]")
	role := fs.String("role", "", "admin, user or plugin (create)")
	name := fs.String("name", "", "a name to recognise the token by (create)")
	plugin := fs.String("plugin", "", "the plugin a plugin token is bound to (create)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx := context.Background()
	st, err := openDataStore(ctx, *dataDir)
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
		plain, tok, err := ids.Create(ctx, *name, store.Role(*role), *plugin)
		if err != nil {
			return err
		}
		if err := auditCLI(ctx, st, "token create", tok.ID, map[string]any{"name": tok.Name, "role": tok.Role, "plugin_id": tok.PluginID}); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "created token %s (%s, role %s); it is shown only now:\n", tok.ID, tok.Name, tok.Role)
		fmt.Fprintln(stdout, plain)
	case "list":
		tokens, err := ids.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tPLUGIN\tCREATED\tREVOKED")
		for _, t := range tokens {
			revoked := "-"
			if !t.RevokedAt.IsZero() {
				revoked = t.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, dash(t.PluginID), t.CreatedAt.Format(time.RFC3339), revoked)
		}
		return tw.Flush()
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

const auditUsage = `Usage: nexus audit [--data-dir DIR] [--plugin ID] [--limit N]

Prints the audit log (newest first): every state-changing call and CLI action, with who,
what, the target, the outcome and the request id.
`

func auditCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nexus audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, auditUsage); fs.PrintDefaults() }
	dataDir := fs.String("data-dir", envOr("NEXUS_DATA_DIR", ".nexus-data"), "the server's data directory [env NEXUS_DATA_DIR]")
	plugin := fs.String("plugin", "", "only entries about this plugin")
	limit := fs.Int("limit", 50, "at most this many entries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	st, err := openDataStore(ctx, *dataDir)
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
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTOR\tROLE\tACTION\tTARGET\tOUTCOME\tREQUEST")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Format(time.RFC3339), dash(e.ActorName), dash(string(e.Role)),
			e.Action, dash(e.Target), e.Outcome, dash(e.RequestID))
	}
	return tw.Flush()
}

// openDataStore opens the store of an existing data directory (also while the server runs).
func openDataStore(ctx context.Context, dataDir string) (store.Store, error) {
	dbPath := filepath.Join(dataDir, "nexus.db")
	if _, err := os.Stat(dbPath); err != nil {
		return nil, fmt.Errorf("no Nexus database at %s (start the server once, or pass --data-dir)", dbPath)
	}
	return storesqlite.Open(ctx, dbPath)
}
