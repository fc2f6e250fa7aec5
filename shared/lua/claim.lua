-- Claim up to `limit` due jobs of the tasks and named queues this worker serves, in one step (no WATCH races
-- between workers); take over the jobs whose lease lapsed (their worker is gone); say when the next job falls due
-- and the next lease lapses. The layout (lanes, the schedule's markers and running band, limits, fairness) and
-- the order due lanes are served in are described in shared/keys.py.
-- A claimed job leaves its lane for the running band of the schedule (score = RUNNING_BASE + lease expiry) and
-- its in-progress marker holds "<token>|<try>|<start ms>|<S or ->|<lane>" (lib.lua relay_marker_parts); arq's
-- try counter counts the try. Every time here is Redis's (relay_now), so workers whose clocks disagree still
-- agree on leases and limits.
-- A replay (the same request id again: the client sent it twice after a timeout or a dropped connection) returns
-- the jobs the first call claimed and took over, and the watches it wrote with them, and claims nothing more.
-- The hand-off (shared/keys.py "Hand-off"): a worker that takes hand-offs says so (ARGV 8), and every claim of it
-- either registers it in the idle registry (it took everything it could and has free slots) or removes it; its
-- free slots count the handed jobs still on their way to it as taken.
-- KEYS: queue (the schedule), arq's abort set, this worker's claim record.
-- ARGV: request id, limit, lease_ms, token, sweep_limit, the named queues served (comma-separated, first served
-- first), tenant weights ('a=3,b=1' or ''), hand-off ('' for none, else '<registration ms>:<handed jobs this
-- worker received>:<1 if it may be registered, 0 if its last claim left it unregistered (only its own claims
-- register it)>:<1 to register it when nothing is queued or running, 0 when its registration needs no renewal
-- yet (an idle poll then costs one command, as before hand-offs)>'), then one entry per task this worker runs:
-- its name, or for a task with limits 'name=<max running or 0>:<ms between starts or 0>:<burst>'.
-- Returns {claimed, swept, next_due or false, next_lease or false, now (false when the script did not read the
-- clock), held, registered (the free slots this worker is registered for hand-offs with: 0 when not; false when
-- the worker takes none, or for a replay), handed (the worker's count of jobs ever handed to it, when read),
-- watching (the lanes this worker now watches: {wake-up channel, ms it claims at, lane} each; absent when not
-- read)}:
-- claimed items are {id, job record or false, try, aborted (0/1), due score, seq}; swept items {id, job
-- or false, try, aborted, seq, own (0/1: the lapsed lease was this worker's own)}; next_due and next_lease are
-- delays from now in ms (next_due is 0 when more jobs may be due than were taken); held is {lanes held back by a
-- full concurrency limit, by a rate limit}. An abort request counts only if made after the job was enqueued: an
-- older one was for an earlier task of the same id, and is removed here.
local queue, abort, request_key = KEYS[1], KEYS[2], KEYS[3]
local request, limit, lease, token = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local sweep_limit = tonumber(ARGV[5])
local mine = token .. '|'
local rank, ranks = {}, 0  -- named queue -> its place in this worker's list
for q in string.gmatch(ARGV[6], '[^,]+') do
  ranks = ranks + 1
  if rank[q] == nil then rank[q] = ranks end
end
local weight = {}
for tenant, w in string.gmatch(ARGV[7], '([^,=]*)=(%d+)') do weight[tenant] = math.max(1, tonumber(w)) end
local registration_ms, received, maybe_registered, refresh = string.match(ARGV[8], '^(%d+):(%d+):([01]):([01])$')
local runs = {}  -- task name -> {max running (0: no limit), ms between starts (0: no limit), burst}
for i = 9, #ARGV do
  local name, running, interval, burst = string.match(ARGV[i], '^([^=]+)=(%d+):([%d.]+):(%d+)$')
  if name then
    runs[name] = {tonumber(running), tonumber(interval), tonumber(burst)}
  else
    runs[ARGV[i]] = {0, 0, 1}
  end
end
local now, held  -- Redis's clock, read once something is queued or running (below)
local claimed, swept, stale = {}, {}, {}
local held_back = {0, 0}  -- lanes skipped: concurrency limit full, rate limit

-- Whether abort request `requested` (its score, or nil) is for the job of `record`; a stale one is noted.
local function abort_counts(id, record, requested)
  if not requested then return false end
  local enqueued = record and tonumber(string.match(record, '^{"f":"[^"]*","fp":"%x*","w":"%a","et":(%d+)'))
  if enqueued == nil or tonumber(requested) >= enqueued then return true end
  stale[#stale + 1] = id
  return false
end

local function seq_of(id)
  return tonumber(redis.call('GET', SEQ .. id) or '0')
end

-- A replay: the jobs the first call took that are still this worker's, as it returned them.
local function replayed(kept)
  for _, entry in ipairs(kept[2]) do
    local marker = redis.call('GET', IN_PROGRESS .. entry[1])
    if marker and string.sub(marker, 1, #mine) == mine then
      local record = redis.call('GET', JOB .. entry[1])
      local aborted = abort_counts(entry[1], record, redis.call('ZSCORE', abort, entry[1])) and 1 or 0
      local try = relay_marker_parts(marker)
      claimed[#claimed + 1] = {entry[1], record, try, aborted, entry[2], seq_of(entry[1])}
    end
  end
  for _, entry in ipairs(kept[3]) do
    local marker = redis.call('GET', IN_PROGRESS .. entry[1])
    if marker and string.sub(marker, 1, #mine) == mine then
      local record = redis.call('GET', JOB .. entry[1])
      local aborted = abort_counts(entry[1], record, redis.call('ZSCORE', abort, entry[1])) and 1 or 0
      local try = relay_marker_parts(marker)
      swept[#swept + 1] = {entry[1], record, try, aborted, seq_of(entry[1]), entry[2]}
    end
  end
  return {claimed, swept, 0, false, now, held_back, false, false, kept[4] or {}}
end

-- Register this worker for hand-offs until `until_ms` with `free` slots (shared/keys.py "Hand-off"), or, with
-- none free, remove its registration. Its count of handed jobs lives a day (HANDED_TTL_MS) past the start of its
-- last registration; a missing count starts at what the worker received (and a count below the worker's, the worker
-- follows: worker/engine/handoffs.py).
local registered = false
local function register(free, until_ms)
  registered = math.max(free, 0)
  if free <= 0 then
    if maybe_registered == '1' then redis.call('HDEL', IDLE .. queue, token) end
    return
  end
  -- The tasks it runs: those with a limit marked '!' (never handed off, but a job of one left waiting may be named
  -- for this worker to claim: enqueue.lua); an enqueue from before the mark finds no limited task here.
  local served = {}
  for name, spec in pairs(runs) do
    served[#served + 1] = (spec[1] == 0 and spec[2] == 0) and name or ('!' .. name)
  end
  local new = redis.call('HSET', IDLE .. queue, token, string.format('%d|%d|%d|,%s,|,%s,', until_ms, free, lease,
    ARGV[6], table.concat(served, ',')))
  -- The count is seeded and its expiry moved on when a registration starts, not at each renewal (fewer commands).
  if new == 1 and not redis.call('SET', HANDED .. token, received, 'NX', 'PX', HANDED_TTL_MS) then
    redis.call('PEXPIRE', HANDED .. token, HANDED_TTL_MS)
  end
end

-- An idle worker's call ends here when nothing is queued or running (and so nothing a first run of this request
-- could have claimed is left to return, and no handed job is on its way to this worker: it would be running).
local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
if #head == 0 then
  if registration_ms and refresh == '1' then
    now = relay_now()
    register(limit, now + tonumber(registration_ms))
  end
  return {claimed, swept, false, false, now or false, held_back, registered, false}
end
now = relay_now()
held = RUNNING_BASE + now + lease

local kept, pushed
if registration_ms then
  local values = redis.call('MGET', request_key, HANDED .. token)
  kept, pushed = values[1], tonumber(values[2])
  -- Handed jobs pushed to this worker that it had not received when it counted its free slots.
  limit = math.max(0, limit - math.max(0, (pushed or 0) - tonumber(received)))
else
  kept = redis.call('GET', request_key)
end
if kept then
  kept = cjson.decode(kept)
  if kept[1] == request then return replayed(kept) end
end

-- Make jobs `ids` (due at `scores`, from lane `lane`; holding a slot of its concurrency limit if `slots` names
-- that limit's set) this worker's: one MGET for their markers, records, tries and counters, one MSET and one ZADD
-- for all. Returns how many it took.
local function mark(ids, scores, lane, slots)
  local n, wanted = #ids, {}
  for i = 1, n do
    wanted[i] = IN_PROGRESS .. ids[i]
    wanted[n + i] = JOB .. ids[i]
    wanted[2 * n + i] = TRIES .. ids[i]
    wanted[3 * n + i] = SEQ .. ids[i]
  end
  local values = redis.call('MGET', unpack(wanted))
  local aborts = redis.call('ZMSCORE', abort, unpack(ids))
  local marks, entries, taken = {}, {}, {}
  local tail = '|' .. (slots and 'S' or '-') .. '|' .. lane
  for i = 1, n do
    -- A waiting job never has an in-progress marker (the scripts that put a job back remove it); if one does,
    -- it runs elsewhere and stays out of the lane.
    if not values[i] then
      local id, record = ids[i], values[n + i]
      local try = (tonumber(values[2 * n + i]) or 0) + 1
      local aborted = abort_counts(id, record, aborts[i])
      marks[#marks + 1] = IN_PROGRESS .. id
      marks[#marks + 1] = token .. '|' .. try .. '|' .. now .. tail
      marks[#marks + 1] = TRIES .. id
      marks[#marks + 1] = try
      entries[#entries + 1] = held
      entries[#entries + 1] = id
      taken[#taken + 1] = id
      claimed[#claimed + 1] = {id, record, try, aborted and 1 or 0, scores[i], tonumber(values[3 * n + i]) or 0}
    end
  end
  if #marks > 0 then
    redis.call('MSET', unpack(marks))
    redis.call('ZADD', queue, unpack(entries))
    if slots then redis.call('SADD', slots, unpack(taken)) end
  end
  return #taken
end

local next_due = nil
-- A lane parked by this call comes back then at the latest, or a rate-held lane another worker wakes for may
-- start then: a registration ends before.
local parked_until = nil
local function due_at(score)
  if next_due == nil or score < next_due then next_due = score end
end
-- A rate-limited lane's starts (GCRA, `rate_limit` in shared/keys.py) have one waker, the worker that took the last
-- start while it had a slot left (`<rate key>|w`, expiring with the rate key): only that worker's next_due is the
-- next allowed start. Any other worker that finds the lane held comes back this many intervals later (at least
-- RATE_FOLLOWER_MIN_MS), and takes the start itself then if the waker has not: so a worker that stopped or filled
-- its slots delays a start by that much at most, and the others claim about once per so many starts instead of
-- at every one.
local RATE_FOLLOWER_INTERVALS, RATE_FOLLOWER_MIN_MS = 4, 20
-- A rate-limited lane (its task's limits `spec`) may start next at `at`, and `waker` (or nil) wakes for it.
local function start_due_at(at, spec, waker)
  if waker and waker ~= token then
    due_at(at + math.max(RATE_FOLLOWER_INTERVALS * spec[2], RATE_FOLLOWER_MIN_MS))
    parked_until = math.min(parked_until or math.huge, at)
  else
    due_at(at)
  end
end
local left = {}  -- named queue -> jobs taken out of its lanes (its depth count goes down by as many)
-- The lanes this worker serves that fall due later (not rate-limited: a rate limit's starts have their waker),
-- from the schedule and from the lanes it takes from: their watches are read once it has claimed (below).
local later = {}

-- How many jobs lane `c` may start now under its task's limits (0: held back, and its marker moved to when it
-- may start again), and the concurrency set its jobs join (or nil).
local function allowance(c, want)
  local spec = runs[c.task]
  local allowed, slots = want, nil
  local key_value, rate_value = string.match(c.part, '^([^/]*)/(.*)$')
  if spec[1] > 0 then
    slots = SLOTS .. c.task .. '|' .. (key_value or '') .. '|' .. queue
    local running = redis.call('SCARD', slots)
    if running >= spec[1] then
      -- Full: unless some of its members are gone (ended without a commit that freed them), park the lane until
      -- a commit frees a slot of this limit (lib.lua relay_free_slot), or PARK_MS at most.
      for _, id in ipairs(redis.call('SMEMBERS', slots)) do
        if redis.call('EXISTS', IN_PROGRESS .. id) == 0 then
          redis.call('SREM', slots, id)
          running = running - 1
        end
      end
    end
    if running >= spec[1] then
      redis.call('SADD', PARKED .. c.task .. '|' .. (key_value or '') .. '|' .. queue, c.lane)
      redis.call('ZADD', queue, now + PARK_MS, MARKER .. c.lane)
      parked_until = math.min(parked_until or math.huge, now + PARK_MS)
      held_back[1] = held_back[1] + 1
      return 0, nil
    end
    if spec[1] - running < allowed then
      allowed = spec[1] - running
      c.fills = true  -- taking `allowed` fills the limit
    end
  end
  if spec[2] > 0 then
    -- GCRA: `tat` is when the next start is allowed with no burst left; `burst` starts may be taken at once.
    local key = RATE .. c.task .. '|' .. (rate_value or '') .. '|' .. queue
    local values = redis.call('MGET', key, key .. '|w')
    local tat = math.max(tonumber(values[1] or '0'), now)
    local starts = math.floor((now + spec[3] * spec[2] - tat) / spec[2])
    if starts < 1 then
      local at = math.ceil(tat - (spec[3] - 1) * spec[2])
      redis.call('ZADD', queue, at, MARKER .. c.lane)
      start_due_at(at, spec, values[2])
      held_back[2] = held_back[2] + 1
      return 0, nil
    end
    if starts < allowed then
      allowed = starts
      c.fills = nil
    end
    c.rate_key, c.tat = key, tat
  end
  return allowed, slots
end

-- Take up to `want` due jobs from lane `c` (one ZRANGE and one ZREMRANGEBYRANK, within its limits); returns how
-- many it took, and whether it may have more due now. The ZRANGE reads one job past the most it may take: that
-- job, if any, is the lane's next head, so its marker is set (or, for an emptied lane, dropped) with no second read.
local function take(c, want)
  local allowed, slots = allowance(c, want)
  if allowed == 0 then return 0, false end
  local key = relay_lane(queue, c.lane)
  local first = redis.call('ZRANGE', key, 0, allowed, 'WITHSCORES')
  local ids, scores, rest = {}, {}, nil
  for i = 1, #first, 2 do
    -- Due: scored before the next millisecond (enqueue.lua's scores carry microseconds).
    if #ids < allowed and tonumber(first[i + 1]) < now + 1 then
      ids[#ids + 1], scores[#scores + 1] = first[i], first[i + 1]
    else
      rest = tonumber(first[i + 1])
      break
    end
  end
  local n = #ids
  if n > 0 then
    redis.call('ZREMRANGEBYRANK', key, 0, n - 1)  -- the lowest scores: exactly the ones just read
    left[c.queue] = (left[c.queue] or 0) + n
  end
  local started = n > 0 and mark(ids, scores, c.lane, slots) or 0
  local spec = runs[c.task]
  local next_start = nil
  if c.rate_key and started > 0 then
    local tat = c.tat + started * spec[2]
    local px = math.ceil(tat - now + spec[2]) + 1000
    redis.call('SET', c.rate_key, string.format('%.3f', tat), 'PX', px)
    -- This worker wakes for the lane's next start if it has a slot left for it; with none, no worker is named and
    -- every one that finds the lane held wakes for that start, as when no worker took the last one.
    if limit > #claimed then
      redis.call('SET', c.rate_key .. '|w', token, 'PX', px)
    else
      redis.call('DEL', c.rate_key .. '|w')
    end
    next_start = math.ceil(tat - (spec[3] - 1) * spec[2])
  end
  if rest == nil or rest >= now + 1 then  -- none left due: the marker goes to the next head
    if rest == nil then
      redis.call('ZREM', queue, MARKER .. c.lane)
    else
      redis.call('ZADD', queue, rest, MARKER .. c.lane)
      if spec[2] > 0 then
        due_at(math.max(rest, now, next_start or 0))
      else
        later[#later + 1] = {lane = c.lane, queue = c.queue, score = rest}  -- its next head: watched, below
      end
    end
    return started, false
  end
  if allowed < want then  -- held by a limit, with more perhaps due: park it or move its marker now
    if c.fills and started == allowed then
      local key_value = string.match(c.part, '^([^/]*)/') or ''
      redis.call('SADD', PARKED .. c.task .. '|' .. key_value .. '|' .. queue, c.lane)
      redis.call('ZADD', queue, now + PARK_MS, MARKER .. c.lane)
      parked_until = math.min(parked_until or math.huge, now + PARK_MS)
      held_back[1] = held_back[1] + 1
    elseif next_start ~= nil and next_start > now then
      redis.call('ZADD', queue, next_start, MARKER .. c.lane)
      due_at(next_start)
      held_back[2] = held_back[2] + 1
    else
      due_at(now)
    end
    return started, false
  end
  due_at(now)  -- more may be due: the marker stays early (allowed), the next call finds out
  return started, true
end

-- A job id in the waiting band: enqueued by a Relay from before lanes (or moved there by arq's Job.abort).
-- It goes to its lane (or, running, back to the running band); one without a record is claimed when due, so
-- that it ends visibly (JobRecordMissing) instead of lingering.
local function adopt(id, score)
  if redis.call('EXISTS', IN_PROGRESS .. id) == 1 then
    redis.call('ZADD', queue, held, id)
    return
  end
  local lane = relay_record_lane(redis.call('GETRANGE', JOB .. id, 0, 300))
  if lane then
    redis.call('ZREM', queue, id)
    relay_wait(queue, lane, id, score)
    relay_unregister_idle(queue)  -- a job waits now that no registered worker was told of
    local _, q = relay_lane_parts(lane)
    relay_count(queue, q, 1)
  elseif score <= now and #claimed < limit then
    mark({id}, {score}, '', nil)
  end
end

local ADOPT_LIMIT = 500  -- jobs from before lanes moved per call: a big old queue moves over a few calls
local adopted = 0

-- The due lanes this worker serves, grouped by named queue (in the worker's order), each group's lanes by tenant;
-- and those it serves that fall due later (`later`).
local groups, group_list = {}, {}
if tonumber(head[2]) < RUNNING_BASE then
  local waiting = redis.call('ZRANGEBYSCORE', queue, '-inf', '(' .. RUNNING_BASE, 'WITHSCORES')
  for i = 1, #waiting, 2 do
    local member, score = waiting[i], tonumber(waiting[i + 1])
    if string.sub(member, 1, 1) ~= MARKER then
      if adopted < ADOPT_LIMIT then
        adopt(member, score)
        adopted = adopted + 1
      end
      due_at(math.max(score, now))
    else
      local lane = string.sub(member, 2)
      local task, q, priority, tenant, part = relay_lane_parts(lane)
      if runs[task] and rank[q] then
        if score < now + 1 then  -- due: scored before the next ms, as `take` counts it (scores carry microseconds)
          local order = rank[q]
          local group = groups[order]
          if group == nil then
            group = {order = order, queue = q, tenants = {}, tenant_list = {}}
            groups[order] = group
            group_list[#group_list + 1] = group
          end
          local lanes = group.tenants[tenant]
          if lanes == nil then
            lanes = {}
            group.tenants[tenant] = lanes
            group.tenant_list[#group.tenant_list + 1] = tenant
          end
          lanes[#lanes + 1] = {lane = lane, task = task, queue = q, part = part, priority = priority, head = score}
        elseif runs[task][2] > 0 then  -- rate-limited: this worker may not be the one that wakes for it
          local waker = RATE .. task .. '|' .. (string.match(part, '^[^/]*/(.*)$') or '') .. '|' .. queue .. '|w'
          start_due_at(score, runs[task], redis.call('GET', waker))
        else
          later[#later + 1] = {lane = lane, queue = q, score = score}
        end
      end
    end
  end
end

table.sort(group_list, function(a, b) return a.order < b.order end)
-- A tenant's own lanes: higher priority first, then the earliest head (FIFO).
local function before(a, b)
  if a.priority ~= b.priority then return a.priority > b.priority end
  if a.head ~= b.head then return a.head < b.head end
  return a.lane < b.lane
end
for _, group in ipairs(group_list) do
  for _, lanes in pairs(group.tenants) do table.sort(lanes, before) end
end

-- Take up to `want` from one tenant's lanes of a group, in their order (`before`); returns how many.
local function take_from(lanes, want)
  local got = 0
  while got < want and #lanes > 0 do
    local n, more = take(lanes[1], want - got)
    got = got + n
    if not more then table.remove(lanes, 1) end
  end
  return got
end

-- How many of `count` jobs each tenant gets, by weighted fair queueing: each job served advances its tenant's
-- virtual time by 1/weight, and the tenant with the least virtual time (ties: by name) is served next.
local function shares(tenants, clock, count)
  local share = {}
  for _, tenant in ipairs(tenants) do share[tenant] = 0 end
  for _ = 1, count do
    local best = nil
    for _, tenant in ipairs(tenants) do
      if best == nil or clock[tenant] < clock[best] or (clock[tenant] == clock[best] and tenant < best) then
        best = tenant
      end
    end
    share[best] = share[best] + 1
    clock[best] = clock[best] + 1 / (weight[best] or 1)
  end
  return share
end

-- Serve the groups (queues) in order; within one, tenants share the claim by weighted fair queueing on virtual times kept
-- in the fairness hash (shared/keys.py), per named queue ('<queue>|<tenant>'): a tenant's time advances by 1/weight
-- per job it was given, and never starts below the floor (the least time of the tenants due at the last contest),
-- so a tenant that was idle gets its turn at once but no credit for the time it was away. The floor is kept per
-- named queue and per pool of workers (those that run the same tasks: `pool`): a contest's floor raised every
-- other contest's tenants to it, so a queue or pool whose tenants were served faster lifted the floor above all
-- of another's at each claim, they started level, and the first by name won every claim: weights were ignored and
-- the other tenants starved.
local pool = nil  -- read when a contest needs it
for _, group in ipairs(group_list) do
  if #claimed >= limit then break end
  local tenants = group.tenant_list
  if #tenants == 1 then
    take_from(group.tenants[tenants[1]], limit - #claimed)
  else
    pool = pool or string.sub(redis.sha1hex(table.concat(ARGV, ',', 9)), 1, 12)
    local floor_field = '#' .. group.queue .. '|' .. pool  -- '#' starts no queue's name
    local fields_of = {}
    for i, tenant in ipairs(tenants) do fields_of[i] = group.queue .. '|' .. tenant end
    local stored = redis.call('HMGET', FAIRNESS .. queue, floor_field, unpack(fields_of))
    local floor = tonumber(stored[1]) or 0
    local start, clock, lowest = {}, {}, nil
    for i, tenant in ipairs(tenants) do
      start[tenant] = math.max(tonumber(stored[i + 1]) or floor, floor)
      clock[tenant] = start[tenant]
      if lowest == nil or start[tenant] < lowest then lowest = start[tenant] end
    end
    local given = {}
    local open = tenants
    while #claimed < limit and #open > 0 do
      local share = shares(open, clock, limit - #claimed)
      local still = {}
      for _, tenant in ipairs(open) do
        local lanes = group.tenants[tenant]
        if share[tenant] > 0 then
          local got = take_from(lanes, share[tenant])
          given[tenant] = (given[tenant] or 0) + got
          if got == share[tenant] and #lanes > 0 then still[#still + 1] = tenant end
        elseif #lanes > 0 then
          still[#still + 1] = tenant
        end
      end
      if #still == #open then break end  -- every tenant took its whole share: the claim is full
      open = still
      for _, tenant in ipairs(open) do  -- the next round shares what the emptied tenants left
        clock[tenant] = start[tenant] + (given[tenant] or 0) / (weight[tenant] or 1)
      end
    end
    local fields = {floor_field, string.format('%.6f', lowest)}
    for tenant, n in pairs(given) do
      fields[#fields + 1] = group.queue .. '|' .. tenant
      fields[#fields + 1] = string.format('%.6f', start[tenant] + n / (weight[tenant] or 1))
    end
    redis.call('HSET', FAIRNESS .. queue, unpack(fields))
  end
end
-- Due lanes this claim had no room for (or did not reach): more is due now, so a worker whose slots were all busy
-- claims again as soon as one frees (engine.py) instead of at its next poll.
for _, group in ipairs(group_list) do
  for _, lanes in pairs(group.tenants) do
    if #lanes > 0 then due_at(now) end
  end
end
for q, n in pairs(left) do relay_count(queue, q, -n) end

-- Leases that lapsed: their worker stopped renewing (killed, or its node lost). Take them over so that the
-- caller re-queues (or, out of tries, fails) each one; nobody else sweeps them meanwhile.
local function first_lease()
  local first = redis.call('ZRANGEBYSCORE', queue, RUNNING_BASE, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return #first > 0 and tonumber(first[2]) or nil
end
-- A handed job (marker flag H) still in its worker's list was never received: that worker was lost (or could not
-- reach Redis) while idle. The job goes back to its lane with its try given back, as if never claimed; returns
-- whether it did.
local function unreceived(id, marker, try, lane)
  local owner = string.match(marker, '^([^|]*)|')
  local list = HANDOFF .. owner
  local prefix = cjson.encode({id}):sub(1, -2) .. ','
  for _, item in ipairs(redis.call('LRANGE', list, 0, -1)) do
    if string.sub(item, 1, #prefix) == prefix then
      redis.call('LREM', list, 1, item)
      -- Below 0 only when the count had expired (a day past its registration's start): not left at -1 for ever.
      if redis.call('DECR', HANDED .. owner) < 0 then redis.call('DEL', HANDED .. owner) end
      relay_put_back(queue, id, try, lane, now)  -- its notice: for workers that serve it and this one not
      due_at(now)
      return true
    end
  end
  return false
end

local earliest_lease = tonumber(head[2]) >= RUNNING_BASE and tonumber(head[2]) or first_lease()
if earliest_lease ~= nil and earliest_lease <= RUNNING_BASE + now and sweep_limit > 0 then
  local lapsed = redis.call('ZRANGEBYSCORE', queue, RUNNING_BASE, RUNNING_BASE + now, 'LIMIT', 0, sweep_limit)
  for i = 1, #lapsed do
    local id = lapsed[i]
    local marker = redis.call('GET', IN_PROGRESS .. id)
    local try, slot, lane, handed
    if marker then try, slot, lane, handed = relay_marker_parts(marker) end
    if not (handed and lane and unreceived(id, marker, try, lane)) then
      try = try or tonumber(redis.call('GET', TRIES .. id) or '0')
      local own = marker and string.sub(marker, 1, #mine) == mine
      -- One of this worker's own leases (it could not renew while Redis was away): keep the marker as it is;
      -- the caller knows whether the job still runs here. Another's: this worker takes it, with its lane and slot.
      if not own then
        local tail = lane and ('|' .. (slot and 'S' or '-') .. '|' .. lane) or ''
        redis.call('SET', IN_PROGRESS .. id, token .. '|' .. try .. '|' .. now .. tail)
      end
      redis.call('ZADD', queue, held, id)
      local record = redis.call('GET', JOB .. id)
      local aborted = abort_counts(id, record, redis.call('ZSCORE', abort, id)) and 1 or 0
      swept[#swept + 1] = {id, record, try, aborted, seq_of(id), own and 1 or 0}
    end
  end
  earliest_lease = first_lease()
end
if #stale > 0 then redis.call('ZREM', abort, unpack(stale)) end

-- Watched due times (shared/keys.py "Watched due times"): of the first WATCH_LOOKAHEAD lanes that fall due later,
-- this worker wakes for those no other worker watches, and watches them (it claims as each falls due: `watching`,
-- {channel, ms, lane}, which it keeps as promises) if it has a slot left after this claim or watched the lane
-- already (busy then, it tells every worker: the lane is not left to the others' polls); a lane another worker
-- watches is left to that worker's claim. Past them, it wakes for the next lane's due time as it always did.
local WATCH_LOOKAHEAD = 8
-- A watch counts for nothing after its time, but is kept this much longer: the watcher's claim then finds the lane
-- was its own, and goes on watching it even with no slot left.
local WATCH_KEPT_MS = 10000
local watching = {}
if #later > 0 then
  table.sort(later, function(a, b) return a.score < b.score end)
  local looked = math.min(#later, WATCH_LOOKAHEAD)
  local watch_keys = {}
  for i = 1, looked do watch_keys[i] = relay_watch_key(queue, later[i].lane) end
  local watches = redis.call('MGET', unpack(watch_keys))
  for i = 1, looked do
    local c = later[i]
    local watcher = relay_watcher(watches[i], now, c.score)
    if watcher == nil or watcher == token then
      due_at(c.score)
      local was_mine = watches[i] and string.sub(watches[i], -#token - 1) == '|' .. token
      if limit > #claimed or was_mine then
        local at = math.floor(c.score)
        local watch = string.format('%d', at) .. '|' .. token
        if watches[i] ~= watch then  -- written only when it changes
          redis.call('SET', watch_keys[i], watch, 'PX', math.max(1, at - now) + WATCH_KEPT_MS)
        end
        watching[#watching + 1] = {relay_queue_channel(queue, c.queue), at, c.lane}
      end
    end
  end
  if #later > looked then due_at(later[looked + 1].score) end
end

-- What this call took, for a replay of it (kept about as long as a lease: a replay comes within the client's
-- retry budget, and by then the worker has moved on to other request ids), with the watches it wrote: a worker
-- that never got this reply (stopping, it sends it again to hand the jobs back) must still end them.
if #claimed > 0 or #swept > 0 then
  local taken, over = {}, {}
  for i, item in ipairs(claimed) do taken[i] = {item[1], item[5]} end
  for i, item in ipairs(swept) do over[i] = {item[1], item[6]} end
  redis.call('SET', request_key, cjson.encode({request, taken, over, watching}), 'PX', math.max(lease, 60000))
end

-- Registered for hand-offs only when it took everything it could: nothing it serves is due now (a later due time,
-- a rate-limited lane's next start, ends the registration before it).
if registration_ms then
  local until_ms = math.min(now + tonumber(registration_ms), next_due or math.huge, parked_until or math.huge)
  register((next_due == nil or next_due > now) and (limit - #claimed) or 0, until_ms)
end

local next_lease = earliest_lease and math.max(0, earliest_lease - RUNNING_BASE - now) or false
return {claimed, swept, next_due and (next_due - now) or false, next_lease, now, held_back, registered, pushed or false,
  watching}
