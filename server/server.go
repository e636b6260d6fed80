// Package server is the transport edge of Nexus: one listener serving gRPC, gRPC-Web,
// Connect and JSON REST (through vanguard) from one handler set, with authentication,
// authorization, validation, the error table, the REST envelope, metrics, health and
// reflection. It converts between the API's protobuf messages and the domain
// (package pluginhost).
package server

import (
	"buf.build/go/protovalidate"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"
	"connectrpc.com/vanguard"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/cors"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1/pluginhostv1connect"
	"github.com/nexus-platform/nexus/pluginhost"
	"github.com/nexus-platform/nexus/pluginhost/archive"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
	"github.com/nexus-platform/nexus/pluginhost/cluster"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/permission"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/server/console"
	"github.com/nexus-platform/nexus/server/openapi"
)

// Server is a running Nexus server: its store, domain and HTTP handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	host     *pluginhost.Host
	ids      *identity.Service
	registry *prometheus.Registry
	handler  http.Handler
	ready    atomic.Bool
	url      atomic.Value // string: the base URL plugins connect to, set once listening
	health   *grpchealth.StaticChecker
	// advertised is the URL derived from the address listened on (string), set once
	// listening; see advertiseURL.
	advertised atomic.Value
	// cluster is this server's membership of the replicas; set once by newServer.
	cluster *cluster.Membership
	// pluginGRPC serves gRPC plugin streams with grpc-go's transport (see sniff.go).
	pluginGRPC *grpc.Server
	// sockets serves the host to confined plugins over Unix sockets of their own.
	sockets hostSockets
	// watches is cancelled at shutdown, once the plugins are stopped: it ends the event feeds
	// and log tails (see withWatchesEnded), which would otherwise hold the shutdown.
	watches    context.Context
	endWatches context.CancelFunc
	// lock is held from New until Close, and released after the store is closed.
	lock *dataDirLock
}

// baseURL is where plugins reach this server (NEXUS_HOST).
func (s *Server) baseURL() string {
	if u, ok := s.url.Load().(string); ok {
		return u
	}
	return "http://" + s.cfg.Listen
}

// setListenAddr records the URL plugins use, from the address actually listened on. A
// wildcard host becomes loopback: launched plugins run on this machine.
func (s *Server) setListenAddr(addr net.Addr) {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http"
	if s.cfg.TLSCert != "" {
		scheme = "https"
	}
	s.url.Store(scheme + "://" + net.JoinHostPort(host, port))
	s.advertised.Store(s.listenURL(addr.String(), hostnameOrLoopback))
}

// New locks the data directory against a second server, opens it and builds the server.
// Close releases them.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// The data directory holds secrets (the key, the token file, the database), each
	// readable by the owner only. Plugins under uids of their own (root servers) must
	// reach their package and data directories through it: search, but no listing.
	mode := os.FileMode(0o700)
	if os.Geteuid() == 0 && !cfg.NoSandbox {
		mode = 0o711
	}
	if err := os.Chmod(cfg.DataDir, mode); err != nil {
		return nil, fmt.Errorf("secure data dir: %w", err)
	}
	// One server per data directory: a second one would launch every enabled plugin again.
	// With --database-url too: servers sharing a database each have a data directory of
	// their own (their unpacked packages, keys and backups).
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	replica, err := replicaID(cfg)
	if err != nil {
		lock.Close()
		return nil, err
	}
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s, err := newServer(ctx, cfg, log, st, replica)
	if err != nil {
		st.Close()
		lock.Close()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

// openStore opens the store cfg names: PostgreSQL at cfg.DatabaseURL, or the SQLite file
// nexus.db in the data directory (readable by the owner only).
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (store.Store, error) {
	if cfg.DatabaseURL != "" {
		st, err := storepg.Open(ctx, cfg.DatabaseURL, storepg.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("open the database (--database-url): %w", err)
		}
		return st, nil
	}
	dbPath := filepath.Join(cfg.DataDir, storesqlite.FileName)
	st, err := storesqlite.Open(ctx, dbPath)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{dbPath, dbPath + "-wal", dbPath + "-shm"} {
		if err := os.Chmod(f, 0o600); err != nil && !os.IsNotExist(err) {
			st.Close()
			return nil, fmt.Errorf("secure %s: %w", f, err)
		}
	}
	return st, nil
}

func newServer(ctx context.Context, cfg Config, log *slog.Logger, st store.Store, replica string) (*Server, error) {
	key, err := secrets.LoadOrCreateKey(filepath.Join(cfg.DataDir, "secret.key"))
	if err != nil {
		return nil, fmt.Errorf("load the secrets key: %w", err)
	}
	box, err := secrets.New(key)
	if err != nil {
		return nil, err
	}
	limits := archive.DefaultLimits()
	limits.MaxPackageBytes = cfg.MaxPackageBytes
	limits.MaxTotalBytes = cfg.MaxUnpackedBytes
	limits.MaxFileBytes = min(limits.MaxFileBytes, cfg.MaxUnpackedBytes)
	limits.MaxFiles = int(cfg.MaxPackageFiles)
	s := &Server{cfg: cfg, log: log, store: st}
	s.watches, s.endWatches = context.WithCancel(context.Background())
	var confine *pluginhost.Confinement
	if !cfg.NoSandbox {
		first, count, _ := cfg.pluginUIDs()
		confine = &pluginhost.Confinement{FirstUID: first, UIDCount: count, HostSocket: s.sockets.forPlugin,
			MaxProcesses: int(cfg.PluginMaxProcesses), ReadPaths: cfg.PluginReadPaths}
	}
	s.ids = identity.New(st)
	busOpts := bus.Options{ProcessingTimeout: cfg.ProcessingTimeout, MaxAttempts: int(cfg.MaxDeliveryAttempts), MaxInbox: int(cfg.MaxInbox),
		MaxInboxBytes: cfg.MaxInboxBytes}
	var b bus.Bus
	if cfg.RedisURL != "" {
		rb, err := busredis.New(ctx, busredis.Config{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Options: busOpts, Logger: log, Replica: replica})
		if err != nil {
			return nil, fmt.Errorf("connect to redis: %w", err)
		}
		b = rb
	}
	host, err := pluginhost.New(pluginhost.Options{
		Bus: b, BusOptions: busOpts,
		Store: st, DataDir: cfg.DataDir, Secrets: box, Logger: log, Limits: limits, LogRetention: int(cfg.LogRetention),
		Policy:       permission.Policy{Grant: cfg.PermissionGrant, Deny: cfg.PermissionDeny},
		Tokens:       s.ids,
		Repositories: cfg.Repositories,
		Runtime: pluginhost.RuntimeConfig{
			HostURL:         s.baseURL,
			HealthInterval:  cfg.HealthInterval,
			HealthMisses:    int(cfg.HealthMisses),
			CrashLoopCount:  int(cfg.CrashLoopCount),
			CrashLoopWindow: cfg.CrashLoopWindow,
			Confinement:     confine,
			Replica:         replica,
			LeaseTTL:        cfg.LeaseTTL,
		},
	})
	if err != nil {
		if b != nil {
			_ = b.Close()
		}
		return nil, err
	}
	s.cluster, err = cluster.New(cluster.Config{Store: st, ID: replica, AdvertiseURL: s.advertiseURL, Version: pluginhost.Version,
		Interval: cfg.HeartbeatInterval, Instances: host.InstancesConnected, Sessions: host.SessionsConnected, Logger: log})
	if err == nil {
		err = s.checkReplicas(ctx)
	}
	if err != nil {
		host.Shutdown(ctx, time.Second)
		return nil, err
	}
	if err := host.Start(ctx); err != nil {
		host.Shutdown(ctx, time.Second)
		return nil, err
	}
	s.host = host
	generated, err := s.ids.Bootstrap(ctx, cfg.AdminToken, filepath.Join(cfg.DataDir, "admin-token"))
	if err != nil {
		host.Shutdown(ctx, time.Second)
		return nil, fmt.Errorf("bootstrap admin token: %w", err)
	}
	if generated != "" {
		// Printed once, on the first start; the file keeps it for the operator.
		log.Warn("generated the first admin token; it is shown only now and kept in the data directory",
			"admin_token", generated, "file", filepath.Join(cfg.DataDir, "admin-token"))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		// The default Go metrics, and the heap that was live at the end of the last
		// collection (go_gc_heap_live_bytes): unlike go_memstats_heap_alloc_bytes it does
		// not count garbage waiting for the next collection, so it is what the server holds.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), host.MetricsCollector(), host.InboxCollector())
	s.registry = reg
	h, err := s.buildHandler()
	if err != nil {
		return nil, err
	}
	s.handler = h
	s.ready.Store(true)
	return s, nil
}

// Handler is the server's HTTP handler (every protocol and path).
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops any plugin still running, releases the store, then the data directory.
func (s *Server) Close() error {
	s.ready.Store(false)
	s.host.Shutdown(context.Background(), s.cfg.ShutdownTimeout)
	err := s.store.Close()
	s.lock.Close()
	return err
}

// restServiceNames are the services with REST routes (google.api.http rules).
var restServiceNames = []string{
	pluginv1connect.PluginServiceName,
	pluginv1connect.RepositoryServiceName,
	pluginv1connect.MessagingServiceName,
	pluginv1connect.ClusterServiceName,
	pluginv1connect.AccessServiceName,
}

// serviceNames are the gRPC services served, for reflection and health: the REST ones and
// the plugin stream.
var serviceNames = append(slices.Clone(restServiceNames), pluginhostv1connect.PluginHostServiceName)

// openAPIPath serves the OpenAPI 3 document of the REST API (server/openapi), to anyone.
const openAPIPath = "/openapi.json"

func (s *Server) buildHandler() (http.Handler, error) {
	observe := &observeInterceptor{log: s.log, metrics: newRPCMetrics(s.registry), audit: s.host}
	interceptors := connect.WithInterceptors(
		observe,
		&authInterceptor{ids: s.ids},
		validate.NewInterceptor(),
	)
	opts := []connect.HandlerOption{interceptors, connect.WithReadMaxBytes(int(s.cfg.MaxRequestBytes))}
	var services []*vanguard.Service
	add := func(path string, h http.Handler) {
		services = append(services, vanguard.NewService(path, h,
			vanguard.WithTargetCodecs(vanguard.CodecProto),
			vanguard.WithMaxMessageBufferBytes(uint32(min(s.cfg.MaxRequestBytes, 1<<31))),
		))
	}
	endpoints := newEndpointMetrics(s.registry)
	add(pluginv1connect.NewPluginServiceHandler(&pluginService{plugins: s.host, installer: s.host.Installer(), runtime: s.host.Runtime(), cluster: s.cluster, endpoints: endpoints}, opts...))
	add(pluginv1connect.NewRepositoryServiceHandler(&repositoryService{catalog: s.host.Catalog()}, opts...))
	add(pluginv1connect.NewMessagingServiceHandler(&messagingService{messages: s.host.Router()}, opts...))
	add(pluginv1connect.NewClusterServiceHandler(&clusterService{cluster: s.cluster}, opts...))
	add(pluginv1connect.NewAccessServiceHandler(accessService{}, opts...))
	// The plugin stream validates each frame itself (see frameValidator): a bad request frame
	// fails that request, not the whole session.
	streamInterceptors := connect.WithInterceptors(
		observe,
		&authInterceptor{ids: s.ids},
	)
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("build validator: %w", err)
	}
	// Plugin streams carry many small frames on loopback or a LAN: compressing each one
	// cost 40% of the host's CPU per routed message (measured with nexus-bench), so the
	// plugin stream never compresses.
	streamOpts := []connect.HandlerOption{streamInterceptors, connect.WithReadMaxBytes(int(s.cfg.MaxMessageBytes)),
		connect.WithCompression("gzip", nil, nil)}
	add(pluginhostv1connect.NewPluginHostServiceHandler(pluginHostService{sessions: s.host.Sessions(), validator: validator}, streamOpts...))
	s.pluginGRPC = s.newPluginGRPC(validator)
	transcoder, err := vanguard.NewTranscoder(services, vanguard.WithCodec(func(res vanguard.TypeResolver) vanguard.Codec {
		return &vanguard.JSONCodec{
			MarshalOptions:   protojson.MarshalOptions{Resolver: res, UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{Resolver: res},
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("build transcoder: %w", err)
	}
	mux := http.NewServeMux()
	reflector := grpcreflect.NewStaticReflector(serviceNames...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	s.health = grpchealth.NewStaticChecker(serviceNames...)
	mux.Handle(grpchealth.NewHandler(s.health))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("shutting down\n"))
			return
		}
		if err := s.host.Ready(ctx); err != nil {
			// The reason only: the probe is open to anyone, the details go to the log.
			why := "store unavailable"
			if errors.Is(err, pluginhost.ErrBusUnavailable) {
				why = "bus unavailable"
			}
			s.log.Debug("not ready", "error", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(why + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET "+openAPIPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.Document)
	})
	// The web console, and the server's root sending a browser to it.
	mux.Handle(console.Prefix, console.Handler())
	mux.Handle("GET /{$}", http.RedirectHandler(console.Prefix, http.StatusFound))
	mux.HandleFunc("GET "+eventsStreamPath, s.eventsStream)
	mux.HandleFunc(logsStreamPattern, s.logsStream)
	mux.Handle("/", transcoder)
	limits := bodyLimits{unauthenticated: unauthenticatedBodyBytes, message: s.cfg.MaxMessageBytes, upload: s.cfg.MaxRequestBytes}
	query, err := newQueryParams(restServiceNames)
	if err != nil {
		return nil, fmt.Errorf("read the REST routes: %w", err)
	}
	api := withAuthentication(s.ids, limits, withRESTEnvelope(s.cfg.MaxRequestBytes, query, withConnectErrors(mux)))
	api = withWatchesEnded(s.watches, api)
	var h http.Handler = withRequestContext(s.log, withPluginEndpoints(s.host.Router(), s.host.Sessions(), s.ids, s.host.Granted,
		endpoints, api))
	if len(s.cfg.CORSOrigins) > 0 {
		h = withCORS(s.cfg.CORSOrigins, h)
	}
	return h, nil
}

// Serve serves on ln until ctx is done, then shuts down gracefully within the configured
// timeout. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           s.handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	// gRPC plugin streams go to grpc-go's transport (see sniff.go); with TLS every
	// connection goes to net/http, whose Connect handler serves plugin streams too.
	sniff := func(l net.Listener) net.Listener {
		sl := newSniffListener(l, isGRPCPluginStream)
		go func() { _ = s.pluginGRPC.Serve(sl.plugins) }()
		return sl
	}
	defer s.pluginGRPC.Stop()
	if s.cfg.TLSCert == "" {
		ln = sniff(ln)
	}
	// Confined plugins' sockets are plaintext whatever the main listener: they are local.
	s.sockets.start(func(l net.Listener) { go func() { _ = srv.Serve(sniff(l)) }() })
	defer s.sockets.close()
	if s.cfg.TLSCert != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		go func() { errc <- srv.ServeTLS(ln, s.cfg.TLSCert, s.cfg.TLSKey) }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	s.setListenAddr(ln.Addr())
	storeName := "sqlite"
	if s.cfg.DatabaseURL != "" {
		storeName = "postgresql"
	}
	busName := "memory"
	if s.cfg.RedisURL != "" {
		busName = "redis"
	}
	s.log.Info("nexus listening", "addr", ln.Addr().String(), "version", pluginhost.Version, "data_dir", s.cfg.DataDir, "store", storeName, "bus", busName,
		"replica", s.cluster.ID(), "advertise_url", s.advertiseURL())
	// The record goes when Serve returns (deferred: after the plugins and the listener
	// stopped), so that the others list this server while it still holds instances.
	leave := s.joinCluster(ctx)
	defer leave()
	startCtx, stopStarting := context.WithCancel(ctx)
	started := make(chan struct{})
	go func() {
		defer close(started)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.host.Catalog().RunSync(startCtx, s.cfg.RepositorySyncInterval)
		}()
		s.host.StartEnabled(startCtx)
		wg.Wait()
	}()
	select {
	case err := <-errc:
		stopStarting()
		<-started
		return err
	case <-ctx.Done():
	}
	s.ready.Store(false)
	for _, name := range serviceNames {
		s.health.SetStatus(name, grpchealth.StatusNotServing)
	}
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	stopStarting()
	<-started
	// Plugins are stopped while their streams still work, in reverse load order; watchers
	// see their last events, and then their feeds end.
	s.host.Shutdown(context.Background(), s.cfg.ShutdownTimeout)
	s.endWatches()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// Identity returns the token service (for the admin CLI and tests).
func (s *Server) Identity() *identity.Service { return s.ids }

// Run opens the server, listens on cfg.Listen (writing the address to cfg.AddrFile when set)
// and serves until ctx is done, then shuts down gracefully.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	srv, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if cfg.AddrFile != "" {
		if err := os.WriteFile(cfg.AddrFile, []byte(ln.Addr().String()+"\n"), 0o600); err != nil {
			ln.Close()
			return fmt.Errorf("write addr file: %w", err)
		}
	}
	return srv.Serve(ctx, ln)
}

// withCORS lets the given browser origins call every protocol of the API (preflight
// requests are answered before authentication, as browsers send them without credentials).
func withCORS(origins []string, next http.Handler) http.Handler {
	c := cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: append(connectcors.AllowedMethods(), http.MethodPut, http.MethodDelete),
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization", "X-Request-Id"),
		ExposedHeaders: append(connectcors.ExposedHeaders(), "X-Request-Id"),
		MaxAge:         7200,
	})
	return c.Handler(next)
}
