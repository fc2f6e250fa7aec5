-- Submit a workflow atomically (shared/keys.py, "Workflows"): its hash with every step (lib.lua describes the
-- fields), its first steps (those with no predecessor) enqueued as submits are (relay_enqueue_jobs), the workflow
-- index, and its first events: `workflow_started`, then `step_started` per first step. Idempotent by id: a
-- workflow that exists is reported with its state (and whether it was submitted with the same canvas). A
-- refusal (a first step's queue is full) leaves nothing behind; the later steps are admitted with the workflow.
-- KEYS: queue (the schedule), the workflow index.
-- ARGV: workflow id, fingerprint, meta (JSON, for GET), steps, steps without successors, result template,
-- log max_len, log max_bytes, ttl_ms, index score, default max depth, depths of named queues ('gpu=100' or ''),
-- the most steps it may have once its maps expanded, then per step: job record template, predecessors ('1,2'),
-- successors, input template ('' for none), accepts failed inputs ('0'/'1'), a map over its input ('0'/'1').
-- A map step is never a first step (it always has a predecessor, whose value it maps over).
-- Returns {'created', first steps} | {'exists', state, 'same' or 'other'} | {'taken'} (a first step's id is in
-- use: a workflow of this id expired and its steps not yet, or a task was submitted with that id; a later step's
-- is checked as it is released, lib.lua relay_flow_id_taken) | {'full', queue, depth}.
local queue, index = KEYS[1], KEYS[2]
local flow, fp, meta, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl, default_max = tonumber(ARGV[9]), tonumber(ARGV[11])
local key = FLOW .. flow
local old = redis.call('HMGET', key, 'st', 'fp')
if old[1] then return {'exists', old[1], old[2] == fp and 'same' or 'other'} end
local max_of = {}
for q, most in string.gmatch(ARGV[12], '([^,=]+)=(%d+)') do max_of[q] = tonumber(most) end

local now = relay_now()
local fields = {'n', n, 'st', 'running', 'active', 0, 'sinks', ARGV[5], 'sok', 0, 'root', ARGV[6], 'seq', 0,
  'ml', ARGV[7], 'mb', ARGV[8], 'meta', meta, 'fp', fp, 'created', now, 'mx', ARGV[13]}
local first, depths, adding = {}, {}, {}
for i = 0, n - 1 do
  local a = 14 + 6 * i
  local template, preds, succs, input, tolerant = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local waits = 0
  for _ in string.gmatch(preds, '%d+') do waits = waits + 1 end
  local i_s = tostring(i)
  fields[#fields + 1] = 't:' .. i_s
  fields[#fields + 1] = template
  fields[#fields + 1] = 'p:' .. i_s
  fields[#fields + 1] = preds
  fields[#fields + 1] = 'u:' .. i_s
  fields[#fields + 1] = succs
  fields[#fields + 1] = 'd:' .. i_s
  fields[#fields + 1] = waits
  fields[#fields + 1] = 's:' .. i_s
  fields[#fields + 1] = 'P'
  if input ~= '' then
    fields[#fields + 1] = 'i:' .. i_s
    fields[#fields + 1] = input
  end
  if tolerant == '1' then
    fields[#fields + 1] = 'o:' .. i_s
    fields[#fields + 1] = '1'
  end
  if ARGV[a + 5] == '1' then
    fields[#fields + 1] = 'm:' .. i_s
    fields[#fields + 1] = '1'
  end
  if waits == 0 then
    first[#first + 1] = i
    local _, q = relay_lane_parts(relay_record_lane(template))
    if depths[q] == nil then depths[q] = relay_depth(queue, q) end
    adding[q] = (adding[q] or 0) + 1
  end
end
for _, i in ipairs(first) do
  local id = flow .. ':' .. i
  if redis.call('EXISTS', JOB .. id, RESULT .. id) > 0 then return {'taken'} end
end
for q, count in pairs(adding) do
  if depths[q] + count > (max_of[q] or default_max) then return {'full', q, tostring(depths[q])} end
end
relay_chunked('HSET', key, fields)
redis.call('ZADD', index, ARGV[10], flow)
local events = {relay_flow_body('workflow_started', flow, now, '{"steps":' .. n .. '}')}
local wake = {}
relay_flow_release(queue, flow, first, now, wake, events)
redis.call('HINCRBY', key, 'active', #first)
relay_flow_emit(flow, events, ttl)
relay_wake(queue, wake, now)
return {'created', #first}
