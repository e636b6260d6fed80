package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
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
	dbPath := filepath.Join(*dataDir, "nexus.db")
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("no Nexus database at %s (start the server once, or pass --data-dir)", dbPath)
	}
	st, err := storesqlite.Open(ctx, dbPath)
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
