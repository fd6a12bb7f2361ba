-- Take one call from every token bucket of a request, all or none, on Redis's clock.
--
-- KEYS, per bucket i: bucket hash {tokens, ts}, blocked-until key (epoch ms, set after a 429)
-- ARGV, per bucket i: refill rate in tokens per second, capacity (burst); then optionally
-- 'peek': only say how long a call would wait, take nothing and write nothing.
-- Returns 0 when the call may go now (one token taken from each bucket), else the
-- milliseconds to wait before asking again (nothing taken).
local peek = ARGV[#KEYS + 1] == 'peek'
if not peek then
  -- A first write that frees or keeps memory lets the script run on a full Redis.
  redis.call('PEXPIRE', KEYS[1], 3600000)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = #KEYS / 2
local wait = 0
local levels = {}
for i = 1, count do
  local blocked = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if blocked - now > wait then wait = blocked - now end
  local rate = tonumber(ARGV[2 * i - 1]) / 1000
  local capacity = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[2 * i - 1], 'tokens', 'ts')
  local tokens = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  if tokens < 1 then
    local need = math.ceil((1 - tokens) / rate)
    if need > wait then wait = need end
  end
  levels[i] = {tokens, rate, capacity}
end
if peek then return wait end
for i = 1, count do
  local tokens, rate, capacity = levels[i][1], levels[i][2], levels[i][3]
  if wait == 0 then tokens = tokens - 1 end
  redis.call('HSET', KEYS[2 * i - 1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[2 * i - 1], math.ceil(capacity / rate) + 60000)
end
return wait
