package main

import (
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
)

func reposCommands(o *apiOptions) *cobra.Command {
	group := &cobra.Command{Use: "repos", Aliases: []string{"repositories"}, Short: "The plugin repositories: list, sync, search"}
	list := &cobra.Command{Use: "list", Short: "List the repositories and their last sync", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Repositories.ListRepositories(cmd.Context(), connect.NewRequest(&pluginv1.ListRepositoriesRequest{})))
			})
		}}
	sync := &cobra.Command{Use: "sync", Short: "Sync every repository now", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Repositories.SyncRepositories(cmd.Context(), connect.NewRequest(&pluginv1.SyncRepositoriesRequest{})))
			})
		}}
	var category, author, sort string
	var tags []string
	var minRating float64
	var page, perPage int32
	search := &cobra.Command{Use: "search [TEXT]", Short: "Search the repositories' catalog", Args: cobra.MaximumNArgs(1),
		Example: "  nexus repos search analytics --sort rating\n  nexus repos search --tag security,jwt --min-rating 4.5",
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pluginv1.SearchPluginsRequest{Category: category, Author: author, Tags: tags, MinRating: minRating, Sort: sort, Page: page, PerPage: perPage}
			if len(args) == 1 {
				req.Query = args[0]
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Repositories.SearchPlugins(cmd.Context(), connect.NewRequest(req)))
			})
		}}
	f := search.Flags()
	f.StringVar(&category, "category", "", "only this category")
	f.StringVar(&author, "author", "", "only this author")
	f.StringSliceVar(&tags, "tag", nil, "only plugins with every one of these tags (repeat or comma-separate)")
	f.Float64Var(&minRating, "min-rating", 0, "only plugins rated at least this (0 to 5)")
	f.StringVar(&sort, "sort", "", "name, rating, downloads or updated")
	f.Int32Var(&page, "page", 1, "the page")
	f.Int32Var(&perPage, "per-page", 20, "results per page")
	_ = search.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions([]string{"name", "rating", "downloads", "updated"}, cobra.ShellCompDirectiveNoFileComp))
	group.AddCommand(list, sync, search)
	return group
}

func eventsCommands(o *apiOptions) *cobra.Command {
	group := &cobra.Command{Use: "events", Short: "The event feed: follow it (--follow or watch), or emit an event"}
	watch := func(cmd *cobra.Command, patterns []string) error {
		return o.follow(cmd, func(c *nexus.Client, w func(proto.Message) error) error {
			s, err := c.Messaging.WatchEvents(cmd.Context(), connect.NewRequest(&pluginv1.WatchEventsRequest{Patterns: patterns}))
			return relay(s, err, (*pluginv1.WatchEventsResponse).GetEvent, w)
		}, func(out io.Writer, m proto.Message) {
			e := m.(*pluginv1.Event)
			data, _ := stableJSON(e.GetData())
			fmt.Fprintf(out, "%s  %-28s %-20s %s\n", e.GetTimestamp().AsTime().Format(time.RFC3339), e.GetType(), e.GetSource(), compactText(data))
		})
	}
	var followFlag bool
	group.Args = cobra.ArbitraryArgs
	group.Flags().BoolVarP(&followFlag, "follow", "f", false, "print events as they happen (the PATTERNs select them), until interrupted")
	group.Use = "events [--follow [PATTERN...]]"
	group.RunE = func(cmd *cobra.Command, args []string) error {
		if !followFlag {
			return cmd.Help()
		}
		return watch(cmd, args)
	}
	watchCmd := &cobra.Command{Use: "watch [PATTERN...]", Short: "Print events as they happen, until interrupted (as events --follow)",
		Example: "  nexus events watch 'user.*' 'plugin.*'",
		RunE:    func(cmd *cobra.Command, args []string) error { return watch(cmd, args) }}
	var data string
	emit := &cobra.Command{Use: "emit TYPE", Short: "Emit an event", Args: cobra.ExactArgs(1),
		Example: "  nexus events emit user.page_view --data '{\"user_id\": \"user_123\"}'",
		RunE: func(cmd *cobra.Command, args []string) error {
			payload, err := parseObject("data", data)
			if err != nil {
				return err
			}
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Messaging.EmitEvent(cmd.Context(), connect.NewRequest(&pluginv1.EmitEventRequest{Type: args[0], Data: payload})))
			})
		}}
	emit.Flags().StringVar(&data, "data", "", "the payload, a JSON object")
	group.AddCommand(watchCmd, emit)
	return group
}

func servicesCommand(o *apiOptions) *cobra.Command {
	var service, messageType string
	c := &cobra.Command{Use: "services", Short: "Find the plugins that provide a service or handle a message type", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Messaging.ListServices(cmd.Context(), connect.NewRequest(&pluginv1.ListServicesRequest{Service: service, MessageType: messageType})))
			})
		}}
	c.Flags().StringVar(&service, "service", "", "only providers of this service")
	c.Flags().StringVar(&messageType, "message-type", "", "only plugins that handle this message type")
	return c
}

func clusterCommand(o *apiOptions) *cobra.Command {
	return &cobra.Command{Use: "cluster", Short: "List the replicas sharing this server's database", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Cluster.ListReplicas(cmd.Context(), connect.NewRequest(&pluginv1.ListReplicasRequest{})))
			})
		}}
}

func whoamiCommand(o *apiOptions) *cobra.Command {
	return &cobra.Command{Use: "whoami", Short: "Say who the token is (id, name, role, plugin) and what it may call", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(c *nexus.Client, cmd *cobra.Command) (proto.Message, error) {
				return msg(c.Access.WhoAmI(cmd.Context(), connect.NewRequest(&pluginv1.WhoAmIRequest{})))
			})
		}}
}

// compactText is indented JSON on one line.
func compactText(b []byte) string {
	out := make([]byte, 0, len(b))
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case c == '\\' && inString:
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && (c == '\n' || c == ' '):
			continue
		}
		out = append(out, c)
	}
	return string(out)
}
