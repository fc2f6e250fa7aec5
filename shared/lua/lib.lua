-- Relay's shared Lua: prepended to every script (shared/scripts.py fills in the key prefixes from shared/keys.py).
local RUNNING_BASE = {{RUNNING_BASE}}
local JOB, RESULT, IN_PROGRESS, TRIES = '{{JOB_PREFIX}}', '{{RESULT_PREFIX}}', '{{IN_PROGRESS_PREFIX}}', '{{TRIES_PREFIX}}'
local EVENTS, SEQ, REPLY = '{{EVENTS_PREFIX}}', '{{SEQ_PREFIX}}', '{{REPLY_PREFIX}}'
local EVENT_BYTES = '{{EVENT_BYTES_PREFIX}}'
local ABORTS = '{{ABORT_SET}}'
local LANE, MARKER = '{{LANE_PREFIX}}', '{{LANE_MARKER}}'
local SLOTS, PARKED, RATE = '{{SLOTS_PREFIX}}', '{{PARKED_PREFIX}}', '{{RATE_PREFIX}}'
local FAIRNESS, DEPTH, WAKEUP = '{{FAIRNESS_PREFIX}}', '{{DEPTH_PREFIX}}', '{{WAKEUP_PREFIX}}'
local PARK_MS = {{PARK_MS}}
local INDEX = '{{INDEX_PREFIX}}'
local FLOW, FLOW_EVENTS = '{{FLOW_PREFIX}}', '{{FLOW_EVENTS_PREFIX}}'
local CHILDREN = '{{CHILDREN_PREFIX}}'
local HANDOFF, HANDED, IDLE = '{{HANDOFF_PREFIX}}', '{{HANDED_PREFIX}}', '{{IDLE_PREFIX}}'
local WATCH = '{{WATCH_PREFIX}}'
-- How long a worker's count of handed jobs lives (claim.lua seeds it as a registration starts; enqueue.lua
-- counts on it and gives it this expiry again if its count had to create it).
local HANDED_TTL_MS = 86400000

-- Now, in ms, on Redis's clock: every time that decides who owns a job is compared with this, never with a
-- caller's clock (two workers' clocks may differ by seconds; a VM resumed from a pause jumps).
local relay_micros = nil  -- the microseconds of the script's last relay_now (relay_enqueue_jobs's FIFO ties)

local function relay_now()
  local t = redis.call('TIME')
  relay_micros = tonumber(t[2]) % 1000
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- True if string `a` sorts before `b` byte by byte, as Redis orders a sorted set's members of one score. Lua's own
-- `<` asks the C library (strcoll), and Redis takes its collation from the environment it starts in: under
-- en_US.UTF-8, 'B1' >= 'a1', and a page boundary among ids of one score skipped or repeated ids.
local function relay_bytes_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The key of a lane (see shared/keys.py: the waiting jobs of one lane id, by due time).
local function relay_lane(queue, lane)
  return LANE .. lane .. '|' .. queue
end

-- A lane id's parts (shared/lanes.py): task, named queue, priority, tenant, limit part. A bare task name is a
-- lane from before named queues.
local function relay_lane_parts(lane)
  local task, q, priority, tenant, part = string.match(lane, '^([^|]*)|([^|]*)|(%d)|([^|]*)|(.*)$')
  if not task then return lane, 'default', 0, '', '' end
  return task, q, tonumber(priority), tenant, part
end

-- Where the workers serving named queue `q` hear of due jobs (shared/keys.py queue_channel).
local function relay_queue_channel(queue, q)
  if q == 'default' then return WAKEUP .. queue end
  return WAKEUP .. q .. '|' .. queue
end

-- The task name a job record starts with ({"f":"<name>",...; see shared/jobs.py), or nil.
local function relay_record_name(record)
  return record and string.match(record, '^{"f":"([^"]*)"')
end

-- The lane a job record names ("ln", right after its enqueue time), or its task's bare lane; nil if no record.
local function relay_record_lane(record)
  if not record then return nil end
  local lane = string.match(record, '^{"f":"[^"]*","fp":"%x*","w":"%a","et":%d+,"ln":"([^"]*)"')
  return lane or relay_record_name(record)
end

-- A running job's in-progress marker, "<token>|<try>|<start ms>|<S, H or ->|<lane>" (S: it holds a concurrency
-- slot of its lane's limit; H: an enqueue handed it off to that worker, shared/keys.py "Hand-off"); markers from
-- before named queues have no lane. Returns try, slot (bool), lane, handed (bool).
local function relay_marker_parts(marker)
  local try, slot, lane = string.match(marker, '^[^|]*|(%d+)|%d+|([SH-])|(.*)$')
  if try then return tonumber(try), slot == 'S', lane ~= '' and lane or nil, slot == 'H' end
  return tonumber(string.match(marker, '|(%d+)|')), false, nil, false
end

-- Count every lane of named queue `q` again (the depth hash's repair), and store it.
local function relay_recount(queue, q)
  local found = redis.call('ZRANGEBYSCORE', queue, '-inf', '(' .. RUNNING_BASE)
  local depth = 0
  for i = 1, #found do
    if string.sub(found[i], 1, 1) == MARKER then
      local lane = string.sub(found[i], 2)
      local _, lq = relay_lane_parts(lane)
      if lq == q then depth = depth + redis.call('ZCARD', relay_lane(queue, lane)) end
    end
  end
  redis.call('HSET', DEPTH .. queue, q, depth)
  return depth
end

-- Waiting jobs (due or deferred) of named queue `q`: its count, recounted when missing or negative.
local function relay_depth(queue, q)
  local depth = tonumber(redis.call('HGET', DEPTH .. queue, q))
  if depth == nil or depth < 0 then return relay_recount(queue, q) end
  return depth
end

-- Jobs moved into (delta > 0) or out of named queue `q`'s lanes.
local function relay_count(queue, q, delta)
  if redis.call('HINCRBY', DEPTH .. queue, q, delta) < 0 then relay_recount(queue, q) end
end

-- Put `id` in lane `lane`, due at `due`; the lane's marker in the schedule moves earlier if needed. The caller
-- counts it in its queue's depth (relay_count).
local function relay_wait(queue, lane, id, due)
  redis.call('ZADD', relay_lane(queue, lane), due, id)
  redis.call('ZADD', queue, 'LT', due, MARKER .. lane)
end

-- Set the lane's marker to its head's due time, or drop it when the lane is empty. Returns the head's score.
local function relay_sync_marker(queue, lane)
  local head = redis.call('ZRANGE', relay_lane(queue, lane), 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', queue, MARKER .. lane)
    return nil
  end
  redis.call('ZADD', queue, head[2], MARKER .. lane)
  return tonumber(head[2])
end

-- The lane markers of the schedule (due or not), as {lane, score} pairs in due order.
local function relay_lanes(queue)
  local found = redis.call('ZRANGEBYSCORE', queue, '-inf', '(' .. RUNNING_BASE, 'WITHSCORES')
  local lanes = {}
  for i = 1, #found, 2 do
    if string.sub(found[i], 1, 1) == MARKER then
      lanes[#lanes + 1] = {string.sub(found[i], 2), tonumber(found[i + 1])}
    end
  end
  return lanes
end

-- A running job of lane `lane` that held a concurrency slot ends or goes back to wait: free the slot, and put
-- the lanes parked on that limit back at their heads (they may run now), adding them to `unparked`.
local function relay_free_slot(queue, lane, id, unparked)
  local task, _, _, _, part = relay_lane_parts(lane)
  local key_value = string.match(part, '^([^/]*)') or ''
  redis.call('SREM', SLOTS .. task .. '|' .. key_value .. '|' .. queue, id)
  local parked_key = PARKED .. task .. '|' .. key_value .. '|' .. queue
  local parked = redis.call('SMEMBERS', parked_key)
  if #parked == 0 then return end
  redis.call('DEL', parked_key)
  for _, waiting in ipairs(parked) do
    if relay_sync_marker(queue, waiting) ~= nil then unparked[#unparked + 1] = waiting end
  end
end

-- One line per event: each body is a JSON object without its seq, which is put first here.
local function relay_pack(first_seq, bodies, from, to)
  local parts = {}
  for i = from, to do
    parts[#parts + 1] = '{"seq":' .. (first_seq + i - from) .. ',' .. string.sub(bodies[i], 2)
  end
  return table.concat(parts, '\n')
end

-- Drop a log's oldest entries while it holds more than `max_len` entries or `max_bytes` bytes of events (it holds
-- `length` and `bytes` now), never the newest one. Returns its length and bytes after.
local function relay_trim_to(stream, length, bytes, max_len, max_bytes)
  local batch = math.max(length - max_len, 1)
  while length > 1 and (length > max_len or bytes > max_bytes) do
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(batch, length - 1))
    local upto
    for _, entry in ipairs(oldest) do
      if length <= max_len and bytes <= max_bytes then break end
      bytes = bytes - #entry[2][2]
      length = length - 1
      upto = tonumber(string.match(entry[1], '%-(%d+)$'))
    end
    redis.call('XTRIM', stream, 'MINID', '0-' .. (upto + 1))
    batch = batch * 2
  end
  return length, bytes
end

-- Keep a task's log within its caps after `newest` (its packed events) was appended: while it holds more than
-- `max_len` entries or `max_bytes` bytes of events, drop its oldest entries, never the newest one (a reader who
-- asks for dropped events gets a `gap`; live followers already had them). A log of two entries or more counts
-- its bytes in a key of its own, kept in step here (every entry added or dropped goes through relay_emit) and
-- expiring with it; a log of one entry (most tasks' whole log) needs no count, and its second entry starts it
-- afresh, so a count left behind by a deleted log is never trusted.
local function relay_trim(counter, stream, newest, max_len, max_bytes, ttl_ms)
  local length = redis.call('XLEN', stream)
  if length <= 1 then return end
  local bytes
  if length == 2 then
    bytes = #redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][2][2] + #newest
  else
    bytes = tonumber(redis.call('GET', counter))
    if bytes == nil then  -- a log written before its bytes were counted: count them once
      bytes = 0
      for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+')) do bytes = bytes + #entry[2][2] end
    else
      bytes = bytes + #newest
    end
  end
  length, bytes = relay_trim_to(stream, length, bytes, max_len, max_bytes)
  if length == 1 then
    redis.call('DEL', counter)
  else
    redis.call('SET', counter, bytes, 'PX', ttl_ms)
  end
end

-- Append `value` to `pending[key]`, a list, noting in `order` the keys in the order each was first given one (what a
-- script gathers to write at its end: each key's values together, the keys in a stable order).
local function relay_gather(pending, order, key, value)
  local list = pending[key]
  if list == nil then
    list = {}
    pending[key] = list
    order[#order + 1] = key
  end
  list[#list + 1] = value
end

-- What a script publishes to each API process's inbox (shared/keys.py "Inboxes"), gathered by relay_append and
-- published by relay_flush_inboxes: one message per inbox per script call, however many tasks of that process it
-- wrote events for (the process routes each event by its task id), where each task's events were a PUBLISH.
local relay_inbox_parts, relay_inbox_order = {}, {}

-- Publish what relay_append gathered for the inboxes, each inbox's events in the order they were appended (a
-- task's in its seq order). A script that passes an inbox to relay_emit must call this before it returns.
local function relay_flush_inboxes()
  for _, inbox in ipairs(relay_inbox_order) do
    redis.call('{{PUBLISH}}', inbox, table.concat(relay_inbox_parts[inbox], '\n'))
  end
  relay_inbox_parts, relay_inbox_order = {}, {}
end

-- Append bodies[from..to] after `seq` to a log (one stream entry, id 0-<last seq>) and publish them as one
-- message on the channel of the same name, then keep the log within its caps (relay_trim, its bytes counted in
-- `counter`; a workflow's log, counter false, keeps its own counts: relay_flow_emit). Returns the new last seq
-- and the entry written. If the log is ahead of the counter (the counter was lost), the numbering continues after
-- the log's last entry instead of failing the whole script. With an `inbox` (an API process's channel, named by
-- the job record: shared/keys.py "Inboxes"), the events go there too, with the script's relay_flush_inboxes.
local function relay_append(stream, counter, seq, bodies, from, to, max_len, max_bytes, ttl_ms, inbox)
  if to < from then return seq, '' end
  local last = seq + to - from + 1
  local packed = relay_pack(seq + 1, bodies, from, to)
  local added = redis.pcall('XADD', stream, '0-' .. last, 'e', packed)
  if type(added) == 'table' and added.err then
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    local top_seq = tonumber(string.match(top[1][1], '%-(%d+)$'))
    last = top_seq + to - from + 1
    packed = relay_pack(top_seq + 1, bodies, from, to)
    redis.call('XADD', stream, '0-' .. last, 'e', packed)
  end
  redis.call('{{PUBLISH}}', stream, packed)
  if inbox and inbox ~= '' then relay_gather(relay_inbox_parts, relay_inbox_order, inbox, packed) end
  redis.call('PEXPIRE', stream, ttl_ms)
  -- A task's first events start its log (one entry: nothing to trim, no count to keep); otherwise keep the caps.
  if counter and (seq > 0 or last ~= seq + to - from + 1) then
    relay_trim(counter, stream, packed, max_len, max_bytes, ttl_ms)
  end
  return last, packed
end

-- Append bodies[from..to] after `seq` to the task's log (relay_append). A batch sent again is never appended
-- twice (see commit.lua's 'dup').
local function relay_emit(task_id, seq, bodies, from, to, max_len, max_bytes, ttl_ms, inbox)
  local stream = EVENTS .. task_id
  return (relay_append(stream, EVENT_BYTES .. task_id, seq, bodies, from, to, max_len, max_bytes, ttl_ms, inbox))
end

-- An ended task's result record starts with the seq of its last event, {"sq":N,...}: its counter lives there
-- (one key fewer per task), until a retry brings it back to its own key.
local function relay_result_record(record, seq)
  return '{"sq":' .. seq .. ',' .. string.sub(record, 2)
end

local function relay_result_seq(task_id)
  return tonumber(string.match(redis.call('GETRANGE', RESULT .. task_id, 0, 30), '^{"sq":(%d+),'))
end

-- The seq of a task's last event: its counter while it lives, its result record once it ended.
local function relay_seq(task_id)
  local counted = redis.call('GET', SEQ .. task_id)
  if counted then return tonumber(counted) end
  return relay_result_seq(task_id) or 0
end

-- A task's state, name and fingerprint from the first bytes of its records (see shared/jobs.py), or nil.
local function relay_state(queue, task_id, now)
  local r = redis.call('GETRANGE', RESULT .. task_id, 0, 320)
  if r ~= '' then
    local rs, f, fp = string.match(r, '^{"sq":%d+,"rs":"(%a+)","f":"([^"]*)","fp":"(%x*)"')
    if not rs then rs, f, fp = string.match(r, '^{"rs":"(%a+)","f":"([^"]*)","fp":"(%x*)"') end
    if rs then return rs, f, fp end
    if string.find(r, '"s":true', 1, true) then return 'succeeded', '', '' end
    return 'failed', '', ''
  end
  local j = redis.call('GETRANGE', JOB .. task_id, 0, 300)
  if j == '' then return nil end
  local f, fp, w = string.match(j, '^{"f":"([^"]*)","fp":"(%x*)","w":"(%a)"')
  if redis.call('EXISTS', IN_PROGRESS .. task_id) == 1 then return 'running', f or '', fp or '' end
  local lane = relay_record_lane(j)
  local score = lane and tonumber(redis.call('ZSCORE', relay_lane(queue, lane), task_id))
  if score == nil then score = tonumber(redis.call('ZSCORE', queue, task_id)) end  -- running, or enqueued before lanes
  if score ~= nil and score >= RUNNING_BASE then return 'running', f or '', fp or '' end
  if score ~= nil and score >= now + 1 then  -- a lane's score may carry microseconds (enqueue.lua)
    if w == 'r' then return 'retrying', f or '', fp or '' end
    return 'deferred', f or '', fp or ''
  end
  return 'queued', f or '', fp or ''
end

-- `command key values...` in calls of at most 4,000 values (Lua's unpack has a limit; a workflow has thousands):
-- for commands whose values come in pairs (MSET, HSET, ZADD).
local function relay_chunked(command, key, values)
  for first = 1, #values, 4000 do
    local part = {}
    for i = first, math.min(#values, first + 3999) do part[#part + 1] = values[i] end
    if key then redis.call(command, key, unpack(part)) else redis.call(command, unpack(part)) end
  end
end

-- HMGET of any number of fields, in calls of at most 4,000.
local function relay_hmget(key, fields)
  local out = {}
  for first = 1, #fields, 4000 do
    local part = {}
    for i = first, math.min(#fields, first + 3999) do part[#part + 1] = fields[i] end
    local got = redis.call('HMGET', key, unpack(part))
    for i = 1, #part do out[first + i - 1] = got[i] end
  end
  return out
end

-- A job record as enqueued at `now`: its enqueue time ("et", which abort requests are compared with) set to
-- `now`, and its due time ("du") added when it is deferred.
local function relay_job_record(record, now, due)
  record = (string.gsub(record, '^({"f":"[^"]*","fp":"%x*","w":"%a","et":)%d+', '%1' .. now, 1))
  if due > now then record = string.sub(record, 1, -2) .. ',"du":' .. string.format('%d', due) .. '}' end
  return record
end

-- Enqueue `jobs` (each {id, lane, record (from relay_job_record), due, index score}): arq's job records in one
-- MSET, each lane's jobs in one ZADD and its marker moved as relay_wait does, the task `index`, the named queues'
-- depths; the channels to wake (channel -> earliest due) are merged into `wake` for the caller to publish. Every
-- path that adds new jobs goes through here: a submit (enqueue.lua), a workflow's submit and the successors a
-- step's end releases (commit.lua). FIFO within a lane finer than a millisecond: each job's score carries
-- `micros` (the microseconds of the caller's TIME) plus its place in the batch (as '<ms>.<us>': doubles near
-- 1.7e12 hold microseconds), so jobs enqueued in one millisecond are claimed in the order they came.
local function relay_enqueue_jobs(queue, index, jobs, micros, wake)
  if #jobs == 0 then return end
  local records, indexed, added = {}, {}, {}
  local lanes, lane_ids = {}, {}  -- lane id -> {entries = {score, id, ...}, first = earliest due}
  for _, job in ipairs(jobs) do
    local id, lane_id, due = job[1], job[2], job[4]
    records[#records + 1] = JOB .. id
    records[#records + 1] = job[3]
    if not lanes[lane_id] then
      lanes[lane_id] = {entries = {}, first = due}
      lane_ids[#lane_ids + 1] = lane_id
    end
    local lane = lanes[lane_id]
    lane.entries[#lane.entries + 1] = string.format('%d.%03d', due, math.min(999, micros + #lane.entries / 2))
    lane.entries[#lane.entries + 1] = id
    if due < lane.first then lane.first = due end
    indexed[#indexed + 1] = job[5]
    indexed[#indexed + 1] = id
    local _, q = relay_lane_parts(lane_id)
    added[q] = (added[q] or 0) + 1
    local channel = relay_queue_channel(queue, q)
    if wake[channel] == nil or due < wake[channel] then wake[channel] = due end
  end
  relay_chunked('MSET', nil, records)
  for _, lane_id in ipairs(lane_ids) do
    relay_chunked('ZADD', relay_lane(queue, lane_id), lanes[lane_id].entries)
    redis.call('ZADD', queue, 'LT', lanes[lane_id].first, MARKER .. lane_id)  -- as relay_wait does, once per lane
  end
  relay_chunked('ZADD', index, indexed)
  for q, n in pairs(added) do relay_count(queue, q, n) end
end

-- A job of `queue` became due (or will) other than by a hand-off: no idle registration holds any more (shared/keys.py
-- "Hand-off"); the workers the notice wakes claim, and register again.
local function relay_unregister_idle(queue)
  redis.call('DEL', IDLE .. queue)
end

-- The idle registry (shared/keys.py "Hand-off") as of `now`, read once per script call: its live registrations
-- ({token, until_ms, free, lease, queues, tasks}), the lapsed ones removed.
local relay_idle = nil
local function relay_idle_workers(queue, now)
  if relay_idle ~= nil then return relay_idle end
  relay_idle = {}
  local flat, lapsed = redis.call('HGETALL', IDLE .. queue), {}
  for i = 1, #flat, 2 do
    local until_ms, free, lease, queues, tasks = string.match(flat[i + 1], '^(%d+)|(%d+)|(%d+)|([^|]*)|(.*)$')
    if until_ms and tonumber(until_ms) > now then
      relay_idle[#relay_idle + 1] = {token = flat[i], until_ms = until_ms, free = tonumber(free),
        lease = tonumber(lease), queues = queues, tasks = tasks}
    else
      lapsed[#lapsed + 1] = flat[i]
    end
  end
  if #lapsed > 0 then redis.call('HDEL', IDLE .. queue, unpack(lapsed)) end
  return relay_idle
end

-- Watched due times (shared/keys.py "Watched due times"): lane `lane`'s watch, '<ms>|<token>', says that worker
-- claims at that time (Redis's clock, ms), and so takes the lane's jobs due by then and watches its next head.
local function relay_watch_key(queue, lane)
  return WATCH .. lane .. '|' .. queue
end

-- The token of the worker that watch `value` (as read, or false) has claim for the lane's jobs due at `due` or
-- later: only while its time is still ahead (at it, the watcher claims; busy or gone, it leaves the lane to the
-- next claim of any worker), and not after `due`. Else nil.
local function relay_watcher(value, now, due)
  if not value then return nil end
  local at, token = string.match(value, '^(%d+)|(.+)$')
  if at and tonumber(at) > now and tonumber(at) <= due then return token end
  return nil
end

-- Named claims (shared/keys.py "Named claims"): the workers this call named, token -> {channel -> the earliest due
-- time of the jobs named for it there}, and their tokens in the order named.
local relay_named, relay_named_order = {}, {}

-- Name a registered worker to claim a job of lane `lane_id`, due at `due`, left waiting in it: one that serves its
-- queue and runs its task, limits or not (a limited task is listed ',!<name>,'), with a free slot (the most). A job
-- due now takes one of its free slots, so it is named for at most as many of those as it has (a deferred job takes
-- none: a hand-off of this call may still use them, and the named worker's claim, at once, watches the lane). A
-- later job of a lane whose watcher claims by then needs no one: that claim takes the lane's due jobs and watches
-- its next head. Returns whether the job has its worker (named, or the watcher).
local function relay_name_claimer(queue, now, lane_id, due)
  if due > now and relay_watcher(redis.call('GET', relay_watch_key(queue, lane_id)), now, due) then return true end
  local task, q = relay_lane_parts(lane_id)
  local best = nil
  for _, w in ipairs(relay_idle_workers(queue, now)) do
    if w.free > 0 and (best == nil or w.free > best.free) and string.find(w.queues, ',' .. q .. ',', 1, true)
        and (string.find(w.tasks, ',' .. task .. ',', 1, true) or string.find(w.tasks, ',!' .. task .. ',', 1, true)) then
      best = w
    end
  end
  if best == nil then return false end
  if due <= now then best.free = best.free - 1 end
  local dues = relay_named[best.token]
  if dues == nil then
    dues = {}
    relay_named[best.token] = dues
    relay_named_order[#relay_named_order + 1] = best.token
  end
  local channel = relay_queue_channel(queue, q)
  if dues[channel] == nil or due < dues[channel] then dues[channel] = due end
  return true
end

-- End the registrations of the workers named in this call and send each its notice: 'w<token>' for a job due now,
-- 'e<due>|<token>' for one due later (worker/wakeup.py: the worker claims now, which registers it again, and when
-- the job falls due; should it be unable to then, it tells every worker).
local function relay_notify_named(queue, now)
  if #relay_named_order == 0 then return end
  redis.call('HDEL', IDLE .. queue, unpack(relay_named_order))
  for _, token in ipairs(relay_named_order) do
    for channel, due in pairs(relay_named[token]) do
      redis.call('{{PUBLISH}}', channel, due <= now and ('w' .. token) or ('e' .. string.format('%d', due) .. '|' .. token))
    end
  end
  relay_named, relay_named_order = {}, {}
end

-- Hand-off (shared/keys.py "Hand-off"): a job due now goes straight to a registered idle worker, claimed for it,
-- unless a job of the same call already went into its lane due now (`relay_handing_stopped`: what came after it
-- must not overtake it) or its own lane holds a due job. Submits (enqueue.lua) and released workflow steps
-- (relay_flow_release) both go through here.
local relay_handing_stopped = false

-- The registered worker that takes a job of lane `lane_id` due now (one that serves its queue and runs its task
-- with no limit, with the most free slots), or nil: none, or the lane already holds a job due now (its marker
-- scores its head), which the job must not overtake. `clear` (optional) remembers the lanes already seen holding
-- no due job, for a caller under which no lane's marker moves until handing stops (enqueue.lua: a job that goes into
-- its lane due now stops it, and the lanes are written after its loop), so its jobs of one lane read its marker once.
local function relay_taker(queue, now, lane_id, clear)
  if relay_handing_stopped then return nil end
  local task, q = relay_lane_parts(lane_id)
  local best = nil
  for _, w in ipairs(relay_idle_workers(queue, now)) do
    if w.free > 0 and (best == nil or w.free > best.free) and string.find(w.queues, ',' .. q .. ',', 1, true)
        and string.find(w.tasks, ',' .. task .. ',', 1, true) then
      best = w
    end
  end
  if best == nil then return nil end
  if clear and clear[lane_id] then return best end
  local head = redis.call('ZSCORE', queue, MARKER .. lane_id)
  if head ~= false and head ~= nil and tonumber(head) < now + 1 then return nil end
  if clear then clear[lane_id] = true end
  return best
end

-- Append the values after `list` to it.
local function relay_append_values(list, ...)
  for _, value in ipairs({...}) do list[#list + 1] = value end
end

-- Claim job `job` ({id, lane id, record, due, index score, _, {try count, seq} as read, or nil to read them
-- here}) for worker `w` (relay_taker) as claim.lua's mark would (its marker flagged H), to be pushed, as the claimed
-- item claim.lua would return, onto the worker's list by relay_flush_hand_offs: the call's hand-offs to one worker
-- are written together (one MSET, two ZADDs, one RPUSH, one INCRBY and one HSET for all of them, where each cost
-- those six), which its one BLMPOP takes together (worker/handoff.py). A script that hands off must call
-- relay_flush_hand_offs before it ends, and before it ends any registration: until then nothing is written. Not
-- aborted: an abort request counts only if made after the enqueue, which is now (a stale one is ignored by the
-- running job's checks too).
local relay_handed, relay_handed_order = {}, {}
local function relay_hand_off(queue, index, job, w, now)
  local id, lane_id, record = job[1], job[2], job[3]
  local prior = job[7] or redis.call('MGET', TRIES .. id, SEQ .. id)
  local try = (tonumber(prior[1]) or 0) + 1
  local to = relay_handed[w.token]
  if to == nil then
    to = {w = w, index = index, records = {}, leases = {}, indexed = {}, items = {}}
    relay_handed[w.token] = to
    relay_handed_order[#relay_handed_order + 1] = w.token
  end
  local add = relay_append_values
  add(to.records, JOB .. id, record, IN_PROGRESS .. id, w.token .. '|' .. try .. '|' .. now .. '|H|' .. lane_id,
    TRIES .. id, try)
  add(to.leases, RUNNING_BASE + now + w.lease, id)
  add(to.indexed, job[5], id)
  add(to.items, cjson.encode({id, record, try, 0, job[4], tonumber(prior[2]) or 0}))
  w.free = w.free - 1
end

-- Write the hand-offs relay_hand_off gathered, worker by worker, in the order each was first handed one: before
-- anything that ends registrations (relay_notify_named, relay_unregister_idle), which must have the last word.
local function relay_flush_hand_offs(queue)
  for _, token in ipairs(relay_handed_order) do
    local to = relay_handed[token]
    local w, n = to.w, #to.items
    relay_chunked('MSET', nil, to.records)
    relay_chunked('ZADD', queue, to.leases)
    relay_chunked('ZADD', to.index, to.indexed)
    relay_chunked('RPUSH', HANDOFF .. token, to.items)
    -- Its expiry moves on only as a registration starts (claim.lua): one renewed without a break for longer lapsed
    -- it, and a count this INCRBY creates would otherwise outlive its worker.
    if redis.call('INCRBY', HANDED .. token, n) == n then redis.call('PEXPIRE', HANDED .. token, HANDED_TTL_MS) end
    if w.free > 0 then
      redis.call('HSET', IDLE .. queue, token, string.format('%s|%d|%d|%s|%s', w.until_ms, w.free, w.lease,
        w.queues, w.tasks))
    else
      redis.call('HDEL', IDLE .. queue, token)
    end
  end
  relay_handed, relay_handed_order = {}, {}
end

-- A handed job (shared/keys.py "Hand-off") that never started goes back to its lane `lane`, due now, its try given
-- back, as if never claimed; the workers that serve it hear of it. Returns its named queue.
local function relay_put_back(queue, id, try, lane, now)
  redis.call('DEL', IN_PROGRESS .. id)
  if try > 1 then redis.call('SET', TRIES .. id, try - 1) else redis.call('DEL', TRIES .. id) end
  redis.call('ZREM', queue, id)
  relay_wait(queue, lane, id, now)
  local _, q = relay_lane_parts(lane)
  relay_count(queue, q, 1)
  relay_unregister_idle(queue)
  redis.call('{{PUBLISH}}', relay_queue_channel(queue, q), 'j')
  return q
end

-- Publish the wake-up notices `wake` collected (channel -> earliest due): 'j' when due now, else 'd<due>'; and first
-- the notices of the workers this call named (relay_notify_named), so no script that names one can leave it
-- untold. The registry is left alone when the caller knows it is empty (`no_registry`: it has just read it).
local function relay_wake(queue, wake, now, no_registry)
  relay_notify_named(queue, now)
  if next(wake) ~= nil and not no_registry then relay_unregister_idle(queue) end
  for channel, due in pairs(wake) do
    redis.call('{{PUBLISH}}', channel, due <= now and 'j' or ('d' .. string.format('%d', due)))
  end
end

-- ---------------------------------------------------------------------------------------------------------
-- Workflows (shared/keys.py, "Workflows"; shared/workflows/). A workflow's hash holds, per step i: 't:i' its job
-- record template, 'p:i' and 'u:i' its predecessors and successors ('3,4'), 'd:i' the predecessors it still
-- waits on, 'i:i' its input template ('@3' or '[@3,@4]': the values of steps 3 and 4; absent when it takes
-- none), 'o:i' '1' when it accepts failed inputs (a chord's callback that opted in), 's:i' its state (P pending,
-- Q active: enqueued, waiting or running, S succeeded, F failed, A aborted, K skipped) and 'v:i' its value once
-- ended (its result, or {"state","task_id","error"}). And for the workflow: 'n' steps, 'st' its state, 'cx' '1'
-- once cancelled, 'active' steps active, 'sinks'/'sok' steps without successors and how many succeeded, 'fail'
-- the first step that failed, 'root' the template of its result, 'seq' its log's last seq, 'ml'/'mb' its
-- log's caps, 'mx' the most steps it may have.
-- A map over the value before it (a map node without items) is a step of its own, 'm:i' '1', that runs no task:
-- when its predecessors ended it expands (relay_flow_expand) into one member step per item of its input, numbered
-- after the workflow's last step ('x:i' '<first>,<count>'; each member's template is the map's, with its item as
-- "in", its successor the map), and waits in state M for them ('d:i' members left); when the last one ended, the
-- map ends with their values' list (relay_flow_map_end). It expands once: only a pending step is released.
local FLOW_STATES = {S = 'succeeded', F = 'failed', A = 'aborted', K = 'skipped', P = 'pending', Q = 'active',
  M = 'running'}

-- A job record's links, from its first bytes (shared/jobs.py): its workflow and step, its parent task, and the
-- inbox its events also go to (shared/keys.py "Inboxes").
local function relay_record_links(head)
  local rest = head and string.match(head, '^{"f":"[^"]*","fp":"%x*","w":"%a","et":%d+,"ln":"[^"]*",(.*)$')
  if not rest then return nil, nil, nil, nil end
  local flow, step, after = string.match(rest, '^"wf":"([^"]*)","ws":(%d+),"tb":%d+,(.*)$')
  if flow then rest = after end
  local parent, after_parent = string.match(rest, '^"pt":"([^"]*)",(.*)$')
  if parent then rest = after_parent end
  return flow, tonumber(step), parent, string.match(rest, '^"ib":"([^"]*)"')
end

local function relay_ts(ms)
  return string.format('%.3f', ms / 1000)
end

-- A workflow-level event body (no seq yet): type first, as every event's.
local function relay_flow_body(kind, flow, now, data, step)
  local body = '{"type":"' .. kind .. '","workflow_id":"' .. flow .. '","ts":' .. relay_ts(now) .. ',"data":' .. data
  if step then body = body .. ',"task_id":"' .. flow .. ':' .. step .. '","step":' .. step end
  return body .. '}'
end

-- Append `bodies` (complete events without their seq) to the workflow's log; false if the workflow is gone. The
-- log's entries and bytes are counted in the workflow's hash ('le', 'lb'), so an append within the caps costs no
-- read of the log; past a cap the log itself is measured (the counts may be high: it may have expired meanwhile)
-- and trimmed.
local function relay_flow_emit(flow, bodies, ttl)
  if #bodies == 0 then return true end
  local key = FLOW .. flow
  local info = redis.call('HMGET', key, 'seq', 'ml', 'mb', 'le', 'lb')
  if not info[2] then return false end
  local stream = FLOW_EVENTS .. flow
  local max_len, max_bytes = tonumber(info[2]), tonumber(info[3])
  local last, packed = relay_append(stream, false, tonumber(info[1] or '0'), bodies, 1, #bodies, 0, 0, ttl)
  local length, bytes = tonumber(info[4] or '0') + 1, tonumber(info[5] or '0') + #packed
  if length > max_len or bytes > max_bytes then
    local stored = redis.call('XLEN', stream)
    if stored ~= length then  -- the counts are stale: count the log's bytes once
      length, bytes = stored, 0
      for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+')) do bytes = bytes + #entry[2][2] end
    end
    length, bytes = relay_trim_to(stream, length, bytes, max_len, max_bytes)
  end
  redis.call('HSET', key, 'seq', last, 'le', length, 'lb', bytes)
  return true
end

-- Events for workflows' logs, held until the script's end (relay_flow_flush): a step's end writes its own events,
-- its `step_ended`, its successors' `step_started` and perhaps `workflow_end` as one log entry, one message.
local relay_flow_pending, relay_flow_order = {}, {}

local function relay_flow_queue(flow, body)
  relay_gather(relay_flow_pending, relay_flow_order, flow, body)
end

-- Append what relay_flow_queue held, each workflow's events in the order they were queued. Every script that
-- queues workflow events calls this before it returns.
local function relay_flow_flush(ttl)
  for _, flow in ipairs(relay_flow_order) do relay_flow_emit(flow, relay_flow_pending[flow], ttl) end
  relay_flow_pending, relay_flow_order = {}, {}
end

-- A step's events bodies[from..to] (numbered first_seq.. in its own log), for its workflow's log tagged with the
-- step: what GET /workflows/{id}/events streams.
local function relay_flow_copy(flow, step, bodies, from, to, first_seq)
  for i = from, to do
    relay_flow_queue(flow, string.sub(bodies[i], 1, -2) .. ',"step":' .. step .. ',"step_seq":' .. (first_seq + i - from) .. '}')
  end
end

-- A template with '@<step>' references, filled in with those steps' values (raw JSON, never decoded).
local function relay_flow_fill(key, template)
  local refs, fields = {}, {}
  for n in string.gmatch(template, '@(%d+)') do
    if not refs[n] then
      refs[n] = true
      fields[#fields + 1] = 'v:' .. n
    end
  end
  if #fields == 0 then return template end
  local values = relay_hmget(key, fields)
  local by = {}
  for i, field in ipairs(fields) do by[string.sub(field, 3)] = values[i] or 'null' end
  return (string.gsub(template, '@(%d+)', by))
end

-- Enqueue the released steps of a workflow (each its template, its input filled in, as a new job, due now): each
-- handed to a registered idle worker as a submit is (relay_taker, relay_hand_off: no claim, no notice), or, into its
-- lane, named for a registered worker that runs it (shared/keys.py "Named claims"), or, with none, in `wake` for
-- every worker of its channel; the caller counts them in the workflow's 'active', and sends the notices
-- (relay_wake, or relay_notify_named). A caller that has put jobs back in their lanes in this call sets
-- `relay_handing_stopped` first, so that no step overtakes them. Only a release of one step (a chain's next, a
-- chord's callback) is handed off: several (a group, a map) go into their lanes, where one claim takes many for
-- fewer commands than a hand-off each costs (eight), and no step is left to a claim out of step with them.
local function relay_flow_release(queue, flow, steps, now, wake, events)
  if #steps == 0 then return end
  local key = FLOW .. flow
  local jobs, fields = {}, {}
  for n, j in ipairs(steps) do
    local got = redis.call('HMGET', key, 't:' .. j, 'i:' .. j)
    local record = relay_job_record(got[1], now, now)
    if got[2] then record = string.sub(record, 1, -2) .. ',"in":' .. relay_flow_fill(key, got[2]) .. '}' end
    local job = {flow .. ':' .. j, relay_record_lane(record), record, now, now * 1000 + n - 1}
    local w = #steps == 1 and relay_taker(queue, now, job[2])
    if w then
      relay_hand_off(queue, INDEX .. queue, job, w, now)
    else
      jobs[#jobs + 1] = job
      relay_handing_stopped = true
    end
    fields[#fields + 1] = 's:' .. j
    fields[#fields + 1] = 'Q'
    events[#events + 1] = relay_flow_body('step_started', flow, now, '{"task":"' .. relay_record_name(record) .. '"}', j)
  end
  relay_flush_hand_offs(queue)
  relay_chunked('HSET', key, fields)
  relay_enqueue_jobs(queue, INDEX .. queue, jobs, relay_micros or 0, {})
  for _, job in ipairs(jobs) do
    if not relay_name_claimer(queue, now, job[2], now) then
      local _, q = relay_lane_parts(job[2])
      local channel = relay_queue_channel(queue, q)
      if wake[channel] == nil or now < wake[channel] then wake[channel] = now end
    end
  end
end

-- The workflow has no active step left: it ends (succeeded when every step without successors succeeded,
-- aborted when cancelled, else failed), with its `workflow_end` event, and expires `ttl` ms later.
local function relay_flow_finish(flow, now, ttl, events)
  local key = FLOW .. flow
  local info = redis.call('HMGET', key, 'cx', 'sinks', 'sok', 'fail', 'root')
  local state, data
  if info[1] == '1' then
    state = 'aborted'
    data = '{"state":"aborted","error":{"error_type":"WorkflowCancelled","message":"the workflow was cancelled"}}'
  elseif tonumber(info[3] or '0') >= tonumber(info[2]) then
    state = 'succeeded'
    data = '{"state":"succeeded","result":' .. relay_flow_fill(key, info[5]) .. '}'
  else
    state = 'failed'
    local failed = info[4] or ''
    local value = redis.call('HGET', key, 'v:' .. failed) or 'null'
    data = '{"state":"failed","step":' .. (failed ~= '' and failed or 'null') .. ',"error":' .. value .. '}'
  end
  redis.call('HSET', key, 'st', state, 'ended', now, 'end', data)
  events[#events + 1] = relay_flow_body('workflow_end', flow, now, data)
  redis.call('PEXPIRE', key, ttl)
end

-- The elements of the JSON array `json`, each as its raw text (never decoded, so numbers, strings and nesting keep
-- their exact bytes), or nil if `json` is not an array.
local function relay_json_items(json)
  local at = string.find(json, '[^ \t\r\n]')
  if not at or string.sub(json, at, at) ~= '[' then return nil end
  local items, depth, start, pos = {}, 0, at + 1, at + 1
  while true do
    at = string.find(json, '[%[%]{}",]', pos)
    if not at then return nil end
    local c = string.sub(json, at, at)
    pos = at + 1
    if c == '"' then  -- skip the string, escapes and all
      repeat
        at = string.find(json, '["\\]', pos)
        if not at then return nil end
        pos = at + (string.sub(json, at, at) == '\\' and 2 or 1)
      until string.sub(json, at, at) == '"'
    elseif c == '[' or c == '{' then
      depth = depth + 1
    elseif depth > 0 and (c == ']' or c == '}') then
      depth = depth - 1
    elseif depth == 0 and (c == ',' or c == ']') then
      local item = string.match(string.sub(json, start, at - 1), '^%s*(.-)%s*$')
      if c == ']' and item == '' and #items == 0 then return items end
      items[#items + 1] = item
      if c == ']' then return items end
      start = pos
    end
  end
end

-- What a JSON value is, for an error message.
local function relay_json_kind(json)
  local c = string.match(json, '^%s*(.)')
  local kinds = {['{'] = 'an object', ['"'] = 'a string', t = 'a boolean', f = 'a boolean', n = 'null'}
  return kinds[c] or 'a number'
end

-- Map step `m` was released (its predecessors ended): expand it into one member step per item of its input (the
-- value before it), numbered from the workflow's 'n' on, appended to `released` for the caller to enqueue; the map
-- waits for them (state M). Returns nil then, or the map's end now, {m, state, value}: `[]` for an empty list, a
-- failure for a value that is not a list or a list that would take the workflow past its most steps ('mx'), in
-- which case nothing is expanded.
local function relay_flow_expand(flow, m, now, events, released)
  local key = FLOW .. flow
  local got = redis.call('HMGET', key, 't:' .. m, 'i:' .. m, 'n', 'mx')
  local template, n = got[1], tonumber(got[3])
  local most = tonumber(got[4]) or n
  local value = relay_flow_fill(key, got[2])
  local items = relay_json_items(value)
  local data = '{"task":"' .. relay_record_name(template) .. '"'
  local ended
  if not items then
    ended = {m, 'F', '{"error_type":"MapOverNonList","message":"step ' .. m .. ' maps over the value before it, '
      .. 'which is ' .. relay_json_kind(value) .. ', not a list"}'}
  elseif #items == 0 then
    ended = {m, 'S', '[]'}
  elseif n + #items > most then
    ended = {m, 'F', '{"error_type":"TooManySteps","message":"step ' .. m .. ' would map over ' .. #items
      .. ' items: the workflow has ' .. n .. ' steps and may have at most ' .. most .. '"}'}
  end
  if ended then
    events[#events + 1] = relay_flow_body('step_started', flow, now, data .. ',"members":{"first":' .. n
      .. ',"count":0}}', m)
    return ended
  end
  -- Each member's record: the map's, its step number in "ws", its item as its input ("in", last).
  local _, head_end = string.find(template, '^{"f":"[^"]*","fp":"%x*","w":"%a","et":%d+,"ln":"[^"]*","wf":"[^"]*","ws":')
  local head = string.sub(template, 1, head_end)
  local rest = string.sub(string.match(string.sub(template, head_end + 1), '^%d+(.*)$'), 1, -2) .. ',"in":'
  local fields = {}
  for index, item in ipairs(items) do
    local j = tostring(n + index - 1)
    fields[#fields + 1] = 't:' .. j
    fields[#fields + 1] = head .. j .. rest .. item .. '}'
    fields[#fields + 1] = 'p:' .. j
    fields[#fields + 1] = ''
    fields[#fields + 1] = 'u:' .. j
    fields[#fields + 1] = m
    fields[#fields + 1] = 'd:' .. j
    fields[#fields + 1] = 0
    fields[#fields + 1] = 's:' .. j
    fields[#fields + 1] = 'P'
    released[#released + 1] = j
  end
  local span = n .. ',' .. #items
  for _, field in ipairs({'n', n + #items, 'x:' .. m, span, 'd:' .. m, #items, 's:' .. m, 'M'}) do
    fields[#fields + 1] = field
  end
  relay_chunked('HSET', key, fields)
  events[#events + 1] = relay_flow_body('step_started', flow, now, data .. ',"members":{"first":' .. n .. ',"count":'
    .. #items .. '}}', m)
  return nil
end

-- Map step `m`'s members have all ended: its end, {m, state, value}. It succeeded with their values' list, in
-- member order, when they all succeeded; else it failed (aborted, when no member failed but some were aborted or
-- skipped), naming its first member that did not succeed.
local function relay_flow_map_end(flow, m)
  local key = FLOW .. flow
  local first, count = string.match(redis.call('HGET', key, 'x:' .. m), '^(%d+),(%d+)$')
  first, count = tonumber(first), tonumber(count)
  local fields, refs = {}, {}
  for j = first, first + count - 1 do
    fields[#fields + 1] = 's:' .. j
    refs[#refs + 1] = '@' .. j
  end
  local states = relay_hmget(key, fields)
  local bad, missed, state = nil, 0, 'A'
  for index, s in ipairs(states) do
    if s ~= 'S' then
      missed = missed + 1
      bad = bad or index
      if s == 'F' then state = 'F' end
    end
  end
  if missed == 0 then return {m, 'S', relay_flow_fill(key, '[' .. table.concat(refs, ',') .. ']')} end
  local why = 'step ' .. (first + bad - 1) .. ' ' .. (FLOW_STATES[states[bad]] or 'failed') .. ' (' .. missed .. ' of '
    .. count .. ' members did not succeed)'
  return {m, state, '{"error_type":"MapMemberFailed","message":"' .. why .. '"}'}
end

-- Step `j` of workflow `flow` runs as task '<flow>:<j>', an id a client may have given a task of its own. Who holds
-- that id now: nil (no job record, no result: the usual case, one EXISTS), 'own' (this step's, from a run before a
-- workflow retry: their heads name this step) or 'other' (a record or result its release must not write over: the
-- step fails instead, TaskIdTaken).
local function relay_flow_id_holder(flow, j)
  local id = flow .. ':' .. j
  if redis.call('EXISTS', JOB .. id, RESULT .. id) == 0 then return nil end
  local link, own = '"wf":"' .. flow .. '","ws":' .. j .. ',', false
  for _, key in ipairs({JOB .. id, RESULT .. id}) do
    local head = redis.call('GETRANGE', key, 0, 1023)
    if head ~= '' then
      if not string.find(head, link, 1, true) then return 'other' end
      own = true
    end
  end
  return own and 'own' or nil
end

-- Step `j` ran before (a workflow retry runs it again, whether released at once or when its predecessors end): its
-- log goes on from its last event, its tries start a new round after the last one (its "tb", see
-- worker/engine/tries.py), and its old result goes, or it would be read as the state of the step queued again.
local function relay_flow_rerun(flow, j)
  local id = flow .. ':' .. j
  local head = redis.call('GETRANGE', RESULT .. id, 0, 1023)
  local tries = string.match(head, '^{"sq":%d+,"rs":"%a+","f":"[^"]*","fp":"%x*","wf":"[^"]*","ws":%d+,"t":(%d+)')
  if not tries then return end
  redis.call('SET', SEQ .. id, relay_seq(id))
  redis.call('DEL', RESULT .. id)
  redis.call('SET', TRIES .. id, tries)
  local key = FLOW .. flow
  local template = redis.call('HGET', key, 't:' .. j)
  template = string.gsub(template, '^({"f":"[^"]*","fp":"%x*","w":"%a","et":%d+,"ln":"[^"]*","wf":"[^"]*","ws":%d+,"tb":)%d+',
    '%1' .. tries, 1)
  redis.call('HSET', key, 't:' .. j, template)
end

-- Record the ends in `work` ({step, state (S, F, A or K), value (its result, or its error), its successors or
-- nil}) and whatever follows from them, until nothing more does in this call: each successor's dependencies count
-- down, those that reach zero are ready (`ready`: {step, is a map}), those that cannot run are skipped (a failed
-- input, unless they accept failures; a cancelled workflow), a ready map expands (or ends at once), a map whose
-- last member ended ends. Returns the steps to enqueue (relay_flow_release); `events` gets the workflow's events.
local function relay_flow_advance(flow, work, ready, cancelled, now, events)
  local key = FLOW .. flow
  local released, taken = {}, {}  -- taken: steps this call made ready or skipped already
  local next_item, next_ready = 1, 1
  while next_item <= #work or next_ready <= #ready do
    if next_item > #work then
      local j, is_map = ready[next_ready][1], ready[next_ready][2]
      next_ready = next_ready + 1
      local members = is_map and {} or {j}
      if is_map then work[#work + 1] = relay_flow_expand(flow, j, now, events, members) end
      for _, k in ipairs(members) do
        local holder = relay_flow_id_holder(flow, k)
        if holder == 'other' then
          work[#work + 1] = {k, 'F', '{"error_type":"TaskIdTaken","message":"step ' .. k .. ' did not run: its task '
            .. 'id (the workflow id, a colon and the step number) names a task submitted with that id"}'}
        else
          if holder == 'own' then relay_flow_rerun(flow, k) end
          released[#released + 1] = k
        end
      end
    else
      local i, s, v, succ = work[next_item][1], work[next_item][2], work[next_item][3], work[next_item][4]
      next_item = next_item + 1
      local name = FLOW_STATES[s]
      local stored = v
      if s ~= 'S' then
        stored = '{"state":"' .. name .. '","task_id":"' .. flow .. ':' .. i .. '","error":' .. v .. '}'
        redis.call('HSETNX', key, 'fail', i)
      end
      succ = succ or redis.call('HGET', key, 'u:' .. i) or ''
      redis.call('HSET', key, 's:' .. i, s, 'v:' .. i, stored)
      if succ == '' and s == 'S' then redis.call('HINCRBY', key, 'sok', 1) end
      local data = '{"state":"' .. name .. '"' .. (s ~= 'S' and (',"error":' .. v) or '') .. '}'
      events[#events + 1] = relay_flow_body('step_ended', flow, now, data, i)
      for j in string.gmatch(succ, '%d+') do
        local got = not taken[j] and redis.call('HMGET', key, 's:' .. j, 'o:' .. j, 'm:' .. j) or {}
        if got[1] == 'P' then
          if cancelled then
            taken[j] = true
            work[#work + 1] = {j, 'K', '{"error_type":"WorkflowCancelled","message":"the workflow was cancelled"}'}
          elseif s == 'S' or got[2] == '1' then
            if redis.call('HINCRBY', key, 'd:' .. j, -1) <= 0 then
              taken[j] = true
              ready[#ready + 1] = {j, got[3] == '1'}
            end
          else
            taken[j] = true
            local why = 'step ' .. i .. ' ' .. (s == 'K' and 'was skipped' or name)
            work[#work + 1] = {j, 'K', '{"error_type":"StepSkipped","message":"' .. why .. '"}'}
          end
        elseif got[1] == 'M' then  -- a map waiting for its members, of which this was one
          if redis.call('HINCRBY', key, 'd:' .. j, -1) <= 0 then
            taken[j] = true
            work[#work + 1] = relay_flow_map_end(flow, j)
          end
        end
      end
    end
  end
  return released
end

-- Step `step` of workflow `flow` ended in `state` (S, F or A) with `value` (its result, or its error): record it and
-- advance the workflow (relay_flow_advance), enqueue the steps that may run now, and end the workflow when nothing
-- is active. Only an active step ends: a second call for the same end (a replay) changes nothing. Returns false if
-- it did nothing.
local function relay_flow_step_ended(queue, flow, step, state, value, now, ttl, wake)  -- (relay_flow_flush after)
  local key = FLOW .. flow
  local info = redis.call('HMGET', key, 's:' .. step, 'cx', 'u:' .. step)
  if info[1] ~= 'Q' then return false end
  local events = {}
  local released = relay_flow_advance(flow, { {step, state, value, info[3]} }, {}, info[2] == '1', now, events)
  relay_flow_release(queue, flow, released, now, wake, events)
  if redis.call('HINCRBY', key, 'active', #released - 1) <= 0 then relay_flow_finish(flow, now, ttl, events) end
  for _, body in ipairs(events) do relay_flow_queue(flow, body) end
  return true
end
