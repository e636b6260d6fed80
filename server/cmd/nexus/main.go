// Command nexus is the Nexus plugin platform: `nexus serve` runs the server, and the other
// subcommands administer it.
//
//	nexus serve [flags]                 run the server (see nexus serve --help)
//	nexus token create|list|revoke      manage access tokens in the server's database
//	nexus plugins list|get|install|uninstall|config|permissions
//	                                    call the API of a running server
//	nexus package DIR [-o FILE]         build a plugin package
//	nexus version                       print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/server"
	"github.com/nexus-platform/nexus/server/gcfloor"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: nexus <command> [arguments]

Commands:
  serve      run the server (nexus serve --help lists every setting)
  token      manage access tokens: create, list, revoke (nexus token --help)
  plugins    call a running server: list, get, install, uninstall, config, permissions
  package    check a plugin directory and build its package (.tar.gz)
  audit      print the audit log (nexus audit --help)
  repo       make a plugin repository: keygen, index, serve (nexus repo --help)
  version    print the version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "token", "tokens":
		err = tokenCommand(args[1:], stdout, stderr)
	case "plugins", "plugin":
		err = pluginsCommand(args[1:], stdout, stderr)
	case "repo", "repository":
		err = repoCommand(args[1:], stdout, stderr)
	case "audit":
		err = auditCommand(args[1:], stdout, stderr)
	case "package":
		err = packageCommand(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "nexus", pluginhost.Version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "nexus: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		return 1
	}
	return 0
}

func serve(args []string, stderr io.Writer) error {
	cfg, err := server.ParseConfig(args, os.Getenv, stderr)
	if err != nil {
		return err
	}
	level, _ := cfg.LogLevelValue()
	log := server.NewLogger(stderr, level)
	// go-redis reports its reconnection attempts through a process-wide logger; send them to
	// the server's log at debug level (the bus reports outages itself).
	redis.SetLogger(redisLogger{log})
	if cfg.GCHeapFloorApplies(os.Getenv) {
		defer gcfloor.Start(uint64(cfg.GCHeapFloor))()
		log.Info("garbage collection: heap floor", "bytes", cfg.GCHeapFloor)
	} else if cfg.GCHeapFloor > 0 {
		log.Info("garbage collection: GOGC or GOMEMLIMIT set; no heap floor", "GOGC", os.Getenv("GOGC"), "GOMEMLIMIT", os.Getenv("GOMEMLIMIT"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return server.Run(ctx, cfg, log)
}

// redisLogger routes go-redis's own messages to the server's log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
