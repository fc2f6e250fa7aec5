-- Enqueue a batch of submissions atomically: for each, the id check (a repeat reports the existing task's
-- state; other arguments are a conflict), the depth check (waiting tasks, due or deferred, not running ones),
-- arq's job record and queue entry, the task index, the reply request; then one wake-up notice for all.
-- KEYS: queue, index.  ARGV: now_ms, max_depth, wakeup channel, then per item: id, score, job record,
-- fingerprint, index score, reply request ('' for none).
local queue, index = KEYS[1], KEYS[2]
local now, max_depth, channel = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local depth = redis.call('ZCOUNT', queue, '-inf', '(' .. RUNNING_BASE)
local out, jobs, entries, indexed, batch = {}, {}, {}, {}, {}
local min_due = nil
local item = 0
for a = 4, #ARGV, 6 do
  item = item + 1
  local id, score, record, fp, index_score, reply = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local state, name, old_fp
  if batch[id] then
    state, name, old_fp = batch[id][1], batch[id][2], batch[id][3]
  elseif redis.call('EXISTS', JOB .. id, RESULT .. id) > 0 then
    state, name, old_fp = relay_state(queue, id, now)
  end
  if state then
    local same = (old_fp == fp) and 'same' or 'other'
    out[item] = {'exists', state, same, name}
  elseif depth >= max_depth then
    out[item] = {'full', tostring(depth)}
  else
    depth = depth + 1
    jobs[#jobs + 1] = JOB .. id
    jobs[#jobs + 1] = record
    entries[#entries + 1] = score
    entries[#entries + 1] = id
    indexed[#indexed + 1] = index_score
    indexed[#indexed + 1] = id
    if reply ~= '' then redis.call('SET', REPLY .. id, reply) end
    local due = tonumber(score)
    local s = due > now and 'deferred' or 'queued'
    batch[id] = {s, string.match(record, '^{"f":"([^"]*)"'), fp}
    if min_due == nil or due < min_due then min_due = due end
    out[item] = {'created', s}
  end
end
if #jobs > 0 then
  redis.call('MSET', unpack(jobs))
  redis.call('ZADD', queue, unpack(entries))
  redis.call('ZADD', index, unpack(indexed))
  redis.call('PUBLISH', channel, min_due <= now and 'j' or ('d' .. string.format('%d', min_due)))
end
return out
