-- Keep the task index bounded: drop the oldest entries beyond `max_entries`, and examine up to `scan` of the
-- oldest ones, dropping those whose task has no record left (its result expired).
-- KEYS: index.  ARGV: max_entries, scan.  Returns the number of entries removed.
local index = KEYS[1]
local max_entries, scan = tonumber(ARGV[1]), tonumber(ARGV[2])
local removed = redis.call('ZREMRANGEBYRANK', index, 0, -(max_entries + 1))
local oldest = redis.call('ZRANGE', index, 0, scan - 1)
local gone = {}
for i = 1, #oldest do
  local id = oldest[i]
  if redis.call('EXISTS', JOB .. id, RESULT .. id) == 0 then gone[#gone + 1] = id end
end
if #gone > 0 then removed = removed + redis.call('ZREM', index, unpack(gone)) end
return removed
