package stream_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/stream"
)

func TestQueueOfAPluginThatDoesNotReadIsBoundedInBytes(t *testing.T) {
	// The replies to a plugin's messages are queued for it, and a plugin that does not read
	// is ended once they fill its queue: in bytes, not only in frames. With large replies
	// the session ends long before its queue holds sessionSendQueue (256) of them.
	f := newFixture(t)
	f.install(pluginSpec{id: "alpha-plugin", granted: []string{"messages:send"}})
	f.install(pluginSpec{id: "beta-plugin"})
	b := f.connect("beta-plugin", nil)
	a := f.connect("alpha-plugin", nil)

	const replyBytes = 512 << 10
	big := data(t, map[string]any{"pad": strings.Repeat("x", replyBytes)})
	const sends = pipeWindow + 256 + 16
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
			if d := fr.GetDeliver(); d != nil {
				b.send(replyFrame(d.GetDeliveryId(), "success", big, ""))
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
	// What the stream's window took, what the queue's bytes hold, one being sent, and the
	// one refused.
	if most := pipeWindow + stream.SessionSendBytes/replyBytes + 2; replied > most {
		t.Fatalf("ended after %d replies of %d KiB; at most %d fit the window and the queue's %d MiB",
			replied, replyBytes>>10, most, stream.SessionSendBytes>>20)
	}
}
