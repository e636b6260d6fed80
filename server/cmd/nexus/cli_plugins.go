package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
)

// call runs one API call and prints its answer.
func (o *apiOptions) call(cmd *cobra.Command, fn func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error)) error {
	if _, err := o.format(); err != nil {
		return err
	}
	ctx, cancel := o.ctx(cmd)
	defer cancel()
	cmd.SetContext(ctx)
	m, err := fn(o.client(), cmd)
	if err != nil {
		return o.callError(err)
	}
	return o.print(m)
}

// callError is apiError, saying which server could not be reached when none answered.
func (o *apiOptions) callError(err error) error {
	if nexus.ErrorCode(err) == "" && connect.CodeOf(err) == connect.CodeUnavailable {
		return fmt.Errorf("cannot reach the server at %s (--url, NEXUS_URL): %w", o.url, err)
	}
	return apiError(err)
}

// msg unwraps a Connect answer.
func msg[T any](res *connect.Response[T], err error) (proto.Message, error) {
	if err != nil {
		return nil, err
	}
	return any(res.Msg).(proto.Message), nil
}

func pluginsCommands(o *apiOptions) *cobra.Command {
	group := &cobra.Command{Use: "plugins", Aliases: []string{"plugin"}, Short: "Install, run, configure and inspect plugins"}
	idArg := cobra.ExactArgs(1)

	var listStatus, listCategory, listSearch string
	var listAll bool
	list := &cobra.Command{Use: "list", Short: "List the installed plugins", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				req := &pluginv1.ListPluginsRequest{Status: listStatus, Category: listCategory, Search: listSearch}
				if cmd.Flags().Changed("include-disabled") {
					req.IncludeDisabled = &listAll
				}
				return msg(c.Plugins.ListPlugins(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	list.Flags().StringVar(&listStatus, "status", "", "only plugins in this state: active, inactive, error, loading")
	list.Flags().StringVar(&listCategory, "category", "", "only plugins of this category")
	list.Flags().StringVar(&listSearch, "search", "", "search names and descriptions")
	list.Flags().BoolVar(&listAll, "include-disabled", true, "include disabled plugins")

	get := &cobra.Command{Use: "get ID", Short: "Show a plugin's details", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.GetPlugin(cmd.Context(), connect.NewRequest(&pluginv1.GetPluginRequest{PluginId: args[0]})))
			})
		}}

	var instConfig, instRepo, instVersion, instURL string
	var instForce, instEnable bool
	install := &cobra.Command{Use: "install [FILE.tar.gz]", Short: "Install a plugin from a package file, a repository (--repository NAME) or a URL (--url)",
		Example: "  nexus plugins install bin/packages/analytics-plugin.tar.gz --config '{\"batch_size\": 100}'\n" +
			"  nexus plugins install --repository analytics-plugin --version latest --enable\n" +
			"  nexus plugins install --url https://example.com/p-1.0.0.tar.gz",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pluginv1.InstallPluginRequest{ForceReinstall: instForce, AutoEnable: instEnable}
			sources := 0
			if len(args) == 1 {
				sources++
				data, err := os.ReadFile(args[0])
				if err != nil {
					return err
				}
				req.Source, req.PackageData = "file", data
			}
			if instRepo != "" {
				sources++
				req.Source, req.PluginName, req.Version = "repository", instRepo, instVersion
			}
			if instURL != "" {
				sources++
				req.Source, req.DownloadUrl = "url", instURL
			}
			if sources != 1 {
				return fmt.Errorf("give one source: a package FILE, --repository PLUGIN or --url URL")
			}
			var err error
			if req.Config, err = parseObject("config", instConfig); err != nil {
				return err
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.InstallPlugin(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	install.Flags().StringVar(&instConfig, "config", "", "the initial configuration, a JSON object")
	install.Flags().StringVar(&instRepo, "repository", "", "install this plugin from the repositories")
	install.Flags().StringVar(&instVersion, "version", "latest", "with --repository: latest or a semver constraint")
	install.Flags().StringVar(&instURL, "url", "", "install the package at this URL")
	install.Flags().BoolVar(&instForce, "force", false, "reinstall over an installed plugin")
	install.Flags().BoolVar(&instEnable, "enable", false, "enable the plugin once installed")

	var unForce, unBackup, unCleanup bool
	uninstall := &cobra.Command{Use: "uninstall ID", Short: "Uninstall a plugin", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.UninstallPlugin(cmd.Context(), connect.NewRequest(&pluginv1.UninstallPluginRequest{
					PluginId: args[0], Force: unForce, Backup: unBackup, CleanupData: unCleanup})))
			})
		}}
	uninstall.Flags().BoolVar(&unForce, "force", false, "uninstall although other plugins depend on it")
	uninstall.Flags().BoolVar(&unBackup, "backup", false, "keep a backup to roll back to")
	uninstall.Flags().BoolVar(&unCleanup, "cleanup-data", false, "remove the plugin's data directory")

	var enDeps bool
	enable := &cobra.Command{Use: "enable ID", Short: "Enable a plugin (start it)", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.EnablePlugin(cmd.Context(), connect.NewRequest(&pluginv1.EnablePluginRequest{PluginId: args[0], EnableDependencies: enDeps})))
			})
		}}
	enable.Flags().BoolVar(&enDeps, "with-dependencies", false, "enable the plugins it depends on too")

	var disReason string
	var disTimeout int32
	var disForce, disGraceful bool
	disable := &cobra.Command{Use: "disable ID", Short: "Disable a plugin (stop it, gracefully first)", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pluginv1.DisablePluginRequest{PluginId: args[0], Reason: disReason, Force: disForce}
			if cmd.Flags().Changed("graceful") {
				req.GracefulShutdown = &disGraceful
			}
			if cmd.Flags().Changed("timeout-seconds") {
				req.TimeoutSeconds = &disTimeout
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.DisablePlugin(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	disable.Flags().StringVar(&disReason, "reason", "", "why, for the log and the plugin")
	disable.Flags().BoolVar(&disGraceful, "graceful", true, "ask the plugin to shut down before stopping it")
	disable.Flags().Int32Var(&disTimeout, "timeout-seconds", 30, "how long a graceful shutdown may take")
	disable.Flags().BoolVar(&disForce, "force", false, "disable although enabled plugins depend on it")

	var reReason string
	restart := &cobra.Command{Use: "restart ID", Short: "Restart a plugin", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.RestartPlugin(cmd.Context(), connect.NewRequest(&pluginv1.RestartPluginRequest{PluginId: args[0], Reason: reReason})))
			})
		}}
	restart.Flags().StringVar(&reReason, "reason", "", "why, for the log")

	var upVersion, upFile, upURL string
	var upBackup, upRestart, upConfig bool
	update := &cobra.Command{Use: "update ID", Short: "Update a plugin to another version (staged, kept only if it starts healthy)", Args: idArg,
		Example: "  nexus plugins update analytics-plugin --version latest --backup",
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pluginv1.UpdatePluginRequest{PluginId: args[0], Version: upVersion, BackupCurrent: upBackup, RestartPlugin: upRestart, UpdateConfig: upConfig}
			switch {
			case upFile != "" && upURL != "":
				return fmt.Errorf("give --file or --url, not both")
			case upFile != "":
				data, err := os.ReadFile(upFile)
				if err != nil {
					return err
				}
				req.Source, req.PackageData = "file", data
			case upURL != "":
				req.Source, req.DownloadUrl = "url", upURL
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.UpdatePlugin(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	update.Flags().StringVar(&upVersion, "version", "latest", "from the repositories: latest or a semver constraint")
	update.Flags().StringVar(&upFile, "file", "", "update from this package file")
	update.Flags().StringVar(&upURL, "url", "", "update from the package at this URL")
	update.Flags().BoolVar(&upBackup, "backup", true, "keep a backup of the current version")
	update.Flags().BoolVar(&upRestart, "restart", true, "run the new version now")
	update.Flags().BoolVar(&upConfig, "update-config", true, "carry the configuration over")

	var rbBackup string
	rollback := &cobra.Command{Use: "rollback ID --backup-id BACKUP", Short: "Restore a plugin from a backup", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.RollbackPlugin(cmd.Context(), connect.NewRequest(&pluginv1.RollbackPluginRequest{PluginId: args[0], BackupId: rbBackup})))
			})
		}}
	rollback.Flags().StringVar(&rbBackup, "backup-id", "", "the backup (nexus plugins backups ID)")
	_ = rollback.MarkFlagRequired("backup-id")

	backups := &cobra.Command{Use: "backups ID", Short: "List a plugin's backups", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.ListBackups(cmd.Context(), connect.NewRequest(&pluginv1.ListBackupsRequest{PluginId: args[0]})))
			})
		}}

	var cfgSet string
	var cfgSecrets, cfgRestart bool
	config := &cobra.Command{Use: "config ID", Short: "Show a plugin's configuration, or change it with --set", Args: idArg,
		Example: "  nexus plugins config analytics-plugin --set '{\"batch_size\": 200}'",
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgSet != "" {
				patch, err := parseObject("set", cfgSet)
				if err != nil {
					return err
				}
				return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
					return msg(c.Plugins.UpdatePluginConfig(cmd.Context(), connect.NewRequest(&pluginv1.UpdatePluginConfigRequest{PluginId: args[0], Config: patch, Restart: cfgRestart})))
				})
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.GetPluginConfig(cmd.Context(), connect.NewRequest(&pluginv1.GetPluginConfigRequest{PluginId: args[0], IncludeSecrets: cfgSecrets})))
			})
		}}
	config.Flags().StringVar(&cfgSet, "set", "", "values to change, a JSON object")
	config.Flags().BoolVar(&cfgSecrets, "secrets", false, "show secret values (admin)")
	config.Flags().BoolVar(&cfgRestart, "restart", false, "with --set: restart the plugin when a changed field requires it")

	var permGrant, permRevoke []string
	var permLevel string
	permissions := &cobra.Command{Use: "permissions ID", Short: "Show a plugin's permissions, or change them with --grant, --revoke, --security-level", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(permGrant) > 0 || len(permRevoke) > 0 || permLevel != "" {
				return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
					return msg(c.Plugins.UpdatePluginPermissions(cmd.Context(), connect.NewRequest(&pluginv1.UpdatePluginPermissionsRequest{
						PluginId: args[0], Grant: permGrant, Revoke: permRevoke, SecurityLevel: permLevel})))
				})
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.GetPluginPermissions(cmd.Context(), connect.NewRequest(&pluginv1.GetPluginPermissionsRequest{PluginId: args[0]})))
			})
		}}
	permissions.Flags().StringSliceVar(&permGrant, "grant", nil, "permissions to grant (repeat or comma-separate)")
	permissions.Flags().StringSliceVar(&permRevoke, "revoke", nil, "permissions to revoke (repeat or comma-separate)")
	permissions.Flags().StringVar(&permLevel, "security-level", "", "low, medium or high")

	var hRefresh bool
	health := &cobra.Command{Use: "health ID", Short: "Show a plugin's health", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.GetPluginHealth(cmd.Context(), connect.NewRequest(&pluginv1.GetPluginHealthRequest{PluginId: args[0], Refresh: hRefresh})))
			})
		}}
	health.Flags().BoolVar(&hRefresh, "refresh", false, "ask the plugin now")

	var mSince, mUntil, mResolution string
	var mNames []string
	metrics := &cobra.Command{Use: "metrics ID", Short: "Show a plugin's metric series", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pluginv1.GetPluginMetricsRequest{PluginId: args[0], Resolution: mResolution, Metrics: mNames}
			var err error
			if req.StartTime, req.EndTime, err = timeRange(mSince, mUntil); err != nil {
				return err
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.GetPluginMetrics(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	metrics.Flags().StringVar(&mSince, "since", "", "from: RFC 3339, a date, or a duration before now (1h)")
	metrics.Flags().StringVar(&mUntil, "until", "", "to: as --since")
	metrics.Flags().StringVar(&mResolution, "resolution", "", "1m, 5m, 15m or 1h")
	metrics.Flags().StringSliceVar(&mNames, "metric", nil, "only these metrics (repeat or comma-separate)")

	logs := logsCommand(o)

	instances := &cobra.Command{Use: "instances ID N", Short: "Set how many copies of a host-launched plugin run across the replicas", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[1], 10, 32)
			if err != nil {
				return fmt.Errorf("N %q: want a number of instances", args[1])
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.SetPluginInstances(cmd.Context(), connect.NewRequest(&pluginv1.SetPluginInstancesRequest{PluginId: args[0], Instances: int32(n)})))
			})
		}}

	var dlLimit int32
	deadLetters := &cobra.Command{Use: "dead-letters ID", Short: "List what a plugin could not process", Args: idArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pluginv1.ListDeadLettersRequest{PluginId: args[0]}
			if cmd.Flags().Changed("limit") {
				req.Limit = &dlLimit
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Messaging.ListDeadLetters(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	deadLetters.Flags().Int32Var(&dlLimit, "limit", 100, "at most this many, newest first")

	var msgData string
	var msgTimeout int32
	message := &cobra.Command{Use: "message FROM TARGET TYPE", Short: "Send a message from a plugin (which needs messages:send) to a plugin, and print the reply", Args: cobra.ExactArgs(3),
		Example: "  nexus plugins message user-management analytics-plugin user_stats_request --data '{\"user_id\": \"user_123\"}'",
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := parseObject("data", msgData)
			if err != nil {
				return err
			}
			req := &pluginv1.SendMessageRequest{PluginId: args[0], TargetPlugin: args[1], MessageType: args[2], Data: data}
			if cmd.Flags().Changed("timeout-seconds") {
				req.TimeoutSeconds = &msgTimeout
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Messaging.SendMessage(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	message.Flags().StringVar(&msgData, "data", "", "the payload, a JSON object")
	message.Flags().Int32Var(&msgTimeout, "timeout-seconds", 30, "how long to wait for the reply")

	var bcData string
	var bcCategories []string
	broadcast := &cobra.Command{Use: "broadcast TYPE", Short: "Broadcast a message to plugins (all, or of some categories)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := parseObject("data", bcData)
			if err != nil {
				return err
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Messaging.Broadcast(cmd.Context(), connect.NewRequest(&pluginv1.BroadcastRequest{MessageType: args[0], Data: data, TargetCategories: bcCategories})))
			})
		}}
	broadcast.Flags().StringVar(&bcData, "data", "", "the payload, a JSON object")
	broadcast.Flags().StringSliceVar(&bcCategories, "category", nil, "only plugins of these categories (repeat or comma-separate)")

	for _, c := range []*cobra.Command{get, uninstall, enable, disable, restart, update, rollback, backups, config, permissions, health, metrics, logs, instances, deadLetters} {
		c.ValidArgsFunction = o.completePluginIDs
	}
	group.AddCommand(list, get, install, uninstall, enable, disable, restart, update, rollback, backups, config, permissions,
		health, metrics, logs, instances, deadLetters, message, broadcast)
	return group
}

// completePluginIDs completes a plugin id from the server's list.
func (o *apiOptions) completePluginIDs(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := o.ctx(cmd)
	defer cancel()
	res, err := o.client().Plugins.ListPlugins(ctx, connect.NewRequest(&pluginv1.ListPluginsRequest{}))
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ids := make([]string, 0, len(res.Msg.GetPlugins()))
	for _, p := range res.Msg.GetPlugins() {
		ids = append(ids, p.GetId()+"\t"+p.GetName())
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// logsCommand reads a plugin's logs, or follows them with --follow.
func logsCommand(o *apiOptions) *cobra.Command {
	var level, search, since, until string
	var page, perPage, backlog int32
	var follow bool
	c := &cobra.Command{Use: "logs ID", Short: "Read a plugin's logs, or follow them (--follow)", Args: cobra.ExactArgs(1),
		Example: "  nexus plugins logs analytics-plugin --level WARNING --since 1h\n  nexus plugins logs analytics-plugin --follow --backlog 20",
		RunE: func(cmd *cobra.Command, args []string) error {
			if follow {
				if since != "" || until != "" || cmd.Flags().Changed("page") || cmd.Flags().Changed("per-page") {
					return fmt.Errorf("--follow takes --level, --search and --backlog, not --since, --until, --page or --per-page")
				}
				return o.follow(cmd, func(c *nexus.Client, w func(proto.Message) error) error {
					s, err := c.Plugins.TailPluginLogs(cmd.Context(), connect.NewRequest(&pluginv1.TailPluginLogsRequest{PluginId: args[0], Level: level, Search: search, Backlog: backlog}))
					return relay(s, err, (*pluginv1.TailPluginLogsResponse).GetEntry, w)
				}, func(out io.Writer, m proto.Message) {
					e := m.(*pluginv1.LogEntry)
					fmt.Fprintf(out, "%s  %-7s  %s\n", e.GetTimestamp().AsTime().Format(time.RFC3339), e.GetLevel(), e.GetMessage())
				})
			}
			req := &pluginv1.GetPluginLogsRequest{PluginId: args[0], Level: level, Search: search, Page: page, PerPage: perPage}
			var err error
			if req.StartTime, req.EndTime, err = timeRange(since, until); err != nil {
				return err
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Plugins.GetPluginLogs(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	f := c.Flags()
	f.StringVar(&level, "level", "", "the lowest level: DEBUG, INFO, WARNING or ERROR")
	f.StringVar(&search, "search", "", "only entries whose message contains this")
	f.StringVar(&since, "since", "", "from: RFC 3339, a date, or a duration before now (1h)")
	f.StringVar(&until, "until", "", "to: as --since")
	f.Int32Var(&page, "page", 1, "the page")
	f.Int32Var(&perPage, "per-page", 50, "entries per page")
	f.BoolVarP(&follow, "follow", "f", false, "print new entries as they are stored, until interrupted")
	f.Int32Var(&backlog, "backlog", 10, "with --follow: the newest stored entries printed first")
	_ = c.RegisterFlagCompletionFunc("level", cobra.FixedCompletions([]string{"DEBUG", "INFO", "WARNING", "ERROR"}, cobra.ShellCompDirectiveNoFileComp))
	return c
}

// follow runs a stream until it ends or the command is interrupted, printing each message:
// as a line (line) in the table format, as one JSON object per line (or YAML documents)
// otherwise.
func (o *apiOptions) follow(cmd *cobra.Command, stream func(c *nexus.Client, w func(proto.Message) error) error, line func(io.Writer, proto.Message)) error {
	format, err := o.format()
	if err != nil {
		return err
	}
	write := func(m proto.Message) error {
		switch format {
		case "table":
			line(o.stdout, m)
			return nil
		case "yaml":
			if _, err := fmt.Fprintln(o.stdout, "---"); err != nil {
				return err
			}
			return o.print(m)
		}
		b, err := stableJSON(m)
		if err != nil {
			return err
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil {
			return err
		}
		_, err = fmt.Fprintln(o.stdout, compact.String())
		return err
	}
	if err := stream(o.client(), write); err != nil && cmd.Context().Err() == nil {
		return o.callError(err)
	}
	return nil
}

// timeRange reads --since and --until (either may be empty).
func timeRange(since, until string) (start, end *timestamppb.Timestamp, err error) {
	if since != "" {
		t, err := parseTime("since", since)
		if err != nil {
			return nil, nil, err
		}
		start = timestamppb.New(t)
	}
	if until != "" {
		t, err := parseTime("until", until)
		if err != nil {
			return nil, nil, err
		}
		end = timestamppb.New(t)
	}
	return start, end, nil
}

// relay hands each message a server stream carries (pick's part of it, when set) to w,
// until the stream ends; err is the error of opening it.
func relay[T any, M proto.Message](s *connect.ServerStreamForClient[T], err error, pick func(*T) M, w func(proto.Message) error) error {
	if err != nil {
		return err
	}
	defer s.Close()
	for s.Receive() {
		if m := pick(s.Msg()); m.ProtoReflect().IsValid() {
			if err := w(m); err != nil {
				return err
			}
		}
	}
	return s.Err()
}
