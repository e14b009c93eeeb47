//! The Lua scripts of the transport. Each runs atomically on the server, so several processes
//! may run them at once; each touches keys of one exchange only (one hash slot).

use std::sync::LazyLock;

use ::redis::Script;

/// Parks a copy: `ZADD parked (server time + delay) member`.
/// KEYS: parked set. ARGV: delay in ms, member. Returns the due time in ms.
pub(crate) static PARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], due, ARGV[2])
return due
",
    )
});

/// Moves due copies from a parked set to their stream, each exactly once.
/// KEYS: parked set, target stream. ARGV: most copies to move.
/// Returns `{moved, ms until the next copy is due or -1}`.
pub(crate) static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local fields = cmsgpack.unpack(member)
  redis.call('XADD', KEYS[2], '*', unpack(fields, 2))
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #nxt > 0 then wait = math.max(0, tonumber(nxt[2]) - now) end
return {#due, wait}
",
    )
});

/// Moves one pending entry to a dead-letter stream and acknowledges it, in one step.
/// KEYS: source stream, dead-letter stream. ARGV: group, id, dead-letter queue, the routing
/// key prefix of the queue's own messages (`cqrs.Q.`), expiry in ms since the epoch (empty for
/// none), then header field/value pairs. The dead letter's routing key is
/// `cqrs.<dead-letter queue>.X`. Returns 1, or 0 when the entry was gone (it is acknowledged
/// all the same).
pub(crate) static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
local skip = {routing_key = true, expires_at = true}
for i = 6, #ARGV, 2 do skip[ARGV[i]] = true end
local out = {}
local fields = entry[1][2]
local routing_key = nil
for i = 1, #fields, 2 do
  if fields[i] == 'routing_key' then routing_key = fields[i + 1] end
  if not skip[fields[i]] then
    out[#out + 1] = fields[i]
    out[#out + 1] = fields[i + 1]
  end
end
out[#out + 1] = 'routing_key'
if routing_key == nil then
  out[#out + 1] = ARGV[3]
else
  if string.sub(routing_key, 1, #ARGV[4]) == ARGV[4] then
    routing_key = string.sub(routing_key, #ARGV[4] + 1)
  end
  out[#out + 1] = 'cqrs.' .. ARGV[3] .. '.' .. routing_key
end
if ARGV[5] ~= '' then
  out[#out + 1] = 'expires_at'
  out[#out + 1] = ARGV[5]
end
for i = 6, #ARGV do out[#out + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
",
    )
});

/// Deletes a consumer only when it holds no pending entry (deleting one that does would
/// orphan them). KEYS: stream. ARGV: group, consumer. Returns 1 when deleted.
pub(crate) static DELETE_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
",
    )
});

/// Counts a group's entries over its streams. KEYS: streams. ARGV: group.
/// Returns `{not yet delivered, pending}`.
pub(crate) static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ready, pending = 0, 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == ARGV[1] then
        pending = pending + tonumber(info['pending'])
        if info['lag'] then
          ready = ready + tonumber(info['lag'])
        else
          local rest = redis.call('XRANGE', key, '(' .. info['last-delivered-id'], '+', 'COUNT', 100000)
          ready = ready + #rest
        end
      end
    end
  end
end
return {ready, pending}
",
    )
});

/// Trims a stream without losing what a group still needs.
/// KEYS: stream. ARGV: keep acknowledged (0/1), max age in ms (0 = none), max length (0 =
/// none), trim undelivered (0/1). Returns the number of entries trimmed.
///
/// The oldest entry some group still needs is the oldest it has pending, else the one after
/// its last delivered. Without `keep acknowledged` everything older goes; with it, entries go
/// once they are beyond the age or length bound, but not past what a group needs unless
/// `trim undelivered`. Expired entries at the head go in any case (a message TTL).
pub(crate) static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function less(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep, max_age, max_len, undelivered =
  ARGV[1] == '1', tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local need = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local id
  if tonumber(info['pending']) > 0 then
    id = parse(redis.call('XPENDING', key, info['name'])[2])
  else
    id = parse(info['last-delivered-id'])
    id[2] = id[2] + 1
  end
  if need == nil or less(id, need) then need = id end
end
local bound = nil
if max_age > 0 then bound = {now - max_age, 0} end
if max_len > 0 then
  local len = redis.call('XLEN', key)
  if len > max_len then
    local upto = '+'
    if need ~= nil and not undelivered then upto = string.format('(%d-%d', need[1], need[2]) end
    local range = redis.call('XRANGE', key, '-', upto, 'COUNT', math.min(len - max_len, 1000))
    if #range > 0 then
      local id = parse(range[#range][1])
      id[2] = id[2] + 1
      if bound == nil or less(bound, id) then bound = id end
    end
  end
end
local cut = nil
local all = false
if keep then
  if bound ~= nil then
    cut = bound
    if not undelivered and need ~= nil and less(need, cut) then cut = need end
  end
else
  if need == nil then all = true else cut = need end
  if undelivered and bound ~= nil and cut ~= nil and less(cut, bound) then cut = bound end
end
local from = '-'
for _ = 1, 100 do
  local head = redis.call('XRANGE', key, from, '+', 'COUNT', 1)
  if #head == 0 then break end
  local fields, expires = head[1][2], nil
  for i = 1, #fields, 2 do
    if fields[i] == 'expires_at' then expires = tonumber(fields[i + 1]) end
  end
  if expires == nil or expires > now then break end
  local id = parse(head[1][1])
  id[2] = id[2] + 1
  if not all and (cut == nil or less(cut, id)) then cut = id end
  from = '(' .. head[1][1]
end
if all then return redis.call('XTRIM', key, 'MAXLEN', 0) end
if cut == nil then return 0 end
return redis.call('XTRIM', key, 'MINID', string.format('%d-%d', cut[1], cut[2]))
",
    )
});

/// Republishes a dead letter and removes it from its stream, in one step: nothing is removed
/// unless the copy was appended, and nothing is appended that no queue takes. KEYS:
/// dead-letter stream, target stream, the registry that says a queue takes the copy (the
/// bindings set of a broadcast's CQRS id, or the hash of declared queues). ARGV: the
/// dead-letter queue (its group), the entry id, the declared queue to look for in the hash
/// (empty for a bindings set), then the copy's field/value pairs. Returns 1; 0 when the entry
/// was not there; -1 when no queue takes the copy.
pub(crate) static RETRY_DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) == 0 then return 0 end
local routable
if ARGV[3] == '' then
  routable = redis.call('SCARD', KEYS[3]) > 0
else
  routable = redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1
end
if not routable then return -1 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Describes streams for one group. KEYS: streams. ARGV: group. Returns, per stream,
/// `{exists, length, group exists, pending, not yet delivered}`.
pub(crate) static DESCRIBE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then
    out[i] = {0, 0, 0, 0, 0}
  else
    local found, pending, ready = 0, 0, 0
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local info = {}
      for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
      if info['name'] == ARGV[1] then
        found = 1
        pending = tonumber(info['pending'])
        if info['lag'] then
          ready = tonumber(info['lag'])
        else
          local rest = redis.call('XRANGE', key, '(' .. info['last-delivered-id'], '+', 'COUNT', 100000)
          ready = #rest
        end
      end
    end
    out[i] = {1, redis.call('XLEN', key), found, pending, ready}
  end
end
return out
",
    )
});
