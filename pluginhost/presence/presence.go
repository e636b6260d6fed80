// Package presence knows which plugin instances are connected to this server, and gives the
// rest of the domain a narrow way to reach them: ask for their health, push a configuration,
// ask them to shut down, end their sessions. The stream package attaches and detaches the
// sessions; the runtime and the router read them.
package presence

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Check is one health check an instance reports.
type Check struct {
	Name           string
	Status         string // pass, warning or fail
	ResponseTimeMS *float64
	Details        *string
	Value          *float64
	Threshold      *float64
	Unit           *string
}

// ConfigAck is an instance's answer to a configuration change.
type ConfigAck struct {
	Accepted bool
	Reason   string
}

// Instance is one connected instance of a plugin: a session of the stream package.
type Instance interface {
	// SessionID, InstanceID, PluginID and TokenID never change.
	SessionID() string
	InstanceID() string
	PluginID() string
	// TokenID is the token the session was opened with.
	TokenID() string
	// Announced are the services and message types the instance announced in its hello.
	Announced() (services, messageTypes []string)
	// AskHealth asks for fresh health checks and waits for the report.
	AskHealth(ctx context.Context) ([]Check, error)
	// PushConfig sends a new configuration and waits for the instance's answer.
	PushConfig(ctx context.Context, cfg map[string]any, updated []string, restartRequired bool) (ConfigAck, error)
	// AskShutdown asks the instance to shut down within timeout; it does not wait.
	AskShutdown(ctx context.Context, reason string, timeout time.Duration) error
	// End ends the session from the host's side, telling the instance why. It does not
	// block.
	End(why error)
	// Done is closed once the session has ended.
	Done() <-chan struct{}
}

// Presence is the set of connected instances. It is safe for concurrent use.
type Presence struct {
	mu       sync.Mutex // guards byPlugin and listeners
	byPlugin map[string]map[string]Instance
	// listeners hear of each attach and detach, in order, outside mu.
	onAttach, onDetach []func(Instance)
}

// New returns an empty Presence.
func New() *Presence { return &Presence{byPlugin: map[string]map[string]Instance{}} }

// OnAttach registers fn to hear of each instance attached (on the attaching goroutine; fn
// must not block).
func (p *Presence) OnAttach(fn func(Instance)) {
	p.mu.Lock()
	p.onAttach = append(p.onAttach, fn)
	p.mu.Unlock()
}

// OnDetach registers fn to hear of each instance detached (fn must not block).
func (p *Presence) OnDetach(fn func(Instance)) {
	p.mu.Lock()
	p.onDetach = append(p.onDetach, fn)
	p.mu.Unlock()
}

// Attach records a connected instance.
func (p *Presence) Attach(inst Instance) {
	p.mu.Lock()
	m := p.byPlugin[inst.PluginID()]
	if m == nil {
		m = map[string]Instance{}
		p.byPlugin[inst.PluginID()] = m
	}
	m[inst.SessionID()] = inst
	fns := slices.Clone(p.onAttach)
	p.mu.Unlock()
	for _, fn := range fns {
		fn(inst)
	}
}

// Detach forgets an instance whose session ended; it returns how many instances of its
// plugin are still connected.
func (p *Presence) Detach(inst Instance) int {
	p.mu.Lock()
	m := p.byPlugin[inst.PluginID()]
	delete(m, inst.SessionID())
	left := len(m)
	if left == 0 {
		delete(p.byPlugin, inst.PluginID())
	}
	fns := slices.Clone(p.onDetach)
	p.mu.Unlock()
	for _, fn := range fns {
		fn(inst)
	}
	return left
}

// Instances returns the connected instances of a plugin, by session id.
func (p *Presence) Instances(pluginID string) []Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.byPlugin[pluginID]
	out := make([]Instance, 0, len(m))
	for _, inst := range m {
		out = append(out, inst)
	}
	slices.SortFunc(out, func(a, b Instance) int { return compare(a.SessionID(), b.SessionID()) })
	return out
}

// Count returns how many instances of a plugin are connected.
func (p *Presence) Count(pluginID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byPlugin[pluginID])
}

// Total returns how many instances, of every plugin, are connected.
func (p *Presence) Total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.byPlugin {
		n += len(m)
	}
	return n
}

// Announced returns the services and message types the connected instances of a plugin
// announced (each once), and how many instances are connected.
func (p *Presence) Announced(pluginID string) (services, messageTypes []string, n int) {
	for _, inst := range p.Instances(pluginID) {
		s, m := inst.Announced()
		for _, v := range s {
			if !slices.Contains(services, v) {
				services = append(services, v)
			}
		}
		for _, v := range m {
			if !slices.Contains(messageTypes, v) {
				messageTypes = append(messageTypes, v)
			}
		}
		n++
	}
	return services, messageTypes, n
}

// EndPlugin ends every session of a plugin.
func (p *Presence) EndPlugin(pluginID string, why error) {
	for _, inst := range p.Instances(pluginID) {
		inst.End(why)
	}
}

// EndToken ends every session opened with a token.
func (p *Presence) EndToken(tokenID string, why error) {
	for _, inst := range p.all() {
		if inst.TokenID() == tokenID {
			inst.End(why)
		}
	}
}

// TokenIDs returns the tokens of the connected sessions, each once.
func (p *Presence) TokenIDs() []string {
	var out []string
	for _, inst := range p.all() {
		if id := inst.TokenID(); id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// All returns every connected instance, of every plugin, ordered by plugin and instance id.
func (p *Presence) All() []Instance {
	out := p.all()
	slices.SortFunc(out, func(a, b Instance) int {
		if c := compare(a.PluginID(), b.PluginID()); c != 0 {
			return c
		}
		return compare(a.InstanceID(), b.InstanceID())
	})
	return out
}

func (p *Presence) all() []Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Instance
	for _, m := range p.byPlugin {
		for _, inst := range m {
			out = append(out, inst)
		}
	}
	return out
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
