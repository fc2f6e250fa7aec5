-- One batch of keeping the task index bounded. The first batch of a pass (`start` 0) drops the oldest entries
-- beyond `max_entries`; every batch examines `scan` entries from rank `start` (the live entries an earlier
-- batch of the pass kept come first) and drops those whose task has no record left (its result expired).
-- The worker repeats batches while they are mostly expired, so pruning keeps up with any submit rate in
-- short calls. The workflow index (shared/keys.py flow_index) is kept the same way: an entry goes once its
-- workflow's hash expired.
-- KEYS: index.  ARGV: max_entries, scan, start, 'flows' for the workflow index.
-- Returns {entries removed, entries examined, of those kept}.
local index = KEYS[1]
local max_entries, scan, start = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local flows = ARGV[4] == 'flows'
local removed = 0
if start == 0 then removed = redis.call('ZREMRANGEBYRANK', index, 0, -(max_entries + 1)) end
local batch = redis.call('ZRANGE', index, start, start + scan - 1)
local gone = {}
for i = 1, #batch do
  local id = batch[i]
  local kept = flows and redis.call('EXISTS', FLOW .. id) or redis.call('EXISTS', JOB .. id, RESULT .. id)
  if kept == 0 then gone[#gone + 1] = id end
end
if #gone > 0 then removed = removed + redis.call('ZREM', index, unpack(gone)) end
return {removed, #batch, #batch - #gone}
