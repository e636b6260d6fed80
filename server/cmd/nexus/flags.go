package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"gopkg.in/yaml.v3"
)

// parseInterspersed parses flags that may come before or after the positional arguments,
// and returns the positional arguments (for the commands with flag sets of their own).
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

// outputFlag registers -o and --output (table, json or yaml; table by default, as these
// commands always printed) on a command with a flag set of its own; which names the
// subcommand it applies to, in the help.
func outputFlag(fs *flag.FlagSet, which string) *string {
	help := "output format: table, json or yaml"
	if which != "" {
		help += " (" + which + ")"
	}
	o := fs.String("o", "table", help)
	fs.StringVar(o, "output", "table", help)
	return o
}

// records are rows for a table and the same records for JSON or YAML.
type records struct {
	header []string
	rows   [][]string
	items  []map[string]any
}

func (r *records) add(row []string, item map[string]any) {
	r.rows = append(r.rows, row)
	r.items = append(r.items, item)
}

// print writes the records in format.
func (r *records) print(w io.Writer, format string) error {
	switch format {
	case "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(r.header, "\t"))
		for _, row := range r.rows {
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		return tw.Flush()
	case "json":
		items := r.items
		if items == nil {
			items = []map[string]any{}
		}
		b, err := json.MarshalIndent(items, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(r.items)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("-o %q: want table, json or yaml", format)
}
