// Command nexus is the Nexus plugin platform: `nexus serve` runs the server, and the other
// subcommands administer it (nexus --help lists them; cli.go builds them).
//
//	nexus serve [flags]                 run the server (see nexus serve --help)
//	nexus plugins|repos|events|services|cluster ...
//	                                    call the API of a running server
//	nexus token create|list|revoke      manage access tokens in the server's database
//	nexus audit                         print the audit log
//	nexus repo keygen|index|serve       make a plugin repository
//	nexus package DIR [-o FILE]         build a plugin package
//	nexus completion bash|zsh|fish      shell completion
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

	"github.com/nexus-platform/nexus/server"
	"github.com/nexus-platform/nexus/server/gcfloor"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nexus:", err)
		var run runError
		if errors.As(err, &run) {
			return 1
		}
		return 2 // cobra refused the command line: unknown command or flag, wrong arguments
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
