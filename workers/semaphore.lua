-- A counting semaphore with expiring holders: at most ARGV[2] calls in flight at once.
--
-- KEYS[1] sorted set holder -> expiry (epoch ms); ARGV[1] 'acquire', 'release' or 'peek',
-- ARGV[2] limit, ARGV[3] holder id, ARGV[4] hold ms (a crashed holder frees its slot then).
-- Returns 1 when acquired or released (peek: a slot is free), 0 when every slot is taken.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'release' then
  redis.call('ZREM', KEYS[1], ARGV[3])
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
if ARGV[1] == 'peek' then return 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
return 1
