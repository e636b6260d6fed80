package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"

	nexus "github.com/nexus-platform/nexus/clients/go"
	"github.com/nexus-platform/nexus/pluginhost"
)

// The command line is built with cobra (spf13/cobra): one command per operation of the API,
// each with its own flags and help, shell completion for bash, zsh and fish, and the usual
// conventions (flags before or after arguments, --help everywhere) without hand-written
// parsing. The commands that predate it and keep flags of their own (serve, whose flags,
// environment and YAML file have their precedence; token, audit, repo, package) are mounted
// as they are.

// newRoot builds the nexus command.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "nexus",
		Short: "The Nexus plugin platform: run the server, and administer it",
		Long: `Nexus runs and administers plugins. 'nexus serve' runs the server; the API commands
(plugins, repos, events, services, cluster, whoami) call a running server at --url (NEXUS_URL,
default http://127.0.0.1:8080) with --token (NEXUS_TOKEN, or the admin-token file of
--data-dir: NEXUS_DATA_DIR or .nexus-data).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       pluginhost.Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("nexus {{.Version}}\n")
	mounted := func(use, short string, fn func(args []string) error) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, DisableFlagParsing: true,
			RunE: func(_ *cobra.Command, args []string) error { return fn(args) }}
	}
	root.AddCommand(
		mounted("serve", "Run the server (nexus serve --help lists every setting)", func(a []string) error { return serve(a, stderr) }),
		mounted("token", "Manage access tokens in the server's database: create, list, revoke", func(a []string) error { return tokenCommand(a, stdout, stderr) }),
		mounted("audit", "Print the audit log from the server's database", func(a []string) error { return auditCommand(a, stdout, stderr) }),
		mounted("repo", "Make a plugin repository: keygen, index, serve", func(a []string) error { return repoCommand(a, stdout, stderr) }),
		mounted("package", "Check a plugin directory and build its package (.tar.gz)", func(a []string) error { return packageCommand(a, stdout, stderr) }),
		&cobra.Command{Use: "version", Short: "Print the version", Args: cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "nexus", pluginhost.Version) }},
	)
	api := &apiOptions{stdout: stdout}
	for _, c := range []*cobra.Command{pluginsCommands(api), reposCommands(api), eventsCommands(api), servicesCommand(api), clusterCommand(api), whoamiCommand(api)} {
		api.register(c)
		if c.HasSubCommands() && c.RunE == nil {
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usageError{fmt.Errorf("unknown command %q for %q (%s --help lists them)", args[0], cmd.CommandPath(), cmd.CommandPath())}
				}
				return cmd.Help()
			}
		}
		root.AddCommand(c)
	}
	markRunErrors(root)
	return root
}

// runError is an error of a command that ran (the API refused the call, a file could not be
// read, ...): the process exits 1. What cobra refuses before a command runs (an unknown
// command or flag, a wrong number of arguments, a missing required flag) exits 2, as does
// usageError.
type runError struct{ error }

func (e runError) Unwrap() error { return e.error }

// usageError is a command line a command itself refuses (an unknown subcommand).
type usageError struct{ error }

// markRunErrors wraps the errors of every command's RunE in runError, except usageError.
func markRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := run(cmd, args)
			var usage usageError
			if err == nil || errors.As(err, &usage) {
				return err
			}
			return runError{err}
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// apiOptions are the flags of every command that calls the API.
type apiOptions struct {
	stdout  io.Writer
	url     string
	token   string
	dataDir string
	output  string
	timeout time.Duration
}

func (o *apiOptions) register(c *cobra.Command) {
	f := c.PersistentFlags()
	f.StringVar(&o.url, "url", envFirst("http://127.0.0.1:8080", "NEXUS_URL"), "the server's URL [env NEXUS_URL]")
	f.StringVar(&o.token, "token", "", "a bearer token [env NEXUS_TOKEN; default: the admin-token file of --data-dir]")
	f.StringVar(&o.dataDir, "data-dir", envFirst(".nexus-data", "NEXUS_DATA_DIR"), "the data directory whose admin-token is used when no token is given [env NEXUS_DATA_DIR]")
	f.StringVarP(&o.output, "output", "o", "", "output format: table, json or yaml [default: table on a terminal, json otherwise]")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long a call may take (not --follow)")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
}

// client returns an API client with the token from the flags, the environment or the data
// directory.
func (o *apiOptions) client() *nexus.Client {
	token := o.token
	if token == "" {
		token = os.Getenv("NEXUS_TOKEN")
	}
	if token == "" {
		if b, err := os.ReadFile(filepath.Join(o.dataDir, "admin-token")); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	return nexus.New(o.url, nexus.WithToken(token))
}

// ctx bounds one call.
func (o *apiOptions) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), o.timeout)
}

// format is the output format in effect.
func (o *apiOptions) format() (string, error) {
	switch o.output {
	case "":
		if isTerminal(o.stdout) {
			return "table", nil
		}
		return "json", nil
	case "table", "json", "yaml":
		return o.output, nil
	}
	return "", fmt.Errorf("--output %q: want table, json or yaml", o.output)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func envFirst(def string, keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return def
}

// print writes an answer in the output format.
func (o *apiOptions) print(m proto.Message) error {
	format, err := o.format()
	if err != nil {
		return err
	}
	switch format {
	case "json":
		b, err := stableJSON(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(o.stdout, string(b))
		return err
	case "yaml":
		b, err := stableJSON(m)
		if err != nil {
			return err
		}
		var node yaml.Node // JSON is YAML: the node keeps the fields' order
		if err := yaml.Unmarshal(b, &node); err != nil {
			return err
		}
		blockStyle(&node)
		out, err := yaml.Marshal(&node)
		if err != nil {
			return err
		}
		_, err = o.stdout.Write(out)
		return err
	}
	return printTable(o.stdout, m)
}

// blockStyle turns the flow style a JSON document is read with into YAML's block style.
func blockStyle(n *yaml.Node) {
	n.Style = 0 // plain where YAML reads it back the same, quoted otherwise
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// stableJSON is m as protojson writes it (proto names, every field), indented the same way
// every time (protojson varies its spacing on purpose).
func stableJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var compact, pretty bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return nil, err
	}
	if err := json.Indent(&pretty, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	return pretty.Bytes(), nil
}

// tableColumns are the columns of the list tables, by message; other messages show their
// first scalar fields.
var tableColumns = map[protoreflect.FullName][]string{
	"nexus.plugin.v1.PluginSummary":   {"id", "version", "status", "health", "enabled", "load_order", "category"},
	"nexus.plugin.v1.LogEntry":        {"timestamp", "level", "message"},
	"nexus.plugin.v1.CatalogPlugin":   {"id", "version", "repository", "rating", "downloads", "category", "description"},
	"nexus.plugin.v1.Repository":      {"name", "enabled", "plugin_count", "last_sync", "last_error", "url"},
	"nexus.plugin.v1.Backup":          {"backup_id", "version", "reason", "created_at", "size_bytes"},
	"nexus.plugin.v1.ServiceProvider": {"plugin_id", "status", "services", "message_types"},
	"nexus.plugin.v1.DeadLetter":      {"id", "kind", "type", "source", "attempts", "reason", "dead_lettered_at"},
	"nexus.plugin.v1.Replica":         {"id", "status", "advertise_url", "version", "last_heartbeat"},
}

// printTable prints a list answer (its first list of messages) as a table, and any other
// answer as `field: value` lines, nested messages one level down.
func printTable(w io.Writer, m proto.Message) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.IsList() && fd.Kind() == protoreflect.MessageKind && r.Has(fd) {
			printRows(tw, fd.Message(), r.Get(fd).List())
			tw.Flush()
			for j := 0; j < fields.Len(); j++ { // what else the answer says (summary, pagination)
				if other := fields.Get(j); other != fd && r.Has(other) && !other.IsList() {
					fmt.Fprintf(w, "%s: %s\n", other.Name(), valueText(other, r.Get(other)))
				}
			}
			return nil
		}
	}
	printFields(tw, r, "")
	return nil
}

func printRows(tw *tabwriter.Writer, md protoreflect.MessageDescriptor, list protoreflect.List) {
	cols := tableColumns[md.FullName()]
	if cols == nil {
		for i := 0; i < md.Fields().Len() && len(cols) < 6; i++ {
			if fd := md.Fields().Get(i); fd.Kind() != protoreflect.MessageKind || isTimestamp(fd) {
				cols = append(cols, string(fd.Name()))
			}
		}
	}
	header := make([]string, len(cols))
	for i, c := range cols {
		header[i] = strings.ToUpper(c)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for i := 0; i < list.Len(); i++ {
		row := list.Get(i).Message()
		cells := make([]string, len(cols))
		for j, c := range cols {
			if fd := md.Fields().ByName(protoreflect.Name(c)); fd != nil && (row.Has(fd) || !fd.HasPresence()) {
				cells[j] = valueText(fd, row.Get(fd))
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if list.Len() == 0 {
		fmt.Fprintln(tw, "(none)")
	}
}

func printFields(tw *tabwriter.Writer, r protoreflect.Message, indent string) {
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !r.Has(fd) {
			continue
		}
		v := r.Get(fd)
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && !isTimestamp(fd) && !isStruct(fd) && indent == "" {
			fmt.Fprintf(tw, "%s%s:\n", indent, fd.Name())
			printFields(tw, v.Message(), indent+"  ")
			continue
		}
		fmt.Fprintf(tw, "%s%s:\t%s\n", indent, fd.Name(), valueText(fd, v))
	}
}

func isTimestamp(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Timestamp"
}

func isStruct(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Struct"
}

// valueText is one value as a table cell: scalars as they are, lists joined with commas,
// times in RFC 3339, anything else as compact JSON.
func valueText(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch {
	case fd.IsList():
		l := v.List()
		parts := make([]string, l.Len())
		for i := range parts {
			parts[i] = scalarText(fd, l.Get(i))
		}
		return strings.Join(parts, ",")
	case fd.IsMap():
		var parts []string
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			parts = append(parts, k.String()+"="+scalarText(fd.MapValue(), mv))
			return true
		})
		sort.Strings(parts)
		return strings.Join(parts, ",")
	}
	return scalarText(fd, v)
}

func scalarText(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName() == "google.protobuf.Timestamp" {
			f := v.Message().Descriptor().Fields()
			sec, nanos := v.Message().Get(f.ByName("seconds")).Int(), v.Message().Get(f.ByName("nanos")).Int()
			if sec == 0 && nanos == 0 {
				return ""
			}
			return time.Unix(sec, nanos).UTC().Format(time.RFC3339)
		}
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(v.Message().Interface())
		if err != nil {
			return "?"
		}
		var compact bytes.Buffer
		if json.Compact(&compact, b) != nil {
			return string(b)
		}
		return compact.String()
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
	}
	return v.String()
}

// apiError formats an API error with its code and the fields it names.
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
	violations := nexus.FieldViolations(err)
	names := make([]string, 0, len(violations))
	for f := range violations {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		fmt.Fprintf(&b, "\n  %s: %s", f, violations[f])
	}
	return errors.New(b.String())
}

// parseObject reads a JSON object flag.
func parseObject(flag, s string) (*structpb.Struct, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("--%s: not a JSON object: %w", flag, err)
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	return st, nil
}

// parseTime reads a time flag: RFC 3339, a date, or a duration before now ("1h").
func parseTime(flag, s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time (2026-12-07T10:00:00Z), a date (2026-12-07) or a duration before now (1h)", flag, s)
}
