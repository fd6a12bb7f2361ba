-- Append events to one or more destination streams: all of them, or none; and make each
-- destination due in its platform's due index.
--
-- KEYS, per destination d: stream, state, lease, due index (sorted set destination -> due ms)
-- ARGV[1] consumer group, ARGV[2] number of destinations D, then per destination:
--   name, platform, cap, batch_size, max_wait_ms, n, and n triples
--   (payload, event_id, happened_at_ms)
-- Returns, per destination: the backlog after the append.
-- Due time: now when a full batch waits, else the oldest entry's time + max_wait_ms, but
-- not before a backoff ends; an earlier due time already in the index is kept. A leased
-- or paused destination is left alone: its drain (or `resume`) writes the due time.
local group = ARGV[1]
local count = tonumber(ARGV[2])
local heads = {}
local pos = 3
for d = 1, count do
  local cap, n = tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 5])
  local backlog = redis.call('XLEN', KEYS[4 * d - 3])
  -- Check every cap before writing anything, so a refusal leaves nothing half-written.
  if backlog + n > cap then
    return redis.error_reply('BACKPRESSURE ' .. d .. ' ' .. backlog .. ' ' .. cap)
  end
  heads[d] = {pos, backlog}
  pos = pos + 6 + 3 * n
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for d = 1, count do
  local p, backlog = heads[d][1], heads[d][2]
  local name, batch = ARGV[p], tonumber(ARGV[p + 3])
  local max_wait, n = tonumber(ARGV[p + 4]), tonumber(ARGV[p + 5])
  local stream = KEYS[4 * d - 3]
  if backlog == 0 and redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    -- Kept so the stream can still be handled if its destination is removed from config.
    redis.call('HSET', KEYS[4 * d - 2], 'platform', ARGV[p + 1])
  end
  local i = p + 6
  for _ = 1, n do
    redis.call('XADD', stream, '*', 'p', ARGV[i], 'e', ARGV[i + 1], 't', ARGV[i + 2])
    i = i + 3
  end
  local after = backlog + n
  local due = now
  if after < batch then
    local oldest = now
    if backlog > 0 then
      local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
      oldest = tonumber(string.match(first[1], '^(%d+)'))
    end
    due = oldest + max_wait
  end
  local st = redis.call('HMGET', KEYS[4 * d - 2], 'paused', 'next_at_ms')
  if not st[1] and redis.call('EXISTS', KEYS[4 * d - 1]) == 0 then
    local backoff = tonumber(st[2] or '0')
    if backoff > due then due = backoff end
    local current = redis.call('ZSCORE', KEYS[4 * d], name)
    if not current or tonumber(current) > due then
      redis.call('ZADD', KEYS[4 * d], due, name)
    end
  end
  out[d] = after
end
return out
