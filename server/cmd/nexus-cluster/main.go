// Command nexus-cluster runs a Nexus cluster on this machine for a user to try: a PostgreSQL
// server and a redis-server of its own (Debian's packages, started as the tests start them:
// pgtest and redistest, on free loopback ports), and three `nexus serve` replicas on them,
// on 127.0.0.1:8081, 8082 and 8083. `make run-cluster` builds what it needs and runs it.
//
//	nexus-cluster [-nexus bin/nexus] [-dir .nexus-cluster] [-first-port 8081] [-replicas 3]
//	              [-lease-ttl 5s] [-heartbeat-interval 2s] [-repository NAME=URL;key=...]...
//
// The replicas share one database, one Redis, the secrets key and the admin token. The
// working directory (-dir) holds, per replica (a, b, c, ...), its data directory, its log
// (nexus.log) and its pid (pid); and admin-token and env (a shell file exporting NEXUS_A...,
// TOKEN and the servers' addresses). It is emptied at start: the database is new each time.
// PostgreSQL and Redis live in temporary directories of their own, removed at the end.
//
// Ctrl-C (SIGINT) or SIGTERM stops the replicas (SIGTERM, the graceful shutdown), then
// PostgreSQL and Redis. A replica killed meanwhile is reported and not restarted. Every
// process it starts dies with it (Linux's parent-death signal), also when it is killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nexus-cluster:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c, err := startCluster(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "nexus-cluster:", err)
		return 1
	}
	c.printSummary(stdout)
	<-ctx.Done()
	fmt.Fprintln(stderr, "nexus-cluster: stopping the replicas, then PostgreSQL and Redis")
	if err := c.Close(); err != nil {
		fmt.Fprintln(stderr, "nexus-cluster:", err)
		return 1
	}
	fmt.Fprintln(stderr, "nexus-cluster: stopped; logs kept in", c.dir)
	return 0
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := config{}
	fs := flag.NewFlagSet("nexus-cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.nexus, "nexus", "bin/nexus", "the nexus binary the replicas run")
	fs.StringVar(&cfg.dir, "dir", ".nexus-cluster", "working directory: the replicas' data directories, logs, pids, admin token (emptied at start)")
	fs.IntVar(&cfg.replicas, "replicas", 3, "how many replicas to run (1 to 26; ids a, b, c, ...)")
	fs.IntVar(&cfg.firstPort, "first-port", 8081, "the first replica listens on 127.0.0.1:first-port, the next on first-port+1, ...; 0: free ports")
	fs.DurationVar(&cfg.leaseTTL, "lease-ttl", 5*time.Second, "the replicas' --lease-ttl: a killed replica's plugins start elsewhere within it plus their start time (nexus serve's default is 10s)")
	fs.DurationVar(&cfg.heartbeat, "heartbeat-interval", 2*time.Second, "the replicas' --heartbeat-interval: a killed replica is listed as down after three of them (nexus serve's default is 5s)")
	fs.Func("repository", "a plugin repository for every replica, as nexus serve --repository takes it (repeatable)", func(v string) error {
		cfg.repositories = append(cfg.repositories, v)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: nexus-cluster [flags]\n\nRuns PostgreSQL, Redis and nexus serve replicas on loopback ports until Ctrl-C.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.replicas < 1 || cfg.replicas > 26 {
		return cfg, fmt.Errorf("-replicas %d: want 1 to 26", cfg.replicas)
	}
	if cfg.firstPort < 0 || cfg.firstPort+cfg.replicas-1 > 65535 {
		return cfg, fmt.Errorf("-first-port %d: the ports do not fit below 65536", cfg.firstPort)
	}
	if cfg.leaseTTL <= 0 || cfg.heartbeat <= 0 {
		return cfg, errors.New("-lease-ttl and -heartbeat-interval must be positive")
	}
	return cfg, nil
}
