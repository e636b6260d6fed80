package busredis_test

import (
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/bustest"
)

// TestConformance runs the bus conformance suite against a real redis-server, each bus with
// a key prefix of its own.
func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T, opts bus.Options) bus.Bus {
		b := newBus(t, shared, newPrefix(), opts)
		return b
	})
}
