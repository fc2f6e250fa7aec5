-- Enqueue a batch of submissions atomically: for each, the id check (a repeat reports the existing task's
-- state; other arguments are a conflict), its queue's depth check (waiting tasks, due or deferred, not running
-- ones; so not for a job handed off, which runs at once), arq's job record, the job in its lane (shared/keys.py),
-- the task index, the reply request; then one wake-up notice per named queue. Times are Redis's: the record's
-- enqueue time ("et", which abort requests are compared with) is set here, and a due time given as a delay
-- ('+<ms>') counts from here.
-- A child task (its record names its parent, "pt": ctx.submit) joins its parent's set of children (shared/keys.py
-- `children`, expiring children_ttl ms later), so cancelling the parent can cancel it; while the parent's abort is
-- requested (a request made after the parent's enqueue, the claim's rule) a new child is refused ('aborting').
-- A job due now whose lane holds no due job goes straight to a registered idle worker that takes it, claimed for it
-- here (shared/keys.py "Hand-off"), instead of into its lane with a wake-up notice. A job that goes into its lane
-- (a limited task's, one behind a due job, a deferred one) is given to one registered worker that runs it, by a
-- notice naming that worker, its registration ended here (shared/keys.py "Named claims"); only with none does the
-- notice wake every worker.
-- KEYS: queue (the schedule), index.  ARGV: children_ttl ms, default max depth, depths of named queues that have
-- their own ('gpu=100,batch=5000' or ''), then per item: id, due ('+<delay ms>' or absolute ms), job record,
-- fingerprint, index score, reply request ('' for none), lane id.
local queue, index = KEYS[1], KEYS[2]
local children_ttl = tonumber(ARGV[1]) or 0
local default_max = tonumber(ARGV[2])
local max_of = {}
for q, n in string.gmatch(ARGV[3], '([^,=]+)=(%d+)') do max_of[q] = tonumber(n) end
-- Now in ms, and the microseconds into that ms from the same TIME (relay_micros; FIFO within a lane finer than a
-- ms, relay_enqueue_jobs): a second TIME could straddle a millisecond and score a job before one enqueued earlier.
local now = relay_now()
local micros = relay_micros
local depths = {}  -- named queue -> waiting jobs, with this batch's

-- Whether `parent`'s abort is requested, for its current run (the request came after its enqueue).
local function aborting(parent)
  local requested = redis.call('ZSCORE', ABORTS, parent)
  if not requested then return false end
  local head = redis.call('GETRANGE', JOB .. parent, 0, 300)
  local enqueued = tonumber(string.match(head, '^{"f":"[^"]*","fp":"%x*","w":"%a","et":(%d+)'))
  return enqueued ~= nil and tonumber(requested) >= enqueued
end

-- The id checks of up to ID_CHECKS items in one MGET (a call carries the concurrent submits of every API
-- coroutine): each id's job record, result, try count and event seq, read as the loop reaches them. Nothing this
-- script writes before an item's turn changes another id's keys, and a repeated id is answered from `batch`. An
-- existing id's whole record and result come back (up to about 2 MB): so at most ID_CHECKS ids' are held at once,
-- each dropped once its item is decided.
local ID_CHECKS = 4
local known_of = {}  -- id -> {record, result, tries, seq} once read, true once an item used it
-- Read the id of the item at ARGV[first] (again, if an item before used it and was refused) and, up to `up_to` ids
-- in all, the next unread.
local function read_ids_from(first, up_to)
  local ids, wanted = {}, {}
  for a = first, #ARGV, 7 do
    if #ids == up_to then break end
    local id = ARGV[a]
    if a == first or known_of[id] == nil then
      known_of[id] = true
      ids[#ids + 1] = id
      relay_append_values(wanted, JOB .. id, RESULT .. id, TRIES .. id, SEQ .. id)
    end
  end
  local got = redis.call('MGET', unpack(wanted))
  for k, id in ipairs(ids) do known_of[id] = {got[4 * k - 3], got[4 * k - 2], got[4 * k - 1], got[4 * k]} end
end

local out, jobs, batch, wake = {}, {}, {}, {}
local clear_lanes = {}  -- lanes seen holding no due job (relay_taker)
local item = 0
for a = 4, #ARGV, 7 do
  item = item + 1
  local id, when, record, fp, index_score, reply, lane_id = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local _, q = relay_lane_parts(lane_id)
  local state, name, old_fp
  local prior = nil  -- a new id's try count and event seq (a hand-off claims it with them), read with the id check
  if batch[id] then
    state, name, old_fp = batch[id][1], batch[id][2], batch[id][3]
  else
    if known_of[id] == nil then
      read_ids_from(a, ID_CHECKS)
    elseif known_of[id] == true then  -- an item before of this id was refused: read it again, alone
      read_ids_from(a, 1)
    end
    local known = known_of[id]
    known_of[id] = true
    if known[1] or known[2] then
      state, name, old_fp = relay_state(queue, id, now)
    else
      prior = {known[3], known[4]}
    end
  end
  local _, _, parent = relay_record_links(not state and string.sub(record, 1, 1024) or nil)
  local due, job, w
  if not state and not (parent and aborting(parent)) then
    due = tonumber(when)
    if string.sub(when, 1, 1) == '+' then due = now + tonumber(string.sub(when, 2)) end
    record = relay_job_record(record, now, due)
    job = {id, lane_id, record, due, index_score, false, prior}  -- [6]: whether a worker was named for it
    -- A job handed off runs at once: it never waits, so the depth limit (what waits) does not apply to it, and
    -- its depth is not read.
    w = due <= now and relay_taker(queue, now, lane_id, clear_lanes)
    if not w and depths[q] == nil then depths[q] = relay_depth(queue, q) end
  end
  if state then
    local same = (old_fp == fp) and 'same' or 'other'
    out[item] = {'exists', state, same, name}
  elseif not job then
    out[item] = {'aborting'}
  elseif not w and depths[q] >= (max_of[q] or default_max) then
    out[item] = {'full', tostring(depths[q])}
  else
    if w then
      relay_hand_off(queue, index, job, w, now)
    else
      depths[q] = depths[q] + 1
      jobs[#jobs + 1] = job
      if due <= now then relay_handing_stopped = true end
      job[6] = relay_name_claimer(queue, now, lane_id, due)  -- else every worker hears of it
    end
    if reply ~= '' then redis.call('SET', REPLY .. id, reply) end
    if parent then
      redis.call('SADD', CHILDREN .. parent, id)
      if children_ttl > 0 then redis.call('PEXPIRE', CHILDREN .. parent, children_ttl) end
    end
    local s = due > now and 'deferred' or 'queued'
    batch[id] = {s, relay_record_name(record), fp}
    out[item] = {'created', s}
  end
end
relay_flush_hand_offs(queue)
relay_enqueue_jobs(queue, index, jobs, micros, {})
for _, job in ipairs(jobs) do  -- the notices to all: for the jobs no worker was named for
  if not job[6] then
    local _, q = relay_lane_parts(job[2])
    local channel = relay_queue_channel(queue, q)
    if wake[channel] == nil or job[4] < wake[channel] then wake[channel] = job[4] end
  end
end
relay_wake(queue, wake, now, relay_idle ~= nil and #relay_idle == 0)
return out
