package busredis

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts. Each runs atomically in one round trip (EVALSHA, falling back to EVAL
// when Redis lost its script cache, e.g. after a restart). They declare every key they
// touch. Replies are integers or flat arrays, so that Go parses them without reflection.

// luaPrelude is shared by the scripts that need it.
const luaPrelude = `
local function splitid(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function idlt(ams, aseq, bms, bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end

-- groupstate returns the pending count and last-delivered id of group on inbox (0 and
-- '0-0' when the group does not exist), or nothing when inbox does not exist.
local function groupstate(inbox, group)
  if redis.call('EXISTS', inbox) == 0 then return nil end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', inbox)) do
    local name, pending, last
    for i = 1, #g, 2 do
      local k = g[i]
      if k == 'name' then name = g[i + 1]
      elseif k == 'pending' then pending = g[i + 1]
      elseif k == 'last-delivered-id' then last = g[i + 1]
      end
    end
    if name == group then return pending, last end
  end
  return 0, '0-0'
end

-- undelivered returns the entries of inbox after last (at most limit when limit is given).
local function undelivered(inbox, last, limit)
  if limit then
    return redis.call('XRANGE', inbox, '(' .. last, '+', 'COUNT', limit)
  end
  return redis.call('XRANGE', inbox, '(' .. last, '+')
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- xclaim claims ids for consumer with min idle 0, then the options given.
local function xclaim(inbox, group, consumer, ids, ...)
  local args = {'XCLAIM', inbox, group, consumer, 0}
  for _, id in ipairs(ids) do args[#args + 1] = id end
  for _, o in ipairs({...}) do args[#args + 1] = o end
  return redis.call(unpack(args))
end

-- entrysize is the size an entry counts for in its inbox's byte count (field s; entries
-- written before the count existed have none and count 0, in and out alike).
local function entrysize(fields)
  return tonumber(field(fields, 's') or '0')
end

-- drop deletes entry id of inbox and takes its size off the inbox's byte count, if it was
-- still there. size is the entry's size when the caller has read the entry already (nil:
-- read it here). Every deletion of an inbox entry goes through drop, so that the count is
-- always the sum of the sizes of the entries in the stream.
local function drop(inbox, bytes, id, size)
  if not size then
    local r = redis.call('XRANGE', inbox, id, id)
    if #r == 0 then return 0 end
    size = entrysize(r[1][2])
  end
  local n = redis.call('XDEL', inbox, id)
  if n == 1 and size > 0 then redis.call('DECRBY', bytes, size) end
  return n
end

-- usedbytes returns the byte count of inbox. Without a count yet (a new inbox, or one
-- whose count was lost), it counts the entries once and keeps the result.
local function usedbytes(inbox, bytes)
  local v = redis.call('GET', bytes)
  if v then return tonumber(v) end
  local n = 0
  if redis.call('EXISTS', inbox) == 1 then
    for _, e in ipairs(redis.call('XRANGE', inbox, '-', '+')) do n = n + entrysize(e[2]) end
  end
  redis.call('SET', bytes, n)
  return n
end

-- settle acknowledges id and deletes it: an acknowledged entry is of no use, and deleting
-- it at once keeps the stream as short as its unacknowledged entries even while an old
-- entry is held (XTRIM MINID cannot trim past that one). The deleted id is at or below the
-- group's last-delivered id, so Redis keeps track of the group's lag. size is as for drop.
local function settle(inbox, bytes, group, id, size)
  local n = redis.call('XACK', inbox, group, id)
  drop(inbox, bytes, id, size)
  return n
end

-- owns reports whether consumer holds id in group's pending entries list.
local function owns(inbox, group, consumer, id)
  local ok, p = pcall(redis.call, 'XPENDING', inbox, group, id, id, 1, consumer)
  return ok and #p > 0
end
`

// scriptPublish stores envelopes for one inbox, in order: each unless its ID was seen, or
// refuses it when the inbox is full: it holds max inbox entries, or the envelope's size
// would take its byte count past max bytes. One call stores the publishes to one inbox that
// wait for the same pipeline (see pubQueue): the inbox's length and byte count are read once
// and the count written once, instead of for each envelope.
//
// Every acknowledgement deletes its entry in the same script (settle), and so do the
// cancellation of an undelivered message and the sweep of expired ones: the stream holds
// exactly the unacknowledged entries, XLEN (O(1)) is their count and the bytes key (a
// counter kept by the same scripts, see drop) the sum of their sizes. Only when the inbox
// is full does the script trim, as a safety net for entries acknowledged outside the bus:
// it deletes the entries below the acknowledged boundary, the smaller of the group's
// oldest pending id and the entry after its last-delivered id; every entry below both was
// delivered and is no longer pending. Then, if the inbox is still full, it deletes the
// undelivered entries whose deadline passed (at most once a second per inbox, marked by the
// sweep key: that scan is as long as the backlog) and looks again.
//
// KEYS: inbox, sweep marker, bytes, then the dedupe keys of the envelopes that have one, in
// order. ARGV: group, dedupe window ms, max inbox, now ms, max bytes, then four per
// envelope: its record, deadline ms (0: none), size, and 1 when it has a dedupe key (else 0).
// Returns one answer per envelope: 1 stored, 2 duplicate, 0 full.
var scriptPublish = newScript(luaPrelude + `
local inbox, marker, bytes = KEYS[1], KEYS[2], KEYS[3]
local group, window, max, now, maxBytes = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- len and used are the inbox's entries and bytes as this call knows them (nil: read them);
-- added is what this call stored and has not counted in the bytes key yet.
local len, used, added = nil, nil, 0

local function flush()
  if added > 0 then
    redis.call('INCRBY', bytes, added)
    added = 0
  end
end

local function over(size)
  return redis.call('XLEN', inbox) >= max or usedbytes(inbox, bytes) + size > maxBytes
end

-- full reports whether an entry of size does not fit, after freeing room when it does not.
local function full(size)
  if not len then
    len, used = redis.call('XLEN', inbox), usedbytes(inbox, bytes) + added
  end
  if len < max and used + size <= maxBytes then return false end
  flush() -- drop and usedbytes work on the bytes key: it must be exact now
  len = nil
  local pending, last = groupstate(inbox, group)
  if pending then
    local bms, bseq = splitid(last)
    bseq = bseq + 1
    if pending > 0 then
      local oms, oseq = splitid(redis.call('XPENDING', inbox, group)[2])
      if idlt(oms, oseq, bms, bseq) then bms, bseq = oms, oseq end
    end
    local boundary = string.format('(%.0f-%.0f', bms, bseq)
    for _, e in ipairs(redis.call('XRANGE', inbox, '-', boundary)) do
      drop(inbox, bytes, e[1], entrysize(e[2]))
    end
  end
  if over(size) then
    if not redis.call('SET', marker, '1', 'NX', 'PX', 1000) then return true end
    for _, e in ipairs(undelivered(inbox, last or '0-0')) do
      local d = tonumber(field(e[2], 'd') or '0')
      if d > 0 and d <= now then drop(inbox, bytes, e[1], entrysize(e[2])) end
    end
    if over(size) then return true end
  end
  return false
end

local out, k = {}, 4
for i = 6, #ARGV, 4 do
  local rec, deadline, size = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local dedupe
  if ARGV[i + 3] == '1' then
    dedupe, k = KEYS[k], k + 1
  end
  if dedupe and redis.call('EXISTS', dedupe) == 1 then
    out[#out + 1] = 2
  elseif full(size) then
    out[#out + 1] = 0
  else
    local id
    if deadline ~= '0' then
      id = redis.call('XADD', inbox, '*', 'e', rec, 's', ARGV[i + 2], 'd', deadline)
    else
      id = redis.call('XADD', inbox, '*', 'e', rec, 's', ARGV[i + 2])
    end
    if not len then
      len, used = redis.call('XLEN', inbox) - 1, usedbytes(inbox, bytes) + added
    end
    len, used, added = len + 1, used + size, added + size
    if dedupe then redis.call('SET', dedupe, id, 'PX', window) end
    out[#out + 1] = 1
  end
end
flush()
return out
`)

// scriptClaim takes entries for a consumer: with mode "idle" the oldest entries of any
// consumer idle for at least the processing timeout (XPENDING IDLE, then XCLAIM with the
// same minimum idle time: like XAUTOCLAIM, but it never claims more than count entries
// however long the pending entries list, and needs no cursor), with mode "own" the
// consumer's own pending entries (from a previous session) after an exclusive start.
// Either way their delivery count grows by one. Entries whose deadline passed are
// acknowledged, and entries past max attempts go to the dead-letter stream and are
// acknowledged, in the same step.
//
// KEYS: inbox, dead, bytes. ARGV: group, consumer, mode, min idle ms, start, count, max
// attempts, now ms, max dead letters.
// Returns {next start ('0-0' when there are no more), {id, envelope record, delivery
// count, ...}, number of entries claimed (dead-lettered ones included)}.
var scriptClaim = newScript(luaPrelude + `
local inbox, dead, bytes = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, count, maxAttempts = ARGV[1], ARGV[2], tonumber(ARGV[6]), tonumber(ARGV[7])
local p
if ARGV[3] == 'idle' then
  p = redis.call('XPENDING', inbox, group, 'IDLE', ARGV[4], '-', '+', count)
else
  p = redis.call('XPENDING', inbox, group, ARGV[5], '+', count, consumer)
end
if #p == 0 then return {'0-0', {}, 0} end
local ids = {}
for i, e in ipairs(p) do ids[i] = e[1] end
-- Min idle 0 is right for both: the script is atomic, the idle entries are still idle.
local entries = xclaim(inbox, group, consumer, ids)
local cursor = '0-0'
if ARGV[3] == 'own' and #p == count then cursor = '(' .. ids[#ids] end
local out = {}
local now = tonumber(ARGV[8])
for _, e in ipairs(entries) do
  local id = e[1]
  local raw = field(e[2], 'e') or ''
  local n = redis.call('XPENDING', inbox, group, id, id, 1)[1][4]
  local deadline = tonumber(field(e[2], 'd') or '0')
  if deadline > 0 and deadline <= now then
    settle(inbox, bytes, group, id, entrysize(e[2])) -- expired: settled, not dead
  elseif n > maxAttempts then
    redis.call('XADD', dead, 'MAXLEN', '~', ARGV[9], '*', 'e', raw, 'n', n - 1, 'r', 'max attempts exceeded', 't', ARGV[8])
    settle(inbox, bytes, group, id, entrysize(e[2]))
  else
    out[#out + 1] = id
    out[#out + 1] = raw
    out[#out + 1] = n
  end
end
return {cursor, out, #p}
`)

// scriptAdopt moves to a consumer the pending entries of the earlier sessions of the same
// instance (consumers named "<name>@<replica>" on other replicas, or dead ones), without
// counting a delivery, and deletes those consumers. The consumer then reads them as its
// own pending entries (scriptClaim mode "own"). A replica address is what Config.Replica
// allows (letters, digits, '-', '_'), so a consumer of another instance whose name starts
// with "<name>@" ("<name>@x@<replica>") does not match.
//
// KEYS: inbox. ARGV: group, consumer, name (the instance name, without "@replica").
// Returns the number of entries adopted.
var scriptAdopt = newScript(luaPrelude + `
local inbox, group, me, name = KEYS[1], ARGV[1], ARGV[2], ARGV[3] .. '@'
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', inbox, group)
if not ok then return 0 end
local n = 0
for _, c in ipairs(consumers) do
  local cname = field(c, 'name')
  if cname ~= me and string.sub(cname, 1, #name) == name and string.match(string.sub(cname, #name + 1), '^[%w_-]+$') then
    while true do
      local p = redis.call('XPENDING', inbox, group, '-', '+', 100, cname)
      if #p == 0 then break end
      local ids = {}
      for i, e in ipairs(p) do ids[i] = e[1] end
      xclaim(inbox, group, me, ids, 'JUSTID')
      n = n + #ids
      if #p < 100 then break end
    end
    redis.call('XGROUP', 'DELCONSUMER', inbox, group, cname)
  end
end
return n
`)

// scriptAckMany acknowledges the entries a consumer holds among the ids given, in one call
// for the acknowledgements a consumer made meanwhile (see ackQueue): one XPENDING over the
// ids' range tells which the consumer holds, one XACK takes them all, and one DECRBY takes
// their sizes off the byte count; each is then deleted (XDEL, one by one so that only the
// entries still there count off, as drop does).
//
// KEYS: inbox, bytes. ARGV: group, consumer, then pairs of id and size ("" when unknown: the
// script reads it). Returns one 1 (held, acknowledged) or 0 (not held) per id.
var scriptAckMany = newScript(luaPrelude + `
local inbox, bytes, group, consumer = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local lo, hi, loms, loseq, hims, hiseq
for i = 3, #ARGV, 2 do
  local ms, seq = splitid(ARGV[i])
  if ms then
    if not lo or idlt(ms, seq, loms, loseq) then lo, loms, loseq = ARGV[i], ms, seq end
    if not hi or idlt(hims, hiseq, ms, seq) then hi, hims, hiseq = ARGV[i], ms, seq end
  end
end
local out = {}
for i = 3, #ARGV, 2 do out[#out + 1] = 0 end
if not lo then return out end
local ok, p = pcall(redis.call, 'XPENDING', inbox, group, lo, hi, 1000000, consumer)
if not ok or #p == 0 then return out end
local held = {}
for _, e in ipairs(p) do held[e[1]] = true end
local ids, sizes, slots = {}, {}, {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if held[id] then
    held[id] = nil -- an id given twice counts once
    ids[#ids + 1] = id
    sizes[#sizes + 1] = tonumber(ARGV[i + 1])
    out[(i - 1) / 2] = 1
  end
end
if #ids == 0 then return out end
redis.call('XACK', inbox, group, unpack(ids))
local total = 0
for j, id in ipairs(ids) do
  local size = sizes[j]
  if not size then
    local r = redis.call('XRANGE', inbox, id, id)
    size = (#r > 0) and entrysize(r[1][2]) or 0
  end
  if redis.call('XDEL', inbox, id) == 1 then total = total + size end
end
if total > 0 then redis.call('DECRBY', bytes, total) end
return out
`)

// scriptSkip acknowledges entries a consumer skipped (expired or cancelled).
//
// KEYS: inbox, bytes. ARGV: group, then the ids. Returns the number acknowledged.
var scriptSkip = newScript(luaPrelude + `
local n = 0
for i = 2, #ARGV do n = n + settle(KEYS[1], KEYS[2], ARGV[1], ARGV[i]) end
return n
`)

// scriptAckReply sends a reply and acknowledges the message it answers if the consumer
// holds it (the reply goes either way: the work is done).
//
// KEYS: inbox, reply stream, bytes. ARGV: group, consumer, id, reply record, reply stream
// max length, reply stream TTL ms, the entry's size ("" when unknown: the script reads it). Returns 1, or 0 when
// the consumer does not hold the entry.
var scriptAckReply = newScript(luaPrelude + `
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'r', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
return settle(KEYS[1], KEYS[3], ARGV[1], ARGV[3], tonumber(ARGV[7]))
`)

// scriptTouch sets the idle time of entries the consumer holds (XCLAIM IDLE JUSTID to
// itself, which does not count a delivery), so that other consumers claim them only once
// that idle time reaches the processing timeout.
//
// KEYS: inbox. ARGV: group, consumer, then pairs of id and idle ms. Returns one 1 (held) or
// 0 (not) per id.
var scriptTouch = newScript(luaPrelude + `
local out = {}
for i = 3, #ARGV, 2 do
  if owns(KEYS[1], ARGV[1], ARGV[2], ARGV[i]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[i + 1], 'JUSTID')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
`)

// scriptDeadLetter moves an entry the consumer holds to the dead-letter stream and
// acknowledges it.
//
// KEYS: inbox, dead, bytes. ARGV: group, consumer, id, reason, now ms, max dead letters,
// fallback envelope record (used when the entry is gone). Returns 1, or 0 when the consumer
// does not hold it.
var scriptDeadLetter = newScript(luaPrelude + `
local inbox, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local ok, p = pcall(redis.call, 'XPENDING', inbox, group, id, id, 1, consumer)
if not ok or #p == 0 then return 0 end
local raw, size = ARGV[7], 0
local r = redis.call('XRANGE', inbox, id, id)
if #r > 0 then raw, size = field(r[1][2], 'e') or raw, entrysize(r[1][2]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'e', raw, 'n', p[1][4], 'r', ARGV[4], 't', ARGV[5])
settle(inbox, KEYS[3], group, id, size)
return 1
`)

// scriptHandback ends a consumer: its pending entries get a huge idle time (XCLAIM IDLE
// JUSTID, which keeps their delivery count) so that the next XAUTOCLAIM of any consumer
// takes them at once; a notice tells the other replicas to look. A consumer left without
// pending entries is deleted from the group (deleting one with pending entries would drop
// them). It leaves the live set either way.
//
// KEYS: inbox, live, notices. ARGV: group, consumer, idle ms, notice record, notices max
// length. Returns the number of entries handed back.
var scriptHandback = newScript(luaPrelude + `
local inbox, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local n = 0
if redis.call('EXISTS', inbox) == 1 then
  local ok, p = pcall(redis.call, 'XPENDING', inbox, group, '-', '+', 1000000, consumer)
  if ok then
    for i = 1, #p, 100 do
      local ids = {}
      for j = i, math.min(i + 99, #p) do ids[#ids + 1] = p[j][1] end
      xclaim(inbox, group, consumer, ids, 'IDLE', ARGV[3], 'JUSTID')
    end
    n = #p
    if n == 0 then redis.call('XGROUP', 'DELCONSUMER', inbox, group, consumer) end
  end
end
redis.call('ZREM', KEYS[2], consumer)
if n > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'n', ARGV[4])
end
return n
`)

// scriptCancel withdraws a message: an entry of it that was not delivered yet is deleted;
// when it was never published, its ID is marked seen (for the remember time) so that a
// later publish stores nothing. Then a notice tells every replica (consumers skip the ID and
// report it when in flight).
//
// KEYS: inbox, dedupe key, notices, bytes. ARGV: group, remember ms (0: do not), notice
// record, notices max length. Returns 1.
var scriptCancel = newScript(luaPrelude + `
local inbox, dedupe, bytes = KEYS[1], KEYS[2], KEYS[4]
local eid = redis.call('GET', dedupe)
if eid then
  local ems, eseq = splitid(eid)
  if ems then
    local pending, last = groupstate(inbox, ARGV[1])
    if pending then
      local lms, lseq = splitid(last)
      if idlt(lms, lseq, ems, eseq) then drop(inbox, bytes, eid) end
    end
  end
elseif tonumber(ARGV[2]) > 0 then
  redis.call('SET', dedupe, 'c', 'PX', ARGV[2])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'n', ARGV[3])
return 1
`)

// script is a Lua script and its source.
type script struct {
	*redis.Script
	src string
}

func newScript(src string) script { return script{Script: redis.NewScript(src), src: src} }

// load adds the loading of s to pipe. (redis.Script.Load must not be given a pipeline: it
// would record the empty result as the script's hash.)
func (s script) load(ctx context.Context, pipe redis.Pipeliner) { pipe.ScriptLoad(ctx, s.src) }

// allScripts are loaded at start, so that pipelines can use EVALSHA.
var allScripts = []script{
	scriptPublish, scriptClaim, scriptAdopt, scriptAckMany, scriptSkip, scriptAckReply,
	scriptTouch, scriptDeadLetter, scriptHandback, scriptCancel,
}
