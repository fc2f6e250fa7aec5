-- Claim up to `limit` due jobs of the tasks this worker runs, in one step (no WATCH races between workers); take
-- over the jobs whose lease lapsed (their worker is gone); say when the next job falls due and the next lease
-- lapses. The layout (lanes, the schedule's markers and running band) is described in shared/keys.py.
-- A claimed job leaves its lane for the running band of the schedule (score = RUNNING_BASE + lease expiry) and
-- its in-progress marker holds "<token>|<try>|<start ms>"; arq's try counter counts the try. Every time here is
-- Redis's (relay_now), so workers whose clocks disagree still agree on leases.
-- A replay (the same request id again: the client sent it twice after a timeout or a dropped connection) returns
-- the jobs the first call claimed and took over, and claims nothing more.
-- KEYS: queue (the schedule), arq's abort set, this worker's claim record.
-- ARGV: request id, limit, lease_ms, token, sweep_limit, then the names of the tasks this worker runs.
-- Returns {claimed, swept, next_due or false, next_lease or false, now (false when nothing is queued or running)}: claimed items are {id, job record or
-- false, try, aborted (0/1), due score, seq}; swept items {id, job or false, try, aborted, seq, own (0/1: the
-- lapsed lease was this worker's own)}; next_due and next_lease are delays from now in ms (next_due is 0 when
-- more jobs may be due than were taken). An abort request counts only if made after the job was enqueued: an
-- older one was for an earlier task of the same id, and is removed here.
local queue, abort, request_key = KEYS[1], KEYS[2], KEYS[3]
local request, limit, lease, token = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local sweep_limit = tonumber(ARGV[5])
local mine = token .. '|'
local runnable = {}
for i = 6, #ARGV do runnable[ARGV[i]] = true end
local now, held  -- Redis's clock, read once something is queued or running (below)
local claimed, swept, stale = {}, {}, {}

-- Whether abort request `requested` (its score, or nil) is for the job of `record`; a stale one is noted.
local function abort_counts(id, record, requested)
  if not requested then return false end
  local enqueued = record and tonumber(string.match(record, '^{"f":"[^"]*","fp":"%x*","w":"%a","et":(%d+)'))
  if enqueued == nil or tonumber(requested) >= enqueued then return true end
  stale[#stale + 1] = id
  return false
end

local function seq_of(id)
  return tonumber(redis.call('GET', SEQ .. id) or '0')
end

-- A replay: the jobs the first call took that are still this worker's, as it returned them.
local function replayed(kept)
  for _, entry in ipairs(kept[2]) do
    local marker = redis.call('GET', IN_PROGRESS .. entry[1])
    if marker and string.sub(marker, 1, #mine) == mine then
      local record = redis.call('GET', JOB .. entry[1])
      local aborted = abort_counts(entry[1], record, redis.call('ZSCORE', abort, entry[1])) and 1 or 0
      local try = tonumber(string.match(marker, '|(%d+)|'))
      claimed[#claimed + 1] = {entry[1], record, try, aborted, entry[2], seq_of(entry[1])}
    end
  end
  for _, entry in ipairs(kept[3]) do
    local marker = redis.call('GET', IN_PROGRESS .. entry[1])
    if marker and string.sub(marker, 1, #mine) == mine then
      local record = redis.call('GET', JOB .. entry[1])
      local aborted = abort_counts(entry[1], record, redis.call('ZSCORE', abort, entry[1])) and 1 or 0
      local try = tonumber(string.match(marker, '|(%d+)|'))
      swept[#swept + 1] = {entry[1], record, try, aborted, seq_of(entry[1]), entry[2]}
    end
  end
  return {claimed, swept, 0, false, now}
end

-- An idle worker's call ends here, after one command, when nothing is queued or running (and so nothing a first
-- run of this request could have claimed is left to return).
local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
if #head == 0 then return {claimed, swept, false, false, false} end
now = relay_now()
held = RUNNING_BASE + now + lease

local kept = redis.call('GET', request_key)
if kept then
  kept = cjson.decode(kept)
  if kept[1] == request then return replayed(kept) end
end

-- Make jobs `ids` (due at `scores`) this worker's: one MGET for their markers, records, tries and counters, one
-- MSET and one ZADD for all.
local function mark(ids, scores)
  local n, wanted = #ids, {}
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
    -- A waiting job never has an in-progress marker (the scripts that put a job back remove it); if one does,
    -- it runs elsewhere and stays out of the lane.
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

-- Take up to `want` due jobs from the lane of task `name` (one ZRANGEBYSCORE and one ZREMRANGEBYRANK); returns
-- how many it took.
local function take(name, want)
  local lane = relay_lane(queue, name)
  local due = redis.call('ZRANGEBYSCORE', lane, '-inf', now, 'WITHSCORES', 'LIMIT', 0, want)
  local n = #due / 2
  if n == 0 then return 0 end
  redis.call('ZREMRANGEBYRANK', lane, 0, n - 1)  -- the lowest scores: exactly the ones just read
  local ids, scores = {}, {}
  for i = 1, n do ids[i], scores[i] = due[2 * i - 1], due[2 * i] end
  mark(ids, scores)
  return n
end

-- A job id in the waiting band: enqueued by a Relay from before lanes (or moved there by arq's Job.abort).
-- It goes to its lane (or, running, back to the running band); one without a record is claimed when due, so
-- that it ends visibly (JobRecordMissing) instead of lingering.
local function adopt(id, score)
  if redis.call('EXISTS', IN_PROGRESS .. id) == 1 then
    redis.call('ZADD', queue, held, id)
    return
  end
  local name = relay_record_name(redis.call('GETRANGE', JOB .. id, 0, 300))
  if name then
    redis.call('ZREM', queue, id)
    relay_wait(queue, name, id, score)
  elseif score <= now and #claimed < limit then
    mark({id}, {score})
  end
end

local ADOPT_LIMIT = 500  -- jobs from before lanes moved per call: a big old queue moves over a few calls
local adopted = 0
local next_due = nil
local function due_at(score)
  if next_due == nil or score < next_due then next_due = score end
end

-- What is due, lane by lane, earliest head first (so across tasks, jobs are taken about in due order).
if tonumber(head[2]) < RUNNING_BASE then
  local waiting = redis.call('ZRANGEBYSCORE', queue, '-inf', '(' .. RUNNING_BASE, 'WITHSCORES')
  for i = 1, #waiting, 2 do
    local member, score = waiting[i], tonumber(waiting[i + 1])
    if string.sub(member, 1, 1) ~= MARKER then
      if adopted < ADOPT_LIMIT then
        adopt(member, score)
        adopted = adopted + 1
      end
      due_at(math.max(score, now))
    else
      local name = string.sub(member, 2)
      if runnable[name] then
        if score <= now and #claimed < limit then
          local want = limit - #claimed
          if take(name, want) == want then
            due_at(now)  -- more may be due: the marker stays early (allowed), the next call finds out
          else
            local next_head = relay_sync_marker(queue, name)
            if next_head ~= nil then due_at(math.max(next_head, now)) end
          end
        else
          due_at(math.max(score, now))
        end
      end
    end
  end
end

-- Leases that lapsed: their worker stopped renewing (killed, or its node lost). Take them over so that the
-- caller re-queues (or, out of tries, fails) each one; nobody else sweeps them meanwhile.
local function first_lease()
  local first = redis.call('ZRANGEBYSCORE', queue, RUNNING_BASE, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return #first > 0 and tonumber(first[2]) or nil
end
local earliest_lease = tonumber(head[2]) >= RUNNING_BASE and tonumber(head[2]) or first_lease()
if earliest_lease ~= nil and earliest_lease <= RUNNING_BASE + now and sweep_limit > 0 then
  local lapsed = redis.call('ZRANGEBYSCORE', queue, RUNNING_BASE, RUNNING_BASE + now, 'LIMIT', 0, sweep_limit)
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
    swept[#swept + 1] = {id, record, try, aborted, seq_of(id), own and 1 or 0}
  end
  earliest_lease = first_lease()
end
if #stale > 0 then redis.call('ZREM', abort, unpack(stale)) end

-- What this call took, for a replay of it (kept about as long as a lease: a replay comes within the client's
-- retry budget, and by then the worker has moved on to other request ids).
if #claimed > 0 or #swept > 0 then
  local taken, over = {}, {}
  for i, item in ipairs(claimed) do taken[i] = {item[1], item[5]} end
  for i, item in ipairs(swept) do over[i] = {item[1], item[6]} end
  redis.call('SET', request_key, cjson.encode({request, taken, over}), 'PX', math.max(lease, 60000))
end

local next_lease = earliest_lease and math.max(0, earliest_lease - RUNNING_BASE - now) or false
return {claimed, swept, next_due and (next_due - now) or false, next_lease, now}
