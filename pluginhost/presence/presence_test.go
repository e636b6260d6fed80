package presence_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/presence"
)

// instance is a connected instance as the tests need it: ids, announcements, and whether
// and why it was ended.
type instance struct {
	session, plugin, token string
	services, types        []string

	mu    sync.Mutex
	ended error
	done  chan struct{}
}

func newInstance(session, plugin, token string) *instance {
	return &instance{session: session, plugin: plugin, token: token, done: make(chan struct{})}
}

func (i *instance) SessionID() string               { return i.session }
func (i *instance) InstanceID() string              { return "inst-" + i.session }
func (i *instance) PluginID() string                { return i.plugin }
func (i *instance) TokenID() string                 { return i.token }
func (i *instance) Announced() ([]string, []string) { return i.services, i.types }
func (i *instance) Done() <-chan struct{}           { return i.done }
func (i *instance) AskHealth(context.Context) ([]presence.Check, error) {
	return []presence.Check{{Name: "ok", Status: "pass"}}, nil
}
func (i *instance) PushConfig(context.Context, map[string]any, []string, bool) (presence.ConfigAck, error) {
	return presence.ConfigAck{Accepted: true}, nil
}
func (i *instance) AskShutdown(context.Context, string, time.Duration) error { return nil }
func (i *instance) End(why error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ended == nil {
		i.ended = why
		close(i.done)
	}
}

func (i *instance) why() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.ended
}

func TestAttachDetachAndListeners(t *testing.T) {
	p := presence.New()
	var events []string
	p.OnAttach(func(i presence.Instance) { events = append(events, "attach "+i.SessionID()) })
	p.OnDetach(func(i presence.Instance) { events = append(events, "detach "+i.SessionID()) })
	a, b := newInstance("s2", "alpha-plugin", "t1"), newInstance("s1", "alpha-plugin", "t2")
	c := newInstance("s3", "beta-plugin", "t1")
	for _, i := range []*instance{a, b, c} {
		p.Attach(i)
	}
	if n := p.Count("alpha-plugin"); n != 2 {
		t.Fatalf("Count = %d, want 2", n)
	}
	if n := p.Total(); n != 3 {
		t.Fatalf("Total = %d, want 3", n)
	}
	ids := []string{}
	for _, i := range p.Instances("alpha-plugin") {
		ids = append(ids, i.SessionID())
	}
	if !slices.Equal(ids, []string{"s1", "s2"}) {
		t.Fatalf("Instances = %v, want by session id", ids)
	}
	if left := p.Detach(a); left != 1 {
		t.Fatalf("Detach left %d, want 1", left)
	}
	if left := p.Detach(b); left != 0 || p.Count("alpha-plugin") != 0 || len(p.Instances("alpha-plugin")) != 0 {
		t.Fatalf("after the last detach: left %d, count %d", left, p.Count("alpha-plugin"))
	}
	if n := p.Total(); n != 1 {
		t.Fatalf("Total after the detaches = %d, want 1", n)
	}
	want := []string{"attach s2", "attach s1", "attach s3", "detach s2", "detach s1"}
	if !slices.Equal(events, want) {
		t.Fatalf("events %v, want %v", events, want)
	}
}

func TestAnnouncedMergesInstances(t *testing.T) {
	p := presence.New()
	a, b := newInstance("s1", "alpha-plugin", ""), newInstance("s2", "alpha-plugin", "")
	a.services, a.types = []string{"auth", "users"}, []string{"login"}
	b.services, b.types = []string{"users", "audit"}, []string{"login", "logout"}
	p.Attach(a)
	p.Attach(b)
	services, types, n := p.Announced("alpha-plugin")
	slices.Sort(services)
	slices.Sort(types)
	if n != 2 || !slices.Equal(services, []string{"audit", "auth", "users"}) || !slices.Equal(types, []string{"login", "logout"}) {
		t.Fatalf("Announced = %v %v %d", services, types, n)
	}
	if s, m, n := p.Announced("ghost-plugin"); s != nil || m != nil || n != 0 {
		t.Fatalf("Announced of a plugin without instances = %v %v %d", s, m, n)
	}
}

func TestEndPluginAndToken(t *testing.T) {
	p := presence.New()
	a, b := newInstance("s1", "alpha-plugin", "t1"), newInstance("s2", "alpha-plugin", "t2")
	c := newInstance("s3", "beta-plugin", "t1")
	d := newInstance("s4", "beta-plugin", "")
	for _, i := range []*instance{a, b, c, d} {
		p.Attach(i)
	}
	tokens := p.TokenIDs()
	slices.Sort(tokens)
	if !slices.Equal(tokens, []string{"t1", "t2"}) {
		t.Fatalf("TokenIDs = %v (each once, none empty)", tokens)
	}
	revoked := errors.New("revoked")
	p.EndToken("t1", revoked)
	if a.why() != revoked || c.why() != revoked || b.why() != nil || d.why() != nil {
		t.Fatalf("EndToken ended %v %v %v %v", a.why(), b.why(), c.why(), d.why())
	}
	disabled := errors.New("disabled")
	p.EndPlugin("alpha-plugin", disabled)
	if b.why() != disabled || d.why() != nil {
		t.Fatalf("EndPlugin ended %v, %v", b.why(), d.why())
	}
}
