package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/repository"
)

const repoUsage = `Usage:
  nexus repo keygen -o KEYFILE            create a signing key (mode 0600); prints the public key
  nexus repo index DIR --key KEYFILE      sign the packages (*.tar.gz) in DIR and write DIR/index.json
                   [--name NAME] [--description TEXT] [--unsigned]
  nexus repo serve DIR [--listen ADDR]    serve DIR's index.json and packages over HTTP

A repository is a folder of plugin packages (nexus package) with a signed index.json.
Servers trust a repository's public key (ed25519:...) to install from it.
`

func repoCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, repoUsage)
		return nil
	}
	fs := flag.NewFlagSet("nexus repo "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "keygen: the private key file to create")
	keyFile := fs.String("key", "", "index: the private key file")
	name := fs.String("name", "", "index: the repository's name")
	description := fs.String("description", "", "index: the repository's description")
	unsigned := fs.Bool("unsigned", false, "index: build without signatures (servers must allow unsigned packages)")
	listen := fs.String("listen", "127.0.0.1:8090", "serve: the address to listen on")
	positional, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	dir := func() (string, error) {
		if len(positional) != 1 {
			return "", fmt.Errorf("nexus repo %s needs the repository directory\n\n%s", args[0], repoUsage)
		}
		return positional[0], nil
	}
	switch args[0] {
	case "keygen":
		if *out == "" {
			return fmt.Errorf("-o KEYFILE is required")
		}
		pub, priv, err := repository.GenerateKey()
		if err != nil {
			return err
		}
		if err := repository.WritePrivateKey(*out, priv); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote the private key to %s (key id %s); trust this public key on servers:\n", *out, pub.KeyID())
		fmt.Fprintln(stdout, pub.String())
	case "index":
		d, err := dir()
		if err != nil {
			return err
		}
		var key repository.PrivateKey
		if !*unsigned {
			if *keyFile == "" {
				return fmt.Errorf("--key KEYFILE is required (or --unsigned)")
			}
			if key, err = repository.ReadPrivateKey(*keyFile); err != nil {
				return err
			}
		}
		idx, err := repository.BuildIndex(d, key, repository.BuildOptions{Name: *name, Description: *description, Unsigned: *unsigned})
		if err != nil {
			var de *errs.Error
			if errors.As(err, &de) {
				for _, f := range de.Fields {
					fmt.Fprintf(stderr, "  %s: %s\n", f.Field, f.Description)
				}
			}
			return err
		}
		if err := repository.WriteIndex(d, idx); err != nil {
			return err
		}
		versions := 0
		for _, p := range idx.Plugins {
			versions += len(p.Versions)
		}
		fmt.Fprintf(stdout, "%s: %d plugins, %d versions\n", filepath.Join(d, repository.IndexFile), len(idx.Plugins), versions)
	case "serve":
		d, err := dir()
		if err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(d, repository.IndexFile)); err != nil {
			return fmt.Errorf("%s has no %s (run nexus repo index first)", d, repository.IndexFile)
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: repository.Handler(d), ReadHeaderTimeout: 10 * time.Second}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		fmt.Fprintf(stderr, "serving %s at http://%s/%s\n", d, ln.Addr(), repository.IndexFile)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	default:
		return fmt.Errorf("unknown repo command %q\n\n%s", args[0], repoUsage)
	}
	return nil
}
