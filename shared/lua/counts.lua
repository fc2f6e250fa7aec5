-- How many jobs of a queue are due, deferred (or waiting for a retry) and running, in total and per task (its
-- lane), on Redis's clock. One short call: its cost grows with the number of task names, not of jobs.
-- KEYS: queue.  ARGV: 'waiting' for the number of waiting jobs alone (a worker's health value: one command less
-- while the queue is empty).  Returns {due, deferred, running, {task, due, deferred}...}, or the waiting count.
local queue = KEYS[1]
if ARGV[1] == 'waiting' then return relay_depth(queue) end
local now = relay_now()
local due, deferred, per = 0, 0, {}
for _, lane in ipairs(relay_lanes(queue)) do
  local key = relay_lane(queue, lane[1])
  local d = redis.call('ZCOUNT', key, '-inf', now)
  local waiting = redis.call('ZCARD', key)
  due, deferred = due + d, deferred + waiting - d
  per[#per + 1] = {lane[1], d, waiting - d}
end
local running = redis.call('ZCOUNT', queue, RUNNING_BASE, '+inf')
return {due, deferred, running, per}
