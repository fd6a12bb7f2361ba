-- Settle one batch of one destination, atomically, only for the lease's holder.
--
-- KEYS: 1 lease, 2 stream, 3 state, 4 attempts, 5 sending, 6 dead letters (platform),
--       7 job, 8 job events, 9 open jobs (platform), 10 job index (platform), 11 deliveries,
--       12 delivery latency histogram (platform)
-- ARGV: 1 token, 2 group, 3 consumer, 4 destination, 5 batch id to forget ('' none),
--       6 max attempts, 7 dead-letter retention ms, 8 status, 9 body excerpt,
--       then: n_ack, ids...;
--             n_dead, (id, reason, counted)...;
--             n_retry, n_counted (the first n_counted ids count an attempt), reason,
--             idle ms, ids...;
--             job id ('' none), job state, job detail, poll ms, job ttl ms;
--             next_at_ms (0 none), failures ('reset' | 'incr' | ''), last error,
--             pause reason ('' none), pause fingerprint, warnings, batch id, trace retention ms,
--             histogram bounds (seconds, space-separated)
-- Returns {acked, dead} or {-1} when the lease is no longer this holder's.
local token, group, consumer, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', KEYS[1]) ~= token then return {-1} end
local stream, state, attempts = KEYS[2], KEYS[3], KEYS[4]
local max_attempts, retention = tonumber(ARGV[6]), tonumber(ARGV[7])
local status, excerpt = ARGV[8], ARGV[9]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local p = 10
local acks = {}
for i = 1, tonumber(ARGV[p]) do acks[i] = ARGV[p + i] end
p = p + #acks + 1
local dead = {}
for i = 1, tonumber(ARGV[p]) do
  local q = p + 3 * i - 2
  dead[i] = {ARGV[q], ARGV[q + 1], tonumber(ARGV[q + 2])}
end
p = p + 3 * #dead + 1
local n_retry, n_counted, retry_reason, idle_ms = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), ARGV[p + 2], ARGV[p + 3]
local retry = {}
for i = 1, n_retry do retry[i] = ARGV[p + 3 + i] end
p = p + 4 + n_retry
local job_id, job_state, job_detail = ARGV[p], ARGV[p + 1], ARGV[p + 2]
local poll_ms, job_ttl = tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4])
p = p + 5
local next_at, failures, last_error = tonumber(ARGV[p]), ARGV[p + 1], ARGV[p + 2]
local pause_reason, pause_fp, warnings = ARGV[p + 3], ARGV[p + 4], tonumber(ARGV[p + 5])
local batch_id, trace_ms, bounds_text = ARGV[p + 6], tonumber(ARGV[p + 7]), ARGV[p + 8]

-- Lua's unpack is limited to a few thousand values: call in slices.
local function each_slice(ids, call)
  for i = 1, #ids, 1000 do call({unpack(ids, i, math.min(i + 999, #ids))}) end
end

-- Each entry id as numbers, parsed once: ms (when it was stored) and seq.
local function id_number(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function older(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end

-- The first write frees memory, so settling runs on a full Redis.
redis.call('XACK', stream, group, '0-0')

local function fields(id)
  local entry = redis.call('XRANGE', stream, id, id)[1]
  if not entry then return nil end
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  return f
end

-- Counted retries that reached max_attempts end here, with the last reason.
local keep = {}
for i, id in ipairs(retry) do
  local counted = i <= n_counted
  local n = tonumber(redis.call('HGET', attempts, id) or '0')
  if counted then n = redis.call('HINCRBY', attempts, id, 1) end
  if counted and n >= max_attempts then
    dead[#dead + 1] = {id, 'gave up after ' .. n .. ' attempts: ' .. retry_reason, 0}
  else
    keep[#keep + 1] = id
  end
end

local minid = tostring(math.max(0, now - retention)) .. '-0'
local gone, newest = {}, nil
local n_dead = 0
for _, row in ipairs(dead) do
  local id, reason, this_one = row[1], row[2], row[3]
  local x = id_number(id)
  if not newest or older(newest, x) then newest = x end
  local f = fields(id)
  if f then
    local tries = tonumber(redis.call('HGET', attempts, id) or '0') + this_one
    redis.call('XADD', KEYS[6], 'MINID', '~', minid, '*', 'd', name, 'e', f.e, 'p', f.p,
      't', f.t, 'reason', reason, 'status', status, 'excerpt', excerpt, 'attempts', tries,
      'at', now)
    n_dead = n_dead + 1
  end
  gone[#gone + 1] = id
end

if job_id ~= '' then
  local rows = {}
  for _, id in ipairs(acks) do
    local f = fields(id)
    if f then rows[#rows + 1] = cjson.encode({e = f.e, t = tonumber(f.t), p = f.p}) end
  end
  redis.call('HSET', KEYS[7], 'destination', name, 'batch_id', ARGV[5], 'events', #rows,
    'state', job_state, 'detail', job_detail, 'submitted_at_ms', now, 'finished', 0, 'failed', 0)
  redis.call('PEXPIRE', KEYS[7], job_ttl)
  if #rows > 0 then
    each_slice(rows, function(s) redis.call('RPUSH', KEYS[8], unpack(s)) end)
    redis.call('PEXPIRE', KEYS[8], job_ttl)
  end
  redis.call('ZADD', KEYS[9], now + poll_ms, job_id)
  redis.call('ZADD', KEYS[10], now, job_id)
  redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', now - job_ttl)
end

-- The delivered ids as numbers, and the newest id of every entry this batch removes.
local parsed, sorted = {}, true
for i, id in ipairs(acks) do
  local x = id_number(id)
  parsed[i] = x
  if i > 1 and older(x, parsed[i - 1]) then sorted = false end
  if not newest or older(newest, x) then newest = x end
  gone[#gone + 1] = id
end
if #gone > 0 then
  each_slice(gone, function(s) redis.call('XACK', stream, group, unpack(s)) end)
  if redis.call('EXISTS', attempts) == 1 then
    each_slice(gone, function(s) redis.call('HDEL', attempts, unpack(s)) end)
  end
  -- Entries leave the group in stream order and every acknowledged one is deleted, so
  -- when nothing older than this batch's newest entry is still pending, every entry up to
  -- it is this batch's: one XTRIM frees whole stream nodes where XDEL marks each entry.
  local pending = redis.call('XPENDING', stream, group)
  if pending[1] == 0 or older(newest, id_number(pending[2])) then
    redis.call('XTRIM', stream, 'MINID', string.format('%.0f-%.0f', newest[1], newest[2] + 1))
  else
    each_slice(gone, function(s) redis.call('XDEL', stream, unpack(s)) end)
  end
end
if #keep > 0 then
  -- Left pending, looking idle for a lease, so the next drain claims them at once.
  each_slice(keep, function(s)
    s[#s + 1], s[#s + 2], s[#s + 3] = 'IDLE', idle_ms, 'JUSTID'
    redis.call('XCLAIM', stream, group, consumer, 0, unpack(s))
  end)
end
if ARGV[5] ~= '' then redis.call('HDEL', KEYS[5], ARGV[5]) end

if #acks > 0 and trace_ms > 0 then
  -- One record per delivered batch, its entry ids as runs "ms-first-last", for the trace.
  -- A batch comes in stream order: sorted only when it does not.
  if not sorted then  -- (the latency below does not mind the order)
    table.sort(parsed, older)
  end
  local runs, first = {}, parsed[1]
  local last = first
  for i = 2, #parsed + 1 do
    local x = parsed[i]
    if not x or x[1] ~= last[1] or x[2] ~= last[2] + 1 then
      runs[#runs + 1] = string.format('%.0f-%d-%d', first[1], first[2], last[2])
      first = x
    end
    last = x or last
  end
  redis.call('XADD', KEYS[11], 'MINID', '~', tostring(math.max(0, now - trace_ms)) .. '-0', '*',
    'b', batch_id, 'n', #acks, 's', status, 'j', job_id, 'r', table.concat(runs, ' '))
end
if #acks > 0 then
  -- Enqueue-to-acceptance latency: an entry id's ms is when the event was stored. Entries
  -- stored in the same ms fall in the same bucket: looked up once per ms.
  local bounds, names, counts, total = {}, {}, {}, 0
  for b in string.gmatch(bounds_text, '%S+') do
    bounds[#bounds + 1], names[#names + 1] = tonumber(b), 'le:' .. b
  end
  local last_ms, field = -1, 'le:+Inf'
  for _, x in ipairs(parsed) do
    local age = math.max(0, now - x[1]) / 1000
    total = total + age
    if x[1] ~= last_ms then
      last_ms, field = x[1], 'le:+Inf'
      for k, bound in ipairs(bounds) do
        if age <= bound then field = names[k] break end
      end
    end
    counts[field] = (counts[field] or 0) + 1
  end
  for name_, n in pairs(counts) do redis.call('HINCRBY', KEYS[12], name_, n) end
  redis.call('HINCRBYFLOAT', KEYS[12], 'sum', total)
  redis.call('HINCRBY', state, 'delivered', #acks)
end
if n_dead > 0 then redis.call('HINCRBY', state, 'dead', n_dead) end
if #keep > 0 then redis.call('HINCRBY', state, 'retried', #keep) end
if warnings > 0 then redis.call('HINCRBY', state, 'warnings', warnings) end
if failures == 'reset' then
  redis.call('HSET', state, 'failures', 0)
  redis.call('HDEL', state, 'last_error')
elseif failures == 'incr' then
  redis.call('HINCRBY', state, 'failures', 1)
end
if last_error ~= '' then redis.call('HSET', state, 'last_error', last_error) end
if next_at > 0 then redis.call('HSET', state, 'next_at_ms', next_at) end
if pause_reason ~= '' then
  redis.call('HSET', state, 'paused', 1, 'paused_fp', pause_fp, 'pause_reason', pause_reason)
end
if #acks > 0 then redis.call('HSET', state, 'last_success_ms', now) end
return {#acks, n_dead}
