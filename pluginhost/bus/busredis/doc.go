// Package busredis is the Redis Streams bus.Bus: durable, and shared by several host
// replicas (buses on one Redis with one key prefix).
//
// # Keys
//
// With the default prefix "nexus:":
//
//	nexus:inbox:{plugin}        stream, the plugin's inbox, read through one consumer group
//	                            ("nexus"); entry fields e (the envelope), s (its size,
//	                            bus.Envelope.Size) and, for envelopes with a deadline, d (the
//	                            deadline in Unix ms)
//	nexus:bytes:{plugin}        string, the sum of the s fields of the inbox's entries
//	                            (MaxInboxBytes is enforced on it), kept exact by the scripts
//	                            that add and delete entries (see Trimming)
//	nexus:dead:{plugin}         stream of dead letters (MAXLEN ~ MaxDeadLetters); fields e,
//	                            n (attempts), r (reason), t (Unix ms)
//	nexus:dedupe:{plugin}:{id}  string, an envelope ID seen within DedupeWindow (PX); its
//	                            value is the entry id, or "c" for a message cancelled before
//	                            it was published
//	nexus:live:{plugin}         sorted set of the open consumers scored by when they stop
//	                            counting (refreshed every 3s, 10s of grace)
//	nexus:reply:{replica}       stream of replies to one replica from the others (MAXLEN ~
//	                            10000, expires 5 minutes after its last reply, so dead
//	                            replicas' streams go)
//	nexus:notices               stream every replica reads (MAXLEN ~ 10000): announced events,
//	                            cancellations, and hand-backs of closing consumers
//	nexus:sweep:{plugin}        marker limiting the sweep of a full inbox to once a second
//	nexus:replicas              sorted set of the live replicas scored by when they stop
//	                            counting (refreshed every 3s, 10s of grace): bus.Relay's Alive
//	nexus:holders:{plugin}      sorted set of the replicas where the plugin has connected
//	                            instances, scored the same way (bus.Relay's Holders); updated
//	                            at once when the first instance attaches or the last detaches
//	nexus:relay:{replica}       stream of relay frames to one replica (field f); the replica
//	                            deletes what it read, and the stream expires 5 minutes after
//	                            its last frame (MAXLEN ~ 100000 as a safety net)
//
// Values are compact binary records (codec.go), one field each; Data stays opaque bytes.
//
// # Replica addresses
//
// {replica} is the bus's replica address, Config.Replica: a server's replica id, which
// stays the same across its restarts, or a random one for each bus. What a bus finds of an
// earlier life at the same address, and why it is harmless:
//
//   - Its reply stream: replies to messages the earlier life sent. The reply reader starts
//     after the last reply in the stream when the bus starts; replies that arrive later for
//     the earlier life are handed over as any reply, and the host drops them (no message
//     of this life has their random message id).
//   - Its relay stream: frames sent to the earlier life that it did not read. They are
//     read: a call started there is answered as any (PLUGIN_UNAVAILABLE while no instance
//     of the plugin is connected here, and the caller tries another replica if it can); the other
//     frames belong to calls this life does not know (random call ids) and are dropped.
//   - Its consumers "{instance}@{replica}": an instance that connects again here finds the
//     deliveries its earlier session held and takes them at once as its own pending
//     entries (with a random address they were taken over the same way, by scriptAdopt).
//   - Its membership of the replicas and holders sets: the replicas set keeps counting it
//     (Alive) without a gap, and holders sets may name it for plugins it no longer holds
//     until their scores pass (liveTTL); a call relayed here for one is answered
//     PLUGIN_UNAVAILABLE at once. A call another replica was serving for the earlier life is
//     no longer cancelled by the caller's death (Alive stays true): it ends at its own
//     deadline (every endpoint has a timeout), and its answer is dropped here.
//
// Two live buses must never share an address: they would split the frames of the relay
// stream between them.
//
// # Consumers
//
// Each plugin instance is a consumer of its plugin's group, named "{instance}@{replica}".
// The replica suffix keeps two replicas from ever acting on each other's consumer; when an
// instance reconnects to another replica, its new consumer adopts the pending entries of its
// earlier consumers (XCLAIM JUSTID, which counts no delivery) and deletes them. A
// consumer's loop fetches only while Next calls wait: its own pending entries first, then
// entries idle past the processing timeout (XPENDING IDLE + XCLAIM in one script: the
// delivery count of Redis is the Attempt; past MaxAttempts the same script dead-letters and
// acknowledges the entry; an expired one it just acknowledges), then new entries
// (XREADGROUP ">" BLOCK, at most 1s, so that timed-out entries are looked for at least
// that often). Ack, DeadLetter and Extend run scripts that first check that this consumer
// still holds the entry (XPENDING of the consumer), so that a consumer whose delivery timed
// out and went to another cannot settle it any more.
//
// Extend(d) sets the entry's idle time with XCLAIM IDLE JUSTID so that it becomes
// claimable exactly d from now; for d beyond the processing timeout, the loop touches the
// entry again every third of the timeout until then (Redis has no negative idle time).
//
// Close hands back at once: XCLAIM of every pending entry of the consumer to itself with
// IDLE of ten years and JUSTID. The entries keep their delivery count, and the next
// XPENDING IDLE of any consumer, whatever the processing timeout, takes them; verified on
// Redis 7.0 (Redis refuses idle times before the Unix epoch, hence not "infinity"). A
// notice wakes the consumers of the plugin on every replica to look now. The consumer is
// deleted from the group only when it has no pending entries left: XGROUP DELCONSUMER
// drops a consumer's pending entries, which would lose them.
//
// # Trimming, and why not MAXLEN
//
// An inbox must never lose an entry that is not acknowledged, delivered or not, so it is
// never trimmed with a blind MAXLEN: that drops the oldest entries whatever their state,
// a slow handler's unacknowledged delivery or an entry nobody read yet, silently losing
// exactly what the bus promises to keep. What goes is only what is acknowledged:
//
//   - Every acknowledgement deletes its entry in the same script (XACK then XDEL: Ack,
//     AckReply, DeadLetter, the skipping of expired and cancelled entries, dead-lettering
//     past MaxAttempts). The stream therefore holds exactly the unacknowledged entries,
//     XLEN is MaxInbox's count and Depth, and memory follows them even while an old entry
//     is held for long (a prefix trim cannot pass that one; a node of the stream is freed
//     once all its entries are deleted). Deleting ids at or below the group's
//     last-delivered id leaves Redis's accounting of the group intact.
//   - As a safety net for entries acknowledged outside the bus, a Publish that finds the
//     inbox full (by count or by bytes) first deletes the entries below the acknowledged
//     boundary: the smaller of the group's oldest pending id (XPENDING summary) and the
//     entry after its last-delivered id. Every entry below both was delivered and is no
//     longer pending, that is acknowledged. Then it drops undelivered entries whose
//     deadline passed (at most once a second: that scan is as long as the backlog), and
//     only then refuses with bus.ErrInboxFull.
//   - Every deletion of an entry, in all of the scripts above, goes through one Lua
//     function that subtracts the entry's s field from the bytes key when XDEL did delete
//     it; Publish adds it in the script that adds the entry. So the count is exact at every
//     moment, and survives what the stream survives: a host restart, and a Redis restart
//     with the append-only file (the scripts' effects are logged together). Purge deletes
//     the two keys in one DEL. Should the count be missing while the stream is not (deleted
//     by hand, say), the next Publish counts the entries once and keeps the result.
//
// So the hot path of Publish is O(1): EXISTS of the dedupe key, XLEN, GET of the count,
// XADD, INCRBY, SET; and a settlement reads the size of its entry (XRANGE of one id) before
// deleting it.
//
// # Round trips
//
// Publish is one script call (EVALSHA, EVAL when Redis lost its script cache); PublishAll
// pipelines them. Ack is one script call; AckReply (an extra method of *Consumer) sends a
// reply and acknowledges the message in one. Both have forms that do not wait
// (bus.AsyncSettler: AckAsync, AckReplyAsync, which the host finds with a type assertion),
// so that a session's receive loop never waits for a settle's round trip; Close waits for
// them before it hands the consumer's deliveries back. Reply is one pipeline (XADD and
// PEXPIRE). A reply to the replica that replies (its replies dispatched, as the host's are)
// takes no round trip: the dispatcher gets it at once, and AckReply then only
// acknowledges. Fetching takes one blocking read per batch; there are no goroutines per
// message.
//
// # Failures
//
// Calls fail fast with an error wrapping bus.ErrUnavailable when Redis cannot be reached:
// the client dials for 1s at most, reads and writes time out after 3s and retries once,
// unless the URL sets these (go-redis URL options). The bus recovers by itself: the
// consumer loops and the reply and notice readers retry with backoff (50ms doubling to 1s)
// on fresh connections, recreate the consumer group when a read answers NOGROUP (the inbox
// was purged, or Redis restarted without persistence), and pick up where they were. With
// the append-only file on and appendfsync always, every envelope whose Publish returned nil
// survives a Redis restart. A reply to this replica is handed over even while Redis is
// unreachable (it never goes through Redis), but the acknowledgement then fails: the entry
// stays pending and is delivered again later, at least once, as any unacknowledged entry.
//
// # Connections
//
// Blocking reads (one per consumer loop, one each for the reply, notice and relay readers) use a
// second go-redis client of their own, each reader holding one connection, so that
// CLIENT UNBLOCK from another connection ends a read at once (Close, or a hand-back to
// pick up) and so that they never starve the pool of ordinary calls. That pool is
// 10 per CPU plus 64 connections by default (pool_size in the URL overrides it); the
// blocking client allows up to 10000 connections, opened as consumers open.
package busredis
