-- A worker's batch of state changes, each for one task it owns, in one round trip:
--   E: publish events                    F: final (result stored, records removed, events ending in `end`)
--   R: back on the queue (shutdown, lost) T: wait for a retry (job record rewritten with the retry state)
-- Each op is fenced: it applies only while this worker's token is in the task's in-progress marker (a worker
-- that lost its lease cannot overwrite the new owner's work). Each op carries the seq its events follow (the
-- worker counts ahead for the ops it has queued: it is the only writer of a task it owns); an op whose events
-- are already in the log (a batch sent again after a dropped connection) is not applied twice.
-- R and T put the job back in its lane (shared/keys.py), due after a delay counted on Redis's clock; F, R and T
-- free the job's concurrency slot, if it held one, and wake the lanes parked on that limit. A job put back, and a
-- lane a freed slot lets run, is named for one registered worker that runs it (shared/keys.py "Named claims"); with
-- none, every worker of its channel hears of it.
-- Workflows (shared/keys.py): an op of a workflow's step (or of a child task of one) names it in its link
-- ('<workflow>|<step>'), and its events are copied into the workflow's log, tagged with the step. F of a task
-- whose link is not empty reads the job record's head for its workflow and parent: a step's end advances its
-- workflow here, in this script (relay_flow_step_ended: successors released, a chord's callback once its last
-- member ended, the workflow's end); a child's end tells its waiting parent ('c<parent id>' on `channel`).
-- Only an op applied for the first time does this (a 'dup' or 'fenced' op changes nothing).
-- KEYS: queue, arq's abort set, reply outbox.
-- ARGV: (unused), max_len, max_bytes (the log's caps), ttl_ms, wakeup channel, then ops:
--   kind, id, token, seq_before, n_bodies, bodies..., then for E: link; for F: result record, reply (0/1), drop
--   the task's abort request (0/1: when it ended aborted; a stale request is ignored by the claim of a later
--   task), link, value (the result's or the error's JSON, for a workflow; '' without a link);
--   for R: delay_ms, give_back_try (0/1), link; for T: delay_ms, job record, link; last, for every kind, the inbox
--   its events are published to as well ('' for none: shared/keys.py "Inboxes").
-- Returns per op {status, last_seq}; status is 'ok', 'dup' (already applied) or 'fenced'.
local queue, abort, outbox = KEYS[1], KEYS[2], KEYS[3]
local max_len, max_bytes, ttl, channel = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
-- Redis's clock, read only by the ops that need it (a re-queue, a retry, a reply): most batches are events and
-- ends, and a TIME per batch was one command per task of a round trip.
local now_ms = nil
local function now()
  if now_ms == nil then now_ms = relay_now() end
  return now_ms
end
local EXTRA = {E = 2, F = 6, R = 4, T = 4}  -- each op's last is the inbox its events also go to ('' for none)
local LINK = {E = 0, F = 3, R = 2, T = 2}  -- where an op's link is, after its bodies
local ENDED = {succeeded = 'S', failed = 'F', aborted = 'A'}

local ops, wanted = {}, {}
local a = 6
while a <= #ARGV do
  local op = {kind = ARGV[a], id = ARGV[a + 1], token = ARGV[a + 2], seq = tonumber(ARGV[a + 3]), n = tonumber(ARGV[a + 4])}
  op.from = a + 5
  op.to = a + 4 + op.n
  op.extra = op.to + 1
  a = op.to + 1 + EXTRA[op.kind]
  op.inbox = ARGV[a - 1]
  ops[#ops + 1] = op
  wanted[#wanted + 1] = IN_PROGRESS .. op.id
  wanted[#wanted + 1] = SEQ .. op.id
end
if #ops == 0 then return {} end
local current = redis.call('MGET', unpack(wanted))
-- A step a workflow releases here is handed to an idle worker (relay_flow_release) only while no job of this call
-- waits in a lane before it: none put back (R, T) nor let run by a freed slot (linked_end).
for _, op in ipairs(ops) do
  if op.kind == 'R' or op.kind == 'T' then relay_handing_stopped = true end
end

-- Channel -> earliest due of a job every worker of it hears of (a workflow step released with no worker to name:
-- relay_flow_release); {lane, due} of each job put back; lanes a freed concurrency slot lets run again.
local wake, requeued, unparked = {}, {}, {}

-- Copy op's events (now numbered up to `last` in the task's log) into its workflow's log, if it has one.
local function copy_to_flow(op, last)
  local flow, step = string.match(ARGV[op.extra + LINK[op.kind]], '^([^|]+)|(%d+)$')
  if flow and op.n > 0 then relay_flow_copy(flow, step, ARGV, op.from, op.to, last - op.n + 1) end
end

-- A task with a link ended (F): advance its workflow, or tell its parent.
local function linked_end(op, head)
  local flow, step, parent = relay_record_links(head)
  if not flow and not parent then  -- no record left (JobRecordMissing): the link still names its step
    local linked, linked_step = string.match(ARGV[op.extra + 3], '^([^|]+)|(%d+)$')
    -- The step's own link only: its children carry the same one, and a child's end is not the step's.
    if linked and op.id == linked .. ':' .. linked_step then flow, step = linked, linked_step end
  end
  if parent then
    redis.call('{{PUBLISH}}', channel, 'c' .. parent)
  elseif flow then
    if #unparked > 0 then relay_handing_stopped = true end
    local state = ENDED[string.match(ARGV[op.extra], '^{"rs":"(%a+)"')] or 'F'
    relay_flow_step_ended(queue, flow, step, state, ARGV[op.extra + 4], now(), ttl, wake)
  end
end

local out, finished, done_keys, aborted = {}, {}, {}, {}
local seqs, gone, replies = {}, {}, false
for i, op in ipairs(ops) do
  local marker = current[2 * i - 1]
  if gone[op.id] then marker = false end
  local prefix = op.token .. '|'
  local owner = marker and string.sub(marker, 1, #prefix) == prefix
  local seq = seqs[op.id] or tonumber(current[2 * i])
  if seq == nil then seq = owner and 0 or (relay_result_seq(op.id) or 0) end  -- ended: its result holds it
  if op.n > 0 and seq >= op.seq + op.n then
    out[i] = {'dup', seq}
  elseif not owner then
    out[i] = {'fenced', seq}
  else
    local base = math.max(seq, op.seq)
    local id = op.id
    local _, slot, lane = relay_marker_parts(marker)
    if slot and op.kind ~= 'E' then relay_free_slot(queue, lane, id, unparked) end
    if op.kind == 'E' then
      local last = relay_emit(id, base, ARGV, op.from, op.to, max_len, max_bytes, ttl, op.inbox)
      redis.call('SET', SEQ .. id, last)
      seqs[id] = last
      copy_to_flow(op, last)
      out[i] = {'ok', last}
    elseif op.kind == 'F' then
      local last = relay_emit(id, base, ARGV, op.from, op.to, max_len, max_bytes, ttl, op.inbox)
      redis.call('SET', RESULT .. id, relay_result_record(ARGV[op.extra], last), 'PX', ttl)
      copy_to_flow(op, last)
      if ARGV[op.extra + 3] ~= '' then linked_end(op, redis.call('GETRANGE', JOB .. id, 0, 1023)) end
      finished[#finished + 1] = id
      done_keys[#done_keys + 1] = JOB .. id
      done_keys[#done_keys + 1] = IN_PROGRESS .. id
      done_keys[#done_keys + 1] = TRIES .. id
      done_keys[#done_keys + 1] = SEQ .. id
      seqs[id] = last
      gone[id] = true
      if ARGV[op.extra + 2] == '1' then aborted[#aborted + 1] = id end
      if ARGV[op.extra + 1] == '1' then
        redis.call('ZADD', outbox, now(), id)
        redis.call('PEXPIRE', REPLY .. id, ttl)
        replies = true
      end
      out[i] = {'ok', last}
    else
      local score = now() + tonumber(ARGV[op.extra])
      if op.kind == 'T' then
        redis.call('SET', JOB .. id, ARGV[op.extra + 1])
        lane = lane or relay_record_lane(ARGV[op.extra + 1])
      else
        lane = lane or relay_record_lane(redis.call('GETRANGE', JOB .. id, 0, 300))
        if ARGV[op.extra + 1] == '1' then redis.call('DECR', TRIES .. id) end
      end
      redis.call('ZREM', queue, id)
      if lane then
        local _, q = relay_lane_parts(lane)
        relay_wait(queue, lane, id, score)
        relay_count(queue, q, 1)
        requeued[#requeued + 1] = {lane, score}
      end
      redis.call('DEL', IN_PROGRESS .. id)
      local last = relay_emit(id, base, ARGV, op.from, op.to, max_len, max_bytes, ttl, op.inbox)
      redis.call('SET', SEQ .. id, last)
      seqs[id] = last
      copy_to_flow(op, last)
      gone[id] = true
      out[i] = {'ok', last}
    end
  end
end
if #finished > 0 then
  redis.call('DEL', unpack(done_keys))
  redis.call('ZREM', queue, unpack(finished))
end
if #aborted > 0 then redis.call('ZREM', abort, unpack(aborted)) end
relay_flow_flush(ttl)
relay_flush_inboxes()  -- one message per API process for all of this call's tasks it streams
if replies then redis.call('{{PUBLISH}}', channel, 'o') end
-- Each job put back, and each lane a freed slot lets run, is named for a registered worker that runs it
-- (shared/keys.py "Named claims"); with none, every worker of its channel hears of it.
if #requeued > 0 or #unparked > 0 then
  for _, lane in ipairs(unparked) do requeued[#requeued + 1] = {lane, now()} end
  for _, job in ipairs(requeued) do
    if not relay_name_claimer(queue, now(), job[1], job[2]) then
      local _, q = relay_lane_parts(job[1])
      local to = relay_queue_channel(queue, q)
      if wake[to] == nil or job[2] < wake[to] then wake[to] = job[2] end
    end
  end
end
if #relay_named_order > 0 then relay_notify_named(queue, now()) end  -- jobs put back, lanes unparked, steps released
if next(wake) ~= nil then relay_unregister_idle(queue) end
for to, due in pairs(wake) do
  redis.call('{{PUBLISH}}', to, due <= now() and 'j' or ('d' .. string.format('%d', due)))
end
return out
