-- Run a failed or aborted workflow again from where it failed (POST /workflows/{id}/retry): every step that
-- failed, was aborted or was skipped is pending again, and those whose predecessors all succeeded are released
-- at once (lib.lua relay_flow_advance, relay_flow_release), with the values the succeeded steps kept as their input.
-- A step that ran before keeps its id: its event log and numbering continue, and its job record starts a new round
-- of tries (its "tb", see worker/engine/tries.py), whenever it is released (lib.lua relay_flow_rerun). Steps that
-- succeeded are not run again. A map that expanded before does not expand again: it waits (state M) for its
-- members that did not succeed, which run again like any step; a map that never expanded (its input was not a
-- list, say) expands when it is released.
-- KEYS: queue (the schedule).  ARGV: workflow id, ttl_ms.
-- Returns {'queued', steps released} | {'not_retryable', state} | {'unknown'}.
local queue = KEYS[1]
local flow, ttl = ARGV[1], tonumber(ARGV[2])
local key = FLOW .. flow
local info = redis.call('HMGET', key, 'st', 'n')
if not info[1] then return {'unknown'} end
if info[1] ~= 'failed' and info[1] ~= 'aborted' then return {'not_retryable', info[1]} end
local now = relay_now()
local n = tonumber(info[2])
local fields = {}
for i = 0, n - 1 do fields[#fields + 1] = 's:' .. i end
local states = relay_hmget(key, fields)
local again, reset = {}, {}
for i = 0, n - 1 do
  local s = states[i + 1]
  if s == 'F' or s == 'A' or s == 'K' then
    again[#again + 1] = i
    states[i + 1] = 'P'
  end
end
local ready, work = {}, {}
for _, i in ipairs(again) do
  local got = redis.call('HMGET', key, 'p:' .. i, 'm:' .. i, 'x:' .. i)
  redis.call('HDEL', key, 'v:' .. i)
  if got[3] then  -- a map that expanded: it waits for its members that did not succeed (they run again)
    local first, count = string.match(got[3], '^(%d+),(%d+)$')
    local left = 0
    for j = tonumber(first), tonumber(first) + tonumber(count) - 1 do
      if states[j + 1] ~= 'S' then left = left + 1 end
    end
    reset[#reset + 1] = 's:' .. i
    reset[#reset + 1] = 'M'
    reset[#reset + 1] = 'd:' .. i
    reset[#reset + 1] = left
    if left == 0 then work[#work + 1] = relay_flow_map_end(flow, i) end  -- (never: it ended with a member missing)
  else
    local waits = 0
    for p in string.gmatch(got[1], '%d+') do
      if states[tonumber(p) + 1] ~= 'S' then waits = waits + 1 end
    end
    reset[#reset + 1] = 's:' .. i
    reset[#reset + 1] = 'P'
    reset[#reset + 1] = 'd:' .. i
    reset[#reset + 1] = waits
    if waits == 0 then
      ready[#ready + 1] = {i, got[2] == '1'}  -- its run before is dealt with as it is released (relay_flow_rerun)
    end
  end
end
relay_chunked('HSET', key, reset)
redis.call('HDEL', key, 'cx', 'fail', 'ended', 'end')
redis.call('HSET', key, 'st', 'running')
redis.call('PERSIST', key)
local listed = {}
for _, i in ipairs(again) do listed[#listed + 1] = tostring(i) end
local events = {relay_flow_body('workflow_retried', flow, now, '{"steps":[' .. table.concat(listed, ',') .. ']}')}
local wake = {}
local released = relay_flow_advance(flow, work, ready, false, now, events)
relay_flow_release(queue, flow, released, now, wake, events)
if redis.call('HINCRBY', key, 'active', #released) <= 0 then relay_flow_finish(flow, now, ttl, events) end
relay_flow_emit(flow, events, ttl)
relay_wake(queue, wake, now)
return {'queued', #released}
