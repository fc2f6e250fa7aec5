-- Claim up to `limit` due jobs for one worker in one step (no WATCH races between workers), take over the jobs
-- whose lease lapsed (their worker is gone), and say when the next job falls due and the next lease lapses.
-- A claimed job moves to the running band of the queue (score = RUNNING_BASE + lease expiry) and its
-- in-progress marker holds "<token>|<try>|<start ms>"; arq's try counter counts the try.
-- KEYS: queue, arq's abort set.  ARGV: now_ms, limit, lease_ms, token, sweep_limit.
-- Returns {claimed, swept, next_due or false, next_lease or false}; claimed items are
-- {id, job record or false, try, aborted (0/1), due score, seq}; swept items {id, job or false, try, aborted, seq,
-- own (0/1: the lapsed lease was this worker's own)}.
local queue, abort = KEYS[1], KEYS[2]
local now, limit, lease, token = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local sweep_limit = tonumber(ARGV[5])
local held = RUNNING_BASE + now + lease
local claimed, swept = {}, {}

local function first_score(min, max)
  local first = redis.call('ZRANGEBYSCORE', queue, min, max, 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then return nil end
  return tonumber(first[2])
end

local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
if #head == 0 then return {claimed, swept, false, false} end
local head_score = tonumber(head[2])

if limit > 0 and head_score <= now then
  local due = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  local ids, scores, markers = {}, {}, {}
  for i = 1, #due, 2 do
    ids[#ids + 1] = due[i]
    scores[#scores + 1] = due[i + 1]
    markers[#markers + 1] = IN_PROGRESS .. due[i]
  end
  -- A due job with an in-progress marker is running elsewhere (arq's Job.abort moves it to the front):
  -- never take it.
  local running = redis.call('MGET', unpack(markers))
  local free, free_scores = {}, {}
  for i = 1, #ids do
    if not running[i] then
      free[#free + 1] = ids[i]
      free_scores[#free_scores + 1] = scores[i]
    end
  end
  local n = #free
  if n > 0 then
    local aborted = redis.call('ZMSCORE', abort, unpack(free))
    local wanted = {}
    for i = 1, n do
      wanted[i] = JOB .. free[i]
      wanted[n + i] = TRIES .. free[i]
      wanted[2 * n + i] = SEQ .. free[i]
    end
    local values = redis.call('MGET', unpack(wanted))
    local marks, entries = {}, {}
    for i = 1, n do
      local id = free[i]
      local try = (tonumber(values[n + i]) or 0) + 1
      marks[#marks + 1] = IN_PROGRESS .. id
      marks[#marks + 1] = token .. '|' .. try .. '|' .. now
      marks[#marks + 1] = TRIES .. id
      marks[#marks + 1] = try
      entries[#entries + 1] = held
      entries[#entries + 1] = id
      claimed[i] = {id, values[i], try, aborted[i] and 1 or 0, free_scores[i], tonumber(values[2 * n + i]) or 0}
    end
    redis.call('MSET', unpack(marks))
    redis.call('ZADD', queue, unpack(entries))
  end
end

-- Leases that lapsed: their worker stopped renewing (killed, or its node lost). Take them over so that the
-- caller re-queues (or, out of tries, fails) each one; nobody else sweeps them meanwhile.
local earliest_lease = first_score(RUNNING_BASE, '+inf')
if earliest_lease ~= nil and earliest_lease <= RUNNING_BASE + now and sweep_limit > 0 then
  local lapsed = redis.call('ZRANGEBYSCORE', queue, RUNNING_BASE, RUNNING_BASE + now, 'LIMIT', 0, sweep_limit)
  local mine = token .. '|'
  for i = 1, #lapsed do
    local id = lapsed[i]
    local marker = redis.call('GET', IN_PROGRESS .. id)
    local try = marker and tonumber(string.match(marker, '|(%d+)|')) or tonumber(redis.call('GET', TRIES .. id) or '0')
    local own = marker and string.sub(marker, 1, #mine) == mine
    -- One of this worker's own leases (it could not renew while Redis was away): keep the marker as it is;
    -- the caller knows whether the job still runs here.
    if not own then redis.call('SET', IN_PROGRESS .. id, token .. '|' .. try .. '|' .. now) end
    redis.call('ZADD', queue, held, id)
    local record = redis.call('GET', JOB .. id)
    local is_aborted = redis.call('ZSCORE', abort, id) and 1 or 0
    swept[#swept + 1] = {id, record, try, is_aborted, tonumber(redis.call('GET', SEQ .. id) or '0'), own and 1 or 0}
  end
  earliest_lease = first_score(RUNNING_BASE, '+inf')
end

local next_due = first_score('-inf', '(' .. RUNNING_BASE)
local next_lease = earliest_lease and (earliest_lease - RUNNING_BASE) or false
return {claimed, swept, next_due or false, next_lease}
