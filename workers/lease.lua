-- A destination's drain lease, fenced by its token, and the due time it leaves behind.
--
-- KEYS[1] lease, KEYS[2] due index, KEYS[3] stream, KEYS[4] state
-- ARGV[1] op: 'acquire' | 'renew' | 'release'; ARGV[2] token; ARGV[3] lease ms;
-- ARGV[4] destination; release also: ARGV[5] batch size, ARGV[6] max wait ms,
-- ARGV[7] not-before (epoch ms, 0 = none), ARGV[8] paused-recheck ms.
-- Every op starts with a write that never needs memory, so it runs on a full Redis.
-- acquire -> 1 if taken; 0 if another holder has it, and then the destination is made due
-- no later than that lease's end (a dead holder is taken over as soon as it has run out).
-- renew -> 1 if still ours, else 0.
-- release -> the due time written (0: removed, the stream is empty), -1 if not ours.
local op, token, lease_ms, name = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if op == 'acquire' then
  local left = redis.call('PTTL', KEYS[1])  -- -2: no lease
  if left ~= -2 then
    if left > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(-inf')  -- a write that needs no memory
      redis.call('ZADD', KEYS[2], 'XX', 'LT', now + left + 1, name)
    end
    return 0
  end
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], token, 'PX', lease_ms)
  -- If this holder dies before its first heartbeat, it is due again when the lease ends.
  redis.call('ZADD', KEYS[2], 'XX', now + lease_ms, name)
  return 1
end
if redis.call('GET', KEYS[1]) ~= token then return op == 'renew' and 0 or -1 end
if op == 'renew' then
  redis.call('PEXPIRE', KEYS[1], lease_ms)
  -- If this holder dies, its destination is due again when its lease has run out.
  redis.call('ZADD', KEYS[2], now + lease_ms, name)
  return 1
end
redis.call('DEL', KEYS[1])
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
    due = tonumber(string.match(first[1], '^(%d+)')) + max_wait
  end
  local backoff = tonumber(st[2] or '0')
  if backoff > due then due = backoff end
end
if not_before > due then due = not_before end
redis.call('ZADD', KEYS[2], due, name)
return due
