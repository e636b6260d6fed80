package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
)

const pluginsUsage = `Usage:
  nexus plugins list [--status S] [--category C] [--search TEXT]
  nexus plugins get ID
  nexus plugins install FILE.tar.gz [--config JSON] [--force]
  nexus plugins uninstall ID [--force] [--backup] [--cleanup-data]
  nexus plugins config ID [--set JSON] [--secrets]
  nexus plugins permissions ID [--grant P,...] [--revoke P,...]

Common flags: --server URL (NEXUS_SERVER, default http://127.0.0.1:8080) and
--token TOKEN (NEXUS_TOKEN; default: the admin-token file in NEXUS_DATA_DIR or .nexus-data).
Answers are printed as JSON.
`

func pluginsCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, pluginsUsage)
		return nil
	}
	cmd := args[0]
	fs := flag.NewFlagSet("nexus plugins "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	serverURL := fs.String("server", envOr("NEXUS_SERVER", "http://127.0.0.1:8080"), "server URL [env NEXUS_SERVER]")
	token := fs.String("token", os.Getenv("NEXUS_TOKEN"), "bearer token [env NEXUS_TOKEN]")
	status := fs.String("status", "", "list: only this status")
	category := fs.String("category", "", "list: only this category")
	search := fs.String("search", "", "list: search names and descriptions")
	cfgJSON := fs.String("config", "", "install: initial configuration as a JSON object")
	setJSON := fs.String("set", "", "config: values to change, as a JSON object")
	withSecrets := fs.Bool("secrets", false, "config: show secret values (admin)")
	force := fs.Bool("force", false, "install: reinstall; uninstall: ignore dependents")
	backup := fs.Bool("backup", false, "uninstall: keep a backup")
	cleanup := fs.Bool("cleanup-data", false, "uninstall: remove the plugin's data")
	grant := fs.String("grant", "", "permissions: comma-separated permissions to grant")
	revoke := fs.String("revoke", "", "permissions: comma-separated permissions to revoke")
	positional, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if *token == "" {
		if b, err := os.ReadFile(filepath.Join(envOr("NEXUS_DATA_DIR", ".nexus-data"), "admin-token")); err == nil {
			*token = strings.TrimSpace(string(b))
		}
	}
	c := nexus.New(*serverURL, nexus.WithToken(*token))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	arg := func() (string, error) {
		if len(positional) != 1 {
			return "", fmt.Errorf("nexus plugins %s needs exactly one argument\n\n%s", cmd, pluginsUsage)
		}
		return positional[0], nil
	}
	var out proto.Message
	switch cmd {
	case "list":
		res, err := c.Plugins.ListPlugins(ctx, connect.NewRequest(&pluginv1.ListPluginsRequest{Status: *status, Category: *category, Search: *search}))
		if err != nil {
			return apiError(err)
		}
		out = res.Msg
	case "get":
		id, err := arg()
		if err != nil {
			return err
		}
		res, err := c.Plugins.GetPlugin(ctx, connect.NewRequest(&pluginv1.GetPluginRequest{PluginId: id}))
		if err != nil {
			return apiError(err)
		}
		out = res.Msg
	case "install":
		file, err := arg()
		if err != nil {
			return err
		}
		req := &pluginv1.InstallPluginRequest{Source: "file", ForceReinstall: *force}
		if req.PackageData, err = os.ReadFile(file); err != nil {
			return err
		}
		if req.Config, err = parseObject(*cfgJSON); err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		res, err := c.Plugins.InstallPlugin(ctx, connect.NewRequest(req))
		if err != nil {
			return apiError(err)
		}
		out = res.Msg
	case "uninstall":
		id, err := arg()
		if err != nil {
			return err
		}
		res, err := c.Plugins.UninstallPlugin(ctx, connect.NewRequest(&pluginv1.UninstallPluginRequest{PluginId: id, Force: *force, Backup: *backup, CleanupData: *cleanup}))
		if err != nil {
			return apiError(err)
		}
		out = res.Msg
	case "config":
		id, err := arg()
		if err != nil {
			return err
		}
		if *setJSON != "" {
			patch, err := parseObject(*setJSON)
			if err != nil {
				return fmt.Errorf("--set: %w", err)
			}
			res, err := c.Plugins.UpdatePluginConfig(ctx, connect.NewRequest(&pluginv1.UpdatePluginConfigRequest{PluginId: id, Config: patch}))
			if err != nil {
				return apiError(err)
			}
			out = res.Msg
		} else {
			res, err := c.Plugins.GetPluginConfig(ctx, connect.NewRequest(&pluginv1.GetPluginConfigRequest{PluginId: id, IncludeSecrets: *withSecrets}))
			if err != nil {
				return apiError(err)
			}
			out = res.Msg
		}
	case "permissions":
		id, err := arg()
		if err != nil {
			return err
		}
		if *grant != "" || *revoke != "" {
			res, err := c.Plugins.UpdatePluginPermissions(ctx, connect.NewRequest(&pluginv1.UpdatePluginPermissionsRequest{
				PluginId: id, Grant: splitList(*grant), Revoke: splitList(*revoke),
			}))
			if err != nil {
				return apiError(err)
			}
			out = res.Msg
		} else {
			res, err := c.Plugins.GetPluginPermissions(ctx, connect.NewRequest(&pluginv1.GetPluginPermissionsRequest{PluginId: id}))
			if err != nil {
				return apiError(err)
			}
			out = res.Msg
		}
	default:
		return fmt.Errorf("unknown plugins command %q\n\n%s", cmd, pluginsUsage)
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(out)
	if err != nil {
		return err
	}
	// protojson varies its spacing on purpose; print a stable indentation.
	var compact, pretty bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return err
	}
	if err := json.Indent(&pretty, compact.Bytes(), "", "  "); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, pretty.String())
	return err
}

func parseObject(s string) (*structpb.Struct, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	return structpb.NewStruct(m)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// apiError formats an API error with its code and field problems.
func apiError(err error) error {
	code := nexus.ErrorCode(err)
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	var b strings.Builder
	if code != "" {
		fmt.Fprintf(&b, "%s: ", code)
	}
	b.WriteString(msg)
	for f, d := range nexus.FieldViolations(err) {
		fmt.Fprintf(&b, "\n  %s: %s", f, d)
	}
	return fmt.Errorf("%s", b.String())
}

// parseInterspersed parses flags that may come before or after the positional arguments,
// and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
