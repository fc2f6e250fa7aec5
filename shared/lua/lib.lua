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

-- Now, in ms, on Redis's clock: every time that decides who owns a job is compared with this, never with a
-- caller's clock (two workers' clocks may differ by seconds; a VM resumed from a pause jumps).
local function relay_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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

-- A running job's in-progress marker, "<token>|<try>|<start ms>|<S or ->|<lane>" (S: it holds a concurrency
-- slot of its lane's limit); markers from before named queues have no lane. Returns try, slot (bool), lane.
local function relay_marker_parts(marker)
  local try, slot, lane = string.match(marker, '^[^|]*|(%d+)|%d+|([S-])|(.*)$')
  if try then return tonumber(try), slot == 'S', lane ~= '' and lane or nil end
  return tonumber(string.match(marker, '|(%d+)|')), false, nil
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
-- the lanes parked on that limit back at their heads (they may run now). Returns the channels to wake.
local function relay_free_slot(queue, lane, id, wake)
  local task, _, _, _, part = relay_lane_parts(lane)
  local key_value = string.match(part, '^([^/]*)') or ''
  redis.call('SREM', SLOTS .. task .. '|' .. key_value .. '|' .. queue, id)
  local parked_key = PARKED .. task .. '|' .. key_value .. '|' .. queue
  local parked = redis.call('SMEMBERS', parked_key)
  if #parked == 0 then return end
  redis.call('DEL', parked_key)
  for _, waiting in ipairs(parked) do
    if relay_sync_marker(queue, waiting) ~= nil then
      local _, q = relay_lane_parts(waiting)
      wake[relay_queue_channel(queue, q)] = true
    end
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

-- Keep a task's log within its caps after `newest` (its packed events) was appended: while it holds more than
-- `max_len` entries or `max_bytes` bytes of events, drop its oldest entries, never the newest one (a reader who
-- asks for dropped events gets a `gap`; live followers already had them). A log of two entries or more counts
-- its bytes in a key of its own, kept in step here (every entry added or dropped goes through relay_emit) and
-- expiring with it; a log of one entry (most tasks' whole log) needs no count, and its second entry starts it
-- afresh, so a count left behind by a deleted log is never trusted.
local function relay_trim(task_id, stream, newest, max_len, max_bytes, ttl_ms)
  local length = redis.call('XLEN', stream)
  if length <= 1 then return end
  local counter = EVENT_BYTES .. task_id
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
  if length == 1 then
    redis.call('DEL', counter)
  else
    redis.call('SET', counter, bytes, 'PX', ttl_ms)
  end
end

-- Append bodies[from..to] after `seq` to the task's log (one stream entry, id 0-<last seq>) and publish them
-- as one message, then keep the log within its caps (relay_trim). Returns the new last seq. If the log is
-- ahead of the counter (the counter was lost), the numbering continues after the log's last entry instead of
-- failing the whole script. A batch sent again is never appended twice (see commit.lua's 'dup').
local function relay_emit(task_id, seq, bodies, from, to, max_len, max_bytes, ttl_ms)
  if to < from then return seq end
  local stream = EVENTS .. task_id
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
  redis.call('PUBLISH', stream, packed)
  redis.call('PEXPIRE', stream, ttl_ms)
  -- A task's first events start its log (one entry: nothing to trim, no count to keep); otherwise keep the caps.
  if seq > 0 or last ~= seq + to - from + 1 then relay_trim(task_id, stream, packed, max_len, max_bytes, ttl_ms) end
  return last
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
