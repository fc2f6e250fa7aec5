-- Tell every worker of a channel of a waiting job, as a script that leaves a job waiting with no worker to name
-- does (shared/keys.py "Named claims"): every registration of the schedule ends (nothing is handed off past the
-- job meanwhile), and the notice goes out. Sent by a worker named for a job it cannot take (worker/wakeup.py,
-- worker/engine/promises.py); a stopping worker also ends its watches of the channel's lanes first (shared/keys.py
-- "Watched due times"), so the claims the notice sets off watch those lanes instead. Safe to apply twice: the
-- registrations are gone, a watch is ended only while it is still this worker's for that time, and a second
-- notice wakes workers that find nothing new.
-- KEYS: queue (the schedule).  ARGV: channel, notice ('j' or 'd<due ms>'), then optionally the worker's token and
-- per watch it ends: lane id, the ms it watched for.
local queue = KEYS[1]
relay_unregister_idle(queue)
for i = 4, #ARGV, 2 do
  local key = relay_watch_key(queue, ARGV[i])
  if redis.call('GET', key) == ARGV[i + 1] .. '|' .. ARGV[3] then redis.call('DEL', key) end
end
redis.call('{{PUBLISH}}', ARGV[1], ARGV[2])
return 1
