-- How many jobs of the deployment are due, deferred (or waiting for a retry) and running, in total, per task and
-- per named queue, on Redis's clock. One short call: its cost grows with the number of lanes and running jobs,
-- not of waiting jobs.
-- KEYS: queue (the schedule).
-- ARGV: 'waiting' for the number of waiting jobs alone (a worker's health value: one command while the queue is
-- empty); 'recount' to count every named queue's waiting jobs again into the depth hash (the minute's
-- maintenance: repairs any drift); else the full counts.
-- Returns {due, deferred, running, {task, due, deferred}..., {queue, due, deferred, running}...}, or a count.
local queue = KEYS[1]
if ARGV[1] == 'waiting' then
  local total = 0
  for _, n in ipairs(redis.call('HVALS', DEPTH .. queue)) do total = total + math.max(0, tonumber(n)) end
  return total
end
local lanes = relay_lanes(queue)
if ARGV[1] == 'recount' then
  local depth = {}
  for _, lane in ipairs(lanes) do
    local _, q = relay_lane_parts(lane[1])
    depth[q] = (depth[q] or 0) + redis.call('ZCARD', relay_lane(queue, lane[1]))
  end
  redis.call('DEL', DEPTH .. queue)
  local fields = {}
  for q, n in pairs(depth) do
    fields[#fields + 1] = q
    fields[#fields + 1] = n
  end
  if #fields > 0 then redis.call('HSET', DEPTH .. queue, unpack(fields)) end
  return #fields / 2
end
local now = relay_now()
local due, deferred, per, by_queue, queues = 0, 0, {}, {}, {}
local function of_queue(q)
  if by_queue[q] == nil then
    by_queue[q] = {q, 0, 0, 0}
    queues[#queues + 1] = by_queue[q]
  end
  return by_queue[q]
end
local per_task = {}
for _, lane in ipairs(lanes) do
  local key = relay_lane(queue, lane[1])
  local d = redis.call('ZCOUNT', key, '-inf', '(' .. (now + 1))  -- scores may carry microseconds
  local waiting = redis.call('ZCARD', key)
  due, deferred = due + d, deferred + waiting - d
  local task, q = relay_lane_parts(lane[1])
  if per_task[task] == nil then
    per_task[task] = {task, 0, 0}
    per[#per + 1] = per_task[task]
  end
  per_task[task][2] = per_task[task][2] + d
  per_task[task][3] = per_task[task][3] + waiting - d
  local counts = of_queue(q)
  counts[2] = counts[2] + d
  counts[3] = counts[3] + waiting - d
end
local running_ids = redis.call('ZRANGEBYSCORE', queue, RUNNING_BASE, '+inf')
for i = 1, #running_ids, 500 do
  local wanted = {}
  for j = i, math.min(i + 499, #running_ids) do wanted[#wanted + 1] = IN_PROGRESS .. running_ids[j] end
  for _, marker in ipairs(redis.call('MGET', unpack(wanted))) do
    local lane = marker and select(3, relay_marker_parts(marker))
    local _, q = relay_lane_parts(lane or '')
    local counts = of_queue(q)
    counts[4] = counts[4] + 1
  end
end
return {due, deferred, #running_ids, per, queues}
