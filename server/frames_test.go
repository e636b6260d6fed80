package server

import (
	"regexp"
	"strings"
	"testing"

	"buf.build/go/protovalidate"

	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// TestHandCheckedFramesAgreeWithProtovalidate holds the hand-written checks of the hot
// frames to the verdicts of their buf.validate rules.
func TestHandCheckedFramesAgreeWithProtovalidate(t *testing.T) {
	v, err := protovalidate.New()
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", 4097)
	reply := func(id, status, msg string) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Reply{Reply: &pluginhostv1.DeliveryReply{DeliveryId: id, Status: status, ErrorMessage: msg}}}
	}
	ack := func(id string, action pluginhostv1.AckAction, ext int32, reason string) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Ack{Ack: &pluginhostv1.Ack{DeliveryId: id, Action: action, ExtendSeconds: ext, Reason: reason}}}
	}
	send := func(id, target, typ string, timeout int32) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Send{Send: &pluginhostv1.Send{RequestId: id, TargetPlugin: target, MessageType: typ, TimeoutSeconds: timeout}}}
	}
	resp := func(id string, status int32, body int) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpResponse{HttpResponse: &pluginhostv1.HttpResponse{
			RequestId: id, Status: status, Body: make([]byte, body), Headers: []*pluginhostv1.HttpHeader{{Name: "X", Values: []string{"1"}}}}}}
	}
	body := func(id string, n int) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpResponseBody{HttpResponseBody: &pluginhostv1.HttpBody{RequestId: id, Chunk: make([]byte, n), Done: true}}}
	}
	window := func(id string, n int64) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HttpWindow{HttpWindow: &pluginhostv1.HttpWindow{RequestId: id, Bytes: n}}}
	}
	hello := func(h *pluginhostv1.Hello) *pluginhostv1.ConnectRequest {
		if h.PluginId == "" {
			h.PluginId = "analytics-plugin"
		} else if h.PluginId == "-" {
			h.PluginId = ""
		}
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_Hello{Hello: h}}
	}
	items := func(n, size int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = strings.Repeat("é", size)
		}
		return out
	}
	health := func(checks ...*pluginhostv1.Check) *pluginhostv1.ConnectRequest {
		return &pluginhostv1.ConnectRequest{Frame: &pluginhostv1.ConnectRequest_HealthReport{HealthReport: &pluginhostv1.HealthReport{CheckId: "c1", Checks: checks}}}
	}
	check := func(name, status string, details, unit *string) *pluginhostv1.Check {
		return &pluginhostv1.Check{Name: name, Status: status, Details: details, Unit: unit}
	}
	str := func(n int) *string { s := strings.Repeat("é", n); return &s }
	manyChecks := func(n int) []*pluginhostv1.Check {
		out := make([]*pluginhostv1.Check, n)
		for i := range out {
			out[i] = check("c", "pass", nil, nil)
		}
		return out
	}
	frames := []*pluginhostv1.ConnectRequest{
		hello(&pluginhostv1.Hello{}), hello(&pluginhostv1.Hello{PluginId: "-"}), hello(&pluginhostv1.Hello{PluginId: "Analytics"}),
		hello(&pluginhostv1.Hello{PluginId: "ab"}), hello(&pluginhostv1.Hello{PluginId: strings.Repeat("a", 65)}),
		hello(&pluginhostv1.Hello{InstanceId: strings.Repeat("é", 128), Version: strings.Repeat("é", 128), Sdk: strings.Repeat("é", 128)}),
		hello(&pluginhostv1.Hello{InstanceId: strings.Repeat("é", 129)}), hello(&pluginhostv1.Hello{Version: strings.Repeat("é", 129)}),
		hello(&pluginhostv1.Hello{Sdk: strings.Repeat("é", 129)}),
		hello(&pluginhostv1.Hello{Services: items(64, 128)}), hello(&pluginhostv1.Hello{Services: items(65, 1)}),
		hello(&pluginhostv1.Hello{Services: items(1, 129)}), hello(&pluginhostv1.Hello{Services: []string{""}}),
		hello(&pluginhostv1.Hello{MessageTypes: items(256, 128)}), hello(&pluginhostv1.Hello{MessageTypes: items(257, 1)}),
		hello(&pluginhostv1.Hello{MessageTypes: items(2, 129)}),
		hello(&pluginhostv1.Hello{Subscriptions: []string{"order.*", "*", "*.error", "a:b_c-d.e", strings.Repeat("a", 128)}}),
		hello(&pluginhostv1.Hello{Subscriptions: []string{""}}), hello(&pluginhostv1.Hello{Subscriptions: []string{strings.Repeat("a", 129)}}),
		hello(&pluginhostv1.Hello{Subscriptions: []string{"a b"}}), hello(&pluginhostv1.Hello{Subscriptions: []string{"é"}}),
		hello(&pluginhostv1.Hello{Subscriptions: []string{"a\n"}}),
		hello(&pluginhostv1.Hello{Subscriptions: func() []string {
			s := make([]string, 257)
			for i := range s {
				s[i] = "x"
			}
			return s
		}()}),
		health(), health(check("db", "pass", nil, nil)), health(check("db", "warning", str(4096), str(32)), check(strings.Repeat("é", 128), "fail", nil, nil)),
		health(check("", "pass", nil, nil)), health(check(strings.Repeat("é", 129), "pass", nil, nil)), health(check("db", "ok", nil, nil)),
		health(check("db", "", nil, nil)), health(check("db", "pass", str(4097), nil)), health(check("db", "pass", nil, str(33))),
		health(check("db", "pass", str(0), str(0))), health(manyChecks(64)...), health(manyChecks(65)...),
		resp("h1", 200, 10), resp("", 200, 0), resp("h1", 99, 0), resp("h1", 100, 0), resp("h1", 999, 65536), resp("h1", 1000, 0), resp("h1", 200, 65537),
		body("h1", 65536), body("h1", 65537), body("", 0), body("h1", 0),
		window("h1", 1), window("h1", 0), window("h1", -5), window("", 10),
		reply("d1", "success", ""), reply("d1", "error", "boom"), reply("", "success", ""), reply("d1", "ok", ""),
		reply("d1", "error", long), reply("d1", "error", strings.Repeat("é", 4096)),
		ack("d1", pluginhostv1.AckAction_ACK_ACTION_DONE, 0, ""), ack("", pluginhostv1.AckAction_ACK_ACTION_DONE, 0, ""),
		ack("d1", pluginhostv1.AckAction_ACK_ACTION_UNSPECIFIED, 0, ""), ack("d1", pluginhostv1.AckAction(9), 0, ""),
		ack("d1", pluginhostv1.AckAction_ACK_ACTION_EXTEND, 600, ""), ack("d1", pluginhostv1.AckAction_ACK_ACTION_EXTEND, 601, ""),
		ack("d1", pluginhostv1.AckAction_ACK_ACTION_EXTEND, -1, ""), ack("d1", pluginhostv1.AckAction_ACK_ACTION_DEAD_LETTER, 0, long),
		send("r1", "analytics-plugin", "data_request", 0), send("", "analytics-plugin", "x", 0), send(strings.Repeat("r", 129), "analytics-plugin", "x", 0),
		send("r1", "Analytics", "x", 0), send("r1", "ab", "x", 0), send("r1", "abc-", "x", 0), send("r1", "abc", "9x", 0),
		send("r1", "abc", "a b", 0), send("r1", "abc", strings.Repeat("a", 128), 300), send("r1", "abc", strings.Repeat("a", 129), 0),
		send("r1", "abc", "x", 301), send("r1", "abc", "x", -1), send("r1", strings.Repeat("a", 64), "x", 1), send("r1", strings.Repeat("a", 65), "x", 1),
	}
	for i, f := range frames {
		want := v.Validate(f) == nil
		got := validateFrame(v, f) == nil
		if got != want {
			t.Errorf("frame %d (%v): hand check says valid=%v, protovalidate %v", i, f, got, want)
		}
	}
}

// FuzzIDChecks holds the hand-written id checks to the regular expressions they replace.
func FuzzIDChecks(f *testing.F) {
	pluginID, messageType := regexp.MustCompile(pluginIDPattern), regexp.MustCompile(messageTypePattern)
	subscription := regexp.MustCompile(subscriptionPattern)
	for _, s := range []string{"analytics-plugin", "ab", "abc-", "a-c", "Abc", "user.login", "a:b_c-d.e", "9x", "", "é", strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("a", 128), strings.Repeat("a", 129), "abc\n", "order.*", "*.error", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validPluginID(s), pluginID.MatchString(s); got != want {
			t.Errorf("validPluginID(%q) = %v, the pattern says %v", s, got, want)
		}
		if got, want := validSubscription(s), subscription.MatchString(s); got != want {
			t.Errorf("validSubscription(%q) = %v, the pattern says %v", s, got, want)
		}
		if got, want := validMessageType(s), messageType.MatchString(s); got != want {
			t.Errorf("validMessageType(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
