-- Claim up to `limit` due jobs for one worker in one step (no WATCH races between workers), take over the jobs
-- whose lease lapsed (their worker is gone), and say when the next job falls due and the next lease lapses.
-- A claimed job moves to the running band of the queue (score = RUNNING_BASE + lease expiry) and its
-- in-progress marker holds "<token>|<try>|<start ms>"; arq's try counter counts the try.
-- KEYS: queue, arq's abort set.  ARGV: now_ms, limit, lease_ms, token, sweep_limit, hinted ('1' when a
-- wake-up notice said a job is due: then the due jobs are read first, without looking at the head).
-- Returns {claimed, swept, next_due or false, next_lease or false}; claimed items are
-- {id, job record or false, try, aborted (0/1), due score, seq}; swept items {id, job or false, try, aborted, seq,
-- own (0/1: the lapsed lease was this worker's own)}. next_due is now when more jobs may be due than were taken.
-- An abort request counts only if made after the job was enqueued: an older one was for an earlier task of the
-- same id, and is removed here (the worker's own abort check of a running job reads the set without times).
local queue, abort = KEYS[1], KEYS[2]
local now, limit, lease, token = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local sweep_limit, hinted = tonumber(ARGV[5]), ARGV[6] == '1'
local held = RUNNING_BASE + now + lease
local claimed, swept, stale = {}, {}, {}

-- Whether abort request `requested` (its score, or nil) is for the job of `record`; a stale one is noted.
local function abort_counts(id, record, requested)
  if not requested then return false end
  local enqueued = record and tonumber(string.match(record, '^{"f":"[^"]*","fp":"%x*","w":"%a","et":(%d+)'))
  if enqueued == nil or tonumber(requested) >= enqueued then return true end
  stale[#stale + 1] = id
  return false
end

local function first_score(min, max)
  local first = redis.call('ZRANGEBYSCORE', queue, min, max, 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then return nil end
  return tonumber(first[2])
end

local function due_jobs()
  return redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
end

-- What is due. An idle worker's timer looks at the head first (one command when nothing is queued).
local due = {}
if limit > 0 and hinted then due = due_jobs() end
if #due == 0 then
  local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
  if #head == 0 then return {claimed, swept, false, false} end
  if limit > 0 and not hinted and tonumber(head[2]) <= now then due = due_jobs() end
end

-- Take them: one MGET for their markers, records, tries and counters, one MSET and one ZADD for all.
local n = #due / 2
if n > 0 then
  local ids, scores, wanted = {}, {}, {}
  for i = 1, n do
    ids[i], scores[i] = due[2 * i - 1], due[2 * i]
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
      local aborted = abort_counts(id, record, aborts[i])
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

-- What comes next: the first score after now is a deferred job (waiting band) or, if none waits, the lease
-- that lapses first (running band); a second query finds the lease only when both exist.
local next_due = (#claimed > 0 and #claimed == limit) and now or nil
local earliest_lease = nil
local after = first_score('(' .. now, '+inf')
if after ~= nil then
  if after >= RUNNING_BASE then
    earliest_lease = after
  else
    next_due = next_due or after
    earliest_lease = first_score(RUNNING_BASE, '+inf')
  end
end

-- Leases that lapsed: their worker stopped renewing (killed, or its node lost). Take them over so that the
-- caller re-queues (or, out of tries, fails) each one; nobody else sweeps them meanwhile.
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
    local aborted = abort_counts(id, record, redis.call('ZSCORE', abort, id)) and 1 or 0
    swept[#swept + 1] = {id, record, try, aborted, tonumber(redis.call('GET', SEQ .. id) or '0'), own and 1 or 0}
  end
  earliest_lease = first_score(RUNNING_BASE, '+inf')
end
if #stale > 0 then redis.call('ZREM', abort, unpack(stale)) end

local next_lease = earliest_lease and (earliest_lease - RUNNING_BASE) or false
return {claimed, swept, next_due or false, next_lease}
