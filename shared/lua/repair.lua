-- The safety net of a stream that waits on a task: publish the task's final events unless its log already
-- ends with `end`. `expect` says what the caller saw: 'final' (the task has a result) or 'unknown' (no record
-- at all); if that is no longer true, nothing is published. Atomic, so concurrent followers publish once.
-- ARGV: id, expect, now_ms, ttl_ms, max_len, max_bytes, queue, bodies...   Returns 'published', 'has_end' or 'changed'.
local id, expect, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local max_len, max_bytes, queue = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local now = relay_now()
local state = relay_state(queue, id, now)
if expect == 'final' then
  if state ~= 'succeeded' and state ~= 'failed' and state ~= 'aborted' then return 'changed' end
elseif state ~= nil then
  return 'changed'
end
local top = redis.call('XREVRANGE', EVENTS .. id, '+', '-', 'COUNT', 1)
if #top > 0 then
  local packed = top[1][2][2]
  -- Its own leading fields ({"seq":N,"type":..., see relay_pack), not any "type":"end" in its data.
  local tail = string.match(packed, '[^\n]*$')
  if string.match(tail, '^{"seq":%d+,"type":"end"') then return 'has_end' end
end
local last = relay_emit(id, relay_seq(id), ARGV, 8, #ARGV, max_len, max_bytes, ttl)
local record = redis.call('GET', RESULT .. id)
if record then
  -- The counter of an ended task is in its result record: move it on there.
  local rest = string.match(record, '^{"sq":%d+,(.*)$')
  redis.call('SET', RESULT .. id, relay_result_record(rest and ('{' .. rest) or record, last), 'KEEPTTL')
else
  redis.call('SET', SEQ .. id, last, 'PX', ttl)
end
return 'published'
