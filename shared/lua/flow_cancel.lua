-- Cancel a workflow (DELETE /workflows/{id}): from now on no step is released (lib.lua relay_flow_step_ended skips
-- the successors of whatever ends), every pending step is skipped here, with its `step_ended` event, and the
-- active steps are returned for the caller to abort one by one (abort.lua: a waiting one ends `aborted` at once,
-- a running one is cancelled by its worker); the workflow ends `aborted` when the last of them has ended.
-- Cancelling again (say, after the caller died half-way) returns the steps still active.
-- KEYS: none.  ARGV: workflow id, ttl_ms.
-- Returns {'cancelling', active step ids...} | {'finished', state} | {'unknown'}.
local flow, ttl = ARGV[1], tonumber(ARGV[2])
local key = FLOW .. flow
local info = redis.call('HMGET', key, 'st', 'n')
if not info[1] then return {'unknown'} end
if info[1] ~= 'running' then return {'finished', info[1]} end
local now = relay_now()
redis.call('HSET', key, 'cx', '1')
local n = tonumber(info[2])
local fields = {}
for i = 0, n - 1 do fields[#fields + 1] = 's:' .. i end
local states = relay_hmget(key, fields)
local out, events, skipped = {'cancelling'}, {}, {}
local why = '{"error_type":"WorkflowCancelled","message":"the workflow was cancelled"}'
for i = 0, n - 1 do
  local s = states[i + 1]
  if s == 'P' then
    skipped[#skipped + 1] = 's:' .. i
    skipped[#skipped + 1] = 'K'
    skipped[#skipped + 1] = 'v:' .. i
    skipped[#skipped + 1] = '{"state":"skipped","task_id":"' .. flow .. ':' .. i .. '","error":' .. why .. '}'
    events[#events + 1] = relay_flow_body('step_ended', flow, now, '{"state":"skipped","error":' .. why .. '}', i)
  elseif s == 'Q' then
    out[#out + 1] = flow .. ':' .. i
  end
end
relay_chunked('HSET', key, skipped)
relay_flow_emit(flow, events, ttl)
return out
