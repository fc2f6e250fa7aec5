-- Enqueue a batch of submissions atomically: for each, the id check (a repeat reports the existing task's
-- state; other arguments are a conflict), its queue's depth check (waiting tasks, due or deferred, not running
-- ones), arq's job record, the job in its lane (shared/keys.py), the task index, the reply request; then one
-- wake-up notice per named queue. Times are Redis's: the record's enqueue time ("et", which abort requests are
-- compared with) is set here, and a due time given as a delay ('+<ms>') counts from here.
-- KEYS: queue (the schedule), index.  ARGV: (unused), default max depth, depths of named queues that have their
-- own ('gpu=100,batch=5000' or ''), then per item: id, due ('+<delay ms>' or absolute ms), job record,
-- fingerprint, index score, reply request ('' for none), lane id.
local queue, index = KEYS[1], KEYS[2]
local default_max = tonumber(ARGV[2])
local max_of = {}
for q, n in string.gmatch(ARGV[3], '([^,=]+)=(%d+)') do max_of[q] = tonumber(n) end
local now = relay_now()
-- FIFO within a lane finer than a millisecond: each job's score carries the microseconds of this call's TIME and
-- its place in the batch (as '<ms>.<us>': doubles near 1.7e12 hold microseconds), so jobs submitted in one
-- millisecond are claimed in the order they came, not in the order of their ids.
local micros = tonumber(redis.call('TIME')[2]) % 1000
local depths, added = {}, {}  -- named queue -> waiting jobs, and how many this batch adds
local out, jobs, indexed, batch = {}, {}, {}, {}
local lanes, lane_ids = {}, {}  -- lane id -> {entries = {due, id, ...}, first = earliest due}: one ZADD per lane
local wake = {}  -- named queue -> earliest due of its new jobs
local item = 0
for a = 4, #ARGV, 7 do
  item = item + 1
  local id, when, record, fp, index_score, reply, lane_id = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local _, q = relay_lane_parts(lane_id)
  local state, name, old_fp
  if batch[id] then
    state, name, old_fp = batch[id][1], batch[id][2], batch[id][3]
  elseif redis.call('EXISTS', JOB .. id, RESULT .. id) > 0 then
    state, name, old_fp = relay_state(queue, id, now)
  end
  if depths[q] == nil and not state then depths[q] = relay_depth(queue, q) end
  if state then
    local same = (old_fp == fp) and 'same' or 'other'
    out[item] = {'exists', state, same, name}
  elseif depths[q] >= (max_of[q] or default_max) then
    out[item] = {'full', tostring(depths[q])}
  else
    depths[q] = depths[q] + 1
    added[q] = (added[q] or 0) + 1
    local due = tonumber(when)
    if string.sub(when, 1, 1) == '+' then due = now + tonumber(string.sub(when, 2)) end
    record = (string.gsub(record, '^({"f":"[^"]*","fp":"%x*","w":"%a","et":)%d+', '%1' .. now, 1))
    if due > now then record = string.sub(record, 1, -2) .. ',"du":' .. string.format('%d', due) .. '}' end
    jobs[#jobs + 1] = JOB .. id
    jobs[#jobs + 1] = record
    if not lanes[lane_id] then
      lanes[lane_id] = {entries = {}, first = due}
      lane_ids[#lane_ids + 1] = lane_id
    end
    local lane = lanes[lane_id]
    lane.entries[#lane.entries + 1] = string.format('%d.%03d', due, math.min(999, micros + #lane.entries / 2))
    lane.entries[#lane.entries + 1] = id
    if due < lane.first then lane.first = due end
    indexed[#indexed + 1] = index_score
    indexed[#indexed + 1] = id
    if reply ~= '' then redis.call('SET', REPLY .. id, reply) end
    local s = due > now and 'deferred' or 'queued'
    batch[id] = {s, relay_record_name(record), fp}
    if wake[q] == nil or due < wake[q] then wake[q] = due end
    out[item] = {'created', s}
  end
end
if #jobs > 0 then
  redis.call('MSET', unpack(jobs))
  for _, lane_id in ipairs(lane_ids) do
    redis.call('ZADD', relay_lane(queue, lane_id), unpack(lanes[lane_id].entries))
    redis.call('ZADD', queue, 'LT', lanes[lane_id].first, MARKER .. lane_id)  -- as relay_wait does, once per lane
  end
  redis.call('ZADD', index, unpack(indexed))
  for q, n in pairs(added) do relay_count(queue, q, n) end
  for q, due in pairs(wake) do
    redis.call('PUBLISH', relay_queue_channel(queue, q), due <= now and 'j' or ('d' .. string.format('%d', due)))
  end
end
return out
