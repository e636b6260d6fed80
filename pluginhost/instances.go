package pluginhost

import "github.com/nexus-platform/nexus/pluginhost/store"

// InstancesConnected returns how many plugin instances, of every plugin, are connected to
// this server (what it reports as the instances it holds among the replicas).
func (h *Host) InstancesConnected() int { return h.pres.Total() }

// SessionsConnected lists the plugin instances connected to this server, ordered by plugin
// and instance id (what it records with its heartbeat for the other replicas to list).
func (h *Host) SessionsConnected() []store.ReplicaSession {
	all := h.pres.All()
	out := make([]store.ReplicaSession, len(all))
	for i, inst := range all {
		out[i] = store.ReplicaSession{PluginID: inst.PluginID(), InstanceID: inst.InstanceID()}
	}
	return out
}
