package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/nexus-platform/nexus/pluginhost/metrics"
)

func TestCollector(t *testing.T) {
	s, clock := newStore(t0)
	s.Started("alpha", t0)
	s.ObserveRequest("alpha", "u1", 2*time.Millisecond, false)
	s.ObserveRequest("alpha", "u2", 30*time.Millisecond, true)
	s.ObserveRequest("alpha", "u1", 2*time.Second, false)
	s.ObserveResources("alpha", 50<<20, 1.5, 9, t0)
	clock.Add(15 * time.Second)
	s.ObserveResources("alpha", 52<<20, 1.8, 11, clock.Now())
	s.Restarted("beta")
	s.Restarted("beta")
	s.Stopped("beta")
	s.ObserveRedelivery("beta")
	s.ObserveRedelivery("beta")
	s.ObserveRedelivery("alpha")
	s.ObserveDeadLetter("beta")

	const want = `# HELP nexus_plugin_cpu_seconds_total CPU time used by the plugin's processes.
# TYPE nexus_plugin_cpu_seconds_total counter
nexus_plugin_cpu_seconds_total{plugin_id="alpha"} 1.8
nexus_plugin_cpu_seconds_total{plugin_id="beta"} 0
# HELP nexus_plugin_dead_lettered_total Deliveries to the plugin that this server dead-lettered: rejected by the plugin, or undecodable.
# TYPE nexus_plugin_dead_lettered_total counter
nexus_plugin_dead_lettered_total{plugin_id="alpha"} 0
nexus_plugin_dead_lettered_total{plugin_id="beta"} 1
# HELP nexus_plugin_open_fds Open file descriptors of the plugin's process.
# TYPE nexus_plugin_open_fds gauge
nexus_plugin_open_fds{plugin_id="alpha"} 11
# HELP nexus_plugin_redeliveries_total Messages, events and broadcasts handed to the plugin again after an attempt that was not settled.
# TYPE nexus_plugin_redeliveries_total counter
nexus_plugin_redeliveries_total{plugin_id="alpha"} 1
nexus_plugin_redeliveries_total{plugin_id="beta"} 2
# HELP nexus_plugin_request_duration_seconds Time the plugin took to handle requests and messages.
# TYPE nexus_plugin_request_duration_seconds histogram
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="0.001"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="0.005"} 1
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="0.01"} 1
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="0.025"} 1
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="0.05"} 2
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="0.1"} 2
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="0.25"} 2
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="0.5"} 2
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="1"} 2
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="2.5"} 3
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="5"} 3
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="10"} 3
nexus_plugin_request_duration_seconds_bucket{plugin_id="alpha",le="+Inf"} 3
nexus_plugin_request_duration_seconds_sum{plugin_id="alpha"} 2.032
nexus_plugin_request_duration_seconds_count{plugin_id="alpha"} 3
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="0.001"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="0.005"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="0.01"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="0.025"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="0.05"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="0.1"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="0.25"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="0.5"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="1"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="2.5"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="5"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="10"} 0
nexus_plugin_request_duration_seconds_bucket{plugin_id="beta",le="+Inf"} 0
nexus_plugin_request_duration_seconds_sum{plugin_id="beta"} 0
nexus_plugin_request_duration_seconds_count{plugin_id="beta"} 0
# HELP nexus_plugin_request_errors_total Requests and messages the plugin failed.
# TYPE nexus_plugin_request_errors_total counter
nexus_plugin_request_errors_total{plugin_id="alpha"} 1
nexus_plugin_request_errors_total{plugin_id="beta"} 0
# HELP nexus_plugin_requests_total Requests and messages the plugin handled.
# TYPE nexus_plugin_requests_total counter
nexus_plugin_requests_total{plugin_id="alpha"} 3
nexus_plugin_requests_total{plugin_id="beta"} 0
# HELP nexus_plugin_resident_memory_bytes Resident memory of the plugin's process.
# TYPE nexus_plugin_resident_memory_bytes gauge
nexus_plugin_resident_memory_bytes{plugin_id="alpha"} 5.4525952e+07
# HELP nexus_plugin_restarts_total Restarts of the plugin.
# TYPE nexus_plugin_restarts_total counter
nexus_plugin_restarts_total{plugin_id="alpha"} 0
nexus_plugin_restarts_total{plugin_id="beta"} 2
# HELP nexus_plugin_up Whether the plugin's process is running (1) or not (0).
# TYPE nexus_plugin_up gauge
nexus_plugin_up{plugin_id="alpha"} 1
nexus_plugin_up{plugin_id="beta"} 0
`
	if got := exposition(t, gather(t, s)); got != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
	}

	s.Forget("beta")
	for _, mf := range gather(t, s) {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == "beta" {
					t.Errorf("%s still has plugin beta after Forget", mf.GetName())
				}
			}
		}
	}
	if got := gatherValue(t, s, "nexus_plugin_requests_total", "alpha"); got != 3 {
		t.Errorf("alpha requests after forgetting beta = %v, want 3", got)
	}
}

// gather scrapes the store's collector through a pedantic registry, which also checks the
// collector's descriptions against what it collects.
func gather(t *testing.T, s *metrics.Store) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(s.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// gatherValue returns the value of a counter or gauge of one plugin, failing when absent.
func gatherValue(t *testing.T, s *metrics.Store, name, pluginID string) float64 {
	t.Helper()
	for _, mf := range gather(t, s) {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != pluginID {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s for plugin %s", name, pluginID)
	return 0
}

// exposition renders metric families in the Prometheus text format.
func exposition(t *testing.T, mfs []*dto.MetricFamily) string {
	t.Helper()
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
