-- Move up to ARGV[4] entries of an orphaned stream (its destination is no longer
-- configured) to the dead-letter stream, with the reason; an operator's command.
-- KEYS[1] stream, KEYS[2] state, KEYS[3] attempts, KEYS[4] dead letters
-- ARGV[1] group, ARGV[2] destination, ARGV[3] reason, ARGV[4] count
-- Returns how many entries were moved (0: the stream is empty).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[4]))
for _, entry in ipairs(entries) do
  local id, f = entry[1], {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
  local tries = redis.call('HGET', KEYS[3], id) or '0'
  redis.call('HDEL', KEYS[3], id)
  redis.call('XADD', KEYS[4], '*', 'd', ARGV[2], 'e', f.e, 'p', f.p, 't', f.t,
    'reason', ARGV[3], 'status', '', 'excerpt', '', 'attempts', tries, 'at', now)
end
if #entries > 0 then redis.call('HINCRBY', KEYS[2], 'dead', #entries) end
return #entries
