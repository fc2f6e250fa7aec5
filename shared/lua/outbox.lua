-- Take up to `limit` due replies from the outbox for one sender: each is hidden for `hold_ms` (if the sender
-- dies, another one takes it after that); returns {id, reply request or false, ...}.
-- Hold times are on Redis's clock. A replay (after a timeout) takes nothing more: the first call's replies are
-- hidden, and come back after hold_ms (replies are at least once).
-- KEYS: outbox.  ARGV: (unused), limit, hold_ms.
local outbox = KEYS[1]
local limit, hold = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = relay_now()
local due = redis.call('ZRANGEBYSCORE', outbox, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for i = 1, #due do
  local id = due[i]
  redis.call('ZADD', outbox, now + hold, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('GET', REPLY .. id)
end
return out
