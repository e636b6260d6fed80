package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector exposing every plugin of the store, labelled only
// by plugin_id:
//
//		nexus_plugin_up                         gauge, 1 while the plugin runs
//		nexus_plugin_restarts_total             counter
//		nexus_plugin_requests_total             counter
//		nexus_plugin_request_errors_total       counter
//		nexus_plugin_request_duration_seconds   histogram, buckets 1 ms to 10 s
//		nexus_plugin_resident_memory_bytes      gauge, latest sample of the running process
//		nexus_plugin_cpu_seconds_total          counter, over every process of the plugin
//		nexus_plugin_open_fds                   gauge, latest sample of the running process
//		nexus_plugin_redeliveries_total         counter, deliveries handed out again
//		nexus_plugin_dead_lettered_total        counter, deliveries this server dead-lettered
//	                                         (rejected by the plugin, or undecodable)
//
// The collector reads the store at each scrape, so plugins need no registration and a
// forgotten plugin disappears. The two resource gauges are absent until the running process
// has reported a sample. Register it on the server's registry; the store keeps none.
func (s *Store) Collector() prometheus.Collector {
	label := []string{"plugin_id"}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, label, nil)
	}
	return &collector{
		store:     s,
		up:        desc("nexus_plugin_up", "Whether the plugin's process is running (1) or not (0)."),
		restarts:  desc("nexus_plugin_restarts_total", "Restarts of the plugin."),
		requests:  desc("nexus_plugin_requests_total", "Requests and messages the plugin handled."),
		reqErrors: desc("nexus_plugin_request_errors_total", "Requests and messages the plugin failed."),
		durations: desc("nexus_plugin_request_duration_seconds", "Time the plugin took to handle requests and messages."),
		memory:    desc("nexus_plugin_resident_memory_bytes", "Resident memory of the plugin's process."),
		cpu:       desc("nexus_plugin_cpu_seconds_total", "CPU time used by the plugin's processes."),
		fds:       desc("nexus_plugin_open_fds", "Open file descriptors of the plugin's process."),
		redeliver: desc("nexus_plugin_redeliveries_total", "Messages, events and broadcasts handed to the plugin again after an attempt that was not settled."),
		deadLet:   desc("nexus_plugin_dead_lettered_total", "Deliveries to the plugin that this server dead-lettered: rejected by the plugin, or undecodable."),
	}
}

// collector is the store's Prometheus collector. Its descriptors are set once by Collector
// and read-only afterwards.
type collector struct {
	store                                                          *Store
	up, restarts, requests, reqErrors, durations, memory, cpu, fds *prometheus.Desc
	redeliver, deadLet                                             *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.restarts, c.requests, c.reqErrors, c.durations, c.memory, c.cpu, c.fds, c.redeliver, c.deadLet} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	bounds := c.store.layout.promSeconds
	for _, snap := range c.store.snapshots() {
		id := snap.id
		up := 0.0
		if snap.up {
			up = 1
		}
		ch <- constMetric(c.up, prometheus.GaugeValue, up, id)
		ch <- constMetric(c.restarts, prometheus.CounterValue, float64(snap.restarts), id)
		ch <- constMetric(c.requests, prometheus.CounterValue, float64(snap.requests), id)
		ch <- constMetric(c.reqErrors, prometheus.CounterValue, float64(snap.failed), id)
		ch <- constMetric(c.redeliver, prometheus.CounterValue, float64(snap.redeliveries), id)
		ch <- constMetric(c.deadLet, prometheus.CounterValue, float64(snap.deadLettered), id)

		cumulative := make(map[float64]uint64, numPromBounds)
		var n uint64
		for i, b := range bounds {
			n += snap.durations[i]
			cumulative[b] = n
		}
		h, err := prometheus.NewConstHistogram(c.durations, snap.requests, snap.durationSum, cumulative, id)
		if err != nil {
			h = prometheus.NewInvalidMetric(c.durations, err)
		}
		ch <- h

		ch <- constMetric(c.cpu, prometheus.CounterValue, snap.cpuSeconds, id)
		if snap.hasSample {
			ch <- constMetric(c.memory, prometheus.GaugeValue, float64(snap.rss), id)
			ch <- constMetric(c.fds, prometheus.GaugeValue, float64(snap.openFiles), id)
		}
	}
}

// snapshot is a consistent copy of one plugin's Prometheus figures.
type snapshot struct {
	id               string
	up               bool
	restarts         uint64
	requests, failed uint64
	redeliveries     uint64
	deadLettered     uint64
	durations        [numPromBounds + 1]uint64
	durationSum      float64
	cpuSeconds       float64
	hasSample        bool
	rss              int64
	openFiles        int
}

// snapshots copies the Prometheus figures of every plugin. Plugins are locked one at a time,
// never while the map lock is held.
func (s *Store) snapshots() []snapshot {
	s.mu.RLock()
	ids := make([]string, 0, len(s.plugins))
	ps := make([]*plugin, 0, len(s.plugins))
	for id, p := range s.plugins {
		ids = append(ids, id)
		ps = append(ps, p)
	}
	s.mu.RUnlock()

	out := make([]snapshot, len(ps))
	for i, p := range ps {
		p.mu.Lock()
		out[i] = snapshot{
			id:           ids[i],
			up:           p.up,
			restarts:     p.restarts,
			redeliveries: p.redeliveries,
			deadLettered: p.deadLettered,
			requests:     p.requests,
			failed:       p.failed,
			durations:    p.durations,
			durationSum:  p.latencyNS / 1e9,
			cpuSeconds:   p.cpuTotal,
			hasSample:    p.hasSample,
			rss:          p.rss,
			openFiles:    p.openFiles,
		}
		p.mu.Unlock()
	}
	return out
}

// constMetric returns a constant metric, or an invalid metric carrying the error.
func constMetric(desc *prometheus.Desc, t prometheus.ValueType, v float64, id string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(desc, t, v, id)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}
