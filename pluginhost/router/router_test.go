package router_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busmem"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

// bound is how long any one wait of these tests may take before it counts as a hang.
const bound = 10 * time.Second

// fixture is a router over a real registry (SQLite in a temp dir), the in-memory bus and a
// presence to which the tests attach fake instances.
type fixture struct {
	box  *secrets.Box
	reg  *registry.Registry
	pres *presence.Presence
	bus  *busmem.Bus
	r    *router.Router
}

func newFixture(t *testing.T, opts bus.Options) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := storesqlite.Open(ctx, filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{reg: registry.New(st, box, nil), pres: presence.New(), bus: busmem.New(opts), box: box}
	if err := f.reg.Load(ctx); err != nil {
		t.Fatal(err)
	}
	f.r = router.New(router.Options{Registry: f.reg, Presence: f.pres, Bus: f.bus, BusOptions: opts})
	f.r.Start()
	t.Cleanup(f.r.Close) // Close is safe to call again
	return f
}

// plugin describes an installed plugin for the fixture. A zero status means active.
type plugin struct {
	id         string
	category   string
	disabled   bool
	status     string
	granted    []string
	types      []map[string]any // message_types entries
	subscribes []string
	services   []string
	endpoints  []map[string]any // api_endpoints entries
}

func (p plugin) manifest() []byte {
	m := map[string]any{
		"id": p.id, "name": "Plugin " + p.id, "version": "1.0.0", "description": "a test plugin", "author": "tests",
		"category": p.category, "external": true, "nexus_version": ">=1.0.0",
	}
	if p.category == "" {
		m["category"] = "utility"
	}
	if len(p.types) > 0 {
		m["message_types"] = p.types
	}
	if len(p.subscribes) > 0 {
		m["events"] = map[string]any{"subscribes": p.subscribes}
	}
	if len(p.services) > 0 {
		m["services"] = p.services
	}
	if len(p.endpoints) > 0 {
		m["api_endpoints"] = p.endpoints
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// install writes the plugins' records through the registry, in one transaction.
func (f *fixture) install(t *testing.T, ps ...plugin) {
	t.Helper()
	err := f.reg.Update(context.Background(), func(tx *registry.Tx) error {
		for _, p := range ps {
			status := p.status
			if status == "" {
				status = registry.StatusActive
			}
			rec := store.Plugin{ID: p.id, Version: "1.0.0", Manifest: p.manifest(), Dir: "plugins/" + p.id,
				Status: status, Enabled: !p.disabled, Granted: p.granted, Requested: p.granted}
			if _, err := tx.Put(rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// modify changes one plugin's record.
func (f *fixture) modify(t *testing.T, id string, fn func(rec *store.Plugin)) {
	t.Helper()
	if _, err := f.reg.Modify(context.Background(), id, func(rec *store.Plugin) error { fn(rec); return nil }); err != nil {
		t.Fatal(err)
	}
}

// connect attaches a fake instance of a plugin to presence until the test ends.
func (f *fixture) connect(t *testing.T, pluginID, session string, services, types []string) *instance {
	t.Helper()
	inst := &instance{session: session, plugin: pluginID, services: services, types: types, done: make(chan struct{})}
	f.pres.Attach(inst)
	t.Cleanup(func() { f.pres.Detach(inst) })
	return inst
}

// consume opens a consumer on a plugin's inbox, as a connected instance would.
func (f *fixture) consume(t *testing.T, pluginID string) bus.Consumer {
	t.Helper()
	c, err := f.bus.Consume(context.Background(), pluginID, pluginID+"-instance")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// next takes the next delivery of c, failing the test when none comes within bound.
func next(t *testing.T, c bus.Consumer) bus.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	d, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return d
}

// nothingNext checks that c has no delivery to give within a short while.
func nothingNext(t *testing.T, c bus.Consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if d, err := c.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next = %s %s %q, %v; want nothing", d.Kind, d.ID, d.Type, err)
	}
}

// play plays the receiving plugin on its own goroutine: it takes one delivery from c,
// answers it with answer (when not nil) and acks it. The channel carries the delivery and
// is closed when the goroutine ends; the test waits for it at cleanup.
func (f *fixture) play(t *testing.T, c bus.Consumer, answer func(bus.Delivery) bus.Reply) <-chan bus.Delivery {
	t.Helper()
	got := make(chan bus.Delivery, 1)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		defer close(got)
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		d, err := c.Next(ctx)
		if err != nil {
			t.Errorf("the receiving plugin got nothing: %v", err)
			return
		}
		if answer != nil {
			if err := f.bus.Reply(ctx, d.ReplyTo, answer(d)); err != nil {
				t.Errorf("Reply: %v", err)
			}
			if err := c.Ack(ctx, d.Tag); err != nil {
				t.Errorf("Ack: %v", err)
			}
		}
		got <- d
	})
	return got
}

func depth(t *testing.T, f *fixture, pluginID string) int {
	t.Helper()
	n, err := f.bus.Depth(context.Background(), pluginID)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func wantCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("err = %v; want none", err)
		}
		return
	}
	if !errs.Is(err, code) {
		t.Fatalf("err = %v; want %s", err, code)
	}
}

func payload(t *testing.T, m map[string]any) router.Payload {
	t.Helper()
	p, err := router.EncodeMap(m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func decode(t *testing.T, p router.Payload) map[string]any {
	t.Helper()
	var s structpb.Struct
	if err := proto.Unmarshal(p, &s); err != nil {
		t.Fatal(err)
	}
	return s.AsMap()
}

// instance is a connected instance of a plugin, as presence sees it.
type instance struct {
	session, plugin string
	services, types []string
	done            chan struct{}
	once            sync.Once
	mu              sync.Mutex // guards why
	why             error
}

func (i *instance) SessionID() string  { return i.session }
func (i *instance) InstanceID() string { return i.session }
func (i *instance) PluginID() string   { return i.plugin }
func (i *instance) TokenID() string    { return "token-" + i.session }
func (i *instance) Announced() ([]string, []string) {
	return i.services, i.types
}
func (i *instance) AskHealth(context.Context) ([]presence.Check, error) { return nil, nil }
func (i *instance) PushConfig(context.Context, map[string]any, []string, bool) (presence.ConfigAck, error) {
	return presence.ConfigAck{Accepted: true}, nil
}
func (i *instance) AskShutdown(context.Context, string, time.Duration) error { return nil }
func (i *instance) End(why error) {
	i.once.Do(func() {
		i.mu.Lock()
		i.why = why
		i.mu.Unlock()
		close(i.done)
	})
}
func (i *instance) Done() <-chan struct{} { return i.done }

var _ presence.Instance = (*instance)(nil)

func TestSendChecks(t *testing.T) {
	f := newFixture(t, bus.Options{})
	billing := []map[string]any{
		{"type": "charge", "description": "charges a card", "required_permission": "billing:charge"},
		{"type": "quote", "description": "free for all"},
	}
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send"}},
		plugin{id: "rich-sender", granted: []string{"messages:send", "billing:charge"}},
		plugin{id: "wild-sender", granted: []string{"messages:*", "billing:*"}},
		plugin{id: "mute-plugin", granted: []string{"events:emit"}},
		plugin{id: "billing-plugin", types: billing},
		plugin{id: "off-plugin", disabled: true, status: registry.StatusInactive},
		plugin{id: "lonely-plugin"},
		plugin{id: "queue-plugin"},
	)
	f.connect(t, "billing-plugin", "s1", nil, nil)
	f.connect(t, "off-plugin", "s2", nil, nil) // still connected, but disabled
	f.consume(t, "queue-plugin")               // reached through the bus alone
	for _, c := range []struct {
		name, from, target, typ string
		want                    errs.Code
	}{
		{"unknown sender", "ghost-plugin", "billing-plugin", "quote", errs.PluginNotFound},
		{"sender without messages:send", "mute-plugin", "billing-plugin", "quote", errs.PluginPermissionDenied},
		{"unknown target", "sender-plugin", "ghost-plugin", "quote", errs.PluginNotFound},
		{"type without a required permission", "sender-plugin", "billing-plugin", "quote", ""},
		{"undeclared type", "sender-plugin", "billing-plugin", "anything", ""},
		{"required permission missing", "sender-plugin", "billing-plugin", "charge", errs.PluginPermissionDenied},
		{"required permission held", "rich-sender", "billing-plugin", "charge", ""},
		{"required permission held by wildcard", "wild-sender", "billing-plugin", "charge", ""},
		{"disabled target", "sender-plugin", "off-plugin", "quote", errs.PluginUnavailable},
		{"no instance connected", "sender-plugin", "lonely-plugin", "quote", errs.PluginUnavailable},
		{"consumer open on the bus", "sender-plugin", "queue-plugin", "quote", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := depth(t, f, c.target)
			done := make(chan error, 1)
			id, err := f.r.Send(context.Background(), router.MessageRequest{From: c.from, Target: c.target, Type: c.typ, Timeout: bound},
				func(_ router.MessageResult, err error) { done <- err })
			wantCode(t, err, c.want)
			if c.want != "" {
				if id != "" || depth(t, f, c.target) != before {
					t.Fatalf("a refused message was published (id %q)", id)
				}
				return
			}
			if depth(t, f, c.target) != before+1 {
				t.Fatalf("the message was not queued for %s", c.target)
			}
			// Withdrawn again: the sender hears of it once, and the inbox is empty.
			cause := errors.New("test done")
			f.r.Cancel(id, cause)
			if err := <-done; !errors.Is(err, cause) {
				t.Fatalf("done got %v; want the cancel's cause", err)
			}
			if n := depth(t, f, c.target); n != before {
				t.Fatalf("inbox depth %d after the cancel; want %d", n, before)
			}
		})
	}
}

func TestSendMessageRoundTrip(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send"}},
		plugin{id: "echo-plugin", types: []map[string]any{{"type": "echo"}}},
	)
	f.connect(t, "echo-plugin", "s1", nil, nil)
	cons := f.consume(t, "echo-plugin")
	for _, c := range []struct {
		name    string
		reply   bus.Reply
		want    errs.Code
		status  string
		message string
	}{
		{"success", bus.Reply{Status: "success"}, "", "success", ""},
		{"the handler failed", bus.Reply{Status: "error", ErrorMessage: "no such item"}, "", "error", "no such item"},
		{"the host answered for the plugin", bus.Reply{Status: "error", ErrorCode: string(errs.PluginUnavailable), ErrorMessage: "gone"},
			errs.PluginUnavailable, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := payload(t, map[string]any{"case": c.name})
			got := f.play(t, cons, func(d bus.Delivery) bus.Reply {
				r := c.reply
				r.MessageID, r.Data = d.ID, d.Data // an echo
				return r
			})
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			start := time.Now()
			res, err := f.r.SendMessage(ctx, router.MessageRequest{From: "sender-plugin", Target: "echo-plugin", Type: "echo", Data: data, Timeout: bound})
			wantCode(t, err, c.want)
			d, ok := <-got
			if !ok {
				t.Fatal("the receiving plugin got no message")
			}
			if d.Kind != bus.KindMessage || d.Source != "sender-plugin" || d.Target != "echo-plugin" || d.Type != "echo" ||
				d.ReplyTo != f.bus.Replica() || decode(t, d.Data)["case"] != c.name || d.Attempt != 1 {
				t.Fatalf("delivery %+v", d)
			}
			if d.Deadline.Before(start.Add(bound)) || d.Deadline.After(time.Now().Add(bound)) {
				t.Fatalf("deadline %v is not the timeout from the send", d.Deadline)
			}
			if c.want != "" {
				return
			}
			if res.MessageID != d.ID || res.Status != c.status || res.ErrorMessage != c.message || decode(t, res.Data)["case"] != c.name {
				t.Fatalf("result %+v", res)
			}
			if res.ResponseTime <= 0 || res.ResponseTime > time.Since(start) {
				t.Fatalf("response time %v", res.ResponseTime)
			}
			if n := depth(t, f, "echo-plugin"); n != 0 {
				t.Fatalf("inbox depth %d after the ack", n)
			}
		})
	}
}

// A message not answered in time fails with PLUGIN_COMMUNICATION_TIMEOUT, and the handler
// holding it is told it was withdrawn.
func TestSendMessageTimeout(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send"}},
		plugin{id: "slow-plugin"},
	)
	cons := f.consume(t, "slow-plugin")
	got := f.play(t, cons, nil) // takes the message and never answers
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	_, err := f.r.SendMessage(ctx, router.MessageRequest{From: "sender-plugin", Target: "slow-plugin", Type: "work", Timeout: 200 * time.Millisecond})
	wantCode(t, err, errs.PluginCommunicationTimeout)
	if took := time.Since(start); took < 200*time.Millisecond || took > bound/2 {
		t.Fatalf("the timeout came after %v", took)
	}
	d, ok := <-got
	if !ok {
		t.Fatal("the message was not delivered")
	}
	select {
	case tag := <-cons.Cancelled():
		if tag != d.Tag {
			t.Fatalf("cancelled %s; want %s", tag, d.Tag)
		}
	case <-time.After(bound):
		t.Fatal("the handler was not told that the message timed out")
	}
	// A late answer reaches no one and breaks nothing.
	if err := f.bus.Reply(ctx, d.ReplyTo, bus.Reply{MessageID: d.ID, Status: "success"}); err != nil {
		t.Fatal(err)
	}
}

// Many messages with timeouts far below a scheduling quantum all time out: none is left
// waiting for a timer that fired before it was registered.
func TestSendMessageTinyTimeout(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send"}},
		plugin{id: "slow-plugin"},
	)
	f.connect(t, "slow-plugin", "s1", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for i := range 2000 {
		_, err := f.r.SendMessage(ctx, router.MessageRequest{From: "sender-plugin", Target: "slow-plugin", Type: "work", Timeout: time.Nanosecond})
		if !errs.Is(err, errs.PluginCommunicationTimeout) {
			t.Fatalf("message %d: err = %v; want %s", i, err, errs.PluginCommunicationTimeout)
		}
	}
}

// The end of the sender's context withdraws the message: its handler is told, and the
// sender gets the context's error.
func TestSendMessageCancelWithdraws(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send"}},
		plugin{id: "slow-plugin"},
	)
	cons := f.consume(t, "slow-plugin")
	got := f.play(t, cons, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := f.r.SendMessage(ctx, router.MessageRequest{From: "sender-plugin", Target: "slow-plugin", Type: "work", Timeout: bound})
		errc <- err
	}()
	d, ok := <-got
	if !ok {
		t.Fatal("the message was not delivered")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v; want %v", err, context.Canceled)
		}
	case <-time.After(bound):
		t.Fatal("SendMessage did not return when its context ended")
	}
	select {
	case tag := <-cons.Cancelled():
		if tag != d.Tag {
			t.Fatalf("cancelled %s; want %s", tag, d.Tag)
		}
	case <-time.After(bound):
		t.Fatal("the handler was not told that the message was withdrawn")
	}
}

// Close fails the senders still waiting with PLUGIN_UNAVAILABLE, and later sends fail the
// same way.
func TestCloseFailsWaitingSenders(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send"}},
		plugin{id: "slow-plugin"},
	)
	f.connect(t, "slow-plugin", "s1", nil, nil)
	done := make(chan error, 3)
	for range 3 {
		if _, err := f.r.Send(context.Background(), router.MessageRequest{From: "sender-plugin", Target: "slow-plugin", Type: "work", Timeout: bound},
			func(_ router.MessageResult, err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
	}
	events, ended := f.r.WatchEvents(context.Background(), nil)
	f.r.Close()
	for range 3 {
		select {
		case err := <-done:
			wantCode(t, err, errs.PluginUnavailable)
		case <-time.After(bound):
			t.Fatal("a waiting sender was not failed by Close")
		}
	}
	_, err := f.r.Send(context.Background(), router.MessageRequest{From: "sender-plugin", Target: "slow-plugin", Type: "work", Timeout: bound},
		func(router.MessageResult, error) { t.Error("done called for a refused message") })
	wantCode(t, err, errs.PluginUnavailable)
	for range events {
	}
	wantCode(t, ended(), errs.PluginUnavailable)
}

func TestBroadcastRecipients(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send"}},
		plugin{id: "mute-plugin"},
		plugin{id: "util-one", category: "utility"},
		plugin{id: "util-two", category: "utility"},
		plugin{id: "guard-plugin", category: "security"},
		plugin{id: "idle-plugin", category: "utility", status: registry.StatusInactive},
		plugin{id: "broken-plugin", category: "utility", status: registry.StatusError},
		plugin{id: "off-plugin", category: "utility", disabled: true},
	)
	for _, c := range []struct {
		name string
		req  router.BroadcastRequest
		want []string
		code errs.Code
	}{
		{"from a plugin: every other active one", router.BroadcastRequest{From: router.Origin{Plugin: "sender-plugin"}},
			[]string{"guard-plugin", "mute-plugin", "util-one", "util-two"}, ""},
		{"from an administrator: the sender too", router.BroadcastRequest{From: router.Origin{Role: "admin"}},
			[]string{"guard-plugin", "mute-plugin", "sender-plugin", "util-one", "util-two"}, ""},
		{"categories", router.BroadcastRequest{From: router.Origin{Plugin: "sender-plugin"}, Categories: []string{"security", "nothing"}},
			[]string{"guard-plugin"}, ""},
		{"exclude", router.BroadcastRequest{From: router.Origin{Role: "user"}, Categories: []string{"utility"}, Exclude: []string{"util-one", "ghost-plugin"}},
			[]string{"mute-plugin", "sender-plugin", "util-two"}, ""},
		{"no one left", router.BroadcastRequest{From: router.Origin{Plugin: "sender-plugin"}, Categories: []string{"nothing"}},
			[]string{}, ""},
		{"sender without messages:send", router.BroadcastRequest{From: router.Origin{Plugin: "mute-plugin"}}, nil, errs.PluginPermissionDenied},
		{"unknown sender", router.BroadcastRequest{From: router.Origin{Plugin: "ghost-plugin"}}, nil, errs.PluginNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			depths := map[string]int{}
			for _, p := range f.reg.Snapshot().All() {
				depths[p.ID()] = depth(t, f, p.ID())
			}
			req := c.req
			req.Type, req.Data = "note", payload(t, map[string]any{"case": c.name})
			res, err := f.r.Broadcast(context.Background(), req)
			wantCode(t, err, c.code)
			if c.code != "" {
				for id, n := range depths {
					if depth(t, f, id) != n {
						t.Fatalf("a refused broadcast reached %s", id)
					}
				}
				return
			}
			if !slices.Equal(res.Recipients, c.want) || res.Type != "note" || res.ID == "" || res.SentAt.IsZero() {
				t.Fatalf("result %+v; want recipients %v", res, c.want)
			}
			for id, n := range depths {
				want := n
				if slices.Contains(c.want, id) {
					want++
				}
				if got := depth(t, f, id); got != want {
					t.Fatalf("inbox of %s holds %d; want %d", id, got, want)
				}
			}
		})
	}
	// What a recipient gets.
	cons := f.consume(t, "guard-plugin")
	for range depth(t, f, "guard-plugin") {
		if err := cons.Ack(context.Background(), next(t, cons).Tag); err != nil {
			t.Fatal(err)
		}
	}
	res, err := f.r.Broadcast(context.Background(), router.BroadcastRequest{From: router.Origin{Plugin: "sender-plugin"},
		Type: "note", Data: payload(t, map[string]any{"last": true}), Categories: []string{"security"}})
	if err != nil {
		t.Fatal(err)
	}
	d := next(t, cons)
	if d.Kind != bus.KindBroadcast || d.ID != res.ID || d.Source != "sender-plugin" || d.Target != "guard-plugin" ||
		d.Type != "note" || decode(t, d.Data)["last"] != true {
		t.Fatalf("delivery %+v", d)
	}
}

// subscribers installs the cast of the event tests.
func subscribers(t *testing.T, f *fixture) {
	t.Helper()
	sub := []string{"events:subscribe"}
	f.install(t,
		plugin{id: "emitter-plugin", granted: []string{"events:emit", "events:subscribe"}, subscribes: []string{"*"}},
		plugin{id: "mute-plugin", granted: []string{"events:subscribe"}},
		plugin{id: "user-watcher", granted: sub, subscribes: []string{"user.*"}},
		plugin{id: "error-watcher", granted: []string{"events:*"}, subscribes: []string{"*.error"}},
		plugin{id: "exact-watcher", granted: sub, subscribes: []string{"order.created"}},
		plugin{id: "runtime-watcher", granted: sub},
		plugin{id: "ungranted-watcher", subscribes: []string{"*"}},
		plugin{id: "off-watcher", granted: sub, subscribes: []string{"*"}, disabled: true},
		plugin{id: "idle-watcher", granted: sub, subscribes: []string{"user.*"}, status: registry.StatusInactive},
	)
	mustSubscribe(t, f, "runtime-watcher", []string{"order.*", "billing.paid"}, nil)
}

func TestEmitEventRecipients(t *testing.T) {
	f := newFixture(t, bus.Options{})
	subscribers(t, f)
	for _, c := range []struct {
		name, typ string
		from      router.Origin
		want      []string
		code      errs.Code
		field     string
	}{
		{"manifest pattern with a trailing star", "user.login", router.Origin{Plugin: "emitter-plugin"},
			[]string{"idle-watcher", "user-watcher"}, "", ""},
		{"trailing star over several segments", "user.profile.updated", router.Origin{Plugin: "emitter-plugin"},
			[]string{"idle-watcher", "user-watcher"}, "", ""},
		{"leading star", "db.error", router.Origin{Plugin: "emitter-plugin"}, []string{"error-watcher"}, "", ""},
		{"exact pattern and a run-time one", "order.created", router.Origin{Plugin: "emitter-plugin"},
			[]string{"exact-watcher", "runtime-watcher"}, "", ""},
		{"run-time pattern only", "billing.paid", router.Origin{Plugin: "emitter-plugin"}, []string{"runtime-watcher"}, "", ""},
		{"from an administrator: the emitter's own subscription too", "order.created", router.Origin{Role: "admin"},
			[]string{"emitter-plugin", "exact-watcher", "runtime-watcher"}, "", ""},
		{"no subscriber", "weather.changed", router.Origin{Plugin: "emitter-plugin"}, []string{}, "", ""},
		{"plugin.* is reserved", "plugin.enabled", router.Origin{Plugin: "emitter-plugin"}, nil, errs.ValidationError, "type"},
		{"system.* is reserved", "system.startup", router.Origin{Role: "admin"}, nil, errs.ValidationError, "type"},
		{"emitter without events:emit", "user.login", router.Origin{Plugin: "mute-plugin"}, nil, errs.PluginPermissionDenied, ""},
		{"unknown emitter", "user.login", router.Origin{Plugin: "ghost-plugin"}, nil, errs.PluginNotFound, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := f.r.EmitEvent(context.Background(), router.EventRequest{From: c.from, Type: c.typ, Data: payload(t, map[string]any{"k": "v"})})
			wantCode(t, err, c.code)
			if c.field != "" {
				var e *errs.Error
				if !errors.As(err, &e) || len(e.Fields) != 1 || e.Fields[0].Field != c.field {
					t.Fatalf("err = %#v; want a violation of %s", err, c.field)
				}
			}
			if c.code != "" {
				return
			}
			if res.ID == "" || res.Type != c.typ || res.At.IsZero() {
				t.Fatalf("result %+v", res)
			}
			got := slices.Clone(res.Recipients)
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Fatalf("recipients %v; want %v", got, c.want)
			}
		})
	}
	// Subscriptions removed at run time no longer match.
	mustSubscribe(t, f, "runtime-watcher", nil, []string{"billing.paid"})
	res, err := f.r.EmitEvent(context.Background(), router.EventRequest{From: router.Origin{Plugin: "emitter-plugin"}, Type: "billing.paid"})
	if err != nil || len(res.Recipients) != 0 {
		t.Fatalf("after the unsubscribe: %v, %v", res.Recipients, err)
	}
	// What a subscriber gets.
	cons := f.consume(t, "error-watcher")
	d := next(t, cons)
	if d.Kind != bus.KindEvent || d.Type != "db.error" || d.Source != "emitter-plugin" || d.Target != "error-watcher" || decode(t, d.Data)["k"] != "v" {
		t.Fatalf("delivery %+v", d)
	}
}

// System events reach the subscribers of the host's own types, from the source "system",
// and the watchers.
func TestSystemEvents(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "audit-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"plugin.*"}},
		plugin{id: "ops-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"system.*"}},
		plugin{id: "ungranted-plugin", subscribes: []string{"*"}},
	)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	events, _ := f.r.WatchEvents(ctx, []string{"plugin.*"})
	audit, ops, ungranted := f.consume(t, "audit-plugin"), f.consume(t, "ops-plugin"), f.consume(t, "ungranted-plugin")
	f.r.System(ctx, "plugin.installed", map[string]any{"plugin_id": "new-plugin", "version": "1.2.0"})
	d := next(t, audit)
	if d.Kind != bus.KindEvent || d.Type != "plugin.installed" || d.Source != "system" {
		t.Fatalf("delivery %+v", d)
	}
	if m := decode(t, d.Data); m["plugin_id"] != "new-plugin" || m["version"] != "1.2.0" {
		t.Fatalf("data %v", m)
	}
	select {
	case e := <-events:
		if e.Type != "plugin.installed" || e.Source != "system" || e.ID != d.ID || decode(t, e.Data)["plugin_id"] != "new-plugin" {
			t.Fatalf("watched %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("the watcher did not see the system event")
	}
	nothingNext(t, ops)
	nothingNext(t, ungranted)
	// A payload that cannot be encoded is not emitted, and does not fail the caller.
	f.r.System(ctx, "plugin.error", map[string]any{"bad": make(chan int)})
	nothingNext(t, audit)
}

func TestWatchEvents(t *testing.T) {
	f := newFixture(t, bus.Options{WatchBuffer: 4})
	f.install(t, plugin{id: "emitter-plugin", granted: []string{"events:emit"}})
	emit := func(typ string) string {
		t.Helper()
		res, err := f.r.EmitEvent(context.Background(), router.EventRequest{From: router.Origin{Plugin: "emitter-plugin"}, Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	receive := func(events <-chan router.Event) router.Event {
		t.Helper()
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("the event feed closed")
			}
			return e
		case <-time.After(bound):
			t.Fatal("no event came")
		}
		return router.Event{}
	}

	t.Run("patterns filter, and the feed ends with its context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		users, usersEnd := f.r.WatchEvents(ctx, []string{"user.*", "*.error"})
		all, allEnd := f.r.WatchEvents(ctx, nil)
		emit("order.created")
		login := emit("user.login")
		dbErr := emit("db.error")
		emit("user")
		if e := receive(users); e.ID != login || e.Type != "user.login" || e.Source != "emitter-plugin" || e.Time.IsZero() {
			t.Fatalf("first watched event %+v; want user.login", e)
		}
		if e := receive(users); e.ID != dbErr {
			t.Fatalf("second watched event %+v; want db.error", e)
		}
		var types []string
		for range 4 {
			types = append(types, receive(all).Type)
		}
		if fmt.Sprint(types) != "[order.created user.login db.error user]" {
			t.Fatalf("unfiltered feed %v", types)
		}
		cancel()
		for e := range users {
			t.Fatalf("event %+v after the feed's context ended", e)
		}
		for range all {
		}
		if usersEnd() != nil || allEnd() != nil {
			t.Fatalf("feeds ended by their context report %v, %v", usersEnd(), allEnd())
		}
	})

	t.Run("a watcher that falls behind is dropped", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		events, ended := f.r.WatchEvents(ctx, nil)
		// The feed holds at most its own buffer (64), one event in hand and the bus's
		// WatchBuffer (4): one more overflows it, however the goroutines interleave.
		for i := range 64 + 1 + 4 + 1 {
			emit(fmt.Sprintf("flood.%d", i))
		}
		n := 0
		for range events {
			n++
		}
		if n >= 64+1+4+1 {
			t.Fatalf("received all %d events; the watcher was not dropped", n)
		}
		wantCode(t, ended(), errs.PluginUnavailable)
	})
}

func TestListServices(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "auth-plugin", category: "security", services: []string{"auth"},
			types: []map[string]any{{"type": "auth.verify", "description": "verifies a token", "required_permission": "auth:verify"}}},
		plugin{id: "store-plugin", services: []string{"storage"}, types: []map[string]any{{"type": "blob.get"}}},
		plugin{id: "bare-plugin"},
		plugin{id: "idle-plugin", services: []string{"auth"}, status: registry.StatusInactive},
		plugin{id: "off-plugin", services: []string{"auth"}, disabled: true},
	)
	f.connect(t, "auth-plugin", "s1", []string{"auth", "tokens"}, []string{"auth.verify", "auth.refresh"})
	f.connect(t, "auth-plugin", "s2", []string{"tokens", "sessions"}, []string{"auth.refresh"})
	f.connect(t, "bare-plugin", "s3", []string{"echo"}, nil)
	f.connect(t, "idle-plugin", "s4", []string{"auth"}, nil)
	auth := router.ServiceProvider{PluginID: "auth-plugin", Name: "Plugin auth-plugin", Version: "1.0.0", Category: "security", Status: "active",
		Services: []string{"auth", "tokens", "sessions"}, Instances: 2, Endpoints: []registry.Endpoint{},
		MessageTypes: []router.MessageTypeInfo{{Type: "auth.verify", Description: "verifies a token", RequiredPermission: "auth:verify"}, {Type: "auth.refresh"}}}
	bare := router.ServiceProvider{PluginID: "bare-plugin", Name: "Plugin bare-plugin", Version: "1.0.0", Category: "utility", Status: "active",
		Services: []string{"echo"}, Instances: 1, Endpoints: []registry.Endpoint{}}
	storage := router.ServiceProvider{PluginID: "store-plugin", Name: "Plugin store-plugin", Version: "1.0.0", Category: "utility", Status: "active",
		Services: []string{"storage"}, Endpoints: []registry.Endpoint{}, MessageTypes: []router.MessageTypeInfo{{Type: "blob.get"}}}
	for _, c := range []struct {
		name, service, typ string
		want               []router.ServiceProvider
	}{
		{"all active plugins", "", "", []router.ServiceProvider{auth, bare, storage}},
		{"a service from the manifest", "storage", "", []router.ServiceProvider{storage}},
		{"a service only announced", "sessions", "", []router.ServiceProvider{auth}},
		{"a type from the manifest", "", "blob.get", []router.ServiceProvider{storage}},
		{"a type only announced", "", "auth.refresh", []router.ServiceProvider{auth}},
		{"service and type", "auth", "auth.verify", []router.ServiceProvider{auth}},
		{"service and type of different plugins", "storage", "auth.verify", []router.ServiceProvider{}},
		{"unknown service", "nothing", "", []router.ServiceProvider{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := f.r.ListServices(context.Background(), c.service, c.typ)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestDeadLetters(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t, plugin{id: "picky-plugin"}, plugin{id: "quiet-plugin"})
	if _, err := f.r.DeadLetters(context.Background(), "ghost-plugin", 10); !errs.Is(err, errs.PluginNotFound) {
		t.Fatalf("dead letters of an unknown plugin: %v", err)
	}
	if dls, err := f.r.DeadLetters(context.Background(), "quiet-plugin", 10); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters of a plugin with none: %v, %v", dls, err)
	}
	cons := f.consume(t, "picky-plugin")
	var ids []string
	for i := range 3 {
		res, err := f.r.Broadcast(context.Background(), router.BroadcastRequest{From: router.Origin{Role: "admin"}, Type: fmt.Sprint("note.", i),
			Data: payload(t, map[string]any{"i": i}), Exclude: []string{"quiet-plugin"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
		d := next(t, cons)
		if err := cons.DeadLetter(context.Background(), d.Tag, fmt.Sprint("cannot parse ", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		limit int
		want  int
	}{{0, 3}, {2, 2}, {100, 3}} {
		dls, err := f.r.DeadLetters(context.Background(), "picky-plugin", c.limit)
		if err != nil || len(dls) != c.want {
			t.Fatalf("limit %d: %d dead letters, %v; want %d", c.limit, len(dls), err, c.want)
		}
		newest := dls[0]
		if newest.ID != ids[2] || newest.Kind != "broadcast" || newest.Source != "admin" || newest.Type != "note.2" ||
			newest.Attempts != 1 || newest.Reason != "cannot parse 2" || newest.SentAt.IsZero() || newest.At.IsZero() ||
			decode(t, newest.Data)["i"] != 2.0 {
			t.Fatalf("newest dead letter %+v", newest)
		}
	}
}

// The router reads plugins through the registry: a change of a grant, a status or a
// manifest takes effect at the next call.
func TestRoutesFollowTheRegistry(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "sender-plugin"},
		plugin{id: "target-plugin", types: []map[string]any{{"type": "charge", "required_permission": "billing:charge"}}},
		plugin{id: "late-plugin", status: registry.StatusInactive},
	)
	f.connect(t, "target-plugin", "s1", nil, nil)
	send := func() error {
		id, err := f.r.Send(context.Background(), router.MessageRequest{From: "sender-plugin", Target: "target-plugin", Type: "charge", Timeout: bound},
			func(router.MessageResult, error) {})
		if err == nil {
			f.r.Cancel(id, errors.New("test done"))
		}
		return err
	}
	steps := []struct {
		name   string
		change func(rec *store.Plugin)
		id     string
		want   errs.Code
	}{
		{"no grant", nil, "", errs.PluginPermissionDenied},
		{"messages:send granted", func(r *store.Plugin) { r.Granted = []string{"messages:send"} }, "sender-plugin", errs.PluginPermissionDenied},
		{"billing:charge granted", func(r *store.Plugin) { r.Granted = []string{"messages:send", "billing:charge"} }, "sender-plugin", ""},
		{"the target stops requiring it", func(r *store.Plugin) {
			r.Manifest = plugin{id: "target-plugin", types: []map[string]any{{"type": "charge"}}}.manifest()
		}, "target-plugin", ""},
		{"billing:charge revoked, no longer needed", func(r *store.Plugin) { r.Granted = []string{"messages:send"} }, "sender-plugin", ""},
		{"the target is disabled", func(r *store.Plugin) { r.Enabled = false }, "target-plugin", errs.PluginUnavailable},
		{"messages:send revoked", func(r *store.Plugin) { r.Granted = nil }, "sender-plugin", errs.PluginPermissionDenied},
	}
	for _, s := range steps {
		if s.change != nil {
			f.modify(t, s.id, s.change)
		}
		if err := send(); !(s.want == "" && err == nil || s.want != "" && errs.Is(err, s.want)) {
			t.Fatalf("%s: send: %v; want %q", s.name, err, s.want)
		}
	}
	// Broadcast recipients follow statuses, and uninstalls.
	recipients := func() []string {
		t.Helper()
		res, err := f.r.Broadcast(context.Background(), router.BroadcastRequest{From: router.Origin{Role: "admin"}, Type: "note"})
		if err != nil {
			t.Fatal(err)
		}
		return res.Recipients
	}
	if got := recipients(); fmt.Sprint(got) != "[sender-plugin]" {
		t.Fatalf("recipients %v", got)
	}
	f.modify(t, "late-plugin", func(r *store.Plugin) { r.Status = registry.StatusActive })
	if got := recipients(); fmt.Sprint(got) != "[late-plugin sender-plugin]" {
		t.Fatalf("recipients once late-plugin is active: %v", got)
	}
	if err := f.reg.Update(context.Background(), func(tx *registry.Tx) error { return tx.Delete("sender-plugin") }); err != nil {
		t.Fatal(err)
	}
	if got := recipients(); fmt.Sprint(got) != "[late-plugin]" {
		t.Fatalf("recipients once sender-plugin is uninstalled: %v", got)
	}
	if err := send(); !errs.Is(err, errs.PluginNotFound) {
		t.Fatalf("send from an uninstalled plugin: %v", err)
	}
}

// A plugin's run-time subscriptions are forgotten when it is disabled or uninstalled (its
// SDK subscribes again when it reconnects).
func TestForgetOnDisable(t *testing.T) {
	f := newFixture(t, bus.Options{})
	f.install(t,
		plugin{id: "runtime-watcher", granted: []string{"events:subscribe"}},
		plugin{id: "other-watcher", granted: []string{"events:subscribe"}},
	)
	recipients := func() string {
		t.Helper()
		res, err := f.r.EmitEvent(context.Background(), router.EventRequest{From: router.Origin{Role: "admin"}, Type: "user.login"})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(res.Recipients)
	}
	subscribe := func() {
		mustSubscribe(t, f, "runtime-watcher", []string{"user.*"}, nil)
		mustSubscribe(t, f, "other-watcher", []string{"user.login"}, nil)
	}
	subscribe()
	if got := recipients(); got != "[other-watcher runtime-watcher]" {
		t.Fatalf("recipients %s", got)
	}
	// A change that does not disable keeps the subscriptions.
	f.modify(t, "runtime-watcher", func(r *store.Plugin) { r.Status = registry.StatusError })
	if got := recipients(); got != "[other-watcher runtime-watcher]" {
		t.Fatalf("recipients after a status change %s", got)
	}
	f.modify(t, "runtime-watcher", func(r *store.Plugin) { r.Enabled = false })
	f.modify(t, "runtime-watcher", func(r *store.Plugin) { r.Enabled = true })
	if got := recipients(); got != "[other-watcher]" {
		t.Fatalf("recipients after a disable and an enable: %s", got)
	}
	subscribe()
	if err := f.reg.Update(context.Background(), func(tx *registry.Tx) error { return tx.Delete("other-watcher") }); err != nil {
		t.Fatal(err)
	}
	f.install(t, plugin{id: "other-watcher", granted: []string{"events:subscribe"}})
	if got := recipients(); got != "[runtime-watcher]" {
		t.Fatalf("recipients after an uninstall and a reinstall: %s", got)
	}
	// Another server on the same store (a router over a second registry) routes by the
	// subscriptions made through this one once it reads them, and forgets them with the store.
	other := router.New(router.Options{Registry: registry.New(f.reg.Store(), f.box, nil), Presence: presence.New(), Bus: f.bus})
	if err := other.ReloadSubscriptions(context.Background(), "runtime-watcher", "other-watcher"); err != nil {
		t.Fatal(err)
	}
	if !other.Subscribed("runtime-watcher", "user.login") || other.Subscribed("other-watcher", "user.login") {
		t.Fatal("the other server does not see the stored subscriptions")
	}
	// Forget, called directly.
	f.r.Forget("runtime-watcher", true)
	if got := recipients(); got != "[]" {
		t.Fatalf("recipients after Forget: %s", got)
	}
	if err := other.ReloadSubscriptions(context.Background(), "runtime-watcher"); err != nil || other.Subscribed("runtime-watcher", "user.login") {
		t.Fatalf("the other server after Forget: %v", err)
	}
}

// A message is settled once: when Send fails, done is never called, and when it succeeds,
// done is called exactly once, even when the timeout fires while the message is published
// (here into a full inbox, with timeouts far below a scheduling quantum).
func TestSendSettlesOnce(t *testing.T) {
	f := newFixture(t, bus.Options{MaxInbox: 1})
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send"}},
		plugin{id: "full-plugin"},
	)
	f.connect(t, "full-plugin", "s1", nil, nil)
	if _, err := f.r.Send(context.Background(), router.MessageRequest{From: "sender-plugin", Target: "full-plugin", Type: "work", Timeout: bound},
		func(router.MessageResult, error) {}); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	calls := make(chan int, 2*n)
	var accepted []int
	for i := range n {
		// Timeouts from 100ns to 20µs: some end before the publish, some during it, some after.
		timeout := time.Duration(i%200+1) * 100 * time.Nanosecond
		_, err := f.r.Send(context.Background(), router.MessageRequest{From: "sender-plugin", Target: "full-plugin", Type: "work", Timeout: timeout},
			func(_ router.MessageResult, err error) {
				if !errs.Is(err, errs.PluginCommunicationTimeout) && !errs.Is(err, errs.PluginUnavailable) {
					t.Errorf("message %d: %v; want a timeout, or the close", i, err)
				}
				calls <- i
			})
		switch {
		case err == nil:
			accepted = append(accepted, i)
		case !errs.Is(err, errs.PluginUnavailable):
			t.Fatalf("send %d: %v; want %s (the inbox is full)", i, err, errs.PluginUnavailable)
		}
	}
	// Close settles whatever still waits (PLUGIN_UNAVAILABLE); every message then has its
	// one outcome.
	f.r.Close()
	got := map[int]int{}
	for range accepted {
		select {
		case i := <-calls:
			got[i]++
		case <-time.After(bound):
			t.Fatalf("done was called for %d of the %d messages sent", len(got), len(accepted))
		}
	}
	for {
		select {
		case i := <-calls:
			got[i]++
			continue
		default:
		}
		break
	}
	for i, c := range got {
		if c != 1 || !slices.Contains(accepted, i) {
			t.Fatalf("done was called %d times for message %d (Send accepted it: %v)", c, i, slices.Contains(accepted, i))
		}
	}
}

// A full inbox refuses a message (PLUGIN_UNAVAILABLE) and leaves its plugin out of a
// broadcast's or an event's recipients; a closed bus fails them all.
func TestFullInboxAndClosedBus(t *testing.T) {
	f := newFixture(t, bus.Options{MaxInbox: 1})
	f.install(t,
		plugin{id: "sender-plugin", granted: []string{"messages:send", "events:emit"}},
		plugin{id: "full-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"*"}},
		plugin{id: "roomy-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"*"}},
	)
	f.connect(t, "full-plugin", "s1", nil, nil)
	ctx := context.Background()
	if _, err := f.r.Broadcast(ctx, router.BroadcastRequest{From: router.Origin{Role: "admin"}, Type: "first", Exclude: []string{"roomy-plugin", "sender-plugin"}}); err != nil {
		t.Fatal(err)
	}
	_, err := f.r.Send(ctx, router.MessageRequest{From: "sender-plugin", Target: "full-plugin", Type: "work", Timeout: bound},
		func(router.MessageResult, error) { t.Error("done called for a refused message") })
	wantCode(t, err, errs.PluginUnavailable)
	b, err := f.r.Broadcast(ctx, router.BroadcastRequest{From: router.Origin{Plugin: "sender-plugin"}, Type: "second"})
	if err != nil || fmt.Sprint(b.Recipients) != "[roomy-plugin]" {
		t.Fatalf("broadcast into a full inbox: %v, %v", b.Recipients, err)
	}
	mustSubscribe(t, f, "sender-plugin", []string{"*"}, nil) // without events:subscribe: no effect
	e, err := f.r.EmitEvent(ctx, router.EventRequest{From: router.Origin{Role: "admin"}, Type: "third"})
	if err != nil || fmt.Sprint(e.Recipients) != "[]" {
		t.Fatalf("event into full inboxes: %v, %v", e.Recipients, err)
	}
	f.r.Close()
	_, err = f.r.Broadcast(ctx, router.BroadcastRequest{From: router.Origin{Role: "admin"}, Type: "late"})
	wantCode(t, err, errs.PluginUnavailable)
	_, err = f.r.EmitEvent(ctx, router.EventRequest{From: router.Origin{Role: "admin"}, Type: "late"})
	wantCode(t, err, errs.PluginUnavailable)
	_, err = f.r.DeadLetters(ctx, "full-plugin", 10)
	wantCode(t, err, errs.PluginUnavailable)
}

// mustSubscribe changes a plugin's run-time subscriptions.
func mustSubscribe(t *testing.T, f *fixture, plugin string, add, remove []string) {
	t.Helper()
	if err := f.r.Subscribe(context.Background(), plugin, add, remove); err != nil {
		t.Fatal(err)
	}
}
