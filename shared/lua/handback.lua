-- A stopping worker gives back a job handed to it (shared/keys.py "Hand-off") that it will not start: back to its
-- lane, due now, its try given back and no event, as if never claimed (a hand-off that raced the worker leaving the
-- idle registry; its runs were never begun, so there is nothing to record). Applied twice, the second finds the job
-- no longer this worker's and does nothing.
-- KEYS: queue (the schedule).  ARGV: id, the worker's token.  Returns 'back' or 'gone'.
local queue = KEYS[1]
local id, token = ARGV[1], ARGV[2]
local marker = redis.call('GET', IN_PROGRESS .. id)
if not marker or string.sub(marker, 1, #token + 1) ~= token .. '|' then return 'gone' end
local try, _, lane, handed = relay_marker_parts(marker)
if not (handed and lane) then return 'gone' end
relay_put_back(queue, id, try, lane, relay_now())
return 'back'
