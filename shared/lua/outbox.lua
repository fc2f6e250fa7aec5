-- Take up to `limit` due replies from the outbox for one sender: each is hidden for `hold_ms` (if the sender
-- dies, another one takes it after that); returns {id, reply request or false, ...}.
-- KEYS: outbox.  ARGV: now_ms, limit, hold_ms.
local outbox = KEYS[1]
local now, limit, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', outbox, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for i = 1, #due do
  local id = due[i]
  redis.call('ZADD', outbox, now + hold, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('GET', REPLY .. id)
end
return out
