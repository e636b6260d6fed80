package storepg_test

import (
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg"
	"github.com/nexus-platform/nexus/pluginhost/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		// A small pool: the suite's subtests run in parallel, each with a database and a
		// pool of its own, on one server.
		s, err := storepg.Open(t.Context(), shared.NewDatabase(t)+"&pool_max_conns=4")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
