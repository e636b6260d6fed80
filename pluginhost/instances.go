package pluginhost

// InstancesConnected returns how many plugin instances, of every plugin, are connected to
// this server (what it reports as the instances it holds among the replicas).
func (h *Host) InstancesConnected() int { return h.pres.Total() }
