package pluginhost

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// inboxScrapeTimeout bounds the bus's answer to one scrape.
const inboxScrapeTimeout = 2 * time.Second

// InboxCollector exposes, for every installed plugin, the figures of its inbox read from
// the bus at each scrape (so they are the same on every replica sharing a Redis):
//
//	nexus_plugin_inbox_depth    gauge, entries stored and not settled (waiting or in flight)
//	nexus_plugin_dead_letters   gauge, entries in its dead-letter list (the newest 1,000
//	                            kept; dead-lettered by any replica, or by the bus after
//	                            the last attempt)
//
// A scrape while the bus is unreachable reports them as invalid (the scrape says why) and
// the other series as usual. A bus that cannot read them (none today) exposes nothing.
func (h *Host) InboxCollector() prometheus.Collector {
	label := []string{"plugin_id"}
	return &inboxCollector{
		h:     h,
		depth: prometheus.NewDesc("nexus_plugin_inbox_depth", "Entries in the plugin's inbox that are not settled: waiting or in flight.", label, nil),
		dead:  prometheus.NewDesc("nexus_plugin_dead_letters", "Entries in the plugin's dead-letter list.", label, nil),
	}
}

type inboxCollector struct {
	h           *Host
	depth, dead *prometheus.Desc
}

func (c *inboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.dead
}

func (c *inboxCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := c.h.bus.(bus.InboxStatser)
	if !ok {
		return
	}
	all := c.h.reg.Snapshot().All()
	if len(all) == 0 {
		return
	}
	ids := make([]string, len(all))
	for i, p := range all {
		ids[i] = p.ID()
	}
	ctx, cancel := context.WithTimeout(context.Background(), inboxScrapeTimeout)
	defer cancel()
	stats, err := st.InboxStats(ctx, ids)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.depth, err)
		ch <- prometheus.NewInvalidMetric(c.dead, err)
		return
	}
	for i, id := range ids {
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(stats[i].Depth), id)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(stats[i].DeadLetters), id)
	}
}
