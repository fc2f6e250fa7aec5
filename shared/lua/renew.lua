-- Extend the leases of the jobs this worker still owns; returns the ids it no longer owns (lost leases).
-- The lease runs from Redis's clock (relay_now): a worker whose clock is off renews as long a lease as any other.
-- Applying it twice (a replay after a timeout) only renews again.
-- KEYS: queue.  ARGV: (unused), lease_ms, token, ids...
local queue = KEYS[1]
local lease, token = tonumber(ARGV[2]), ARGV[3]
local now = relay_now()
local held = RUNNING_BASE + now + lease
local owned, lost = {}, {}
local prefix = token .. '|'
for i = 4, #ARGV do
  local id = ARGV[i]
  local marker = redis.call('GET', IN_PROGRESS .. id)
  if marker and string.sub(marker, 1, #prefix) == prefix then
    owned[#owned + 1] = held
    owned[#owned + 1] = id
  else
    lost[#lost + 1] = id
  end
end
if #owned > 0 then redis.call('ZADD', queue, 'XX', unpack(owned)) end
return lost
