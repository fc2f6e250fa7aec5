-- Enqueue a batch of submissions atomically: for each, the id check (a repeat reports the existing task's
-- state; other arguments are a conflict), the depth check (waiting tasks, due or deferred, not running ones),
-- arq's job record, the job in its task's lane (shared/keys.py), the task index, the reply request; then one
-- wake-up notice for all. Times are Redis's: the record's enqueue time ("et", which abort requests are compared
-- with) is set here, and a due time given as a delay ('+<ms>') counts from here.
-- KEYS: queue, index.  ARGV: (unused), max_depth, wakeup channel, then per item: id, due ('+<delay ms>' or
-- absolute ms), job record, fingerprint, index score, reply request ('' for none).
local queue, index = KEYS[1], KEYS[2]
local max_depth, channel = tonumber(ARGV[2]), ARGV[3]
local now = relay_now()
local depth = relay_depth(queue)
local out, jobs, indexed, batch = {}, {}, {}, {}
local lanes, lane_names = {}, {}  -- task name -> {due, id, ...} and its earliest due: one ZADD per lane
local min_due = nil
local item = 0
for a = 4, #ARGV, 6 do
  item = item + 1
  local id, when, record, fp, index_score, reply = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local state, name, old_fp
  if batch[id] then
    state, name, old_fp = batch[id][1], batch[id][2], batch[id][3]
  elseif redis.call('EXISTS', JOB .. id, RESULT .. id) > 0 then
    state, name, old_fp = relay_state(queue, id, now)
  end
  if state then
    local same = (old_fp == fp) and 'same' or 'other'
    out[item] = {'exists', state, same, name}
  elseif depth >= max_depth then
    out[item] = {'full', tostring(depth)}
  else
    depth = depth + 1
    local due = tonumber(when)
    if string.sub(when, 1, 1) == '+' then due = now + tonumber(string.sub(when, 2)) end
    record = (string.gsub(record, '^({"f":"[^"]*","fp":"%x*","w":"%a","et":)%d+', '%1' .. now, 1))
    if due > now then record = string.sub(record, 1, -2) .. ',"du":' .. string.format('%d', due) .. '}' end
    local task = relay_record_name(record)
    jobs[#jobs + 1] = JOB .. id
    jobs[#jobs + 1] = record
    if not lanes[task] then
      lanes[task] = {entries = {}, first = due}
      lane_names[#lane_names + 1] = task
    end
    local lane = lanes[task]
    lane.entries[#lane.entries + 1] = due
    lane.entries[#lane.entries + 1] = id
    if due < lane.first then lane.first = due end
    indexed[#indexed + 1] = index_score
    indexed[#indexed + 1] = id
    if reply ~= '' then redis.call('SET', REPLY .. id, reply) end
    local s = due > now and 'deferred' or 'queued'
    batch[id] = {s, task, fp}
    if min_due == nil or due < min_due then min_due = due end
    out[item] = {'created', s}
  end
end
if #jobs > 0 then
  redis.call('MSET', unpack(jobs))
  for _, task in ipairs(lane_names) do
    redis.call('ZADD', relay_lane(queue, task), unpack(lanes[task].entries))
    redis.call('ZADD', queue, 'LT', lanes[task].first, MARKER .. task)  -- as relay_wait does, once per lane
  end
  redis.call('ZADD', index, unpack(indexed))
  redis.call('PUBLISH', channel, min_due <= now and 'j' or ('d' .. string.format('%d', min_due)))
end
return out
