package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	nexus "github.com/nexus-platform/nexus/clients/go"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// Run runs plugin p until the host asks it to stop, ctx is done, or it cannot go on. It
// connects to the host named by NEXUS_HOST with NEXUS_PLUGIN_TOKEN as NEXUS_PLUGIN_ID (or
// what the options say), opens a gRPC stream (with grpc-go's client, or connect-go's over
// the client of WithHTTPClient), says hello, and serves the host's requests with p's
// handlers. When the stream breaks (including a dead connection found by HTTP/2 pings, see
// WithKeepalive), Run reconnects with exponential backoff and jitter, and says hello again.
//
// Run returns nil after the host's shutdown request has been honoured, and nil when ctx is
// done (after closing the stream cleanly), so that main can exit 0 in both cases. It returns
// an error when the options or environment are incomplete, when the host refuses the
// plugin (a bad token, a permission denied: these are never retried; nexus.ErrorCode tells
// which), or when OnStart fails.
func Run(ctx context.Context, p Plugin, opts ...Option) error {
	o, err := resolve(os.Getenv, opts)
	if err != nil {
		return err
	}
	t, err := newTransport(&o)
	if err != nil {
		return err
	}
	return newRunner(p, &o, t).run(ctx)
}

// runner is the state of one Run.
type runner struct {
	// These fields are assigned once, in newRunner and at the start of run.
	p         Plugin
	o         *options
	log       *slog.Logger
	transport transport // opens the streams; closed when Run ends
	session   *Session
	seen      *dedupe
	sem       chan struct{} // one token per running delivery handler
	idle      chan func()   // workers waiting for a job take them here (see spawn)
	configs   chan configJob
	started   chan struct{} // closed once OnStart has succeeded (or there is none)
	life      context.Context
	// lifeEnded is when life ended; nil until then (see handlerContext).
	lifeEnded atomic.Pointer[time.Time]
	stopLife  context.CancelFunc

	// welcomed is read and written only by the goroutine running Run.
	welcomed bool

	// fatal is closed, once, when the plugin cannot go on; fatalErr is written before.
	fatal     chan struct{}
	fatalOnce sync.Once
	fatalErr  error

	// mu guards draining, and orders deliveries.Add before deliveries.Wait: once draining is
	// set no delivery is added.
	mu         sync.Mutex
	draining   bool
	deliveries sync.WaitGroup
	// control tracks OnStart, health checks and the configuration goroutine. It is waited
	// for only after every connection is closed, when nothing adds to it any more.
	control sync.WaitGroup
}

// configJob is a configuration change to hand to OnConfigChange. conn is where the
// config_ack goes; nil for a change found in a welcome, which is not acknowledged.
type configJob struct {
	conn   *conn
	change *pluginhostv1.ConfigChanged
}

// result is how one connection ended.
type result struct {
	// done stops Run, with err; otherwise err is why the connection was lost.
	done     bool
	err      error
	welcomed bool
}

// newRunner returns the runner of p, which owns t from then on.
func newRunner(p Plugin, o *options, t transport) *runner {
	return &runner{
		p:         p,
		o:         o,
		log:       o.logger,
		transport: t,
		session:   newSession(o, p.Subscriptions),
		seen:      newDedupe(o.dedupeSize),
		sem:       make(chan struct{}, o.concurrency),
		idle:      make(chan func()),
		configs:   make(chan configJob, configQueue),
		started:   make(chan struct{}),
		fatal:     make(chan struct{}),
	}
}

func (r *runner) run(ctx context.Context) error {
	r.life, r.stopLife = context.WithCancel(context.WithValue(ctx, sessionKey{}, r.session))
	context.AfterFunc(r.life, func() {
		now := time.Now()
		r.lifeEnded.Store(&now)
	})
	r.control.Add(1)
	go r.configLoop()
	err := r.loop(ctx)
	r.finish()
	return err
}

// loop connects, serves, and reconnects until Run should return.
func (r *runner) loop(ctx context.Context) error {
	bo := backoff{initial: r.o.backoffInitial, max: r.o.backoffMax}
	for {
		res := r.connectOnce(ctx)
		if res.done {
			return res.err
		}
		if res.welcomed {
			bo.reset()
		}
		delay := bo.next()
		r.log.Warn("plugin: not connected to the host; retrying", "error", res.err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.fatal:
			t.Stop()
			return r.fatalErr
		case <-t.C:
		}
	}
}

// connectOnce opens a stream, says hello, and serves the session until it ends.
func (r *runner) connectOnce(ctx context.Context) result {
	if ctx.Err() != nil {
		return result{done: true}
	}
	c, w, err := r.handshake(ctx)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return result{done: true}
		case isFatal(err):
			return result{done: true, err: fmt.Errorf("plugin: the host refused the plugin: %w", err)}
		default:
			return result{err: err}
		}
	}
	c.processingTimeout = time.Duration(w.GetProcessingTimeoutSeconds()) * time.Second
	r.welcome(c, w)
	c.wg.Add(1)
	go r.receive(c)
	return r.serve(ctx, c)
}

// handshake opens a stream, sends hello and waits for the welcome, all within the
// handshake timeout. It returns the open connection, or an error once the stream is
// closed.
func (r *runner) handshake(ctx context.Context) (*conn, *pluginhostv1.Welcome, error) {
	// The stream outlives ctx (the session closes it cleanly when ctx ends), but until the
	// welcome, ctx's end and the timeout abort it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	var timedOut atomic.Bool
	timer := time.AfterFunc(r.o.handshakeTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	defer timer.Stop()
	s, err := r.transport.open(sctx)
	if err != nil {
		cancel()
		if timedOut.Load() {
			return nil, nil, fmt.Errorf("plugin: cannot reach the host within %s: %w", r.o.handshakeTimeout, err)
		}
		return nil, nil, err
	}
	c := newConn(sctx, cancel, s, r.log)
	w, err := r.greet(ctx, c)
	if err != nil {
		c.close(false, 0)
		if timedOut.Load() {
			return nil, nil, fmt.Errorf("plugin: no welcome from the host within %s", r.o.handshakeTimeout)
		}
		return nil, nil, err
	}
	return c, w, nil
}

// greet sends hello on c and returns the host's welcome.
func (r *runner) greet(ctx context.Context, c *conn) (*pluginhostv1.Welcome, error) {
	// A host that refuses the call (a bad token) may end the stream before the hello is
	// written: the write then fails, and the stream's status, read below, says why.
	if err := c.send(ctx, r.hello()); err != nil && !errors.Is(err, errConnClosed) {
		return nil, err
	}
	res, err := c.stream.Receive()
	if err != nil {
		return nil, err
	}
	w := res.GetWelcome()
	if w == nil {
		return nil, fmt.Errorf("plugin: the host's first frame is %T, not a welcome", res.GetFrame())
	}
	return w, nil
}

func (r *runner) hello() *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
		PluginId:      r.o.pluginID,
		InstanceId:    r.o.instanceID,
		Version:       cleanString(r.p.Version, 128),
		Sdk:           "nexus-go/" + SDKVersion,
		Services:      r.p.Services,
		MessageTypes:  r.p.MessageTypes,
		Subscriptions: r.session.helloSubscriptions(),
	}}}
}

// welcome takes in a welcome: the session's facts, its configuration, and on the first one
// OnStart.
func (r *runner) welcome(c *conn, w *pluginhostv1.Welcome) {
	r.session.welcome(w)
	cfg := w.GetConfig()
	if cfg == nil {
		cfg = &structpb.Struct{}
	}
	if !r.welcomed {
		r.session.config.Store(cfg)
	} else if old := r.session.config.Load(); !proto.Equal(old, cfg) {
		// The configuration changed while the plugin was away: it goes through
		// OnConfigChange like any change, without an acknowledgement.
		job := configJob{change: &pluginhostv1.ConfigChanged{Config: cfg, UpdatedFields: changedFields(old, cfg)}}
		select {
		case r.configs <- job:
		case <-r.life.Done():
		}
	}
	r.session.attach(c)
	if !r.welcomed {
		r.welcomed = true
		r.start()
	}
}

// start runs OnStart, and opens the gate for deliveries once it has succeeded.
func (r *runner) start() {
	if r.p.OnStart == nil {
		close(r.started)
		return
	}
	r.control.Add(1)
	go func() {
		defer r.control.Done()
		if err := r.protect("OnStart", func() error { return r.p.OnStart(r.life, r.session) }); err != nil {
			r.fail(fmt.Errorf("plugin: OnStart: %w", err))
			return
		}
		close(r.started)
	}()
}

// serve waits for the end of a welcomed connection.
func (r *runner) serve(ctx context.Context, c *conn) result {
	select {
	case <-ctx.Done():
		r.stop(c)
		return result{done: true}
	case <-r.fatal:
		r.stop(c)
		return result{done: true, err: r.fatalErr}
	case sd := <-c.shutdown:
		r.shutdown(ctx, c, sd)
		return result{done: true}
	case <-c.recvDone:
		r.session.detach(c)
		c.close(false, 0)
		err := c.recvErr
		if errors.Is(err, io.EOF) {
			err = errors.New("plugin: the host ended the stream")
		}
		return result{welcomed: true, err: err}
	}
}

// stop ends the session when Run's context is done or the plugin failed: deliveries in
// flight get a short time to finish (their context is canceled), then what they sent is
// flushed and the stream closed.
func (r *runner) stop(c *conn) {
	r.setDraining()
	r.stopLife()
	if !waitTimeout(&r.deliveries, closeTimeout) {
		r.log.Warn("plugin: delivery handlers still running after their context was canceled")
	}
	r.session.detach(c)
	c.close(true, closeTimeout)
}

// shutdown honours the host's shutdown request: no new deliveries, the ones in flight
// finish, OnShutdown runs, the stream is closed; all within the grace period.
func (r *runner) shutdown(ctx context.Context, c *conn, sd *pluginhostv1.Shutdown) {
	grace, margin := shutdownGrace(sd.GetTimeoutSeconds())
	r.log.Info("plugin: shutdown requested", "reason", sd.GetReason(), "grace", grace)
	sctx, cancel := context.WithTimeout(context.WithValue(ctx, sessionKey{}, r.session), grace)
	defer cancel()
	r.setDraining()
	if !waitContext(sctx, &r.deliveries) {
		r.log.Warn("plugin: delivery handlers still running at the end of the grace period")
		r.stopLife()
	}
	if r.p.OnShutdown != nil {
		_ = r.protect("OnShutdown", func() error {
			r.p.OnShutdown(sctx, sd.GetReason())
			return nil
		})
	}
	r.stopLife()
	r.session.detach(c)
	c.close(true, max(margin, 250*time.Millisecond))
}

// finish waits for the handlers still running when Run is about to return.
func (r *runner) finish() {
	r.setDraining()
	r.session.stop()
	r.stopLife()
	if !waitTimeout(&r.deliveries, closeTimeout) || !waitTimeout(&r.control, closeTimeout) {
		r.log.Warn("plugin: handlers still running as Run returns; they ignore their context")
	}
	r.transport.close()
}

func (r *runner) setDraining() {
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
}

func (r *runner) isDraining() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.draining
}

func (r *runner) fail(err error) {
	r.fatalOnce.Do(func() {
		r.fatalErr = err
		close(r.fatal)
	})
}

// errHandlerPanicked is what a panicking handler is taken to have returned. Its text may
// reach other plugins, so the panic itself is only logged.
var errHandlerPanicked = errors.New("plugin: internal error in the plugin")

// protect calls fn, turning a panic into errHandlerPanicked.
func (r *runner) protect(name string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("plugin: handler panicked", "handler", name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = errHandlerPanicked
		}
	}()
	return fn()
}

// isFatal reports whether the host refused the plugin in a way retrying cannot fix.
func isFatal(err error) bool {
	switch nexus.ErrorCode(err) {
	case "UNAUTHENTICATED", "PLUGIN_PERMISSION_DENIED", "PLUGIN_NOT_FOUND", "VALIDATION_ERROR":
		return true
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument, connect.CodeUnimplemented:
		return true
	}
	return false
}

// shutdownGrace turns the host's grace period into the time the plugin takes, keeping a
// margin for closing the stream.
func shutdownGrace(seconds int32) (grace, margin time.Duration) {
	total := time.Duration(seconds) * time.Second
	if total <= 0 {
		total = defaultShutdownGrace
	}
	margin = min(total/10, time.Second)
	return total - margin, margin
}

// backoff yields exponentially growing delays with jitter: each is between half and all of
// a bound that starts at initial and doubles up to max.
type backoff struct {
	initial, max, bound time.Duration
}

func (b *backoff) next() time.Duration {
	if b.bound == 0 {
		b.bound = b.initial
	} else {
		b.bound = min(2*b.bound, b.max)
	}
	half := b.bound / 2
	return half + rand.N(b.bound-half+1)
}

func (b *backoff) reset() { b.bound = 0 }

func newInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "plugin"
	}
	if len(host) > 64 {
		host = host[:64]
	}
	return fmt.Sprintf("%s-%d-%06x", host, os.Getpid(), rand.Uint32()&0xffffff)
}

// waitTimeout waits for wg for at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return waitContext(ctx, wg)
}

// waitContext waits for wg until ctx is done and reports whether it finished. When it does
// not, the waiting goroutine lingers until wg finishes.
func waitContext(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
