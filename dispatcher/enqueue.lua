-- Append events to one destination's stream, all or none, and make the destination due.
--
-- KEYS: stream, state, lease, due index (platform), ids (event id -> its entry id as
--       ms * 4096 + sequence, the sequence capped at 4095: the trace finds the entry)
-- ARGV: group, destination, platform, cap, batch_size, max_wait_ms, window_ms, n, then n
--   triples (payload, event_id, happened_at_ms)
-- An event id already stored for this destination within window_ms is not stored again
-- (a producer's retry after a lost reply); window_ms 0 turns that off. A negative
-- window_ms (a dead-letter replay) stores every event and records each id for -window_ms,
-- so the trace finds the replayed entry.
-- Returns {backlog_after, stored}; refuses with 'BACKPRESSURE backlog cap' over the cap.
-- Due time: now when a full batch waits, else the oldest entry's time + max_wait_ms, but
-- not before a backoff ends; an earlier due time already in the index is kept. A leased
-- or paused destination is left alone: its drain (or `resume`) writes the due time.
local stream, state, lease, due_key, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, name, platform = ARGV[1], ARGV[2], ARGV[3]
local cap, batch, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local window, n = tonumber(ARGV[7]), tonumber(ARGV[8])
local check = window > 0
window = math.abs(window)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The per-event ZSCOREs and ZADDs go as one ZMSCORE and one ZADD per PART events: a
-- command from Lua costs about as much as the work it does for one event.
local PART = 1000
local fresh = {}
if window > 0 then
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', string.format('%.0f', (now - window) * 4096))
end
if check then
  local seen = {}
  for first = 1, n, PART do
    local part = {}
    for i = first, math.min(n, first + PART - 1) do part[#part + 1] = ARGV[8 + 3 * i - 1] end
    local scores = redis.call('ZMSCORE', ids, unpack(part))
    for k, id in ipairs(part) do
      if not seen[id] and not scores[k] then fresh[#fresh + 1] = first + k - 1 end
      seen[id] = true
    end
  end
else
  for i = 1, n do fresh[i] = i end
end

local backlog = redis.call('XLEN', stream)
-- Checked before writing anything, so a refusal leaves nothing half-written.
if backlog + #fresh > cap then
  return redis.error_reply('BACKPRESSURE ' .. backlog .. ' ' .. cap)
end
if backlog == 0 and redis.call('EXISTS', stream) == 0 then
  redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  -- Kept so the stream can still be handled if its destination is removed from config.
  redis.call('HSET', state, 'platform', platform)
end
local scored = {}
for _, i in ipairs(fresh) do
  local p = 8 + 3 * i - 2
  local entry = redis.call('XADD', stream, '*', 'p', ARGV[p], 'e', ARGV[p + 1], 't', ARGV[p + 2])
  if window > 0 then
    local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
    local score = tonumber(ms) * 4096 + math.min(tonumber(seq), 4095)
    scored[#scored + 1] = string.format('%.0f', score)
    scored[#scored + 1] = ARGV[p + 1]
    if #scored >= 2 * PART then
      redis.call('ZADD', ids, unpack(scored))
      scored = {}
    end
  end
end
if #scored > 0 then redis.call('ZADD', ids, unpack(scored)) end
if window > 0 and #fresh > 0 then redis.call('PEXPIRE', ids, window) end

local after = backlog + #fresh
if #fresh > 0 then
  local due = now
  if after < batch then
    -- The oldest entry's own ms (Redis 6.2 does not freeze the clock in a script: an entry
    -- written now may carry a later ms than `now`)
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    due = tonumber(string.match(first[1], '^(%d+)')) + max_wait
  end
  local st = redis.call('HMGET', state, 'paused', 'next_at_ms')
  if not st[1] and redis.call('EXISTS', lease) == 0 then
    local backoff = tonumber(st[2] or '0')
    if backoff > due then due = backoff end
    local current = redis.call('ZSCORE', due_key, name)
    if not current or tonumber(current) > due then
      redis.call('ZADD', due_key, due, name)
    end
  end
end
return {after, #fresh}
