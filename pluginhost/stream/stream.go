// Package stream serves the plugin sessions: each connected instance's bidirectional stream
// (hello, welcome, the send and receive loops, the deliveries in flight, the plugin's own
// requests) and the conversion between the stream protocol's frames and the domain's types.
// It is the only package of the domain that sees the plugin-stream proto.
package stream

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/kv"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
)

// Options configures Sessions. Every field but Logger, OnHealth and HelloTimeout is required.
type Options struct {
	Registry *registry.Registry
	Presence *presence.Presence
	Router   *router.Router
	Logs     *logsink.Sink
	KV       *kv.Store
	Metrics  *metrics.Store
	Logger   *slog.Logger
	// HostVersion is told to plugins in the welcome.
	HostVersion string
	// HealthInterval is how often the host asks for health (told to plugins).
	HealthInterval time.Duration
	// OnHealth hears of the health reports a plugin sends unasked.
	OnHealth func(pluginID string, checks []presence.Check)
	// HelloTimeout is how long a new stream may take to say hello (default 30 s).
	HelloTimeout time.Duration
}

// Sessions serves plugin sessions. It is safe for concurrent use.
type Sessions struct {
	reg            *registry.Registry
	pres           *presence.Presence
	router         *router.Router
	bus            bus.Bus
	busOpts        bus.Options
	logs           *logsink.Sink
	kv             *kv.Store
	metrics        *metrics.Store
	log            *slog.Logger
	hostVersion    string
	healthInterval time.Duration
	onHealth       func(pluginID string, checks []presence.Check)
	helloTimeout   time.Duration
	// rr spreads HTTP calls over a plugin's instances.
	rr atomic.Uint64
	// relay, when the bus is shared by several replicas, carries HTTP calls to the
	// replicas that hold the plugin (relay.go); relayed are those calls.
	relay   bus.Relay
	relayed *relayCalls
}

// New returns the session server.
func New(opts Options) *Sessions {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnHealth == nil {
		opts.OnHealth = func(string, []presence.Check) {}
	}
	if opts.HelloTimeout <= 0 {
		opts.HelloTimeout = defaultHelloTimeout
	}
	h := &Sessions{
		reg: opts.Registry, pres: opts.Presence, router: opts.Router, bus: opts.Router.Bus(), busOpts: opts.Router.BusOptions(),
		logs: opts.Logs, kv: opts.KV, metrics: opts.Metrics, log: opts.Logger,
		hostVersion: opts.HostVersion, healthInterval: opts.HealthInterval, onHealth: opts.OnHealth,
		helloTimeout: opts.HelloTimeout,
	}
	h.useRelay(h.bus)
	return h
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// errorText is the message of an error for a plugin.
func errorText(err error) string { return errs.MessageOf(err) }
