"""The Lua scripts behind `RedisStore`, and the key layout they share with it.

Every operation that reads and then writes is one script, so it is atomic (Redis runs a script
alone) and costs one round trip. Scripts are sent once per connection pool (`SCRIPT LOAD`, then
`EVALSHA`; redis-py reloads a script the server forgot after a restart).

Keys, all under the store's prefix P (ids and names are used verbatim):

    P f:<id>            hash: one flow (fields below)
    P s:<id>            hash: its checkpoints, step key -> JSON record
    P g:<id>            hash: its unconsumed signals, seq -> JSON [name, payload, signal_id, sent]
    P q:<len>:<id>:<n>  sorted set: the queue of signal name <n> (seq by seq); <len> is len(id),
                        so ids and names containing ':' cannot collide
    P d:<id>            set: signal ids ever delivered to the flow (idempotent sends)
    P seq               counter: signal sequence numbers
    P all               sorted set: every flow by creation time (list_flows)
    P state:<state>     sorted set: flows in that state by creation time
    P name:<flow>       sorted set: flows of that flow name by creation time
    P kids:<parent>     sorted set: a flow's children by creation time
    P due:-, P due:=<v> sorted sets: unversioned / version-v flows that become claimable at a
                        time -- pending ones (by update time), suspended ones with a wake-up
                        time, running ones with a lease (by expiry). Claims read only these.
    P events            pub/sub channel: published on every change others may wait for
    P layout            the layout version (refuses to run against a newer one)

Flow hash fields: id flow input state version parent result error waiting wake attempts epoch
owner lease cancel events created updated origin. Absent fields are None; times are integer
microseconds since the Unix epoch from the server's clock (`TIME`), so leases and timers are
judged by one clock. Nothing has a TTL: a flow and its data stay until deleted by an operator.

Scripts derive the keys they touch from ARGV (the prefix first) instead of declaring them in
KEYS: a flow's parent, signal queues and indexes are only known inside the script. That is fine
on one Redis server (with or without replicas) and is why Redis Cluster is not supported.
"""

from __future__ import annotations

LAYOUT_VERSION = 1

# The hash field of each column in `ergon.storage.rows.FLOW_COLUMNS` order.
FLOW_FIELDS: tuple[str, ...] = (
    "id",
    "flow",
    "input",
    "state",
    "version",
    "parent",
    "result",
    "error",
    "waiting",
    "wake",
    "attempts",
    "epoch",
    "owner",
    "lease",
    "cancel",
    "events",
    "created",
    "updated",
    "origin",
)

PRELUDE = """
local P = ARGV[1]
local TERMINAL = {completed = true, failed = true, cancelled = true}
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function int(n) return string.format('%d', n) end
local function due_key(version)
  if version then return P .. 'due:=' .. version end
  return P .. 'due:-'
end
local function queue_key(id, name)
  return P .. 'q:' .. string.len(id) .. ':' .. id .. ':' .. name
end
-- Re-derive a flow's state and due entries from its hash after a change.
-- The due score mirrors transitions.runnable_at (the claim takes scores <= now).
local function reindex(id, old_state)
  local f = redis.call('HMGET', P .. 'f:' .. id,
    'state', 'version', 'updated', 'wake', 'lease', 'created')
  local state = f[1]
  if old_state ~= state then
    if old_state then redis.call('ZREM', P .. 'state:' .. old_state, id) end
    redis.call('ZADD', P .. 'state:' .. state, f[6], id)
  end
  local due = false
  if state == 'pending' then due = f[3]
  elseif state == 'suspended' then due = f[4]
  elseif state == 'running' then due = f[5] end
  if due then redis.call('ZADD', due_key(f[2]), due, id)
  else redis.call('ZREM', due_key(f[2]), id) end
end
-- An event for the flow: its counter moves, and a suspended flow becomes pending.
-- Mirrors transitions.wake.
local function wake(id, now)
  local fk = P .. 'f:' .. id
  local state = redis.call('HGET', fk, 'state')
  if not state then return end
  redis.call('HINCRBY', fk, 'events', 1)
  redis.call('HSET', fk, 'updated', now)
  if state == 'suspended' then
    redis.call('HSET', fk, 'state', 'pending')
    redis.call('HDEL', fk, 'wake')
  end
  reindex(id, state)
end
local function insert(id, flow, input, state, version, parent, now, origin)
  local fk = P .. 'f:' .. id
  redis.call('HSET', fk, 'id', id, 'flow', flow, 'input', input, 'state', state,
    'attempts', '1', 'epoch', '0', 'events', '0', 'created', now, 'updated', now)
  if version ~= '' then redis.call('HSET', fk, 'version', version) end
  if origin ~= '' then redis.call('HSET', fk, 'origin', origin) end
  if parent ~= '' then
    redis.call('HSET', fk, 'parent', parent)
    redis.call('ZADD', P .. 'kids:' .. parent, now, id)
  end
  redis.call('ZADD', P .. 'all', now, id)
  redis.call('ZADD', P .. 'name:' .. flow, now, id)
  reindex(id, false)
end
"""

# ARGV: P, id, flow, input, state, version, parent, origin -> {created 0|1, flow}
CREATE_FLOW = """
local id = ARGV[2]
local fk = P .. 'f:' .. id
if redis.call('EXISTS', fk) == 1 then return {0, redis.call('HGETALL', fk)} end
insert(id, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], int(now_us()), ARGV[8])
redis.call('PUBLISH', P .. 'events', id)
return {1, redis.call('HGETALL', fk)}
"""

# ARGV: P, id, flow, input, version, parent, owner, origin -> {outcome, flow, steps}
# Mirrors transitions.created, open_refusal and take_over.
OPEN_FLOW = """
local id = ARGV[2]
local fk = P .. 'f:' .. id
local now = int(now_us())
local old = redis.call('HMGET', fk, 'flow', 'state')
if not old[1] then
  insert(id, ARGV[3], ARGV[4], 'running', ARGV[5], ARGV[6], now, ARGV[8])
  redis.call('HSET', fk, 'epoch', '1', 'owner', ARGV[7])
  return {'held', redis.call('HGETALL', fk), {}}
end
if old[1] ~= ARGV[3] then return {'mismatch', redis.call('HGETALL', fk), {}} end
if TERMINAL[old[2]] then return {'ended', redis.call('HGETALL', fk), {}} end
redis.call('HINCRBY', fk, 'epoch', 1)
redis.call('HSET', fk, 'state', 'running', 'owner', ARGV[7], 'updated', now)
redis.call('HDEL', fk, 'lease', 'waiting', 'wake')
reindex(id, old[2])
return {'held', redis.call('HGETALL', fk), redis.call('HGETALL', P .. 's:' .. id)}
"""

# ARGV: P, id, epoch -> {flow, steps} | nil when the epoch is not current
# Mirrors transitions.resumable.
RESUME_FLOW = """
local fk = P .. 'f:' .. ARGV[2]
if redis.call('HGET', fk, 'epoch') ~= ARGV[3] then return false end
return {redis.call('HGETALL', fk), redis.call('HGETALL', P .. 's:' .. ARGV[2])}
"""

# ARGV: P, id, step key, record, epoch|'', consumed seq|'' -> 0 saved, 1 fenced, 2 cancelling
# Mirrors transitions.accepts_checkpoint and checkpoint_refusal.
SAVE_STEP = """
local id = ARGV[2]
if ARGV[5] ~= '' then
  local f = redis.call('HMGET', P .. 'f:' .. id, 'epoch', 'state', 'cancel')
  if f[1] ~= ARGV[5] or f[2] ~= 'running' or f[3] then
    if f[1] == ARGV[5] and f[3] then return 2 end
    return 1
  end
end
redis.call('HSET', P .. 's:' .. id, ARGV[3], ARGV[4])
if ARGV[6] ~= '' then
  local gk = P .. 'g:' .. id
  local record = redis.call('HGET', gk, ARGV[6])
  if record then
    redis.call('ZREM', queue_key(id, cjson.decode(record)[1]), ARGV[6])
    redis.call('HDEL', gk, ARGV[6])
  end
end
return 0
"""

# ARGV: P, id, epoch|'', state, result, error, waiting, wake, seen events, attempts
#   -> {0, flow} | {1} when fenced | {2} when missing
# Mirrors transitions.accepts_end, settle (the race rule), finish and parent_to_wake.
FINISH_FLOW = """
local id = ARGV[2]
local fk = P .. 'f:' .. id
local f = redis.call('HMGET', fk, 'epoch', 'state', 'events', 'parent')
if not f[1] then return {2} end
if ARGV[3] ~= '' and f[1] ~= ARGV[3] then return {1} end
local state = ARGV[4]
if state == 'suspended' and tonumber(f[3]) > tonumber(ARGV[9]) then state = 'pending' end
local now = int(now_us())
redis.call('HSET', fk, 'state', state, 'updated', now)
if ARGV[5] ~= '' then redis.call('HSET', fk, 'result', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', fk, 'error', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', fk, 'waiting', ARGV[7])
else redis.call('HDEL', fk, 'waiting') end
if state == 'suspended' and ARGV[8] ~= '' then redis.call('HSET', fk, 'wake', ARGV[8])
else redis.call('HDEL', fk, 'wake') end
if ARGV[10] ~= '' then redis.call('HSET', fk, 'attempts', ARGV[10]) end
redis.call('HDEL', fk, 'owner', 'lease')
if TERMINAL[state] then redis.call('HDEL', fk, 'cancel') end
reindex(id, f[2])
if TERMINAL[state] and f[4] then wake(f[4], now) end
redis.call('PUBLISH', P .. 'events', id)
return {0, redis.call('HGETALL', fk)}
"""

# ARGV: P, id, name, record, signal_id|'' -> seq | 0 when the signal id was delivered before
SEND_SIGNAL = """
local id = ARGV[2]
if ARGV[5] ~= '' and redis.call('SADD', P .. 'd:' .. id, ARGV[5]) == 0 then return 0 end
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', P .. 'g:' .. id, seq, ARGV[4])
redis.call('ZADD', queue_key(id, ARGV[3]), seq, seq)
wake(id, int(now_us()))
redis.call('PUBLISH', P .. 'events', id)
return seq
"""

# ARGV: P, id, name -> {seq, record} | nil
NEXT_SIGNAL = """
local seqs = redis.call('ZRANGE', queue_key(ARGV[2], ARGV[3]), 0, 0)
if #seqs == 0 then return false end
return {seqs[1], redis.call('HGET', P .. 'g:' .. ARGV[2], seqs[1])}
"""

# ARGV: P, id -> {} when missing | {flow}
# Mirrors transitions.ends_on_cancel and cancel (and parent_to_wake).
REQUEST_CANCEL = """
local id = ARGV[2]
local fk = P .. 'f:' .. id
local f = redis.call('HMGET', fk, 'state', 'lease', 'parent')
if not f[1] then return {} end
if TERMINAL[f[1]] then return {redis.call('HGETALL', fk)} end
local now = now_us()
local stamp = int(now)
if f[1] == 'pending' or f[1] == 'suspended'
    or (f[1] == 'running' and f[2] and tonumber(f[2]) < now) then
  redis.call('HSET', fk, 'state', 'cancelled', 'updated', stamp)
  redis.call('HDEL', fk, 'waiting', 'wake', 'owner', 'lease')
  reindex(id, f[1])
  if f[3] then wake(f[3], stamp) end
else
  redis.call('HSET', fk, 'cancel', '1', 'updated', stamp)
end
redis.call('PUBLISH', P .. 'events', id)
return {redis.call('HGETALL', fk)}
"""

# ARGV: P, owner, version|'', lease microseconds, limit, exclusive ('1'|'')
#   -> {next wake|'', flow, flow, ...}
# Mirrors transitions.is_runnable (through the due index), may_claim (the due keys read: an
# exclusive versioned worker skips due:-) and claim.
CLAIM_FLOWS = """
local now = now_us()
local stamp = int(now)
local limit = tonumber(ARGV[5])
local keys = {}
if ARGV[3] == '' or ARGV[6] ~= '1' then keys[#keys + 1] = P .. 'due:-' end
if ARGV[3] ~= '' then keys[#keys + 1] = P .. 'due:=' .. ARGV[3] end
local due = {}
for _, k in ipairs(keys) do
  local got = redis.call('ZRANGEBYSCORE', k, '-inf', stamp, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #got, 2 do due[#due + 1] = {got[i], tonumber(got[i + 1])} end
end
table.sort(due, function(a, b) return a[2] < b[2] end)
local expires = int(now + tonumber(ARGV[4]))
local out = {''}
for i = 1, #due do
  if #out > limit then break end
  local id = due[i][1]
  local fk = P .. 'f:' .. id
  local old = redis.call('HGET', fk, 'state')
  if old then
    redis.call('HINCRBY', fk, 'epoch', 1)
    redis.call('HSET', fk, 'state', 'running', 'owner', ARGV[2], 'lease', expires,
      'updated', stamp)
    reindex(id, old)
    out[#out + 1] = redis.call('HGETALL', fk)
  else  -- the flow's hash was deleted by hand: forget its index entry
    for _, k in ipairs(keys) do redis.call('ZREM', k, id) end
  end
end
local next_wake = false
for _, k in ipairs(keys) do
  local got = redis.call('ZRANGEBYSCORE', k, '(' .. stamp, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #got > 0 then
    local at = tonumber(got[2])
    if not next_wake or at < next_wake then next_wake = at end
  end
end
if next_wake then out[1] = int(next_wake) end
return out
"""

# ARGV: P, lease microseconds, id, epoch, id, epoch, ... -> {lost ids, cancel-requested ids}
# Mirrors transitions.holds.
RENEW_LEASES = """
local expires = int(now_us() + tonumber(ARGV[2]))
local lost, cancel = {}, {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local fk = P .. 'f:' .. id
  local f = redis.call('HMGET', fk, 'epoch', 'state', 'cancel', 'version')
  if f[1] == ARGV[i + 1] and f[2] == 'running' then
    redis.call('HSET', fk, 'lease', expires)
    redis.call('ZADD', due_key(f[4]), expires, id)
    if f[3] then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
"""

# ARGV: P, state|'', flow|'', parent|'', limit, origin prefix ('' none, else '=' .. prefix)
#   -> {flow, ...} newest first. Walks the most selective index and filters on the other
# criteria. Mirrors transitions.origin_matches.
LIST_FLOWS = """
local state, flow, parent, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local prefix = false
if ARGV[6] ~= '' then prefix = string.sub(ARGV[6], 2) end
local index = P .. 'all'
if parent ~= '' then index = P .. 'kids:' .. parent
elseif flow ~= '' then index = P .. 'name:' .. flow
elseif state ~= '' then index = P .. 'state:' .. state end
local out = {}
local start = 0
local batch = math.max(limit, 100)
while #out < limit do
  local ids = redis.call('ZREVRANGE', index, start, start + batch - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local fk = P .. 'f:' .. id
    local f = redis.call('HMGET', fk, 'state', 'flow', 'parent', 'origin')
    if f[1] and (state == '' or f[1] == state) and (flow == '' or f[2] == flow)
        and (parent == '' or f[3] == parent)
        and (not prefix or (f[4] and string.sub(f[4], 1, #prefix) == prefix)) then
      out[#out + 1] = redis.call('HGETALL', fk)
      if #out >= limit then break end
    end
  end
  start = start + batch
end
return out
"""

# ARGV: P, cutoff (microseconds), origin prefix ('' none, else '=' .. prefix), dry run ('1'|''),
#   limit, ids ('' none, else '=' followed by the JSON list) -> {id, ...} oldest end first.
# Mirrors transitions.prunable and origin_matches, and the rule that a child whose parent has not
# ended stays. Without ids it reads the terminal state indexes up to the cutoff by creation time
# (a flow ends after it is created, so later ones cannot qualify), in pages, and stops reading an
# index once it found `limit` flows in it: the script's work stays bounded by the batch (plus the
# flows it skips), so "oldest first" is by creation among the flows read.
PRUNE_FLOWS = """
local cutoff, limit, dry = tonumber(ARGV[2]), tonumber(ARGV[5]), ARGV[4] == '1'
local prefix = false
if ARGV[3] ~= '' then prefix = string.sub(ARGV[3], 2) end
local found = {}
local function consider(id)
  local f = redis.call('HMGET', P .. 'f:' .. id,
    'state', 'updated', 'origin', 'parent', 'flow', 'version')
  if not f[1] or not TERMINAL[f[1]] or tonumber(f[2]) >= cutoff then return end
  if prefix and not (f[3] and string.sub(f[3], 1, #prefix) == prefix) then return end
  if f[4] then
    local parent_state = redis.call('HGET', P .. 'f:' .. f[4], 'state')
    if parent_state and not TERMINAL[parent_state] then return end
  end
  found[#found + 1] = {id, tonumber(f[2]), f}
end
if ARGV[6] ~= '' then
  local seen = {}
  for _, id in ipairs(cjson.decode(string.sub(ARGV[6], 2))) do
    if not seen[id] then seen[id] = true; consider(id) end
  end
else
  for state, _ in pairs(TERMINAL) do
    local start, before = 0, #found
    while #found - before < limit do
      local ids = redis.call('ZRANGEBYSCORE', P .. 'state:' .. state, '-inf', '(' .. ARGV[2],
        'LIMIT', start, 500)
      for _, id in ipairs(ids) do
        consider(id)
        if #found - before >= limit then break end
      end
      if #ids < 500 then break end
      start = start + 500
    end
  end
end
table.sort(found, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[1] < b[1]
end)
local out = {}
for i = 1, math.min(#found, limit) do
  local id, f = found[i][1], found[i][3]
  out[#out + 1] = id
  if not dry then
    local gk = P .. 'g:' .. id
    local waiting = redis.call('HGETALL', gk)
    for j = 2, #waiting, 2 do
      redis.call('DEL', queue_key(id, cjson.decode(waiting[j])[1]))
    end
    redis.call('DEL', P .. 'f:' .. id, P .. 's:' .. id, gk, P .. 'd:' .. id)
    redis.call('ZREM', P .. 'all', id)
    redis.call('ZREM', P .. 'state:' .. f[1], id)
    redis.call('ZREM', P .. 'name:' .. f[5], id)
    redis.call('ZREM', due_key(f[6]), id)
    if f[4] then redis.call('ZREM', P .. 'kids:' .. f[4], id) end
  end
end
return out
"""

# ARGV: P, version|'' -> {runnable, running, waiting, next wake|''}
# Mirrors transitions.depth (and depth_bucket) over the flows of exactly that version ('' the
# unversioned ones). Runnable is a count of the version's due index up to now (as the claim
# reads it: O(log n)); running and waiting flows are found by walking the running and suspended
# state indexes (every version's) and filtering by the version field, since neither running
# flows without a lease nor suspended flows without a wake-up time are in the due index: the
# script's work is O(running + suspended flows).
QUEUE_DEPTH = """
local now = now_us()
local version = ARGV[2]
local due = P .. 'due:-'
if version ~= '' then due = P .. 'due:=' .. version end
local runnable = redis.call('ZCOUNT', due, '-inf', int(now))
local next_wake = false
local function later(at)
  if not next_wake or at < next_wake then next_wake = at end
end
local function held(state, time_field)
  local found = 0
  for _, id in ipairs(redis.call('ZRANGE', P .. 'state:' .. state, 0, -1)) do
    local f = redis.call('HMGET', P .. 'f:' .. id, 'state', 'version', time_field)
    local mine = (version == '' and not f[2]) or f[2] == version
    if f[1] == state and mine then
      if not f[3] then found = found + 1  -- no lease / no wake-up time: never due by time
      elseif tonumber(f[3]) > now then
        found = found + 1
        later(tonumber(f[3]))
      end  -- due by now: counted as runnable above
    end
  end
  return found
end
local running = held('running', 'lease')
local waiting = held('suspended', 'wake')
local out = {runnable, running, waiting, ''}
if next_wake then out[4] = int(next_wake) end
return out
"""

# The checkpoint script runs for every step: it gets only the part of the prelude it uses.
_SAVE_PRELUDE = """
local P = ARGV[1]
local function queue_key(id, name)
  return P .. 'q:' .. string.len(id) .. ':' .. id .. ':' .. name
end
"""

SCRIPTS: dict[str, str] = {
    "create_flow": CREATE_FLOW,
    "open_flow": OPEN_FLOW,
    "resume_flow": RESUME_FLOW,
    "save_step": SAVE_STEP,
    "finish_flow": FINISH_FLOW,
    "send_signal": SEND_SIGNAL,
    "next_signal": NEXT_SIGNAL,
    "request_cancel": REQUEST_CANCEL,
    "claim_flows": CLAIM_FLOWS,
    "renew_leases": RENEW_LEASES,
    "list_flows": LIST_FLOWS,
    "prune_flows": PRUNE_FLOWS,
    "queue_depth": QUEUE_DEPTH,
}


PRELUDE_FOR: dict[str, str] = {
    name: _SAVE_PRELUDE if name == "save_step" else PRELUDE for name in SCRIPTS
}


def flow_key(prefix: str, flow_id: str) -> str:
    return f"{prefix}f:{flow_id}"


def steps_key(prefix: str, flow_id: str) -> str:
    return f"{prefix}s:{flow_id}"


def events_channel(prefix: str) -> str:
    return f"{prefix}events"


def layout_key(prefix: str) -> str:
    return f"{prefix}layout"
