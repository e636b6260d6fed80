package busredis

// keys names the Redis keys of one bus (see the package documentation for the layout).
type keys struct {
	prefix string
}

// inbox is the stream of plugin's inbox, read through the consumer group.
func (k keys) inbox(plugin string) string { return k.prefix + "inbox:" + plugin }

// bytes is the counter of the sizes (bus.Envelope.Size) of the entries in plugin's inbox,
// kept by the scripts that add and delete them.
func (k keys) bytes(plugin string) string { return k.prefix + "bytes:" + plugin }

// dead is the stream of plugin's dead letters.
func (k keys) dead(plugin string) string { return k.prefix + "dead:" + plugin }

// live is the sorted set of plugin's open consumers, scored by when they stop counting.
func (k keys) live(plugin string) string { return k.prefix + "live:" + plugin }

// dedupe is the key that remembers an envelope ID stored in plugin's inbox (its value is
// the entry id, or "c" for a message cancelled before it was published).
func (k keys) dedupe(plugin, id string) string { return k.prefix + "dedupe:" + plugin + ":" + id }

// sweep marks that plugin's full inbox was swept for expired entries within the last second.
func (k keys) sweep(plugin string) string { return k.prefix + "sweep:" + plugin }

// reply is the stream of the replies to a replica.
func (k keys) reply(replica string) string { return k.prefix + "reply:" + replica }

// notices is the stream every replica reads: announced events, cancellations, hand-backs.
func (k keys) notices() string { return k.prefix + "notices" }

// replicas is the sorted set of the live replicas, scored by when they stop counting.
func (k keys) replicas() string { return k.prefix + "replicas" }

// holders is the sorted set of the replicas where plugin has connected instances, scored
// by when they stop counting.
func (k keys) holders(plugin string) string { return k.prefix + "holders:" + plugin }

// relay is the stream of the relay frames to a replica.
func (k keys) relay(replica string) string { return k.prefix + "relay:" + replica }
