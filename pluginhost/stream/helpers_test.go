package stream_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busmem"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/kv"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
	"github.com/nexus-platform/nexus/pluginhost/metrics"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

// testTimeout bounds every wait of these tests: a frame, a reply or the end of a session that
// does not come within it fails the test instead of hanging it.
const testTimeout = 10 * time.Second

// The facts the fixture's sessions tell plugins in their welcome.
const (
	hostVersion    = "9.9.9-test"
	healthInterval = 15 * time.Second
	// processingTimeout is not a whole number of seconds: the welcome rounds it up.
	processingTimeout = 45*time.Second + 500*time.Millisecond
	maxAttempts       = 3
)

// fixture is a session server wired as pluginhost.New wires it, over real dependencies: a
// registry and a key-value store over a SQLite file in t.TempDir(), presence, a router over
// the in-memory bus, a running log sink and a metrics store.
type fixture struct {
	t        *testing.T
	reg      *registry.Registry
	pres     *presence.Presence
	router   *router.Router
	logs     *logsink.Sink
	kv       *kv.Store
	metrics  *metrics.Store
	sessions *stream.Sessions
	// unasked receives the health reports plugins send unasked (Options.OnHealth).
	unasked chan unaskedReport

	mu sync.Mutex // guards attached
	// attached holds, by session id, a channel closed once presence attached that session.
	attached map[string]chan struct{}

	stopLogs  context.CancelFunc
	logsDone  chan struct{} // closed when the log sink's Run returned
	closeOnce sync.Once
}

// unaskedReport is a health report a plugin sent without being asked.
type unaskedReport struct {
	pluginID string
	checks   []presence.Check
}

// newFixture builds and starts a fixture; tune adjusts the sessions' options. Everything is
// stopped in cleanup, after the sessions the test started.
func newFixture(t *testing.T, tune ...func(*stream.Options)) *fixture {
	t.Helper()
	return newFixtureBus(t, bus.Options{ProcessingTimeout: processingTimeout, MaxAttempts: maxAttempts}, tune...)
}

// newFixtureBus is newFixture with a bus of options busOpts.
func newFixtureBus(t *testing.T, busOpts bus.Options, tune ...func(*stream.Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := storesqlite.Open(ctx, filepath.Join(t.TempDir(), "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		t: t, reg: registry.New(st, box, nil), pres: presence.New(), logs: logsink.New(st, nil, 1000),
		kv: kv.New(st, kv.Options{}), metrics: metrics.New(),
		unasked: make(chan unaskedReport, 16), attached: map[string]chan struct{}{}, logsDone: make(chan struct{}),
	}
	if err := f.reg.Load(ctx); err != nil {
		t.Fatal(err)
	}
	f.router = router.New(router.Options{Registry: f.reg, Presence: f.pres, Bus: busmem.New(busOpts), BusOptions: busOpts})
	f.pres.OnAttach(func(inst presence.Instance) { close(f.attachedCh(inst.SessionID())) })
	opts := stream.Options{
		Registry: f.reg, Presence: f.pres, Router: f.router, Logs: f.logs, KV: f.kv, Metrics: f.metrics,
		HostVersion: hostVersion, HealthInterval: healthInterval,
		OnHealth: func(pluginID string, checks []presence.Check) {
			select {
			case f.unasked <- unaskedReport{pluginID, checks}:
			default:
				t.Errorf("unasked health report of %s dropped", pluginID)
			}
		},
	}
	for _, fn := range tune {
		fn(&opts)
	}
	f.sessions = stream.New(opts)

	f.router.Start()
	logCtx, stop := context.WithCancel(context.Background())
	f.stopLogs = stop
	go func() {
		defer close(f.logsDone)
		f.logs.Run(logCtx)
	}()
	t.Cleanup(f.close)
	return f
}

// close stops the router (and its bus) and the log sink, and waits for them. It runs once;
// the sessions should have ended before.
func (f *fixture) close() {
	f.closeOnce.Do(func() {
		f.router.Close()
		f.stopLogs()
		<-f.logsDone
	})
}

func (f *fixture) attachedCh(sessionID string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := f.attached[sessionID]
	if ch == nil {
		ch = make(chan struct{})
		f.attached[sessionID] = ch
	}
	return ch
}

// waitAttached waits until presence attached the session sessionID.
func (f *fixture) waitAttached(sessionID string) {
	f.t.Helper()
	select {
	case <-f.attachedCh(sessionID):
	case <-time.After(testTimeout):
		f.t.Fatalf("session %s was not attached", sessionID)
	}
}

// pluginSpec describes an installed plugin.
type pluginSpec struct {
	id       string
	granted  []string
	disabled bool
	// inError leaves the plugin enabled, in error (quarantined, or stopped with its
	// dependency).
	inError bool
	// config is the configuration; api_key is a secret field of the manifest's schema.
	config map[string]any
	// messageTypes are the manifest's message types, as type → required permission.
	messageTypes map[string]string
	services     []string
	subscribes   []string
}

// install writes the record of an installed, active plugin through the registry.
func (f *fixture) install(s pluginSpec) {
	f.t.Helper()
	m := map[string]any{
		"id": s.id, "name": s.id, "version": "1.0.0", "description": "test plugin", "author": "t",
		"category": "utility", "entry_point": "bin/p", "nexus_version": ">=1.0.0",
		"permissions": s.granted,
		"configuration": map[string]any{
			"api_key": map[string]any{"type": "string", "secret": true},
			"level":   map[string]any{"type": "string", "default": "info"},
		},
	}
	if len(s.services) > 0 {
		m["services"] = s.services
	}
	var types []map[string]any
	for typ, perm := range s.messageTypes {
		types = append(types, map[string]any{"type": typ, "required_permission": perm})
	}
	if len(types) > 0 {
		m["message_types"] = types
	}
	if len(s.subscribes) > 0 {
		var subs []map[string]any
		for _, typ := range s.subscribes {
			subs = append(subs, map[string]any{"type": typ})
		}
		m["events"] = map[string]any{"subscribes": subs}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	man, err := manifest.Parse(raw)
	if err != nil {
		f.t.Fatalf("manifest of %s: %v", s.id, err)
	}
	cfg, err := f.reg.SealConfig(man.Schema(), s.config)
	if err != nil {
		f.t.Fatal(err)
	}
	rec := store.Plugin{ID: s.id, Version: "1.0.0", Manifest: raw, Dir: "plugins/" + s.id, Source: "file",
		Enabled: !s.disabled, Status: statusOf(s), Config: cfg,
		Requested: slices.Clone(s.granted), Granted: slices.Clone(s.granted)}
	err = f.reg.Update(context.Background(), func(tx *registry.Tx) error {
		_, err := tx.Put(rec)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// disable disables a plugin through the registry, as the runtime does. Nothing ends its
// sessions here: the facade does that on the registry's change.
func (f *fixture) disable(id string) {
	f.t.Helper()
	_, err := f.reg.Modify(context.Background(), id, func(rec *store.Plugin) error {
		rec.Enabled = false
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// plug is the test playing one instance of a plugin: the plugin's end of an in-memory stream
// pair, and the session serving the host's end on a goroutine the test owns.
type plug struct {
	t    *testing.T
	id   string
	pipe *pipe
	run  *run
	// welcome is the welcome of a plug made by connect.
	welcome *pluginhostv1.Welcome
}

// run is one ServeSession call.
type run struct {
	done chan struct{} // closed once ServeSession returned
	err  error         // what ServeSession returned; written before done is closed
}

// on returns the plug reporting its failures to t (a subtest's).
func (p *plug) on(t *testing.T) *plug {
	c := *p
	c.t = t
	return &c
}

// errTestOver is why the cleanup ends the sessions still running.
var errTestOver = errors.New("the test is over")

// serve starts a session for a token of pluginID on a new stream pair; nothing is sent yet.
// The session is ended and waited for in cleanup.
func (f *fixture) serve(pluginID string) *plug {
	return f.serveWindow(pluginID, pipeWindow)
}

// serveWindow is serve over a stream pair whose flow-control window holds window frames.
func (f *fixture) serveWindow(pluginID string, window int) *plug {
	caller := stream.SessionCaller{PluginID: pluginID, TokenID: "tok_" + pluginID}
	p := &plug{t: f.t, id: caller.PluginID, pipe: newPipe(window), run: &run{done: make(chan struct{})}}
	go func() {
		defer close(p.run.done)
		p.run.err = f.sessions.ServeSession(context.Background(), caller, p.pipe)
	}()
	f.t.Cleanup(func() {
		p.pipe.End(errTestOver)
		select {
		case <-p.run.done:
		case <-time.After(testTimeout):
			f.t.Errorf("the session of %s did not end", caller.PluginID)
		}
	})
	return p
}

// connect starts a session for pluginID, says hello (plugin_id filled in when empty), reads
// the welcome and waits until the instance is attached.
func (f *fixture) connect(pluginID string, hello *pluginhostv1.Hello) *plug {
	f.t.Helper()
	return f.connectWindow(pluginID, hello, pipeWindow)
}

// connectWindow is connect over a stream pair whose flow-control window holds window
// frames: with 0, every Send of the host waits for the plugin to read.
func (f *fixture) connectWindow(pluginID string, hello *pluginhostv1.Hello, window int) *plug {
	f.t.Helper()
	p := f.serveWindow(pluginID, window)
	if hello == nil {
		hello = &pluginhostv1.Hello{}
	}
	if hello.PluginId == "" {
		hello.PluginId = pluginID
	}
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: hello}})
	res := p.recv()
	if res.GetWelcome() == nil {
		f.t.Fatalf("%s got %s, want a welcome", pluginID, frameName(res))
	}
	p.welcome = res.GetWelcome()
	f.waitAttached(p.welcome.GetSessionId())
	return p
}

// send sends a frame to the host, encoded and decoded as a transport would.
func (p *plug) send(req *pluginhostv1.ConnectRequest) {
	p.t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		p.t.Fatal(err)
	}
	clone := &pluginhostv1.ConnectRequest{}
	if err := proto.Unmarshal(b, clone); err != nil {
		p.t.Fatal(err)
	}
	p.put(received{req: clone})
}

// sendErr makes the host's pending or next Receive fail with err, as a transport does for a
// frame it could not read or validate.
func (p *plug) sendErr(err error) {
	p.t.Helper()
	p.put(received{err: err})
}

func (p *plug) put(r received) {
	p.t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case p.pipe.toHost <- r:
	case <-p.pipe.ended:
		p.t.Fatalf("%s: the host ended the stream: %v", p.id, p.pipe.endErr)
	case <-p.run.done:
		p.t.Fatalf("%s: the session ended: %v", p.id, p.run.err)
	case <-timer.C:
		p.t.Fatalf("%s: the host did not read a frame in time", p.id)
	}
}

// recv returns the next frame the host sent. Frames sent before the stream or the session
// ended are still returned.
func (p *plug) recv() *pluginhostv1.ConnectResponse {
	p.t.Helper()
	select {
	case f := <-p.pipe.toPlugin:
		return f
	default:
	}
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case f := <-p.pipe.toPlugin:
		return f
	case <-p.pipe.ended:
	case <-p.run.done:
	case <-timer.C:
		p.t.Fatalf("%s: no frame from the host in time", p.id)
	}
	select {
	case f := <-p.pipe.toPlugin:
		return f
	default:
	}
	select {
	case <-p.pipe.ended:
		p.t.Fatalf("%s: the host ended the stream: %v", p.id, p.pipe.endErr)
	default:
		p.t.Fatalf("%s: the session ended: %v", p.id, p.run.err)
	}
	return nil
}

// reply reads the next frame, which must be the reply to request reqID.
func (p *plug) reply(reqID string) *pluginhostv1.RequestReply {
	p.t.Helper()
	f := p.recv()
	r := f.GetReply()
	if r == nil {
		p.t.Fatalf("%s got %s, want the reply to %s", p.id, frameName(f), reqID)
	}
	if r.GetRequestId() != reqID {
		p.t.Fatalf("%s got the reply to %q, want the reply to %q", p.id, r.GetRequestId(), reqID)
	}
	return r
}

// request sends a request frame and returns its reply, which must be the next frame.
func (p *plug) request(req *pluginhostv1.ConnectRequest, reqID string) *pluginhostv1.RequestReply {
	p.t.Helper()
	p.send(req)
	return p.reply(reqID)
}

// deliver reads the next frame, which must be a delivery.
func (p *plug) deliver() *pluginhostv1.Deliver {
	p.t.Helper()
	f := p.recv()
	if f.GetDeliver() == nil {
		p.t.Fatalf("%s got %s, want a delivery", p.id, frameName(f))
	}
	return f.GetDeliver()
}

// barrier returns once the host handled every frame sent before it that it handles on its
// receive loop: the barrier frame (a config ack nobody waits for, which changes nothing) is
// taken only when the loop asks for the next frame.
func (p *plug) barrier() {
	p.t.Helper()
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_ConfigAck{ConfigAck: &pluginhostv1.ConfigAck{ChangeId: "barrier"}}})
}

// closeSend closes the plugin's side of the stream: the host's Receive returns io.EOF.
func (p *plug) closeSend() { p.pipe.closeOnce.Do(func() { close(p.pipe.closed) }) }

// wait waits for ServeSession to return and returns its result.
func (p *plug) wait() error {
	p.t.Helper()
	select {
	case <-p.run.done:
		return p.run.err
	case <-time.After(testTimeout):
		p.t.Fatalf("the session of %s did not end", p.id)
		return nil
	}
}

// endReason waits for the host to end the stream (StreamEnder) and returns why it did.
func (p *plug) endReason() error {
	p.t.Helper()
	select {
	case <-p.pipe.ended:
		return p.pipe.endErr
	case <-time.After(testTimeout):
		p.t.Fatalf("the host did not end the stream of %s", p.id)
		return nil
	}
}

// ended reports whether the host ended the stream.
func (p *plug) ended() bool {
	select {
	case <-p.pipe.ended:
		return true
	default:
		return false
	}
}

// pipe is an in-memory plugin stream: the host's end is a stream.Stream and a
// stream.StreamEnder, the plugin's end is the plug's channels. Frames to the host go one at a
// time (the host takes each when it asks for it); frames to the plugin are buffered, as in
// a transport's flow-control window. End makes pending and later Receive and Send fail.
type pipe struct {
	toHost   chan received
	toPlugin chan *pluginhostv1.ConnectResponse

	closed    chan struct{} // closed when the plugin closed its side
	closeOnce sync.Once

	ended   chan struct{} // closed by End
	endOnce sync.Once
	endErr  error // why the host ended the stream; written before ended is closed
}

// received is what one Receive returns.
type received struct {
	req *pluginhostv1.ConnectRequest
	err error
}

// pipeWindow is how many frames the host can send that the plugin has not read, unless a
// test says otherwise.
const pipeWindow = 64

// errStreamEnded is what Receive and Send return once the host ended the stream.
var errStreamEnded = errors.New("the host ended this stream")

func newPipe(window int) *pipe {
	return &pipe{toHost: make(chan received), toPlugin: make(chan *pluginhostv1.ConnectResponse, window),
		closed: make(chan struct{}), ended: make(chan struct{})}
}

func (p *pipe) Receive() (*pluginhostv1.ConnectRequest, error) {
	select {
	case <-p.ended:
		return nil, errStreamEnded
	default:
	}
	select {
	case r := <-p.toHost:
		return r.req, r.err
	case <-p.closed:
		return nil, io.EOF
	case <-p.ended:
		return nil, errStreamEnded
	}
}

// Send hands the plugin a copy of f, encoded and decoded as a transport would (a raw
// Struct payload arrives parsed).
func (p *pipe) Send(f *pluginhostv1.ConnectResponse) error {
	select {
	case <-p.ended:
		return errStreamEnded
	default:
	}
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	clone := &pluginhostv1.ConnectResponse{}
	if err := proto.Unmarshal(b, clone); err != nil {
		return err
	}
	select {
	case p.toPlugin <- clone:
		return nil
	case <-p.ended:
		return errStreamEnded
	}
}

func (p *pipe) End(err error) {
	p.endOnce.Do(func() {
		p.endErr = err
		close(p.ended)
	})
}

var (
	_ stream.Stream      = (*pipe)(nil)
	_ stream.StreamEnder = (*pipe)(nil)
)

// frameName names the kind of a frame to the plugin, for failure messages.
func frameName(f *pluginhostv1.ConnectResponse) string { return fmt.Sprintf("%T", f.GetFrame()) }

// data is a payload for a frame.
func data(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sameData reports whether a payload received is m.
func sameData(t *testing.T, got *structpb.Struct, m map[string]any) bool {
	t.Helper()
	return proto.Equal(got, data(t, m))
}

// wantCode fails the test unless err carries code.
func wantCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if err == nil || !errs.Is(err, code) {
		t.Fatalf("error %v (code %s), want code %s", err, errs.CodeOf(err), code)
	}
}

// wantReplyCode fails the test unless the reply is an error with code.
func wantReplyCode(t *testing.T, r *pluginhostv1.RequestReply, code errs.Code) {
	t.Helper()
	if r.GetErrorCode() != string(code) {
		t.Fatalf("reply %v, want error code %s", r, code)
	}
}

// Frame builders.

func sendFrame(reqID, target, typ string, d *structpb.Struct, timeoutSeconds int32) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{
		RequestId: reqID, TargetPlugin: target, MessageType: typ, Data: d, TimeoutSeconds: timeoutSeconds}}}
}

func emitFrame(reqID, typ string, d *structpb.Struct) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Emit{Emit: &pluginhostv1.Emit{
		RequestId: reqID, Type: typ, Data: d}}}
}

func broadcastFrame(reqID, typ string, d *structpb.Struct) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Broadcast{Broadcast: &pluginhostv1.BroadcastSend{
		RequestId: reqID, MessageType: typ, Data: d}}}
}

func subscribeFrame(reqID string, add, remove []string) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Subscribe{Subscribe: &pluginhostv1.Subscribe{
		RequestId: reqID, Add: add, Remove: remove}}}
}

func discoverFrame(reqID, service, messageType string) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Discover{Discover: &pluginhostv1.Discover{
		RequestId: reqID, Service: service, MessageType: messageType}}}
}

func kvFrame(req *pluginhostv1.KvRequest) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Kv{Kv: req}}
}

func replyFrame(deliveryID, status string, d *structpb.Struct, errMsg string) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{
		DeliveryId: deliveryID, Status: status, Data: d, ErrorMessage: errMsg}}}
}

func ackFrame(deliveryID string, action pluginhostv1.AckAction, reason string) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Ack{Ack: &pluginhostv1.Ack{
		DeliveryId: deliveryID, Action: action, Reason: reason}}}
}

func statusOf(s pluginSpec) string {
	if s.inError {
		return registry.StatusError
	}
	return registry.StatusActive
}
