-- One scheduler's look at its platforms: claim the due destinations, and the job tracking
-- of a platform whose oldest open job is due; and say how many pool slots (worker
-- processes or threads) consume each platform, so the claimed destinations can be split
-- into enough drain tasks for every slot.
--
-- KEYS, per platform: due index (destination -> due epoch ms), open jobs, tracker key,
-- schedulers ("<slots>|<worker>" -> epoch ms until which that worker counts as alive)
-- ARGV[1] at most this many destinations per platform, ARGV[2] claim ms: a claimed
-- destination is due again then unless a drain rewrites it (its heartbeat and its release
-- do), so a lost task message delays it by that much only; the tracker key is held as long.
-- ARGV[3] this worker's member "<slots>|<worker>" ('' = not renewed by this look), ARGV[4]
-- a member of it to remove ('' none: its slot count changed), ARGV[5] how long a renewal
-- keeps it alive (ms).
-- Returns, per platform: {claimed destination names, 1 if job tracking is to be sent,
-- live slots (counted only when more than one destination was claimed, else 0), ms until
-- the next destination or job poll is due (-1: nothing is scheduled)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, claim_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local member, old_member, alive_ms = ARGV[3], ARGV[4], tonumber(ARGV[5])
local out = {}
for p = 1, #KEYS / 4 do
  local due_key, jobs_key = KEYS[4 * p - 3], KEYS[4 * p - 2]
  local tracker, schedulers = KEYS[4 * p - 1], KEYS[4 * p]
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
  if old_member ~= '' then redis.call('ZREM', schedulers, old_member) end
  if member ~= '' then
    redis.call('ZADD', schedulers, now + alive_ms, member)
    redis.call('PEXPIRE', schedulers, alive_ms)  -- a fleet gone for good leaves no key
  end
  local slots = 0
  if #due > 1 then
    redis.call('ZREMRANGEBYSCORE', schedulers, '-inf', now)
    for _, m in ipairs(redis.call('ZRANGE', schedulers, 0, -1)) do
      slots = slots + (tonumber(string.match(m, '^(%d+)|')) or 1)
    end
  end
  local next_ms = -1
  for _, key in ipairs({due_key, jobs_key}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local wait = math.max(0, tonumber(first[2]) - now)
      if next_ms < 0 or wait < next_ms then next_ms = wait end
    end
  end
  out[p] = {due, track, slots, next_ms}
end
return out
