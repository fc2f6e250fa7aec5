-- One page of GET /tasks: walk the task index newest first from a cursor, keep the tasks that match the
-- filters, stop at `limit` matches or after examining `budget` entries (the caller pages on).
-- GET /workflows walks the workflow index the same way with mode 'ids': entries match by id prefix alone
-- (nothing is read, nothing pruned: maintenance prunes that index), each with state ''.
-- KEYS: index, queue.  ARGV: now_ms, cursor score ('+inf' to start), cursor id ('' to start), budget, limit,
-- state filter ('' for any), task filter ('' for any), id prefix (a tenant's, '' for any), mode ('' or 'ids').
-- Returns {matches (flat: id, state, ...), next cursor score or false, next cursor id or false}.
local index, queue = KEYS[1], KEYS[2]
local now, cursor_score, cursor_id = relay_now(), ARGV[2], ARGV[3]
local budget, limit, want_state, want_task = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local want_prefix, ids_only = ARGV[8] or '', ARGV[9] == 'ids'
local matches, examined, gone = {}, 0, {}
local last_score, last_id = false, false
local entries = redis.call('ZREVRANGEBYSCORE', index, cursor_score, '-inf', 'WITHSCORES', 'LIMIT', 0, budget + 1000)
local found, stopped = 0, false
for i = 1, #entries, 2 do
  local id, score = entries[i], entries[i + 1]
  -- Entries at the cursor's score up to and including the cursor's id were on earlier pages.
  local seen = cursor_id ~= '' and score == cursor_score and not relay_bytes_before(id, cursor_id)
  if not seen then
    if examined >= budget or found >= limit then
      stopped = true
      break
    end
    examined = examined + 1
    last_score, last_id = score, id
    -- Another tenant's entry counts against the budget but is never read (nor pruned: its tenant's lists do).
    local mine = want_prefix == '' or string.sub(id, 1, #want_prefix) == want_prefix
    if mine and ids_only then
      found = found + 1
      matches[#matches + 1] = id
      matches[#matches + 1] = ''
    elseif mine then
      local state, name = relay_state(queue, id, now)
      if state == nil then
        gone[#gone + 1] = id
      elseif (want_state == '' or state == want_state) and (want_task == '' or name == want_task) then
        found = found + 1
        matches[#matches + 1] = id
        matches[#matches + 1] = state
      end
    end
  end
end
if #gone > 0 then redis.call('ZREM', index, unpack(gone)) end
local truncated = (#entries / 2) >= budget + 1000
if not stopped and not truncated then return {matches, false, false} end
return {matches, last_score, last_id}
