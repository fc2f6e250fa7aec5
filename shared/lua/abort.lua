-- Abort a task, whatever stage it is at, in one step. A waiting one (queued, deferred or retrying) is removed
-- and ends `aborted` here, with its events (published to its submitter's inbox too: shared/keys.py); a running one is flagged in arq's abort set for its worker, and
-- its wake-up notice names it; an ended or unknown one is left alone. A waiting workflow step's end advances its
-- workflow (lib.lua relay_flow_step_ended), as its commit would have.
-- KEYS: queue, arq's abort set, reply outbox.
-- ARGV: id, now_ms, ttl_ms, max_len, max_bytes, wakeup channel, result record (for a waiting task), bodies...
-- Returns {'aborted', last_seq} | {'aborting'} | {'finished', state} | {'unknown'}.
local queue, abort, outbox = KEYS[1], KEYS[2], KEYS[3]
local id, ttl, max_len, max_bytes = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local channel = ARGV[6]
local now = relay_now()  -- an abort request counts for jobs enqueued before it, both on Redis's clock
local state = relay_state(queue, id, now)
if state == nil then return {'unknown'} end
if state == 'succeeded' or state == 'failed' or state == 'aborted' then return {'finished', state} end
if state == 'running' then
  redis.call('ZADD', abort, now, id)
  redis.call('{{PUBLISH}}', channel, 'a' .. id)
  return {'aborting'}
end
local head = redis.call('GETRANGE', JOB .. id, 0, 1023)
local record = string.sub(head, 1, 301)
redis.call('ZREM', queue, id)  -- enqueued before lanes
local lane = relay_record_lane(record)
if lane and redis.call('ZREM', relay_lane(queue, lane), id) == 1 then
  relay_sync_marker(queue, lane)
  local _, q = relay_lane_parts(lane)
  relay_count(queue, q, -1)
end
redis.call('ZREM', abort, id)
local flow, step, parent, inbox = relay_record_links(head)
local seq = tonumber(redis.call('GET', SEQ .. id) or '0')
local last = relay_emit(id, seq, ARGV, 8, #ARGV, max_len, max_bytes, ttl, inbox)
redis.call('SET', RESULT .. id, relay_result_record(ARGV[7], last), 'PX', ttl)
redis.call('DEL', JOB .. id, TRIES .. id, SEQ .. id)
-- A workflow's step: its events go to the workflow's log too, and its end advances the workflow (commit.lua's F);
-- a child task: its waiting parent hears of it.
if flow then relay_flow_copy(flow, step, ARGV, 8, #ARGV, last - (#ARGV - 8)) end
if parent then
  redis.call('{{PUBLISH}}', channel, 'c' .. parent)
elseif flow then
  local wake = {}
  relay_flow_step_ended(queue, flow, step, 'A', '{"error_type":"Aborted","message":"aborted before it started"}',
    now, ttl, wake)
  relay_wake(queue, wake, now)
end
relay_flow_flush(ttl)
relay_flush_inboxes()
if string.find(record, '"rp":1', 1, true) or redis.call('EXISTS', REPLY .. id) == 1 then
  redis.call('ZADD', outbox, now, id)
  redis.call('PEXPIRE', REPLY .. id, ttl)
  redis.call('{{PUBLISH}}', channel, 'o')
end
return {'aborted', last}
