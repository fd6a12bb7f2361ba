-- Claim a due job for one poller: only if it is still open and due, push its next look
-- to ARGV[3] so no other poller takes it meanwhile.
-- KEYS[1] open-jobs sorted set; ARGV[1] job id, ARGV[2] now (ms), ARGV[3] hold until (ms)
-- Returns 1 if claimed.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
