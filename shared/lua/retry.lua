-- Run an ended task again (POST /tasks/{id}/retry): a failed or aborted one goes back on the queue under the
-- same id, as a new try; its event log and counter continue, and a requested reply goes out again at its end.
-- An abort request left from an earlier run is dropped: the new run keeps the job's enqueue time, so the claim
-- would take that request for one made for it.
-- KEYS: queue, task index, arq's abort set.
-- ARGV: id, now_ms, ttl_ms, max_len, max_bytes, (unused: the job's queue's channel is used), job record, tries so far, index score, bodies...
-- Returns {'queued', last_seq} | {'not_retryable', state} | {'workflow_step', state} | {'unknown'}.
local queue, index, abort = KEYS[1], KEYS[2], KEYS[3]
local id, ttl, max_len, max_bytes = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = relay_now()
local state = relay_state(queue, id, now)
if state == nil then return {'unknown'} end
if state ~= 'failed' and state ~= 'aborted' then return {'not_retryable', state} end
-- A workflow's step runs again with its workflow (flow_retry.lua), which releases what follows it.
local head = redis.call('GETRANGE', RESULT .. id, 0, 1023)
if string.match(head, '^{"sq":%d+,"rs":"%a+","f":"[^"]*","fp":"%x*","wf":"[^"]*","ws":%d+,"t":') then
  return {'workflow_step', state}
end
local seq = relay_seq(id)
redis.call('DEL', RESULT .. id)
redis.call('SET', TRIES .. id, ARGV[8])
redis.call('SET', JOB .. id, ARGV[7])
local lane = relay_record_lane(ARGV[7])
local _, q = relay_lane_parts(lane)
relay_wait(queue, lane, id, now)
relay_count(queue, q, 1)
redis.call('ZREM', abort, id)
redis.call('ZADD', index, ARGV[9], id)
redis.call('PERSIST', REPLY .. id)
local last = relay_emit(id, seq, ARGV, 10, #ARGV, max_len, max_bytes, ttl)
redis.call('SET', SEQ .. id, last)
-- One registered worker that runs it is named to claim it (shared/keys.py "Named claims"); with none, every worker
-- of its channel hears of it.
if relay_name_claimer(queue, now, lane, now) then
  relay_notify_named(queue, now)
else
  relay_unregister_idle(queue)
  redis.call('{{PUBLISH}}', relay_queue_channel(queue, q), 'j')
end
return {'queued', last}
