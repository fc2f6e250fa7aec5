-- Take up to `limit` due replies from the outbox for one sender: each is hidden for `hold_ms` (if the sender
-- dies, another one takes it after that); returns {id, reply request or false, the score it is held at, ...}.
-- Or settle one taken reply ('settle'): remove it (sent, or nothing to send), or hold it `delay_ms` more (a send
-- that failed), only if it is still held at the score it was taken at: a task that ended again meanwhile (a
-- manual retry's run) was added again, and that entry is the next reply, not this one's.
-- Hold times are on Redis's clock. A replay (after a timeout) takes nothing more: the first call's replies are
-- hidden, and come back after hold_ms (replies are at least once); a settle is safe to apply twice.
-- KEYS: outbox.  ARGV: take: (unused), limit, hold_ms | settle: 'settle', id, held score, delay ms ('' to remove).
local outbox = KEYS[1]
local now = relay_now()
if ARGV[1] == 'settle' then
  local id, held, delay = ARGV[2], tonumber(ARGV[3]), ARGV[4]
  if tonumber(redis.call('ZSCORE', outbox, id)) ~= held then return 0 end
  if delay == '' then
    redis.call('ZREM', outbox, id)
  else
    redis.call('ZADD', outbox, now + tonumber(delay), id)
  end
  return 1
end
local limit, hold = tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', outbox, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for i = 1, #due do
  local id = due[i]
  redis.call('ZADD', outbox, now + hold, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('GET', REPLY .. id)
  out[#out + 1] = now + hold
end
return out
