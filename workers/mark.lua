-- Record, for the lease's holder only, that a batch is about to be sent to a platform that
-- cannot deduplicate: until settle.lua forgets it, its outcome counts as unknown.
-- KEYS[1] lease, KEYS[2] sending hash; ARGV[1] token, ARGV[2] batch id, ARGV[3] JSON {ids, at}
-- Returns 1 if recorded, 0 if the lease is not this holder's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], redis.call('PTTL', KEYS[1]))  -- a write that needs no memory
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
