package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// The idle scenario's transport baseline: what grpc-go alone spends on an idle plugin
// stream. A server process of its own (GOGC=10, as the host's phases) serves one
// bidirectional stream method with the host's plugin-stream server options
// (server/plugingrpc.go: fixed 4 MiB flow-control windows, the SDK's keepalive pings
// allowed); its handler answers each frame with an empty one and otherwise waits in
// RecvMsg, as a session waits for its plugin's next frame. The client opens idleSessions
// connections with the SDK's dial options, one stream each, sends a hello frame and reads
// the answer. Nothing of Nexus is there: no authentication, session, health checks,
// instance record or bus consumer. The server reports its Go memory on /metrics with the
// host's collector, so that the figure is read as the host's is.

const (
	roleIdleGRPCServer = "idle-grpc-server" // the baseline's grpc-go server
	roleIdleStreams    = "idle-streams"     // the baseline's client: idle streams to it

	// idleStreamMethod is the baseline's stream method.
	idleStreamMethod = "/nexusbench.IdleStream/Connect"
	// idleWindowBytes is the flow-control window of the host's plugin server and of the
	// SDK (server/plugingrpc.go, clients/go/plugin/transport_grpc.go).
	idleWindowBytes = 4 << 20
)

// idleGRPCReady is the baseline server's report: its gRPC address and metrics URL.
type idleGRPCReady struct {
	Addr    string `json:"addr"`
	Metrics string `json:"metrics"`
}

// idleGRPCServerMain is the baseline's server process.
func idleGRPCServerMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(roleIdleGRPCServer, flag.ContinueOnError)
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	gs := grpc.NewServer(
		grpc.InitialWindowSize(idleWindowBytes),
		grpc.InitialConnWindowSize(idleWindowBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "nexusbench.IdleStream",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "Connect", ServerStreams: true, ClientStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				for {
					if err := ss.RecvMsg(&pluginhostv1.ConnectRequest{}); err != nil {
						return err
					}
					if err := ss.SendMsg(&pluginhostv1.ConnectResponse{}); err != nil {
						return err
					}
				}
			}}},
		Metadata: "nexus-bench (no proto file)",
	}, struct{}{})
	reg := prometheus.NewRegistry()
	// As the host's registry (server/server.go), for the figures settledMemory reads.
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})))
	hs := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: readyTimeout}

	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = gl.Close()
		return err
	}
	served := make(chan error, 2)
	go func() { served <- gs.Serve(gl) }()
	go func() { served <- hs.Serve(ml) }()
	defer gs.Stop()
	defer hs.Close()
	if err := writeJSON(out, idleGRPCReady{Addr: gl.Addr().String(), Metrics: "http://" + ml.Addr().String() + "/metrics"}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
}

// idleStreamsMain is the baseline's client: n connections to -addr, a stream each with
// one hello frame answered; then it says ready and holds them until it is stopped.
func idleStreamsMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(roleIdleStreams, flag.ContinueOnError)
	addr := fs.String("addr", "", "the baseline server's gRPC address")
	n := fs.Int("n", idleSessions, "streams (a connection each)")
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	desc := &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true}
	for i := 0; i < *n; i++ {
		conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(idleWindowBytes), grpc.WithInitialConnWindowSize(idleWindowBytes))
		if err != nil {
			return err
		}
		defer conn.Close()
		cs, err := conn.NewStream(ctx, desc, idleStreamMethod)
		if err == nil {
			err = cs.SendMsg(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
				PluginId: idlePluginID, InstanceId: "idle-" + strconv.Itoa(i), Version: "1.0.0"}}})
		}
		if err == nil {
			err = cs.RecvMsg(&pluginhostv1.ConnectResponse{})
		}
		if err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
	}
	if err := writeJSON(out, ready{}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// idleGRPCPhase runs the baseline: its server, then its client, and measures what the
// client's streams cost the server.
func (b *bench) idleGRPCPhase(ctx context.Context, ps *procs, name string) (Measurement, error) {
	cmd := b.selfCmd(roleIdleGRPCServer)
	cmd.Env = append(cmd.Env, "GOGC=10")
	srv, err := ps.start(roleIdleGRPCServer, cmd, stopGrace)
	if err != nil {
		return Measurement{}, err
	}
	defer srv.stop()
	var r idleGRPCReady
	if err := srv.readJSON(ctx, readyTimeout, &r); err != nil {
		return Measurement{}, err
	}
	if r.Addr == "" || r.Metrics == "" {
		return Measurement{}, errors.New(roleIdleGRPCServer + ": no address in its report")
	}
	client := b.selfCmd(roleIdleStreams, "-addr", r.Addr, "-n", strconv.Itoa(idleSessions))
	return idlePhase(ctx, ps, name, client, r.Metrics, srv.cmd.Process.Pid)
}
