-- Append events to one or more destination streams: all of them, or none.
--
-- KEYS, per destination d: stream, kick (delayed drain queued), kick_now (immediate drain queued)
-- ARGV[1] consumer group, ARGV[2] number of destinations D, then per destination:
--   cap, batch_size, kick_ttl_ms, n, and n triples (payload, event_id, happened_at_ms)
-- Returns, per destination: {backlog_after, kick} with kick 0 = none needed,
-- 1 = send a delayed drain, 2 = send a drain now (a full batch is waiting).
local group = ARGV[1]
local count = tonumber(ARGV[2])
local heads = {}
local pos = 3
for d = 1, count do
  local cap, n = tonumber(ARGV[pos]), tonumber(ARGV[pos + 3])
  local backlog = redis.call('XLEN', KEYS[3 * d - 2])
  -- Check every cap before writing anything, so a refusal leaves nothing half-written.
  if backlog + n > cap then
    return redis.error_reply('BACKPRESSURE ' .. d .. ' ' .. backlog .. ' ' .. cap)
  end
  heads[d] = {pos, backlog}
  pos = pos + 4 + 3 * n
end
local out = {}
for d = 1, count do
  local p, backlog = heads[d][1], heads[d][2]
  local batch, ttl, n = tonumber(ARGV[p + 1]), ARGV[p + 2], tonumber(ARGV[p + 3])
  local stream = KEYS[3 * d - 2]
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  end
  local i = p + 4
  for _ = 1, n do
    redis.call('XADD', stream, '*', 'p', ARGV[i], 'e', ARGV[i + 1], 't', ARGV[i + 2])
    i = i + 3
  end
  local after = backlog + n
  local kick = 0
  if after >= batch then
    if redis.call('SET', KEYS[3 * d], '1', 'NX', 'PX', ttl) then kick = 2 end
  elseif redis.call('SET', KEYS[3 * d - 1], '1', 'NX', 'PX', ttl) then
    kick = 1
  end
  out[d] = {after, kick}
end
return out
