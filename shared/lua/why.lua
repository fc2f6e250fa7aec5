-- Why a due job of lane `lane` is not claimed yet, beyond its turn (GET /tasks/{id}'s waiting_reason): its
-- concurrency limit is full, its rate limit holds it, or a lane of its tenant on its named queue with a higher
-- priority is due (priority orders a tenant's own work; tenants share by fairness: shared/keys.py).
-- KEYS: queue (the schedule).  ARGV: lane id, max running (0: no limit), ms between starts (0: none), burst.
-- Returns {'concurrency', running} | {'rate', ms until its next start} | {'priority', lanes due before it} | {''}.
local queue, lane = KEYS[1], ARGV[1]
local running_max, interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local task, q, priority, tenant, part = relay_lane_parts(lane)
local key_value, rate_value = string.match(part, '^([^/]*)/(.*)$')
if running_max > 0 then
  local running = redis.call('SCARD', SLOTS .. task .. '|' .. (key_value or '') .. '|' .. queue)
  if running >= running_max then return {'concurrency', running} end
end
local now = relay_now()
if interval > 0 then
  local tat = tonumber(redis.call('GET', RATE .. task .. '|' .. (rate_value or '') .. '|' .. queue) or '0')
  local next_start = tat - (burst - 1) * interval
  if next_start > now then return {'rate', math.ceil(next_start - now)} end
end
local before = 0
for _, other in ipairs(relay_lanes(queue)) do
  if other[2] <= now then
    local _, other_q, other_priority, other_tenant = relay_lane_parts(other[1])
    if other_q == q and other_tenant == tenant and other_priority > priority then before = before + 1 end
  end
end
if before > 0 then return {'priority', before} end
return {''}
