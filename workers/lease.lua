-- A destination's drain lease, fenced by its token, and the due time it leaves behind.
-- Taking the lease also reads everything a drain checks before its first read (state,
-- limiter, unknown outcomes, what waits in the stream), so a small destination's drain
-- starts with two round trips (this one and the read) instead of ten.
--
-- KEYS[1] lease, KEYS[2] due index, KEYS[3] stream, KEYS[4] state; acquire also: KEYS[5]
-- sending, then per rate-limit scope: bucket, blocked-until (as limiter.lua); release
-- also: KEYS[5] the platform's drain-duration histogram.
-- ARGV[1] op: 'acquire' | 'renew' | 'release'; ARGV[2] token; ARGV[3] lease ms;
-- ARGV[4] destination;
-- acquire also: ARGV[5] read (1: decide the first read, 0: only the lease and the state),
--   ARGV[6] group, ARGV[7] batch size, ARGV[8] max wait ms, ARGV[9] max limiter wait ms,
--   then per scope: refill per second, burst (as limiter.lua);
-- release also: ARGV[5] batch size, ARGV[6] max wait ms, ARGV[7] not-before (epoch ms,
--   0 = none), ARGV[8] paused-recheck ms, ARGV[9] drain seconds ('' = record none),
--   ARGV[10] the histogram field that duration falls in.
-- Every op starts with a write that never needs memory, so it runs on a full Redis.
-- acquire -> {0} if another holder has it, and then the destination is made due no later
--   than that lease's end (a dead holder is taken over as soon as it has run out);
--   else {1, now ms, state hash (flat), limiter wait ms, first read}, the first read being
--   'none' (not decided: paused, backing off, throttled, an unknown outcome to look up,
--   or read = 0) or as first_read below.
-- renew -> 1 if still ours; 2 if it had run out and no other drain has taken it since, so
--   it is ours again; else 0.
-- release -> the due time written (0: removed, the stream is empty), -1 if not ours.
local op, token, lease_ms, name = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function entry_ms(id) return tonumber(string.match(id, '^(%d+)')) end

-- The limiter's peek (limiter.lua with 'peek'): ms until a call could take a token from
-- every scope, taking nothing. The same arithmetic, so both agree (a test checks it).
local function limiter_wait(first_key, first_arg)
  local wait = 0
  for i = 0, (#KEYS - first_key + 1) / 2 - 1 do
    local bucket, blocked = KEYS[first_key + 2 * i], KEYS[first_key + 2 * i + 1]
    local until_ms = tonumber(redis.call('GET', blocked) or '0')
    if until_ms - now > wait then wait = until_ms - now end
    local rate = tonumber(ARGV[first_arg + 2 * i]) / 1000
    local capacity = tonumber(ARGV[first_arg + 2 * i + 1])
    local level = redis.call('HMGET', bucket, 'tokens', 'ts')
    local tokens = tonumber(level[1]) or capacity
    local ts = tonumber(level[2]) or now
    tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
    if tokens < 1 then
      local need = math.ceil((1 - tokens) / rate)
      if need > wait then wait = need end
    end
  end
  return wait
end

-- What the drain's first read should be, as streams.py would decide it: 'pending' if
-- entries are pending (a retry, a dead holder's batch: the drain claims those first),
-- 'new' if a full batch of never-read entries waits or the oldest of them waited max
-- wait, else 'checked' (nothing to read yet). Only decided here: the drain reads
-- itself, since a stream reply passed through Lua costs Redis twice the read.
local function first_read(stream, group, size, max_wait)
  if redis.call('EXISTS', stream) == 0 then return 'checked' end
  local pending = redis.call('XPENDING', stream, group)[1]
  if pending > 0 then return 'pending' end
  local fresh = redis.call('XLEN', stream)
  if fresh <= 0 then return 'checked' end
  if fresh >= size then return 'new' end
  local last = '0-0'
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == group then last = f['last-delivered-id'] end
  end
  local oldest = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)[1]
  if oldest and now - entry_ms(oldest[1]) < max_wait then return 'checked' end
  return 'new'
end

if op == 'acquire' then
  local left = redis.call('PTTL', KEYS[1])  -- -2: no lease
  if left ~= -2 then
    if left > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(-inf')  -- a write that needs no memory
      redis.call('ZADD', KEYS[2], 'XX', 'LT', now + left + 1, name)
    end
    return {0}
  end
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], token, 'PX', lease_ms)
  redis.call('HSET', KEYS[4], 'lease_holder', token)  -- the last drain to take it (renew)
  -- If this holder dies before its first heartbeat, it is due again when the lease ends.
  redis.call('ZADD', KEYS[2], 'XX', now + lease_ms, name)
  local state = redis.call('HGETALL', KEYS[4])
  local st = {}
  for i = 1, #state, 2 do st[state[i]] = state[i + 1] end
  local wait = limiter_wait(6, 10)
  local read, max_limiter_wait = ARGV[5] == '1', tonumber(ARGV[9])
  if not read or st['paused'] or (tonumber(st['next_at_ms'] or '0') or 0) > now
      or wait > max_limiter_wait or redis.call('EXISTS', KEYS[5]) == 1 then
    return {1, now, state, wait, 'none'}
  end
  local size, max_wait = tonumber(ARGV[7]), tonumber(ARGV[8])
  return {1, now, state, wait, first_read(KEYS[3], ARGV[6], size, max_wait)}
end
local holder = redis.call('GET', KEYS[1])
if op == 'renew' then
  if holder == token then
    redis.call('PEXPIRE', KEYS[1], lease_ms)
    -- If this holder dies, its destination is due again when its lease has run out.
    redis.call('ZADD', KEYS[2], now + lease_ms, name)
    return 1
  end
  if not holder and redis.call('HGET', KEYS[4], 'lease_holder') == token then
    -- It ran out while this live holder was kept from the CPU, and no drain has taken it
    -- since (each writes its token first): nobody read or settled an entry meanwhile.
    redis.call('DEL', KEYS[1])  -- a write that needs no memory
    redis.call('SET', KEYS[1], token, 'PX', lease_ms)
    redis.call('ZADD', KEYS[2], now + lease_ms, name)
    return 2
  end
  return 0
end
-- The drain's duration, for the metrics (workers/metrics.py): counted whether or not the
-- lease was still ours, since the drain ran either way.
local function count_drain()
  if ARGV[9] ~= '' then
    redis.call('HINCRBY', KEYS[5], ARGV[10], 1)
    redis.call('HINCRBYFLOAT', KEYS[5], 'sum', ARGV[9])
  end
end
if holder ~= token then
  count_drain()
  return -1
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[4], 'lease_holder')
count_drain()
local batch, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6])
local not_before, recheck = tonumber(ARGV[7]), tonumber(ARGV[8])
local st = redis.call('HMGET', KEYS[4], 'paused', 'next_at_ms')
local due
if st[1] then
  due = now + recheck
else
  local backlog = redis.call('XLEN', KEYS[3])
  if backlog == 0 then
    redis.call('ZREM', KEYS[2], name)
    return 0
  end
  due = now
  if backlog < batch then
    local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
    due = entry_ms(first[1]) + max_wait
  end
  local backoff = tonumber(st[2] or '0')
  if backoff > due then due = backoff end
end
if not_before > due then due = not_before end
redis.call('ZADD', KEYS[2], due, name)
return due
