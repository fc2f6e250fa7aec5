-- Relay's shared Lua: prepended to every script (shared/scripts.py fills in the key prefixes from shared/keys.py).
local RUNNING_BASE = {{RUNNING_BASE}}
local JOB, RESULT, IN_PROGRESS, TRIES = '{{JOB_PREFIX}}', '{{RESULT_PREFIX}}', '{{IN_PROGRESS_PREFIX}}', '{{TRIES_PREFIX}}'
local EVENTS, SEQ, REPLY = '{{EVENTS_PREFIX}}', '{{SEQ_PREFIX}}', '{{REPLY_PREFIX}}'
local EVENT_BYTES = '{{EVENT_BYTES_PREFIX}}'
local ABORTS = '{{ABORT_SET}}'
local LANE, MARKER = '{{LANE_PREFIX}}', '{{LANE_MARKER}}'

-- Now, in ms, on Redis's clock: every time that decides who owns a job is compared with this, never with a
-- caller's clock (two workers' clocks may differ by seconds; a VM resumed from a pause jumps).
local function relay_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The lane of a task on a queue (see shared/keys.py: waiting jobs of one task, by due time).
local function relay_lane(queue, name)
  return LANE .. name .. '|' .. queue
end

-- The task name a job record starts with ({"f":"<name>",...; see shared/jobs.py), or nil.
local function relay_record_name(record)
  return record and string.match(record, '^{"f":"([^"]*)"')
end

-- Put `id` in its lane, due at `due`; the lane's marker in the schedule moves earlier if needed.
local function relay_wait(queue, name, id, due)
  redis.call('ZADD', relay_lane(queue, name), due, id)
  redis.call('ZADD', queue, 'LT', due, MARKER .. name)
end

-- Set the lane's marker to its head's due time, or drop it when the lane is empty. Returns the head's score.
local function relay_sync_marker(queue, name)
  local head = redis.call('ZRANGE', relay_lane(queue, name), 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', queue, MARKER .. name)
    return nil
  end
  redis.call('ZADD', queue, head[2], MARKER .. name)
  return tonumber(head[2])
end

-- The lane markers of the schedule (due or not), as {name, score} pairs in due order.
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

-- Jobs waiting in every lane of the queue (the depth a submit is checked against).
local function relay_depth(queue)
  local depth = 0
  for _, lane in ipairs(relay_lanes(queue)) do
    depth = depth + redis.call('ZCARD', relay_lane(queue, lane[1]))
  end
  return depth
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
  local score = f and tonumber(redis.call('ZSCORE', relay_lane(queue, f), task_id))
  if score == nil then score = tonumber(redis.call('ZSCORE', queue, task_id)) end  -- running, or enqueued before lanes
  if score ~= nil and score >= RUNNING_BASE then return 'running', f or '', fp or '' end
  if score ~= nil and score > now then
    if w == 'r' then return 'retrying', f or '', fp or '' end
    return 'deferred', f or '', fp or ''
  end
  return 'queued', f or '', fp or ''
end
