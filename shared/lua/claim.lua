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
  local ids, scores = {}, {}
  for i = 1, #due, 2 do
    ids[#ids + 1] = due[i]
    scores[#scores + 1] = due[i + 1]
  end
  local n = #ids
  if n > 0 then
    local wanted = {}
    for i = 1, n do
      wanted[i] = IN_PROGRESS .. ids[i]
      wanted[n + i] = JOB .. ids[i]
      wanted[2 * n + i] = TRIES .. ids[i]
      wanted[3 * n + i] = SEQ .. ids[i]
    end
    local values = redis.call('MGET', unpack(wanted))
    local aborts = redis.call('ZMSCORE', abort, unpack(ids))
    local marks, entries = {}, {}
    for i = 1, n do
      -- A due job with an in-progress marker is running elsewhere (arq's Job.abort moves it to the front):
      -- never take it.
      if not values[i] then
        local id, record = ids[i], values[n + i]
        local try = (tonumber(values[2 * n + i]) or 0) + 1
        -- An abort request counts only if made after this job was enqueued (an older one was for an
        -- earlier task of the same id).
        local enqueued = record and tonumber(string.match(record, '^{"f":"[^"]*","fp":"%x*","w":"%a","et":(%d+)'))
        local aborted = aborts[i] and (enqueued == nil or tonumber(aborts[i]) >= enqueued)
        marks[#marks + 1] = IN_PROGRESS .. id
        marks[#marks + 1] = token .. '|' .. try .. '|' .. now
        marks[#marks + 1] = TRIES .. id
        marks[#marks + 1] = try
        entries[#entries + 1] = held
        entries[#entries + 1] = id
        claimed[#claimed + 1] = {id, record, try, aborted and 1 or 0, scores[i], tonumber(values[3 * n + i]) or 0}
      end
    end
    if #marks > 0 then
      redis.call('MSET', unpack(marks))
      redis.call('ZADD', queue, unpack(entries))
    end
  end
end

-- Leases that lapsed: their worker stopped renewing (killed, or its node lost). Take them over so that the
-- caller re-queues (or, out of tries, fails) each one; nobody else sweeps them meanwhile.
local earliest_lease
if head_score >= RUNNING_BASE then
  earliest_lease = head_score  -- nothing waits: the head is the lease that lapses first
else
  earliest_lease = first_score(RUNNING_BASE, '+inf')
end
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

local next_due = nil
if head_score < RUNNING_BASE then
  next_due = (#claimed > 0 or #swept > 0) and first_score('-inf', '(' .. RUNNING_BASE) or head_score
end
local next_lease = earliest_lease and (earliest_lease - RUNNING_BASE) or false
return {claimed, swept, next_due or false, next_lease}
