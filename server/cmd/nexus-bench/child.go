package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"
)

// childArg is the hidden first argument that runs this binary as one of the children of a
// run: `nexus-bench child ROLE [flags]`.
const childArg = "child"

// The child roles.
const (
	roleRelayEcho      = "relay-echo"      // baseline A: the echo process (a gRPC server)
	roleRelay          = "relay"           // baseline A: the relay process (server and client)
	roleRelayClient    = "relay-client"    // baseline A: the measuring client
	roleRedisResponder = "redis-responder" // baseline B: the responder
	roleRedisRequester = "redis-requester" // baseline B: the measuring requester
	rolePluginEcho     = "plugin-echo"     // host: the bench-echo plugin
	rolePluginSender   = "plugin-sender"   // host: the measuring bench-sender plugin
	roleProtoEcho      = "proto-echo"      // reference C: the echo process (a gRPC server)
	roleProtoRelay     = "proto-relay"     // reference C: the relay process
	roleProtoClient    = "proto-client"    // reference C: the measuring client
	roleReadsBase      = "reads-baseline"  // REST reads: the bare connect-go + vanguard server
	roleFanoutPlugins  = "fanout-plugins"  // fan-out: the emitter and the subscribers
)

// childRole runs one role until ctx ends (servers) or its work is done (clients); out is
// where the role writes its one-line JSON report.
type childRole func(ctx context.Context, args []string, out io.Writer) error

func childRoles() map[string]childRole {
	return map[string]childRole{
		roleRelayEcho:      relayEchoMain,
		roleRelay:          relayMain,
		roleRelayClient:    relayClientMain,
		roleRedisResponder: redisResponderMain,
		roleRedisRequester: redisRequesterMain,
		rolePluginEcho:     pluginEchoMain,
		rolePluginSender:   pluginSenderMain,
		roleProtoEcho:      protoEchoMain,
		roleProtoRelay:     protoRelayMain,
		roleProtoClient:    protoClientMain,
		roleReadsBase:      readsBaseMain,
		roleFanoutPlugins:  fanoutPluginsMain,
		roleIdleConns:      idleConnsMain,
		roleIdlePlugins:    idlePluginsMain,
		roleIdleGRPCServer: idleGRPCServerMain,
		roleIdleStreams:    idleStreamsMain,
	}
}

// runChild runs the role named by args[0]. A role that ends because it was asked to stop
// (SIGTERM, SIGINT) exits 0.
func runChild(args []string, stdout, stderr io.Writer) int {
	roles := childRoles()
	if len(args) == 0 || roles[args[0]] == nil {
		names := make([]string, 0, len(roles))
		for n := range roles {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(stderr, "nexus-bench child: want a role: %v\n", names)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := roles[args[0]](ctx, args[1:], stdout)
	if err != nil && !(errors.Is(err, context.Canceled) && ctx.Err() != nil) {
		fmt.Fprintf(stderr, "nexus-bench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// loadFlags are the method's parameters, passed to every measuring child.
type loadFlags struct {
	payload     int
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	// cpuPIDs (comma-separated name=pid) and cpuRedis (a redis URL) name the scenario's
	// other processes, whose CPU time the throughput phase counts with the measuring
	// process's, named cpuSelf (see scenarioCPU).
	cpuPIDs  string
	cpuRedis string
	cpuSelf  string
}

func (l *loadFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&l.payload, "payload", defaultPayload, "payload bytes")
	fs.DurationVar(&l.duration, "duration", defaultDuration, "each measured phase")
	fs.DurationVar(&l.warmup, "warmup", defaultWarmup, "warm-up")
	fs.IntVar(&l.concurrency, "concurrency", concurrency, "round trips in flight in the throughput phase")
	fs.StringVar(&l.cpuPIDs, "cpu-pids", "", "the scenario's other processes (comma-separated name=pid), for CPU per round trip")
	fs.StringVar(&l.cpuSelf, "cpu-self", "", "this process's name in the CPU per round trip by process")
	fs.StringVar(&l.cpuRedis, "cpu-redis", "", "the scenario's redis-server (URL), for CPU per round trip")
}

// parseChildFlags parses a role's flags; errors go to the returned error, not to stderr.
func parseChildFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return nil
}

// ready is the report of a server child: where it listens, or only that it is ready.
type ready struct {
	Addr string `json:"addr,omitempty"`
}

// writeJSON writes v as one line to out.
func writeJSON(out io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = out.Write(append(b, '\n'))
	return err
}
