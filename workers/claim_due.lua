-- One scheduler's look at its platforms: claim the due destinations, and the job tracking
-- of a platform whose oldest open job is due.
--
-- KEYS, per platform: due index (destination -> due epoch ms), open jobs, tracker key
-- ARGV[1] at most this many destinations per platform, ARGV[2] claim ms: a claimed
-- destination is due again then unless a drain rewrites it (its heartbeat and its release
-- do), so a lost task message delays it by that much only; the tracker key is held as long.
-- Returns, per platform: {claimed destination names, 1 if job tracking is to be sent}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, claim_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for p = 1, #KEYS / 3 do
  local due_key, jobs_key, tracker = KEYS[3 * p - 2], KEYS[3 * p - 1], KEYS[3 * p]
  -- A first write that needs no memory, so claiming works on a full Redis.
  redis.call('ZREMRANGEBYSCORE', due_key, '-inf', '(-inf')
  local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, limit)
  for _, name in ipairs(due) do
    redis.call('ZADD', due_key, 'XX', now + claim_ms, name)
  end
  local track = 0
  if #redis.call('ZRANGEBYSCORE', jobs_key, '-inf', now, 'LIMIT', 0, 1) > 0
      and redis.call('EXISTS', tracker) == 0 then
    redis.call('SET', tracker, 1, 'PX', claim_ms)
    track = 1
  end
  out[p] = {due, track}
end
return out
