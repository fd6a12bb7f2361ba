-- Block a rate-limit scope until ARGV[1] (epoch ms), never shortening an existing block.
-- KEYS[1] blocked-until key. Returns the block's end.
local until_ms = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= until_ms then
  return current
end
redis.call('SET', KEYS[1], until_ms, 'PXAT', until_ms)
return until_ms
