package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

const packageUsage = `Usage: nexus package DIR [-o FILE]

Checks DIR/plugin.json and builds a plugin package (.tar.gz) from DIR, deterministically.
The default output is ID-VERSION.tar.gz in the current directory.
`

func packageCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nexus package", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, packageUsage); fs.PrintDefaults() }
	out := fs.String("o", "", "output file")
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 1 {
		return fmt.Errorf("nexus package takes one directory\n\n%s", packageUsage)
	}
	var dir string
	if len(positional) == 1 {
		dir = positional[0]
	}
	if dir == "" {
		return fmt.Errorf("missing DIR\n\n%s", packageUsage)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "plugin.json"))
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		var de *errs.Error
		if errors.As(err, &de) {
			for _, f := range de.Fields {
				fmt.Fprintf(stderr, "  %s: %s\n", f.Field, f.Description)
			}
		}
		return err
	}
	if !m.External {
		st, err := os.Stat(filepath.Join(dir, filepath.FromSlash(m.EntryPoint)))
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("entry point %s is not an executable file in %s", m.EntryPoint, dir)
		}
	}
	if *out == "" {
		*out = fmt.Sprintf("%s-%s.tar.gz", m.ID, m.Version)
	}
	var buf bytes.Buffer
	if err := archive.Create(&buf, dir); err != nil {
		return err
	}
	tmp := *out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s (%s %s, %d bytes)\n", *out, m.ID, m.Version, buf.Len())
	return nil
}
