package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/logsink"
	"github.com/nexus-platform/nexus/pluginhost/presence"
	"github.com/nexus-platform/nexus/pluginhost/registry"
	"github.com/nexus-platform/nexus/pluginhost/router"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

func helloFrame(pluginID string) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{PluginId: pluginID}}}
}

func logFrame(level, msg string) *pluginhostv1.ConnectRequest {
	return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Log{Log: &pluginhostv1.Log{Level: level, Message: msg}}}
}

// await returns the value ch yields, failing the test when none comes in time.
func await[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatal("no result in time")
		var zero T
		return zero
	}
}

func TestHelloIsChecked(t *testing.T) {
	cases := []struct {
		name   string
		caller string
		// open is what the plugin does on its new stream.
		open func(p *plug)
		// helloTimeout, when set, replaces the default 30 s.
		helloTimeout time.Duration
		wantCode     errs.Code
		wantErr      error // checked with errors.Is when wantCode is empty
		// wantEnded says the host ended the stream, telling the plugin wantCode.
		wantEnded bool
	}{
		{name: "first frame not a hello", caller: "alpha-plugin",
			open: func(p *plug) { p.send(logFrame("INFO", "hi")) }, wantCode: errs.ValidationError},
		{name: "hello of another plugin", caller: "alpha-plugin",
			open: func(p *plug) { p.send(helloFrame("beta-plugin")) }, wantCode: errs.PluginPermissionDenied},
		{name: "disabled plugin", caller: "off-plugin",
			open: func(p *plug) { p.send(helloFrame("off-plugin")) }, wantCode: errs.PluginUnavailable},
		{name: "plugin in error", caller: "error-plugin",
			open: func(p *plug) { p.send(helloFrame("error-plugin")) }, wantCode: errs.PluginUnavailable},
		{name: "plugin not installed", caller: "ghost-plugin",
			open: func(p *plug) { p.send(helloFrame("ghost-plugin")) }, wantCode: errs.PluginNotFound},
		{name: "stream closed before hello", caller: "alpha-plugin",
			open: func(p *plug) { p.closeSend() }, wantErr: io.EOF},
		{name: "no hello in time", caller: "alpha-plugin", helloTimeout: 50 * time.Millisecond,
			open: func(*plug) {}, wantCode: errs.PluginCommunicationTimeout, wantEnded: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(o *stream.Options) { o.HelloTimeout = tc.helloTimeout })
			f.install(pluginSpec{id: "alpha-plugin"})
			f.install(pluginSpec{id: "beta-plugin"})
			f.install(pluginSpec{id: "off-plugin", disabled: true})
			f.install(pluginSpec{id: "error-plugin", inError: true})
			ignore := goleak.IgnoreCurrent()

			p := f.serve(tc.caller)
			tc.open(p)
			err := p.wait()
			if tc.wantCode != "" {
				wantCode(t, err, tc.wantCode)
			} else if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ServeSession returned %v, want %v", err, tc.wantErr)
			}
			if len(p.pipe.toPlugin) != 0 {
				t.Fatalf("a refused session sent %d frames", len(p.pipe.toPlugin))
			}
			if n := f.pres.Count(tc.caller); n != 0 {
				t.Fatalf("%d instances attached", n)
			}
			if p.ended() != tc.wantEnded {
				t.Fatalf("stream ended by the host: %v, want %v", p.ended(), tc.wantEnded)
			}
			if tc.wantEnded {
				wantCode(t, p.endReason(), tc.wantCode)
			}
			f.close()
			goleak.VerifyNone(t, ignore)
		})
	}
}

func TestWelcome(t *testing.T) {
	cases := []struct {
		name       string
		instanceID string
		wantPrefix string // of the instance id, when the host chooses it
	}{
		{name: "instance id from the hello", instanceID: "alpha-1"},
		{name: "instance id chosen by the host", wantPrefix: "instance-"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			granted := []string{"database:read", "messages:send"}
			f.install(pluginSpec{id: "alpha-plugin", granted: granted,
				config: map[string]any{"api_key": "s3cret", "level": "debug"}})
			p := f.connect("alpha-plugin", &pluginhostv1.Hello{InstanceId: tc.instanceID, Version: "1.2.3", Sdk: "go"})
			w := p.welcome

			if !strings.HasPrefix(w.GetSessionId(), "sess_") {
				t.Errorf("session id %q", w.GetSessionId())
			}
			if tc.instanceID != "" && w.GetInstanceId() != tc.instanceID {
				t.Errorf("instance id %q, want %q", w.GetInstanceId(), tc.instanceID)
			}
			if tc.wantPrefix != "" && (!strings.HasPrefix(w.GetInstanceId(), tc.wantPrefix) || len(w.GetInstanceId()) <= len(tc.wantPrefix)) {
				t.Errorf("instance id %q, want one starting with %q", w.GetInstanceId(), tc.wantPrefix)
			}
			if want := map[string]any{"api_key": "s3cret", "level": "debug"}; !sameData(t, w.GetConfig(), want) {
				t.Errorf("config %v, want %v (secrets opened)", w.GetConfig().AsMap(), want)
			}
			if !slices.Equal(w.GetGrantedPermissions(), granted) {
				t.Errorf("granted %v, want %v", w.GetGrantedPermissions(), granted)
			}
			if w.GetHostVersion() != hostVersion {
				t.Errorf("host version %q", w.GetHostVersion())
			}
			if w.GetHealthCheckIntervalSeconds() != int32(healthInterval/time.Second) {
				t.Errorf("health interval %d s", w.GetHealthCheckIntervalSeconds())
			}
			if w.GetProcessingTimeoutSeconds() != 46 { // 45.5 s, rounded up
				t.Errorf("processing timeout %d s, want 46", w.GetProcessingTimeoutSeconds())
			}
			if w.GetMaxAttempts() != maxAttempts {
				t.Errorf("max attempts %d", w.GetMaxAttempts())
			}
			insts := f.pres.Instances("alpha-plugin")
			if len(insts) != 1 || insts[0].SessionID() != w.GetSessionId() || insts[0].InstanceID() != w.GetInstanceId() {
				t.Errorf("attached instances %v", insts)
			}
		})
	}
}

func TestSecondInstanceWithTheSameIDIsRefused(t *testing.T) {
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin"})
	f.connect("alpha-plugin", &pluginhostv1.Hello{InstanceId: "alpha-1"})
	twin := f.serve("alpha-plugin")
	twin.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: &pluginhostv1.Hello{
		PluginId: "alpha-plugin", InstanceId: "alpha-1"}}})
	wantCode(t, twin.wait(), errs.PluginUnavailable)
	if n := f.pres.Count("alpha-plugin"); n != 1 {
		t.Fatalf("%d instances attached, want the first one", n)
	}
}

func TestInstanceInPresence(t *testing.T) {
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin"})
	p := f.connect("alpha-plugin", &pluginhostv1.Hello{InstanceId: "alpha-1",
		Services: []string{"search"}, MessageTypes: []string{"doc.find"}})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	insts := f.pres.Instances("alpha-plugin")
	if len(insts) != 1 {
		t.Fatalf("%d instances attached, want 1", len(insts))
	}
	inst := insts[0]
	services, types := inst.Announced()
	if inst.SessionID() != p.welcome.GetSessionId() || inst.InstanceID() != "alpha-1" || inst.PluginID() != "alpha-plugin" ||
		inst.TokenID() != "tok_alpha-plugin" || !slices.Equal(services, []string{"search"}) || !slices.Equal(types, []string{"doc.find"}) {
		t.Fatalf("instance %s %s %s %s, announced %v %v", inst.SessionID(), inst.InstanceID(), inst.PluginID(), inst.TokenID(), services, types)
	}

	// AskHealth is answered by the plugin's report, converted from the frame.
	type health struct {
		checks []presence.Check
		err    error
	}
	healthCh := make(chan health, 1)
	go func() {
		checks, err := inst.AskHealth(ctx)
		healthCh <- health{checks, err}
	}()
	hc := p.recv().GetHealthCheck()
	if hc.GetCheckId() == "" {
		t.Fatalf("health check %v", hc)
	}
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HealthReport{HealthReport: &pluginhostv1.HealthReport{
		CheckId: hc.GetCheckId(), Checks: []*pluginhostv1.Check{
			{Name: "db", Status: "pass", ResponseTimeMs: new(1.5), Details: new("connected"), Value: new(3.0), Threshold: new(10.0), Unit: new("conns")},
			{Name: "cache", Status: "warning"},
		}}}})
	want := []presence.Check{
		{Name: "db", Status: "pass", ResponseTimeMS: new(1.5), Details: new("connected"), Value: new(3.0), Threshold: new(10.0), Unit: new("conns")},
		{Name: "cache", Status: "warning"},
	}
	if h := await(t, healthCh); h.err != nil || !reflect.DeepEqual(h.checks, want) {
		t.Fatalf("AskHealth = %+v, %v; want %+v", h.checks, h.err, want)
	}

	// PushConfig is answered by the plugin's config ack.
	type ack struct {
		ack presence.ConfigAck
		err error
	}
	ackCh := make(chan ack, 1)
	go func() {
		a, err := inst.PushConfig(ctx, map[string]any{"level": "warn"}, []string{"level"}, true)
		ackCh <- ack{a, err}
	}()
	cc := p.recv().GetConfigChanged()
	if cc.GetChangeId() == "" || !sameData(t, cc.GetConfig(), map[string]any{"level": "warn"}) ||
		!slices.Equal(cc.GetUpdatedFields(), []string{"level"}) || !cc.GetRestartRequired() {
		t.Fatalf("config change %v", cc)
	}
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_ConfigAck{ConfigAck: &pluginhostv1.ConfigAck{
		ChangeId: cc.GetChangeId(), Accepted: false, Error: "warn is not supported"}}})
	if a := await(t, ackCh); a.err != nil || a.ack != (presence.ConfigAck{Accepted: false, Reason: "warn is not supported"}) {
		t.Fatalf("PushConfig = %+v, %v", a.ack, a.err)
	}

	// AskShutdown sends the shutdown frame and does not wait for the plugin.
	if err := inst.AskShutdown(ctx, "maintenance", 7*time.Second); err != nil {
		t.Fatal(err)
	}
	if sd := p.recv().GetShutdown(); sd.GetReason() != "maintenance" || sd.GetTimeoutSeconds() != 7 {
		t.Fatalf("shutdown %v", sd)
	}

	// A health check the plugin does not answer in time fails; its late report counts as
	// an unasked one, like a report sent on the plugin's own initiative.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	_, err := inst.AskHealth(short)
	wantCode(t, err, errs.PluginCommunicationTimeout)
	late := p.recv().GetHealthCheck()
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HealthReport{HealthReport: &pluginhostv1.HealthReport{
		CheckId: late.GetCheckId(), Checks: []*pluginhostv1.Check{{Name: "db", Status: "fail"}}}}})
	if r := await(t, f.unasked); r.pluginID != "alpha-plugin" || !reflect.DeepEqual(r.checks, []presence.Check{{Name: "db", Status: "fail"}}) {
		t.Fatalf("unasked report %+v", r)
	}

	// Once the plugin closes its stream, the instance is detached and answers no more.
	p.closeSend()
	if err := p.wait(); err != nil {
		t.Fatalf("ServeSession returned %v after the plugin closed its stream", err)
	}
	if n := f.pres.Count("alpha-plugin"); n != 0 {
		t.Fatalf("%d instances still attached", n)
	}
	select {
	case <-inst.Done():
	default:
		t.Fatal("Done not closed")
	}
	_, err = inst.AskHealth(ctx)
	wantCode(t, err, errs.PluginUnavailable)
}

func TestMessage(t *testing.T) {
	payload := map[string]any{"order": "o-1", "items": []any{1.0, "two", true, nil}, "meta": map[string]any{"deep": map[string]any{"n": 2.5}}}
	cases := []struct {
		name string
		// answer is how the target settles the delivery.
		answer     func(t *testing.T, d *pluginhostv1.Deliver) *pluginhostv1.ConnectRequest
		wantStatus string
		wantData   map[string]any
		wantErrMsg string
		// wantHandled and wantFailed are the target's request metrics afterwards.
		wantHandled, wantFailed uint64
		wantDeadLetter          string // its reason; "" for none
	}{
		{name: "reply", wantStatus: "success", wantData: map[string]any{"total": 42.0, "lines": []any{"a", "b"}},
			answer: func(t *testing.T, d *pluginhostv1.Deliver) *pluginhostv1.ConnectRequest {
				return replyFrame(d.GetDeliveryId(), "success", data(t, map[string]any{"total": 42.0, "lines": []any{"a", "b"}}), "")
			}, wantHandled: 1},
		{name: "error reply", wantStatus: "error", wantErrMsg: "no such order",
			answer: func(t *testing.T, d *pluginhostv1.Deliver) *pluginhostv1.ConnectRequest {
				return replyFrame(d.GetDeliveryId(), "error", nil, "no such order")
			}, wantHandled: 1, wantFailed: 1},
		{name: "acknowledged without a reply", wantStatus: "error", wantErrMsg: "the target acknowledged the message without replying",
			answer: func(t *testing.T, d *pluginhostv1.Deliver) *pluginhostv1.ConnectRequest {
				return ackFrame(d.GetDeliveryId(), pluginhostv1.AckAction_ACK_ACTION_DONE, "")
			}},
		{name: "dead-lettered", wantStatus: "error", wantErrMsg: "the target could not process the message: malformed order",
			answer: func(t *testing.T, d *pluginhostv1.Deliver) *pluginhostv1.ConnectRequest {
				return ackFrame(d.GetDeliveryId(), pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER, "malformed order")
			}, wantHandled: 1, wantFailed: 1, wantDeadLetter: "malformed order"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send"}})
			f.install(pluginSpec{id: "beta-plugin", messageTypes: map[string]string{"order.lookup": ""}})
			b := f.connect("beta-plugin", nil)
			a := f.connect("alpha-plugin", nil)

			sent := time.Now()
			a.send(sendFrame("req-1", "beta-plugin", "order.lookup", data(t, payload), 20))
			d := b.deliver()
			if d.GetKind() != pluginhostv1.DeliveryKind_DELIVERY_KIND_MESSAGE || d.GetDeliveryId() == "" ||
				!strings.HasPrefix(d.GetId(), "msg_") || d.GetSource() != "alpha-plugin" || d.GetType() != "order.lookup" ||
				d.GetAttempt() != 1 || !sameData(t, d.GetData(), payload) {
				t.Fatalf("delivery %v", d)
			}
			if dl := d.GetDeadline().AsTime(); dl.Before(sent.Add(20*time.Second)) || dl.After(time.Now().Add(20*time.Second)) {
				t.Fatalf("deadline %v, want 20 s after the send", dl)
			}

			b.send(tc.answer(t, d))
			r := a.reply("req-1")
			if r.GetMessageId() != d.GetId() || r.GetStatus() != tc.wantStatus || r.GetErrorMessage() != tc.wantErrMsg || r.GetErrorCode() != "" {
				t.Fatalf("reply %v", r)
			}
			if tc.wantData != nil && !sameData(t, r.GetData(), tc.wantData) {
				t.Fatalf("reply data %v, want %v", r.GetData().AsMap(), tc.wantData)
			}
			if s := f.metrics.Summary("beta-plugin"); s.RequestsHandled != tc.wantHandled || s.FailedRequests != tc.wantFailed {
				t.Fatalf("target metrics: %d handled, %d failed; want %d, %d", s.RequestsHandled, s.FailedRequests, tc.wantHandled, tc.wantFailed)
			}
			dls, err := f.router.DeadLetters(context.Background(), "beta-plugin", 10)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.wantDeadLetter == "" && len(dls) != 0:
				t.Fatalf("dead letters %+v, want none", dls)
			case tc.wantDeadLetter != "" && (len(dls) != 1 || dls[0].ID != d.GetId() || dls[0].Reason != tc.wantDeadLetter):
				t.Fatalf("dead letters %+v, want %s with reason %q", dls, d.GetId(), tc.wantDeadLetter)
			}
		})
	}
}

func TestMessageRefused(t *testing.T) {
	cases := []struct {
		name            string
		senderGrants    []string
		target, msgType string
		want            errs.Code
	}{
		{name: "sender lacks messages:send", target: "beta-plugin", msgType: "order.lookup", want: errs.PluginPermissionDenied},
		{name: "message type needs a permission the sender lacks", senderGrants: []string{"messages:send"},
			target: "beta-plugin", msgType: "order.refund", want: errs.PluginPermissionDenied},
		{name: "target not installed", senderGrants: []string{"messages:send"},
			target: "ghost-plugin", msgType: "order.lookup", want: errs.PluginNotFound},
		{name: "target not connected", senderGrants: []string{"messages:send"},
			target: "gamma-plugin", msgType: "order.lookup", want: errs.PluginUnavailable},
		{name: "target disabled", senderGrants: []string{"messages:send"},
			target: "delta-plugin", msgType: "order.lookup", want: errs.PluginUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: tc.senderGrants})
			f.install(pluginSpec{id: "beta-plugin", messageTypes: map[string]string{"order.lookup": "", "order.refund": "orders:refund"}})
			f.install(pluginSpec{id: "gamma-plugin"})
			f.install(pluginSpec{id: "delta-plugin", disabled: true})
			f.connect("beta-plugin", nil)
			a := f.connect("alpha-plugin", nil)

			wantReplyCode(t, a.request(sendFrame("req-1", tc.target, tc.msgType, nil, 5), "req-1"), tc.want)
			// The session goes on after a refused request.
			if r := a.request(discoverFrame("req-2", "", ""), "req-2"); r.GetErrorCode() != "" {
				t.Fatalf("discover after the refusal: %v", r)
			}
		})
	}
}

func TestMessageWithdrawn(t *testing.T) {
	cases := []struct {
		name    string
		timeout int32
		// withdraw makes the sender give up on its message, and checks what it is told.
		withdraw   func(t *testing.T, a *plug)
		wantReason string // of the cancel the target gets
	}{
		{name: "sender cancels", timeout: 30, wantReason: "cancelled",
			withdraw: func(t *testing.T, a *plug) {
				a.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_CancelSend{CancelSend: &pluginhostv1.CancelSend{RequestId: "req-1"}}})
				r := a.reply("req-1")
				wantReplyCode(t, r, errs.PluginCommunicationTimeout)
				if r.GetErrorMessage() != "the message was cancelled by its sender" {
					t.Fatalf("reply %v", r)
				}
			}},
		{name: "sender disconnects", timeout: 30, wantReason: "cancelled",
			withdraw: func(t *testing.T, a *plug) {
				a.closeSend()
				if err := a.wait(); err != nil {
					t.Fatalf("the sender's session returned %v", err)
				}
			}},
		{name: "message times out", timeout: 1, wantReason: "deadline_exceeded",
			withdraw: func(t *testing.T, a *plug) {
				wantReplyCode(t, a.reply("req-1"), errs.PluginCommunicationTimeout)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send"}})
			f.install(pluginSpec{id: "beta-plugin"})
			b := f.connect("beta-plugin", nil)
			a := f.connect("alpha-plugin", nil)

			a.send(sendFrame("req-1", "beta-plugin", "order.lookup", nil, tc.timeout))
			d := b.deliver()
			tc.withdraw(t, a)
			c := b.recv().GetCancel()
			if c.GetDeliveryId() != d.GetDeliveryId() || c.GetId() != d.GetId() || c.GetReason() != tc.wantReason {
				t.Fatalf("cancel %v, want one of delivery %s (%s) with reason %q", c, d.GetDeliveryId(), d.GetId(), tc.wantReason)
			}
			// A reply that comes after the cancel is dropped, and the target's session goes on.
			b.send(replyFrame(d.GetDeliveryId(), "success", nil, ""))
			if r := b.request(discoverFrame("req-9", "", ""), "req-9"); r.GetErrorCode() != "" {
				t.Fatalf("discover after the cancel: %v", r)
			}
		})
	}
}

func TestEvent(t *testing.T) {
	eventData := map[string]any{"order": "o-7", "total": 12.5}
	cases := []struct {
		name       string
		subscriber pluginSpec
		hello      *pluginhostv1.Hello
		subscribe  []string // sent in a Subscribe frame once connected
		// wantDelivered says the subscriber is among the recipients and gets the event.
		wantDelivered bool
	}{
		{name: "subscribed in the hello", wantDelivered: true,
			subscriber: pluginSpec{id: "beta-plugin", granted: []string{"events:subscribe"}},
			hello:      &pluginhostv1.Hello{Subscriptions: []string{"order.*"}}},
		{name: "subscribed by a frame", wantDelivered: true,
			subscriber: pluginSpec{id: "beta-plugin", granted: []string{"events:subscribe"}},
			subscribe:  []string{"order.created"}},
		{name: "subscribed in the manifest", wantDelivered: true,
			subscriber: pluginSpec{id: "beta-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"order.*"}}},
		{name: "hello subscriptions need events:subscribe",
			subscriber: pluginSpec{id: "beta-plugin"},
			hello:      &pluginhostv1.Hello{Subscriptions: []string{"order.*"}}},
		{name: "other event types are not delivered",
			subscriber: pluginSpec{id: "beta-plugin", granted: []string{"events:subscribe"}},
			hello:      &pluginhostv1.Hello{Subscriptions: []string{"user.*"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: []string{"events:emit"}})
			f.install(tc.subscriber)
			b := f.connect("beta-plugin", tc.hello)
			if tc.subscribe != nil {
				if r := b.request(subscribeFrame("sub-1", tc.subscribe, nil), "sub-1"); r.GetErrorCode() != "" {
					t.Fatalf("subscribe: %v", r)
				}
			}
			a := f.connect("alpha-plugin", nil)

			r := a.request(emitFrame("req-1", "order.created", data(t, eventData)), "req-1")
			if r.GetErrorCode() != "" || !strings.HasPrefix(r.GetId(), "evt_") {
				t.Fatalf("emit reply %v", r)
			}
			var want []string
			if tc.wantDelivered {
				want = []string{"beta-plugin"}
			}
			if !slices.Equal(r.GetRecipients(), want) {
				t.Fatalf("recipients %v, want %v", r.GetRecipients(), want)
			}
			if !tc.wantDelivered {
				return
			}
			d := b.deliver()
			if d.GetKind() != pluginhostv1.DeliveryKind_DELIVERY_KIND_EVENT || d.GetId() != r.GetId() || d.GetSource() != "alpha-plugin" ||
				d.GetType() != "order.created" || d.GetDeadline() != nil || d.GetAttempt() != 1 || !sameData(t, d.GetData(), eventData) {
				t.Fatalf("delivery %v", d)
			}
			b.send(ackFrame(d.GetDeliveryId(), pluginhostv1.AckAction_ACK_ACTION_DONE, ""))
			b.barrier()
			if s := f.metrics.Summary("beta-plugin"); s.RequestsHandled != 1 || s.FailedRequests != 0 {
				t.Fatalf("subscriber metrics: %d handled, %d failed", s.RequestsHandled, s.FailedRequests)
			}
		})
	}
}

func TestEventSettled(t *testing.T) {
	cases := []struct {
		name           string
		acks           []*pluginhostv1.Ack // sent in order, for the delivery
		wantFailed     uint64
		wantDeadLetter string
	}{
		{name: "done", acks: []*pluginhostv1.Ack{{Action: pluginhostv1.AckAction_ACK_ACTION_DONE}}},
		{name: "extended then done", acks: []*pluginhostv1.Ack{
			{Action: pluginhostv1.AckAction_ACK_ACTION_EXTEND, ExtendSeconds: 60}, {Action: pluginhostv1.AckAction_ACK_ACTION_DONE}}},
		{name: "dead-lettered with a reason", acks: []*pluginhostv1.Ack{{Action: pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER, Reason: "bad total"}},
			wantFailed: 1, wantDeadLetter: "bad total"},
		{name: "dead-lettered without a reason", acks: []*pluginhostv1.Ack{{Action: pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER}},
			wantFailed: 1, wantDeadLetter: "rejected by the plugin"},
		{name: "settled twice", acks: []*pluginhostv1.Ack{
			{Action: pluginhostv1.AckAction_ACK_ACTION_DONE}, {Action: pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER, Reason: "too late"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: []string{"events:emit"}})
			f.install(pluginSpec{id: "beta-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"order.*"}})
			b := f.connect("beta-plugin", nil)
			a := f.connect("alpha-plugin", nil)
			if r := a.request(emitFrame("req-1", "order.created", nil), "req-1"); len(r.GetRecipients()) != 1 {
				t.Fatalf("emit reply %v", r)
			}
			d := b.deliver()
			for _, ack := range tc.acks {
				ack.DeliveryId = d.GetDeliveryId()
				b.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Ack{Ack: ack}})
			}
			b.barrier()
			if s := f.metrics.Summary("beta-plugin"); s.RequestsHandled != 1 || s.FailedRequests != tc.wantFailed {
				t.Fatalf("subscriber metrics: %d handled, %d failed; want 1, %d", s.RequestsHandled, s.FailedRequests, tc.wantFailed)
			}
			dls, err := f.router.DeadLetters(context.Background(), "beta-plugin", 10)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.wantDeadLetter == "" && len(dls) != 0:
				t.Fatalf("dead letters %+v, want none", dls)
			case tc.wantDeadLetter != "" && (len(dls) != 1 || dls[0].ID != d.GetId() || dls[0].Reason != tc.wantDeadLetter):
				t.Fatalf("dead letters %+v, want %s with reason %q", dls, d.GetId(), tc.wantDeadLetter)
			}
		})
	}
}

func TestEventRequestRefused(t *testing.T) {
	cases := []struct {
		name    string
		grants  []string
		req     *pluginhostv1.ConnectRequest
		want    errs.Code
		wantMsg string
	}{
		{name: "emit without events:emit", req: emitFrame("req-1", "order.created", nil), want: errs.PluginPermissionDenied},
		{name: "emit of a host event type", grants: []string{"events:emit"}, req: emitFrame("req-1", "system.startup", nil),
			want:    errs.ValidationError,
			wantMsg: "this event type is reserved for the host: type: types starting with plugin. or system. are reserved for the host"},
		{name: "subscribe without events:subscribe", req: subscribeFrame("req-1", []string{"order.*"}, nil), want: errs.PluginPermissionDenied},
		{name: "broadcast without messages:send", req: broadcastFrame("req-1", "cache.flush", nil), want: errs.PluginPermissionDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: tc.grants})
			a := f.connect("alpha-plugin", nil)
			r := a.request(tc.req, "req-1")
			wantReplyCode(t, r, tc.want)
			if tc.wantMsg != "" && r.GetErrorMessage() != tc.wantMsg {
				t.Fatalf("error message %q, want %q", r.GetErrorMessage(), tc.wantMsg)
			}
		})
	}
}

func TestUnsubscribe(t *testing.T) {
	// Removing a subscription needs no permission; the event then reaches no one.
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"events:emit"}})
	f.install(pluginSpec{id: "beta-plugin", granted: []string{"events:subscribe"}})
	b := f.connect("beta-plugin", &pluginhostv1.Hello{Subscriptions: []string{"order.*"}})
	a := f.connect("alpha-plugin", nil)
	if r := a.request(emitFrame("req-1", "order.created", nil), "req-1"); !slices.Equal(r.GetRecipients(), []string{"beta-plugin"}) {
		t.Fatalf("recipients before unsubscribing: %v", r.GetRecipients())
	}
	b.deliver()
	if r := b.request(subscribeFrame("sub-1", nil, []string{"order.*"}), "sub-1"); r.GetErrorCode() != "" {
		t.Fatalf("unsubscribe: %v", r)
	}
	if r := a.request(emitFrame("req-2", "order.created", nil), "req-2"); len(r.GetRecipients()) != 0 {
		t.Fatalf("recipients after unsubscribing: %v", r.GetRecipients())
	}
}

func TestBroadcast(t *testing.T) {
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send"}})
	f.install(pluginSpec{id: "beta-plugin"})
	f.install(pluginSpec{id: "gamma-plugin"})
	f.install(pluginSpec{id: "delta-plugin", disabled: true})
	b := f.connect("beta-plugin", nil)
	c := f.connect("gamma-plugin", nil)
	a := f.connect("alpha-plugin", nil)

	r := a.request(broadcastFrame("req-1", "cache.flush", data(t, map[string]any{"all": true})), "req-1")
	if r.GetErrorCode() != "" || !strings.HasPrefix(r.GetId(), "bcast_") || !slices.Equal(r.GetRecipients(), []string{"beta-plugin", "gamma-plugin"}) {
		t.Fatalf("broadcast reply %v", r)
	}
	for _, p := range []*plug{b, c} {
		d := p.deliver()
		if d.GetKind() != pluginhostv1.DeliveryKind_DELIVERY_KIND_BROADCAST || d.GetId() != r.GetId() || d.GetSource() != "alpha-plugin" ||
			d.GetType() != "cache.flush" || !sameData(t, d.GetData(), map[string]any{"all": true}) {
			t.Fatalf("%s got %v", p.id, d)
		}
	}
}

func TestDiscover(t *testing.T) {
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin"})
	f.install(pluginSpec{id: "beta-plugin", services: []string{"index"}, messageTypes: map[string]string{"doc.index": "docs:write"}})
	f.install(pluginSpec{id: "gamma-plugin", services: []string{"mail"}})
	f.connect("beta-plugin", &pluginhostv1.Hello{Services: []string{"search"}, MessageTypes: []string{"doc.find"}})
	a := f.connect("alpha-plugin", nil)

	r := a.request(discoverFrame("req-1", "search", ""), "req-1")
	want := &pluginv1.ServiceProvider{PluginId: "beta-plugin", Name: "beta-plugin", Version: "1.0.0", Category: "utility",
		Status: registry.StatusActive, Services: []string{"index", "search"}, Instances: 1,
		MessageTypes: []*pluginv1.MessageTypeInfo{{Type: "doc.index", RequiredPermission: "docs:write"}, {Type: "doc.find"}}}
	if len(r.GetProviders()) != 1 || !proto.Equal(r.GetProviders()[0], want) {
		t.Fatalf("providers %v, want %v", r.GetProviders(), want)
	}
	if r := a.request(discoverFrame("req-2", "", "doc.find"), "req-2"); len(r.GetProviders()) != 1 || r.GetProviders()[0].GetPluginId() != "beta-plugin" {
		t.Fatalf("providers of doc.find %v", r.GetProviders())
	}
	if r := a.request(discoverFrame("req-3", "fax", ""), "req-3"); r.GetErrorCode() != "" || len(r.GetProviders()) != 0 {
		t.Fatalf("providers of fax %v", r)
	}
}

func TestProviderToProto(t *testing.T) {
	cases := []struct {
		name string
		in   router.ServiceProvider
		want *pluginv1.ServiceProvider
	}{
		{name: "nothing served", in: router.ServiceProvider{PluginID: "alpha-plugin", Name: "Alpha", Version: "1.0.0", Status: "active"},
			want: &pluginv1.ServiceProvider{PluginId: "alpha-plugin", Name: "Alpha", Version: "1.0.0", Status: "active", Services: []string{}}},
		{name: "everything", in: router.ServiceProvider{PluginID: "beta-plugin", Name: "Beta", Version: "2.1.0", Category: "search",
			Status: "active", Services: []string{"search"}, Instances: 3,
			MessageTypes: []router.MessageTypeInfo{{Type: "doc.find", Description: "finds", RequiredPermission: "docs:read"}},
			Endpoints:    []registry.Endpoint{{Path: "/find", Methods: []string{"GET", "POST"}, Description: "find"}}},
			want: &pluginv1.ServiceProvider{PluginId: "beta-plugin", Name: "Beta", Version: "2.1.0", Category: "search",
				Status: "active", Services: []string{"search"}, Instances: 3,
				MessageTypes: []*pluginv1.MessageTypeInfo{{Type: "doc.find", Description: "finds", RequiredPermission: "docs:read"}},
				Endpoints:    []*pluginv1.ApiEndpoint{{Path: "/find", Methods: []string{"GET", "POST"}, Description: "find"}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := stream.ProviderToProto(tc.in)
			if !proto.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if got.Services == nil {
				t.Fatal("services nil: the JSON edge would omit the list")
			}
		})
	}
}

func TestKV(t *testing.T) {
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"database:read", "database:write"}})
	f.install(pluginSpec{id: "beta-plugin", granted: []string{"database:read", "database:write"}})
	f.install(pluginSpec{id: "gamma-plugin", granted: []string{"database:read"}})
	f.install(pluginSpec{id: "delta-plugin"})
	plugs := map[string]*plug{}
	for _, id := range []string{"alpha-plugin", "beta-plugin", "gamma-plugin", "delta-plugin"} {
		plugs[id] = f.connect(id, nil)
	}
	value := func(v any) *structpb.Value {
		pv, err := structpb.NewValue(v)
		if err != nil {
			t.Fatal(err)
		}
		return pv
	}
	put := func(key string, v any) *pluginhostv1.KvRequest {
		return &pluginhostv1.KvRequest{Op: &pluginhostv1.KvRequest_Put{Put: &pluginhostv1.KvPut{Key: key, Value: value(v)}}}
	}
	get := func(owner, key string) *pluginhostv1.KvRequest {
		return &pluginhostv1.KvRequest{Owner: owner, Op: &pluginhostv1.KvRequest_Get{Get: &pluginhostv1.KvGet{Key: key}}}
	}
	entry := func(t *testing.T, res *pluginhostv1.KvResult, key string, v any, version int64) {
		t.Helper()
		if !res.GetFound() || len(res.GetEntries()) != 1 {
			t.Fatalf("result %v, want the entry %s", res, key)
		}
		e := res.GetEntries()[0]
		if e.GetKey() != key || !proto.Equal(e.GetValue(), value(v)) || e.GetVersion() != version || e.GetUpdatedAt() == nil || e.GetExpiresAt() != nil {
			t.Fatalf("entry %v, want %s = %v at version %d", e, key, v, version)
		}
	}
	steps := []struct {
		name  string
		who   string
		req   *pluginhostv1.KvRequest
		want  errs.Code // "" for success
		check func(t *testing.T, res *pluginhostv1.KvResult)
	}{
		{name: "put", who: "alpha-plugin", req: put("user:1", map[string]any{"name": "Ada"}),
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				entry(t, res, "user:1", map[string]any{"name": "Ada"}, 1)
				if !res.GetSwapped() {
					t.Fatal("a plain put reports swapped")
				}
			}},
		{name: "put another", who: "alpha-plugin", req: put("user:2", "Grace"),
			check: func(t *testing.T, res *pluginhostv1.KvResult) { entry(t, res, "user:2", "Grace", 1) }},
		{name: "put over", who: "alpha-plugin", req: put("user:1", map[string]any{"name": "Ada L."}),
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				entry(t, res, "user:1", map[string]any{"name": "Ada L."}, 2)
			}},
		{name: "compare and set on a stale version", who: "alpha-plugin",
			req: &pluginhostv1.KvRequest{Op: &pluginhostv1.KvRequest_Put{Put: &pluginhostv1.KvPut{Key: "user:1", Value: value("x"), ExpectedVersion: new(int64(1))}}},
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				if res.GetSwapped() {
					t.Fatalf("result %v, want not swapped", res)
				}
			}},
		{name: "get", who: "alpha-plugin", req: get("", "user:1"),
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				entry(t, res, "user:1", map[string]any{"name": "Ada L."}, 2)
			}},
		{name: "get a missing key", who: "alpha-plugin", req: get("", "user:9"),
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				if res.GetFound() || len(res.GetEntries()) != 0 {
					t.Fatalf("result %v, want not found", res)
				}
			}},
		{name: "list", who: "alpha-plugin",
			req: &pluginhostv1.KvRequest{Op: &pluginhostv1.KvRequest_List{List: &pluginhostv1.KvList{Prefix: "user:"}}},
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				var keys []string
				for _, e := range res.GetEntries() {
					keys = append(keys, e.GetKey())
				}
				if !res.GetFound() || !slices.Equal(keys, []string{"user:1", "user:2"}) || res.GetNext() != "" {
					t.Fatalf("listed %v (next %q)", keys, res.GetNext())
				}
			}},
		{name: "namespaces are separate", who: "beta-plugin", req: get("", "user:1"),
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				if res.GetFound() {
					t.Fatalf("beta-plugin reads alpha-plugin's key in its own namespace: %v", res)
				}
			}},
		{name: "put without database:write", who: "gamma-plugin", req: put("k", 1), want: errs.PluginPermissionDenied},
		{name: "get without database:read", who: "delta-plugin", req: get("", "k"), want: errs.PluginPermissionDenied},
		{name: "read of a namespace not shared", who: "beta-plugin", req: get("alpha-plugin", "user:1"), want: errs.PluginPermissionDenied},
		{name: "share", who: "alpha-plugin",
			req: &pluginhostv1.KvRequest{Op: &pluginhostv1.KvRequest_Share{Share: &pluginhostv1.KvShare{Readers: []string{"beta-plugin"}}}},
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				if !slices.Equal(res.GetReaders(), []string{"beta-plugin"}) {
					t.Fatalf("readers %v", res.GetReaders())
				}
			}},
		{name: "read of a shared namespace", who: "beta-plugin", req: get("alpha-plugin", "user:1"),
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				entry(t, res, "user:1", map[string]any{"name": "Ada L."}, 2)
			}},
		{name: "write to a shared namespace", who: "beta-plugin",
			req:  &pluginhostv1.KvRequest{Owner: "alpha-plugin", Op: &pluginhostv1.KvRequest_Put{Put: &pluginhostv1.KvPut{Key: "user:1", Value: value("x")}}},
			want: errs.PluginPermissionDenied},
		{name: "read of a namespace shared with another plugin", who: "gamma-plugin", req: get("alpha-plugin", "user:1"), want: errs.PluginPermissionDenied},
		{name: "delete", who: "alpha-plugin",
			req: &pluginhostv1.KvRequest{Op: &pluginhostv1.KvRequest_Delete{Delete: &pluginhostv1.KvDelete{Key: "user:2"}}},
			check: func(t *testing.T, res *pluginhostv1.KvResult) {
				if !res.GetFound() {
					t.Fatalf("result %v, want deleted", res)
				}
			}},
		{name: "no operation", who: "alpha-plugin", req: &pluginhostv1.KvRequest{}, want: errs.ValidationError},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			p := plugs[s.who].on(t)
			reqID := fmt.Sprintf("kv-%d", i)
			s.req.RequestId = reqID
			r := p.request(kvFrame(s.req), reqID)
			if s.want != "" {
				wantReplyCode(t, r, s.want)
				return
			}
			if r.GetErrorCode() != "" {
				t.Fatalf("reply %v", r)
			}
			s.check(t, r.GetKv())
		})
	}
}

func TestDisabledPluginIsRefused(t *testing.T) {
	// The facade ends the sessions of a plugin when it is disabled; here nothing does, so
	// the session stays and each request meets the refusal itself.
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send", "events:emit", "events:subscribe", "database:read", "database:write"}})
	f.install(pluginSpec{id: "beta-plugin"})
	f.connect("beta-plugin", nil)
	a := f.connect("alpha-plugin", nil)
	// A request answered first: the session is past its attach-time check, which ends a
	// session whose plugin was disabled while it connected (and which the disable below
	// would otherwise race with: the welcome comes before that check).
	if r := a.request(discoverFrame("warm", "", ""), "warm"); r.GetErrorCode() != "" {
		t.Fatalf("discover before the disable: %s %s", r.GetErrorCode(), r.GetErrorMessage())
	}
	f.disable("alpha-plugin")

	cases := []struct {
		name string
		req  *pluginhostv1.ConnectRequest
	}{
		{name: "send", req: sendFrame("req", "beta-plugin", "order.lookup", nil, 5)},
		{name: "emit", req: emitFrame("req", "order.created", nil)},
		{name: "broadcast", req: broadcastFrame("req", "cache.flush", nil)},
		{name: "subscribe", req: subscribeFrame("req", []string{"order.*"}, nil)},
		{name: "key-value", req: kvFrame(&pluginhostv1.KvRequest{RequestId: "req", Op: &pluginhostv1.KvRequest_Get{Get: &pluginhostv1.KvGet{Key: "k"}}})},
		{name: "discover", req: discoverFrame("req", "", "")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := a.on(t).request(tc.req, "req")
			wantReplyCode(t, r, errs.PluginUnavailable)
			if r.GetErrorMessage() != "plugin alpha-plugin is disabled" {
				t.Fatalf("error message %q", r.GetErrorMessage())
			}
		})
	}
}

func TestSessionEnds(t *testing.T) {
	why := errs.New(errs.PluginUnavailable, "plugin alpha-plugin was disabled")
	lost := errors.New("connection reset by peer")
	cases := []struct {
		name string
		end  func(f *fixture, p *plug)
		// want is what ServeSession returns (errors.Is); nil for a normal end.
		want error
		// wantCode, when set, is checked instead of want.
		wantCode errs.Code
		// wantTold says the host ended the stream, telling the plugin want.
		wantTold bool
	}{
		{name: "presence ends the plugin", end: func(f *fixture, _ *plug) { f.pres.EndPlugin("alpha-plugin", why) },
			want: why, wantTold: true},
		{name: "presence ends the token", end: func(f *fixture, _ *plug) { f.pres.EndToken("tok_alpha-plugin", why) },
			want: why, wantTold: true},
		{name: "the instance is ended", end: func(f *fixture, _ *plug) { f.pres.Instances("alpha-plugin")[0].End(why) },
			want: why, wantTold: true},
		{name: "the plugin closes its stream", end: func(_ *fixture, p *plug) { p.closeSend() }},
		{name: "the transport fails", end: func(_ *fixture, p *plug) { p.sendErr(lost) }, want: lost},
		{name: "a second hello", end: func(_ *fixture, p *plug) { p.send(helloFrame("alpha-plugin")) }, wantCode: errs.ValidationError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"order.*"}})
			ignore := goleak.IgnoreCurrent()
			p := f.connect("alpha-plugin", nil)

			// Something in flight when the session ends: an event delivered and not
			// settled, and a health check not answered.
			f.router.System(context.Background(), "order.created", nil)
			p.deliver()
			inst := f.pres.Instances("alpha-plugin")[0]
			asked := make(chan error, 1)
			go func() {
				_, err := inst.AskHealth(context.Background())
				asked <- err
			}()
			p.recv().GetHealthCheck()

			tc.end(f, p)
			err := p.wait()
			switch {
			case tc.wantCode != "":
				wantCode(t, err, tc.wantCode)
			case tc.want == nil && err != nil:
				t.Fatalf("ServeSession returned %v, want nil", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("ServeSession returned %v, want %v", err, tc.want)
			}
			if tc.wantTold {
				if told := p.endReason(); !errors.Is(told, tc.want) {
					t.Fatalf("the plugin was told %v, want %v", told, tc.want)
				}
			}
			wantCode(t, await(t, asked), errs.PluginUnavailable)
			if n := f.pres.Count("alpha-plugin"); n != 0 {
				t.Fatalf("%d instances still attached", n)
			}
			f.close()
			goleak.VerifyNone(t, ignore)
		})
	}
}

func TestInvalidFrame(t *testing.T) {
	bad := errs.New(errs.ValidationError, "kv.put.key: value length must be at most 256 characters")
	cases := []struct {
		name      string
		requestID string
		// wantAnswered says the request is answered with the error and the session goes
		// on; otherwise the session ends with it.
		wantAnswered bool
	}{
		{name: "request frame", requestID: "req-1", wantAnswered: true},
		{name: "frame without a request id"},
		{name: "request id too long", requestID: strings.Repeat("r", 129)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin"})
			p := f.connect("alpha-plugin", nil)
			p.sendErr(&stream.InvalidFrame{RequestID: tc.requestID, Err: bad})
			if !tc.wantAnswered {
				if err := p.wait(); !errors.Is(err, bad) {
					t.Fatalf("ServeSession returned %v, want %v", err, bad)
				}
				return
			}
			r := p.reply(tc.requestID)
			wantReplyCode(t, r, errs.ValidationError)
			if r.GetErrorMessage() != bad.Message {
				t.Fatalf("error message %q", r.GetErrorMessage())
			}
			if r := p.request(discoverFrame("req-2", "", ""), "req-2"); r.GetErrorCode() != "" {
				t.Fatalf("discover after the invalid frame: %v", r)
			}
		})
	}
}

func TestLogs(t *testing.T) {
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin"})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tail, err := f.logs.Tail(ctx, logsink.TailQuery{PluginID: "alpha-plugin"})
	if err != nil {
		t.Fatal(err)
	}
	p := f.connect("alpha-plugin", &pluginhostv1.Hello{InstanceId: "alpha-1", Version: "1.2.3", Sdk: "go"})
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	p.send(&pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Log{Log: &pluginhostv1.Log{
		Timestamp: timestamppb.New(at), Level: "WARNING", Message: "disk almost full", Metadata: data(t, map[string]any{"disk": "/var"})}}})
	p.closeSend()
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		level, message string
		metadata       map[string]any
		at             time.Time
	}{
		{"INFO", "Plugin instance connected", map[string]any{"instance_id": "alpha-1", "session_id": p.welcome.GetSessionId(), "sdk": "go", "version": "1.2.3"}, time.Time{}},
		{"WARNING", "disk almost full", map[string]any{"disk": "/var"}, at},
		{"INFO", "Plugin instance disconnected", map[string]any{"instance_id": "alpha-1", "session_id": p.welcome.GetSessionId()}, time.Time{}},
	}
	for _, w := range want {
		var rec store.LogRecord
		select {
		case rec = <-tail:
		case <-ctx.Done():
			t.Fatalf("no log record %q", w.message)
		}
		var md map[string]any
		if err := json.Unmarshal(rec.Metadata, &md); err != nil {
			t.Fatalf("metadata of %q: %v", rec.Message, err)
		}
		if rec.PluginID != "alpha-plugin" || rec.Level != w.level || rec.Message != w.message || !reflect.DeepEqual(md, w.metadata) ||
			(!w.at.IsZero() && !rec.Time.Equal(w.at)) {
			t.Fatalf("log record %+v (metadata %v), want %+v", rec, md, w)
		}
	}
}

func TestStalledPluginDoesNotHoldTheCaller(t *testing.T) {
	// A plugin that stops reading its stream makes the host's Send wait (flow control).
	// What presence offers the rest of the host must still keep to its deadlines: the
	// health checker and a graceful stop call these on a plugin that may be stuck.
	cases := []struct {
		name string
		ask  func(ctx context.Context, inst presence.Instance) error
		want errs.Code // "" for success
		// frame checks the frame the plugin reads once it reads again.
		frame func(f *pluginhostv1.ConnectResponse) bool
	}{
		{name: "AskShutdown",
			ask: func(ctx context.Context, inst presence.Instance) error {
				return inst.AskShutdown(ctx, "maintenance", 5*time.Second)
			},
			frame: func(f *pluginhostv1.ConnectResponse) bool { return f.GetShutdown().GetReason() == "maintenance" }},
		{name: "AskHealth", want: errs.PluginCommunicationTimeout,
			ask: func(ctx context.Context, inst presence.Instance) error {
				_, err := inst.AskHealth(ctx)
				return err
			},
			frame: func(f *pluginhostv1.ConnectResponse) bool { return f.GetHealthCheck() != nil }},
		{name: "PushConfig", want: errs.PluginCommunicationTimeout,
			ask: func(ctx context.Context, inst presence.Instance) error {
				_, err := inst.PushConfig(ctx, map[string]any{"level": "warn"}, []string{"level"}, false)
				return err
			},
			frame: func(f *pluginhostv1.ConnectResponse) bool { return f.GetConfigChanged() != nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin"})
			// With no window, the plugin reads nothing the host sends after the welcome.
			p := f.connectWindow("alpha-plugin", nil, 0)
			inst := f.pres.Instances("alpha-plugin")[0]

			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			res := make(chan error, 1)
			go func() { res <- tc.ask(ctx, inst) }()
			err := await(t, res)
			if tc.want == "" && err != nil {
				t.Fatalf("%s returned %v", tc.name, err)
			}
			if tc.want != "" {
				wantCode(t, err, tc.want)
			}
			// The frame was queued: the plugin gets it once it reads again.
			if fr := p.recv(); !tc.frame(fr) {
				t.Fatalf("the plugin got %v", fr)
			}
		})
	}
}

func TestSessionEndingOnAnErrorEndsAStalledStream(t *testing.T) {
	// When a frame ends the session, the host ends the stream too: a Send waiting for a
	// plugin that stopped reading must not hold the session (and keep it attached) until
	// the plugin disconnects.
	cases := []struct {
		name string
		end  func(p *plug)
		want errs.Code
	}{
		{name: "a second hello", end: func(p *plug) { p.send(helloFrame("alpha-plugin")) }, want: errs.ValidationError},
		{name: "an invalid frame", end: func(p *plug) {
			p.sendErr(&stream.InvalidFrame{Err: errs.New(errs.ValidationError, "frame: unknown field")})
		}, want: errs.ValidationError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.install(pluginSpec{id: "alpha-plugin", granted: []string{"events:subscribe"}, subscribes: []string{"order.*"}})
			p := f.connectWindow("alpha-plugin", nil, 0)
			// A delivery the plugin does not read: the host's Send of it waits.
			f.router.System(context.Background(), "order.created", nil)

			tc.end(p)
			wantCode(t, p.wait(), tc.want)
			wantCode(t, p.endReason(), tc.want)
			if n := f.pres.Count("alpha-plugin"); n != 0 {
				t.Fatalf("%d instances still attached", n)
			}
		})
	}
}

func TestPluginThatDoesNotReadIsEnded(t *testing.T) {
	// Replies to a plugin's messages are queued for it without waiting (the reply router
	// never waits for one plugin). A plugin that stops reading fills its stream and then
	// its queue: its session is ended, which also frees the Send waiting for it.
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send"}})
	f.install(pluginSpec{id: "beta-plugin"})
	b := f.connect("beta-plugin", nil)
	a := f.connect("alpha-plugin", nil)

	// More replies than the stream's window and the session's queue (256) hold.
	const sends = pipeWindow + 256 + 80
	for i := range sends {
		a.send(sendFrame(fmt.Sprintf("req-%d", i), "beta-plugin", "order.lookup", nil, 60))
	}
	timeout := time.NewTimer(testTimeout)
	defer timeout.Stop()
	replied := 0
	for ended := false; !ended; {
		select {
		case <-a.run.done:
			ended = true
		case fr := <-b.pipe.toPlugin:
			// Deliveries are answered; the cancels of the messages withdrawn once the
			// sender's session ended are not.
			if d := fr.GetDeliver(); d != nil {
				b.send(replyFrame(d.GetDeliveryId(), "success", nil, ""))
				replied++
			}
		case <-timeout.C:
			t.Fatalf("the session of the plugin that does not read was not ended (%d replies)", replied)
		}
	}
	const why = "plugin alpha-plugin does not read its stream fast enough"
	if err := a.wait(); !errs.Is(err, errs.PluginUnavailable) || errs.MessageOf(err) != why {
		t.Fatalf("ServeSession returned %v, want %q", err, why)
	}
	if told := a.endReason(); errs.MessageOf(told) != why {
		t.Fatalf("the plugin was told %v", told)
	}
	if n := f.pres.Count("alpha-plugin"); n != 0 {
		t.Fatalf("%d instances still attached", n)
	}
	if replied < pipeWindow+256 {
		t.Fatalf("ended after %d replies, fewer than the window and the queue hold", replied)
	}
}
